"""YOLOX -> AWML's one deploy graph: ``images`` [batch, 3, H, W] -> ``output`` [batch, N, 4 + 1 + C], opset 17,
dynamic batch (AWML exported batch 6, one image per camera). The contract is checked from the written file alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch

from ..config import YOLOXModelConfig
from ..errors import ArtifactError
from ..models.yolox import INPUT_NAMES, OUTPUT_NAMES, YOLOX, YOLOXGraph, num_anchors
from .onnx_export import PRODUCER, ExportedGraph, _dims, _finish, _to_onnx

BATCH = "batch"


def yolox_onnx_file_names(cfg: YOLOXModelConfig) -> dict[str, str]:
    """``<model name>.onnx`` (the name already says yolox: yolox_small.onnx)."""
    return {"yolox": f"{cfg.name}.onnx"}


def export_yolox_onnx(model: YOLOX, cfg: YOLOXModelConfig, out_dir: Path, opset: int = 17, simplify: bool = True,
                      version: str = "") -> dict[str, ExportedGraph]:
    """Write the graph into ``out_dir`` (traced at batch 2 so nothing folds the batch); checks the contract after."""
    model = model.cpu().eval()
    path = Path(out_dir) / yolox_onnx_file_names(cfg)["yolox"]
    metadata = {"producer": PRODUCER, "producer_version": version, "model": "yolox",
                "model_config": cfg.model_dump_json(), "class_names": json.dumps(list(cfg.class_names)),
                "strides": json.dumps(list(cfg.strides)), "output_convention": "awml_yolox_opt_elan",
                "graph": "yolox"}
    torch.manual_seed(0)
    example = torch.rand(2, 3, *cfg.input_size) * 255.0
    with torch.no_grad():
        # the wrapper in eval mode: torch.onnx.export restores the exported module's mode afterwards, and a fresh
        # wrapper (training=True) would put the caller's model into training mode (BatchNorm on batch statistics)
        proto = _to_onnx(YOLOXGraph(model).eval(), example, INPUT_NAMES, OUTPUT_NAMES,
                         {INPUT_NAMES[0]: {0: BATCH}, OUTPUT_NAMES[0]: {0: BATCH}}, opset)
    _declare_output_shape(proto, num_anchors(cfg), 5 + cfg.num_classes)
    out = {"yolox": _finish(proto, path, metadata, simplify)}
    problems = check_yolox_contract(path, cfg)
    if problems:
        raise ArtifactError(f"{path.name}: exported ONNX breaks the YOLOX contract: " + "; ".join(problems))
    return out


def _declare_output_shape(proto: onnx.ModelProto, n: int, width: int) -> None:
    """The tracer leaves N and the width symbolic (flatten + permute); declare them, since the contract (and
    Autoware's buffer allocation) reads them from the file. ONNX shape inference then checks they agree."""
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    for d, v in zip(list(dims)[1:], (n, width)):
        d.ClearField("dim_param")
        d.dim_value = v
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)


def check_yolox_contract(path: Path, cfg: YOLOXModelConfig, opset: int | None = None) -> list[str]:
    """Problems against the contract, read from the ONNX file only ([] = compliant): one input ``images``
    [dynamic, 3, H, W], one output ``output`` [dynamic, N, 5 + C] with N = sum (H/s)(W/s) over the strides."""
    m = onnx.load(str(path), load_external_data=False)
    problems: list[str] = []
    ins, outs = list(m.graph.input), list(m.graph.output)
    if [i.name for i in ins] != list(INPUT_NAMES) or [o.name for o in outs] != list(OUTPUT_NAMES):
        return [f"I/O names are {[i.name for i in ins]} -> {[o.name for o in outs]}, expected "
                f"{list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}"]
    din, dout = _dims(ins[0]), _dims(outs[0])
    h, w = cfg.input_size
    if len(din) != 4 or not isinstance(din[0], str) or din[1:] != [3, h, w]:
        problems.append(f"input images is {din}, expected [batch (dynamic), 3, {h}, {w}]")
    n, width = num_anchors(cfg), 5 + cfg.num_classes
    if len(dout) != 3 or not isinstance(dout[0], str) or dout[1:] != [n, width]:
        problems.append(f"output is {dout}, expected [batch (dynamic), {n}, {width}]")
    if ins[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        problems.append("input images is not float32")
    if opset is not None:
        got = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
        if got != opset:
            problems.append(f"opset is {got}, expected {opset}")
    return problems
