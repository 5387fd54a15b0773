"""INT8 post-training quantization of the CenterPoint graphs into explicit Q/DQ ONNX files.

Why Q/DQ: TensorRT 10 builds INT8 from QuantizeLinear/DequantizeLinear pairs in the ONNX (explicit quantization);
the same file runs in ONNX Runtime here, so what is measured here is what the vehicle builds.

- Calibration tensors are the pipeline's own preprocessing outputs (encoder: `input_features`; head: the fp32
  encoder's pillars scattered by the pipeline) on calibration frames disjoint from the evaluation frames.
- Activations: symmetric INT8 (zero point 0). Weights: INT8, symmetric, per output channel. Q/DQ sit on the inputs
  of Conv/ConvTranspose/MatMul and on the activations between them (TensorRT fuses them into INT8 kernels).
- The recipe (method, frames, calibration fingerprint, excluded layers, tool and version) and its hash describe
  the artifact; `quantize_guard` picks the layers kept in float.

Tool: ONNX Runtime's static quantizer (`onnxruntime.quantization.quantize_static`, QDQ format), already a
dependency; NVIDIA ModelOpt is not used (see the report in the branch history / README dependency notes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from ..bundle import atomic_write_bytes, sha256_file, sha256_json
from ..config import CenterPointModelConfig, DataConfig, QuantizeConfig
from ..errors import ArtifactError, ConfigError
from .onnx_export import check_centerpoint_contract

log = logging.getLogger(__name__)

GRAPHS = ("encoder", "head")
GRAPH_INPUT = {"encoder": "input_features", "head": "spatial_features"}
# Weighted ops get Q/DQ on their inputs; the activation ops between them carry the INT8 tensors from one to the
# next (TensorRT and ONNX Runtime fuse DQ -> Conv -> Relu -> Q into one INT8 kernel).
OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Relu", "Concat", "MaxPool", "Transpose", "Reshape", "Squeeze")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
TOOL = "onnxruntime.quantization"
RECIPE_VERSION = 1
_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


# --------------------------------------------------------------------------------------------- pipeline
def _fp32_pipeline(model_cfg: CenterPointModelConfig, encoder_path: Path, head_path: Path):
    """fp32 ONNX on ONNX Runtime CPU, built by the loader's own function (same runners as every consumer)."""
    from ..loader import onnx_pipeline

    return onnx_pipeline(model_cfg, {"encoder": Path(encoder_path), "head": Path(head_path)}, "cpu")


def _pipeline(model_cfg: CenterPointModelConfig, encoder_path: Path, head_path: Path):
    """Same as :func:`_fp32_pipeline` for any pair of graph files (fp32 or Q/DQ)."""
    return _fp32_pipeline(model_cfg, encoder_path, head_path)


# --------------------------------------------------------------------------------------------- calibration data
def quantized_file_names(model_cfg: CenterPointModelConfig) -> dict[str, str]:
    from ..families import qdq_file_name
    from .onnx_export import onnx_file_names

    return {k: qdq_file_name(n) for k, n in onnx_file_names(model_cfg).items()}


def calibration_source(data: DataConfig, q: QuantizeConfig) -> dict[str, Any]:
    """Where the calibration (and guard) frames come from, as a JSON-able record; disjoint from `data` by design."""
    n = q.calibration_frames + q.guard_frames
    if data.source == "synthetic":
        if q.calibration_seed == data.seed:
            raise ConfigError(f"export.quantize.calibration_seed {q.calibration_seed} equals data.seed: calibration "
                              f"frames must not be evaluation frames; pick another seed (>= 10000)")
        return {"kind": "synthetic", "seed": q.calibration_seed, "frames_per_sequence": data.frames_per_sequence,
                "indices": [0, n]}
    if q.calibration_info_path:
        return {"kind": "info", "info_path": q.calibration_info_path, "indices": [0, n]}
    # Same info file: the frames after the evaluation frames.
    return {"kind": "info", "info_path": data.info_path, "indices": [data.num_frames, data.num_frames + n]}


def calibration_samples(source: dict[str, Any], cache_dir: Path, class_names: Sequence[str]) -> list:
    """The frames `source` names, read through the evaluation's own dataset reader."""
    from ..evaluate import open_dataset

    start, stop = source["indices"]
    if source["kind"] == "synthetic":
        data = DataConfig(source="synthetic", seed=source["seed"], num_frames=stop,
                          frames_per_sequence=source["frames_per_sequence"])
    else:
        data = DataConfig(source="info", info_path=source["info_path"], num_frames=stop)
    dataset = open_dataset(data, Path(cache_dir), class_names, progress=False)
    if len(dataset) < stop:
        raise ConfigError(f"{source.get('info_path')}: holds {len(dataset)} frames, calibration needs frames "
                          f"{start}..{stop - 1}; lower export.quantize.calibration_frames/guard_frames or set "
                          f"export.quantize.calibration_info_path")
    return [dataset[i] for i in range(start, stop)]


@dataclass
class CalibrationSet:
    """The tensors each graph is calibrated on, one entry per frame (frames without pillars are skipped)."""

    tokens: list[str]
    encoder_inputs: list[np.ndarray]  # input_features (V, P, F) float32
    head_inputs: list[np.ndarray]  # spatial_features (1, C, H, W) float32
    coords: list[np.ndarray] = field(default_factory=list)  # pillar (y, x) per frame, to scatter encoder outputs
    source: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # tokens of frames with no pillar

    def inputs(self, graph: str) -> list[dict[str, np.ndarray]]:
        arrays = self.encoder_inputs if graph == "encoder" else self.head_inputs
        return [{GRAPH_INPUT[graph]: a} for a in arrays]

    def fingerprint(self) -> str:
        """sha256 over every calibration tensor (name, dtype, shape, bytes), in frame order."""
        key = tuple(id(a) for a in self.encoder_inputs + self.head_inputs)
        if getattr(self, "_fp_key", None) == key:
            return self._fp
        h = hashlib.sha256()
        for graph in GRAPHS:
            for a in (self.encoder_inputs if graph == "encoder" else self.head_inputs):
                h.update(f"{GRAPH_INPUT[graph]}|{a.dtype.str}|{a.shape}|".encode())
                h.update(np.ascontiguousarray(a).tobytes())
        self._fp_key, self._fp = key, h.hexdigest()
        return self._fp


def collect_calibration(pipeline, samples: Sequence, source: dict[str, Any] | None = None) -> CalibrationSet:
    """Run the pipeline's own preprocessing (and fp32 encoder + scatter for the head) on each calibration frame."""
    out = CalibrationSet([], [], [], [], dict(source or {}))
    for s in samples:
        pre = pipeline.preprocess(s.points)
        if pre.input_features.shape[0] == 0:
            out.skipped.append(s.token)
            continue
        with torch.inference_mode():
            spatial = pipeline.scatter(pipeline.encode(pre.input_features), pre.coords)
        out.tokens.append(s.token)
        out.encoder_inputs.append(pre.input_features.detach().cpu().numpy().astype(np.float32, copy=True))
        out.head_inputs.append(spatial.detach().cpu().numpy().astype(np.float32, copy=True))
        out.coords.append(pre.coords.detach().cpu().numpy().copy())
    if not out.tokens:
        raise ArtifactError("quantize: no calibration frame has a single pillar; check the calibration data")
    return out


def frame_digest(points: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(points, dtype=np.float32).tobytes()).hexdigest()


def check_disjoint(calibration_samples_: Sequence, evaluation_samples: Sequence) -> None:
    """Raise when a calibration frame is also an evaluation frame (same token or the very same points)."""
    eval_tokens = {s.token for s in evaluation_samples}
    eval_digests = {frame_digest(s.points) for s in evaluation_samples}
    for s in calibration_samples_:
        if s.token in eval_tokens or frame_digest(s.points) in eval_digests:
            raise ConfigError(f"quantize: calibration frame {s.token} is also an evaluation frame; calibration must "
                              f"use other frames (export.quantize.calibration_seed / calibration_info_path)")


# --------------------------------------------------------------------------------------------- quantization
class _Reader:
    """onnxruntime's CalibrationDataReader protocol over in-memory inputs (with the window `set_range` asks for)."""

    def __init__(self, inputs: Sequence[dict[str, np.ndarray]]) -> None:
        self._all = list(inputs)
        self._window = (0, len(self._all))
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._window[0] + self._i >= self._window[1]:
            return None
        self._i += 1
        return self._all[self._window[0] + self._i - 1]

    def __len__(self) -> int:
        return len(self._all)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._window = (start_index, min(end_index, len(self._all)))
        self._i = 0


def ort_options(method: str, percentile: float, quantize_bias: bool = False) -> dict[str, Any]:
    """The keyword arguments given to `quantize_static` (also recorded in the recipe)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    return {
        "quant_format": QuantFormat.QDQ,
        "activation_type": QuantType.QInt8,
        "weight_type": QuantType.QInt8,
        "per_channel": True,
        "reduce_range": False,
        "calibrate_method": getattr(CalibrationMethod, _METHODS[method]),
        "op_types_to_quantize": list(OP_TYPES),
        "extra_options": {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            # MatMul weights are [in, out]: one scale per output column.
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
            "CalibPercentile": percentile,
            "CalibTensorRangeSymmetric": True,
            # Bias stays float: TensorRT's parser rejects DequantizeLinear on an int32 bias ("only activation
            # types allowed"), and fuses the float bias into the INT8 kernel itself.
            "QuantizeBias": quantize_bias,
        },
    }


def quantize_graph(fp32_path: Path, out_path: Path, inputs: Sequence[dict[str, np.ndarray]] | None, method: str,
                   percentile: float = 99.999, nodes_to_exclude: Sequence[str] = (),
                   ranges_cache: Path | None = None, metadata: dict[str, str] | None = None) -> Path:
    """One fp32 ONNX -> one Q/DQ ONNX (written atomically). `ranges_cache` (a JSON file) lets repeated runs with
    other exclusions skip calibration: it is filled on the first call and read after."""
    from onnxruntime.quantization import quantize_static

    opts = ort_options(method, percentile)
    if inputs is not None:
        # Calibrate one frame per pass; every calibrator merges across passes. Bounds memory (about 150 MB of
        # activations per frame for the small head) and lets the histogram methods take the encoder's frames of
        # different num_voxels (ORT stacks one pass's arrays). ORT's own CalibMaxIntermediateOutputs is not used:
        # in 1.31 its min-max path drops all but the last chunk.
        opts["extra_options"]["CalibStridedMinMax"] = 1
    with tempfile.TemporaryDirectory(prefix="awml_quant_") as tmp:
        tmp_out = Path(tmp) / "q.onnx"
        logging.getLogger().disabled, was = True, logging.getLogger().disabled  # ORT's pre-process advice
        try:
            quantize_static(str(fp32_path), str(tmp_out), _Reader(inputs) if inputs is not None else None,
                            nodes_to_exclude=list(nodes_to_exclude),
                            calibration_cache_path=str(ranges_cache) if ranges_cache else None, **opts)
        finally:
            logging.getLogger().disabled = was
        model = onnx.load(str(tmp_out))
    fp32_meta = {p.key: p.value for p in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
    del model.metadata_props[:]
    for key, value in {**fp32_meta, **(metadata or {})}.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model)
    atomic_write_bytes(Path(out_path), model.SerializeToString())
    return Path(out_path)


def quantizable_nodes(path: Path) -> list[str]:
    """Names of the weighted nodes (Conv, ConvTranspose, MatMul with a constant weight) of an fp32 graph."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in inits]


# --------------------------------------------------------------------------------------------- recipe
@dataclass
class QuantizedPair:
    paths: dict[str, Path]  # graph -> Q/DQ file (graphs not quantized point at the fp32 file)
    recipe: dict[str, Any]

    @property
    def recipe_hash(self) -> str:
        return recipe_hash(self.recipe)


def recipe_hash(recipe: dict[str, Any]) -> str:
    return sha256_json(recipe)


def make_recipe(q: QuantizeConfig, calib: CalibrationSet, excluded: dict[str, list[str]],
                fp32_paths: dict[str, Path]) -> dict[str, Any]:
    """Everything that decides the Q/DQ graphs' bytes: for the manifest and the TensorRT engine cache key."""
    import onnxruntime

    return {
        "version": RECIPE_VERSION,
        "format": "onnx_qdq",
        "tool": TOOL,
        "tool_version": onnxruntime.__version__,
        "method": q.method,
        **({"percentile": q.percentile} if q.method == "percentile" else {}),
        "activations": {"type": "int8", "symmetric": True, "zero_point": 0},
        "weights": {"type": "int8", "symmetric": True, "per_channel": True},
        "op_types": list(OP_TYPES),
        "graphs": list(q.graphs),
        "calibration": {"source": calib.source, "frames": len(calib.tokens), "tokens": list(calib.tokens),
                        "skipped_empty_frames": list(calib.skipped), "fingerprint": calib.fingerprint()},
        "excluded": {g: sorted(excluded.get(g, [])) for g in GRAPHS},
        "fp32_sha256": {g: sha256_file(p) for g, p in fp32_paths.items()},
    }


def quantize_centerpoint(fp32_paths: dict[str, Path], out_dir: Path, model_cfg: CenterPointModelConfig,
                         q: QuantizeConfig, calib: CalibrationSet, excluded: dict[str, Sequence[str]] | None = None,
                         ranges_dir: Path | None = None, check: bool = True) -> QuantizedPair:
    """Q/DQ versions of the graphs in `q.graphs` into `out_dir`, `excluded[graph]` kept in float.

    `ranges_dir` keeps the calibrated ranges per graph between calls with other exclusions (the guard);
    `check` False skips the contract and Q/DQ checks (the guard's throw-away candidates)."""
    excluded = {g: sorted(set(excluded.get(g, ())) if excluded else set()) for g in GRAPHS}
    recipe = make_recipe(q, calib, excluded, fp32_paths)
    names = quantized_file_names(model_cfg)
    paths = dict(fp32_paths)
    for g in q.graphs:
        cache = Path(ranges_dir) / f"{g}_ranges.json" if ranges_dir else None
        paths[g] = quantize_graph(fp32_paths[g], Path(out_dir) / names[g], calib.inputs(g), q.method, q.percentile,
                                  excluded[g], ranges_cache=cache,
                                  metadata={"quantization": "int8_qdq", "quantization_recipe_sha256":
                                            recipe_hash(recipe)})
    if not check:
        return QuantizedPair(paths, recipe)
    problems = check_centerpoint_contract(paths["encoder"], paths["head"], model_cfg)
    for g in q.graphs:
        problems += [f"{names[g]}: {p}" for p in check_qdq_graph(paths[g])]
    if problems:
        raise ArtifactError("quantized ONNX is not valid: " + "; ".join(problems))
    return QuantizedPair(paths, recipe)


# --------------------------------------------------------------------------------------------- graph checks
def _const(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def check_qdq_graph(path: Path) -> list[str]:
    """Problems of a Q/DQ graph read from the file alone ([] = fine): checker; every quantizer INT8 with zero point 0;
    weights per output channel; every weighted node either fed by DequantizeLinear on both inputs or in float."""
    problems: list[str] = []
    model = onnx.load(str(path), load_external_data=False)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        problems.append(f"onnx.checker: {str(e).splitlines()[0]}")
    consts = _const(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        problems.append("no QuantizeLinear/DequantizeLinear node")
    for n in qdq:
        if len(n.input) < 3 or n.input[2] not in consts:
            problems.append(f"{n.name}: no constant zero point")
            continue
        zp = consts[n.input[2]]
        if zp.dtype != np.int8:
            problems.append(f"{n.name}: zero point type {zp.dtype}, expected int8")
        if np.any(zp != 0):
            problems.append(f"{n.name}: zero point {zp.ravel()[:4]} is not 0 (asymmetric)")
    for n in model.graph.node:
        if n.op_type not in WEIGHTED_OPS:
            continue
        dq = producer.get(n.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue  # a layer kept in float
        w = consts.get(dq.input[0])
        scale = consts.get(dq.input[1])
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if w is None or scale is None:
            problems.append(f"{n.name}: weight or its scale is not a constant")
            continue
        out_axis = {"Conv": 0, "ConvTranspose": 1, "MatMul": w.ndim - 1, "Gemm": 0}[n.op_type]
        if scale.ndim != 1 or axis % w.ndim != out_axis or scale.shape[0] != w.shape[out_axis]:
            problems.append(f"{n.name}: weight scale shape {list(scale.shape)} on axis {axis} is not per output "
                            f"channel (weight shape {list(w.shape)}, expected {w.shape[out_axis]} scales on axis "
                            f"{out_axis})")
        act = producer.get(n.input[0])
        if act is None or act.op_type != "DequantizeLinear":
            problems.append(f"{n.name}: INT8 weight but float input activation (TensorRT cannot fuse it)")
    return problems


def qdq_summary(path: Path) -> dict[str, Any]:
    """Counts for reports: Q/DQ nodes, weighted layers in INT8 and in float."""
    model = onnx.load(str(path), load_external_data=False)
    producer = {o: n for n in model.graph.node for o in n.output}
    int8, fp = [], []
    for n in model.graph.node:
        if n.op_type in WEIGHTED_OPS:
            src = producer.get(n.input[1])
            (int8 if src is not None and src.op_type == "DequantizeLinear" else fp).append(n.name)
    return {"quantize_linear": sum(n.op_type == "QuantizeLinear" for n in model.graph.node),
            "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in model.graph.node),
            "int8_layers": int8, "float_layers": fp}


def dump_recipe(recipe: dict[str, Any]) -> str:
    return json.dumps(recipe, indent=2, sort_keys=True)
