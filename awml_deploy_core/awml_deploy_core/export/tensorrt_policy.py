"""The TensorRT precision policy: pure rules, importable and testable where TensorRT is absent.

What a precision setting means for one TensorRT version (builder and network flags, workspace API, calibration or
explicit quantization, the verification tolerance), and whether an ONNX graph is explicitly quantized. Both the
planner (`tensorrt_plan`) and the builder (`tensorrt_build`) import this module; it imports neither of them and
never `tensorrt`, so the two have no import cycle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError


# --------------------------------------------------------------------------------------------- precision policy
@dataclass(frozen=True)
class BuilderSettings:
    """What one precision policy means for one TensorRT version. Pure data: no TensorRT needed to compute it."""

    precision: str
    trt_version: tuple[int, int]
    builder_flags: tuple[str, ...]  # trt.BuilderFlag member names to set
    network_flags: tuple[str, ...]  # trt.NetworkDefinitionCreationFlag member names
    strongly_typed: bool
    int8_calibration: bool  # implicit quantization: an IInt8 calibrator computes the scales
    explicit_quantization: bool  # the ONNX carries Q/DQ nodes: scales come from the graph, no calibrator
    dla_core: int | None
    default_device_type: str  # "GPU" | "DLA"
    workspace_api: str  # "set_memory_pool_limit" (8.4+) | "max_workspace_size" (removed in 10)
    tolerance: str  # the verify.tolerances key this engine is verified with
    notes: tuple[str, ...] = field(default_factory=tuple)


def builder_settings(precision: str, trt_version: tuple[int, int] | Sequence[int], has_qdq: bool = False,
                     dla_core: int | None = None) -> BuilderSettings:
    """Map a precision policy to builder flags for a TensorRT version; ConfigError when it cannot be built there.

    auto           FP16 + TF32 allowed: TensorRT picks the faster kernel per layer (+ INT8 for a Q/DQ graph)
    fp16           FP16 (+TF32) kernels allowed; FP32 I/O
    fp32_tf32      FP32 with TF32 tensor-core math, no FP16
    strongly_typed precision from the ONNX tensor types only (network flag STRONGLY_TYPED, TensorRT >= 9)
    int8           INT8 + FP16 fallback; an INT8 calibrator for an FP32 graph, the graph's scales for Q/DQ
    Differences by version: EXPLICIT_BATCH is required before 10 and deprecated (implicit) from 10;
    STRONGLY_TYPED exists from 9; the workspace is set with set_memory_pool_limit (8.4+; max_workspace_size is
    gone in 10); BuilderFlag.STRICT_TYPES (deprecated 8.2, removed 10) is never used; implicit INT8 calibration
    is deprecated from 10.1 (still works); TensorRT 11 removed the FP16/INT8 flags (always strongly typed).
    """
    major, minor = (int(trt_version[0]), int(trt_version[1]))
    notes: list[str] = []
    network: list[str] = []
    if major < 10:
        network.append("EXPLICIT_BATCH")
    flags: list[str] = []
    strongly_typed = int8_calib = explicit_q = False
    tolerance = "fp16"
    if major >= 11:
        if precision in ("fp16", "int8", "fp32_tf32"):
            raise ConfigError(f"export.tensorrt.precision '{precision}' needs builder precision flags, which "
                              f"TensorRT {major}.{minor} removed (networks are always strongly typed): use "
                              f"precision strongly_typed with an ONNX typed in the precision you want")
        strongly_typed = True
        tolerance = "int8" if has_qdq else "tf32"
        notes.append(f"TensorRT {major}: every network is strongly typed; precision comes from the ONNX types")
    elif precision == "auto":
        flags += ["FP16", "TF32"] + (["INT8"] if has_qdq else [])
        explicit_q = has_qdq
        tolerance = "int8" if has_qdq else "fp16"
        notes.append("TensorRT picks FP32 or FP16 kernels per layer, whichever is faster")
    elif precision == "fp16":
        flags += ["FP16", "TF32"]
    elif precision == "fp32_tf32":
        flags += ["TF32"]
        tolerance = "tf32"
    elif precision == "strongly_typed":
        if major < 9:
            raise ConfigError(f"export.tensorrt.precision 'strongly_typed' needs TensorRT >= 9 "
                              f"(NetworkDefinitionCreationFlag.STRONGLY_TYPED); this is TensorRT {major}.{minor} "
                              f"(JetPack 5): use fp16 or fp32_tf32")
        network.append("STRONGLY_TYPED")
        strongly_typed = True
        tolerance = "int8" if has_qdq else "tf32"
        notes.append("no precision flags: layer precisions follow the ONNX tensor types (FP32 graph -> FP32/TF32)")
    elif precision == "int8":
        flags += ["INT8", "FP16", "TF32"]
        tolerance = "int8"
        explicit_q = has_qdq
        int8_calib = not has_qdq
        if int8_calib and (major, minor) >= (10, 1):
            notes.append("implicit INT8 calibration is deprecated since TensorRT 10.1 (still supported); a Q/DQ "
                         "ONNX is the forward path")
        if explicit_q:
            notes.append("explicit quantization: INT8 scales come from the graph's Q/DQ nodes, no calibrator")
    else:
        raise ConfigError(f"export.tensorrt.precision: unknown policy '{precision}'")
    device = "GPU"
    if dla_core is not None:
        if precision == "fp32_tf32":
            raise ConfigError("export.tensorrt.dla_core is set but precision is fp32_tf32: DLA runs FP16 and INT8 "
                              "only; use fp16 or int8, or drop dla_core")
        if strongly_typed and not has_qdq:
            notes.append("strongly typed FP32 graph on DLA: DLA runs FP16/INT8 only, so FP32 layers fall back to "
                         "the GPU")
        device = "DLA"
        flags.append("GPU_FALLBACK")
        notes.append(f"DLA core {dla_core}; layers DLA cannot run (e.g. on a dynamic axis) fall back to "
                     f"the GPU")
    return BuilderSettings(
        precision=precision, trt_version=(major, minor), builder_flags=tuple(flags), network_flags=tuple(network),
        strongly_typed=strongly_typed, int8_calibration=int8_calib, explicit_quantization=explicit_q,
        dla_core=dla_core, default_device_type=device,
        workspace_api="set_memory_pool_limit" if (major, minor) >= (8, 4) else "max_workspace_size",
        tolerance=tolerance, notes=tuple(notes))


def verification_precision(precision: str, has_qdq: bool = False) -> str:
    """The verify.tolerances key for an engine built with `precision` (the same under TensorRT 8.6 and 10)."""
    try:
        return builder_settings(precision, (10, 3), has_qdq).tolerance
    except ConfigError:
        return "fp16"


def parse_version(v: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '10.3.0.26'; missing parts read as 0."""
    parts = [int(p) for p in re.findall(r"\d+", v)[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


# --------------------------------------------------------------------------------------------- the ONNX side
def load_onnx_graph(onnx_path: Path) -> Any:
    """The ONNX model without external weights (read with `onnx` only); ConfigError when the file is missing."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise ConfigError(f"{path}: ONNX file not found; run export with export.mode onnx (or both) first")
    return onnx.load(str(path), load_external_data=False)


def has_qdq(onnx_path: Path) -> bool:
    """True when the graph is explicitly quantized (QuantizeLinear/DequantizeLinear nodes)."""
    model = load_onnx_graph(onnx_path)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
