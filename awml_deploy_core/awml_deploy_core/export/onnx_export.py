"""CenterPoint -> the two Autoware-compatible ONNX graphs (see the design contract).

`pts_voxel_encoder_<name>.onnx`: input_features [num_voxels, P, F] -> pillar_features [num_voxels, C]
`pts_backbone_neck_head_<name>.onnx`: spatial_features [1, C, grid_y, grid_x] -> heatmap, reg, height, dim, rot,
vel, in this order (Autoware binds buffers by position).
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from ..bundle import atomic_write_bytes
from ..config import CenterPointModelConfig
from ..errors import ArtifactError
from ..models.centerpoint import (
    ENCODER_INPUT_NAMES,
    ENCODER_OUTPUT_NAMES,
    HEAD_INPUT_NAMES,
    HEAD_OUTPUT_NAMES,
    BackboneNeckHeadGraph,
    CenterPoint,
    VoxelEncoderGraph,
    graph_shapes,
)

log = logging.getLogger(__name__)
PRODUCER = "awml_deploy"
NUM_VOXELS = "num_voxels"


def onnx_file_names(cfg: CenterPointModelConfig) -> dict[str, str]:
    return {"encoder": f"pts_voxel_encoder_{cfg.name}.onnx", "head": f"pts_backbone_neck_head_{cfg.name}.onnx"}


@dataclass
class ExportedGraph:
    path: Path
    simplified: bool
    simplify_error: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def _to_onnx(module: torch.nn.Module, example: torch.Tensor, input_names: tuple[str, ...],
             output_names: tuple[str, ...], dynamic_axes: dict, opset: int) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, which needs a side .onnx.data file and
        # handles the dynamic num_voxels of the encoder less predictably; its output is plain, Autoware-ready ONNX.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buf, input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def _simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """onnxslim when installed; on any failure keep the unsimplified graph and say why."""
    try:
        import onnxslim
    except ImportError:
        return model, "onnxslim not installed"
    try:
        slim = onnxslim.slim(model)
        onnx.checker.check_model(slim)
    except Exception as e:  # noqa: BLE001 - any simplifier failure falls back to the checked original, logged
        log.warning("onnx simplification failed (%s: %s); keeping the unsimplified graph", type(e).__name__, e)
        return model, f"{type(e).__name__}: {e}"
    return slim, None


def _finish(model: onnx.ModelProto, path: Path, metadata: dict[str, str], simplify: bool) -> ExportedGraph:
    error = "disabled"
    if simplify:
        model, error = _simplify(model)
    del model.metadata_props[:]
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.producer_name = PRODUCER
    onnx.checker.check_model(model)
    atomic_write_bytes(path, model.SerializeToString())
    return ExportedGraph(path, simplified=error is None, simplify_error=error, metadata=metadata)


def export_centerpoint_onnx(model: CenterPoint, cfg: CenterPointModelConfig, out_dir: Path, opset: int = 17,
                            simplify: bool = True, version: str = "") -> dict[str, ExportedGraph]:
    """Write both graphs into `out_dir`; returns {"encoder": ..., "head": ...}. Checks the contract after."""
    model = model.cpu().eval()
    names = onnx_file_names(cfg)
    shapes = graph_shapes(cfg, num_voxels=max(16, min(cfg.max_voxels, 1000)))
    metadata = {
        "producer": PRODUCER,
        "producer_version": version,
        "model": "centerpoint",
        "model_config": cfg.model_dump_json(),
        "class_names": json.dumps(list(cfg.class_names)),
        "head_output_convention": "autoware_lidar_centerpoint",
    }
    torch.manual_seed(0)
    enc_in = torch.randn(shapes.input_features)
    head_in = torch.randn(shapes.spatial_features)
    with torch.no_grad():
        enc = _to_onnx(VoxelEncoderGraph(model), enc_in, ENCODER_INPUT_NAMES, ENCODER_OUTPUT_NAMES,
                       {ENCODER_INPUT_NAMES[0]: {0: NUM_VOXELS}, ENCODER_OUTPUT_NAMES[0]: {0: NUM_VOXELS}}, opset)
        head = _to_onnx(BackboneNeckHeadGraph(model), head_in, HEAD_INPUT_NAMES, HEAD_OUTPUT_NAMES, {}, opset)
    out = {
        "encoder": _finish(enc, Path(out_dir) / names["encoder"], {**metadata, "graph": "pts_voxel_encoder"}, simplify),
        "head": _finish(head, Path(out_dir) / names["head"], {**metadata, "graph": "pts_backbone_neck_head"}, simplify),
    }
    problems = check_centerpoint_contract(out["encoder"].path, out["head"].path, cfg)
    if problems:
        raise ArtifactError("exported ONNX breaks the Autoware contract: " + "; ".join(problems))
    return out


# --------------------------------------------------------------------------------------------- contract
def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param if d.dim_param else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def check_centerpoint_contract(encoder_path: Path, head_path: Path, cfg: CenterPointModelConfig) -> list[str]:
    """Problems with the pair against the design contract, read from the ONNX files only ([] = compliant)."""
    problems: list[str] = []
    shapes = graph_shapes(cfg)
    enc = onnx.load(str(encoder_path), load_external_data=False)
    head = onnx.load(str(head_path), load_external_data=False)

    ins, outs = list(enc.graph.input), list(enc.graph.output)
    if [i.name for i in ins] != list(ENCODER_INPUT_NAMES):
        problems.append(f"encoder inputs are {[i.name for i in ins]}, expected {list(ENCODER_INPUT_NAMES)}")
    else:
        d = _dims(ins[0])
        if len(d) != 3 or not isinstance(d[0], str) or d[1:] != list(shapes.input_features[1:]):
            problems.append(f"input_features has shape {d}, expected [{NUM_VOXELS}, "
                            f"{shapes.input_features[1]}, {shapes.input_features[2]}] with a dynamic first axis")
    if [o.name for o in outs] != list(ENCODER_OUTPUT_NAMES):
        problems.append(f"encoder outputs are {[o.name for o in outs]}, expected {list(ENCODER_OUTPUT_NAMES)}")
    else:
        d = _dims(outs[0])
        if len(d) != 2 or not isinstance(d[0], str) or d[1] != shapes.pillar_features[1]:
            problems.append(f"pillar_features has shape {d}, expected [{NUM_VOXELS}, {shapes.pillar_features[1]}]")

    ins, outs = list(head.graph.input), list(head.graph.output)
    if [i.name for i in ins] != list(HEAD_INPUT_NAMES):
        problems.append(f"head inputs are {[i.name for i in ins]}, expected {list(HEAD_INPUT_NAMES)}")
    elif _dims(ins[0]) != list(shapes.spatial_features):
        problems.append(f"spatial_features has shape {_dims(ins[0])}, expected {list(shapes.spatial_features)}")
    if [o.name for o in outs] != list(HEAD_OUTPUT_NAMES):
        problems.append(f"head outputs are {[o.name for o in outs]}, expected this order: {list(HEAD_OUTPUT_NAMES)}")
    else:
        for o in outs:
            if _dims(o) != list(shapes.head_outputs[o.name]):
                problems.append(f"{o.name} has shape {_dims(o)}, expected {list(shapes.head_outputs[o.name])}")
    return problems
