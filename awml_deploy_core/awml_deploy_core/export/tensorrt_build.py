"""ONNX -> TensorRT engine, one per graph, with the direct `tensorrt` Python API (TensorRT 8.5/8.6 and 10.x).

Why the direct API and not Polygraphy: the surface is small (parser, builder config, one profile, a calibrator,
a timing cache), every call below is checked against NVIDIA's API docs for both generations, and owning it
keeps the version differences visible in one pure function (`builder_settings`) instead of inside another
library's compatibility layer; JetPack images ship `tensorrt` but not Polygraphy.

`tensorrt` is imported inside functions only: this module (and `builder_settings`) imports and is tested where
TensorRT is absent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle, atomic_write_bytes
from ..config import DeployConfig
from ..errors import ArtifactError, BackendUnavailableError, ConfigError
from .tensorrt_plan import (
    GRAPH_INPUT,
    GRAPHS,
    build_plan,
    calibration_batches,
    calibration_cache_path,
    calibration_fingerprint,
    engine_artifact,
    trt_environment,
    validate_profiles,
)

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 10.0


# --------------------------------------------------------------------------------------------- policy (pure)
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
        notes.append(f"DLA core {dla_core}; layers DLA cannot run (e.g. on the dynamic num_voxels axis) fall back "
                     f"to the GPU")
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


# --------------------------------------------------------------------------------------------- tensorrt helpers
def _trt():
    from ..backends.tensorrt_backend import import_tensorrt

    return import_tensorrt()


def _logger():
    from ..backends.tensorrt_backend import trt_logger

    return trt_logger()


def parse_onnx(trt: Any, network: Any, onnx_path: Path) -> None:
    """Parse into `network`; on failure raise ArtifactError naming every failing node (name, op, index)."""
    import onnx

    path = Path(onnx_path)
    parser = trt.OnnxParser(network, _logger())
    ok = parser.parse(path.read_bytes(), str(path))
    if ok:
        return
    nodes = list(onnx.load(str(path), load_external_data=False).graph.node)
    problems = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        idx = err.node()
        name = err.node_name() if hasattr(err, "node_name") else ""  # TensorRT 10+
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        if not name and 0 <= idx < len(nodes):
            name, op = nodes[idx].name, nodes[idx].op_type
        where = f"node {idx} '{name}' ({op})" if idx >= 0 else "graph"
        problems.append(f"{where}: {err.desc()} [{err.code()}]")
    raise ArtifactError(f"{path}: TensorRT's ONNX parser failed: " + "; ".join(problems or ["no error reported"]))


class _BuildProgress:
    """Logs 'still building <graph>: N s' every PROGRESS_EVERY_S seconds from a background thread; on TensorRT
    10+ an IProgressMonitor adds the phase and step being worked on."""

    def __init__(self, graph: str, every: float | None = None) -> None:
        self.graph, self.every = graph, PROGRESS_EVERY_S if every is None else every
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._phases: dict[str, list[int]] = {}  # phase -> [step, num_steps], innermost last
        self._thread = threading.Thread(target=self._run, name=f"trt-build-{graph}", daemon=True)
        self.t0 = time.monotonic()

    # IProgressMonitor callbacks (called from TensorRT's threads)
    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        with self._lock:
            self._phases[phase_name] = [0, int(num_steps)]

    def step_complete(self, phase_name: str, step: int) -> bool:
        with self._lock:
            if phase_name in self._phases:
                self._phases[phase_name][0] = int(step) + 1
        return True  # False would cancel the build

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            self._phases.pop(phase_name, None)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with self._lock:
                phase = next(reversed(self._phases.items()), None)
            detail = f" ({phase[0]}: step {phase[1][0]}/{phase[1][1]})" if phase else ""
            log.info("still building %s: %.0f s%s", self.graph, time.monotonic() - self.t0, detail)

    def __enter__(self) -> "_BuildProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def _progress_monitor(trt: Any, progress: _BuildProgress) -> Any | None:
    """A trt.IProgressMonitor forwarding to `progress` (TensorRT 10+), else None."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):  # noqa: ANN001
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):  # noqa: ANN001
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name):  # noqa: ANN001
            progress.phase_finish(phase_name)

    return _Monitor()


def make_calibrator(trt: Any, kind: str, batches: Iterator[Mapping[str, np.ndarray]], input_name: str,
                    shape: Sequence[int], cache_path: Path, device: str = "cuda") -> Any:
    """IInt8EntropyCalibrator2 (entropy) or IInt8MinMaxCalibrator (minmax), fed one frame per batch into one
    preallocated CUDA buffer of the calibration profile's fixed `shape`; the cache is read/written atomically."""
    import torch

    base = {"entropy": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}[kind]
    buffer = torch.empty(tuple(shape), dtype=torch.float32, device=device)
    cache_path = Path(cache_path)

    class _Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.count = 0

        def get_batch_size(self) -> int:
            return 1  # explicit batch: the batch axis is part of the tensor shape

        def get_batch(self, names):  # noqa: ANN001
            batch = next(batches, None)
            if batch is None:
                log.info("calibration (%s): %d frames fed", input_name, self.count)
                return None
            arr = batch[input_name]
            if tuple(arr.shape) != tuple(shape):
                raise ValueError(f"calibration batch for {input_name} has shape {arr.shape}, expected {tuple(shape)}")
            buffer.copy_(torch.from_numpy(arr))
            torch.cuda.synchronize(buffer.device)  # TensorRT reads the buffer on its own stream
            self.count += 1
            return [int(buffer.data_ptr())] * len(names)

        def read_calibration_cache(self):  # noqa: ANN201
            if cache_path.is_file():
                log.info("calibration: reusing cache %s", cache_path)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:  # noqa: ANN001
            atomic_write_bytes(cache_path, bytes(cache))
            log.info("calibration: cache written to %s", cache_path)

    return _Calibrator()


def _load_timing_cache(trt_config: Any, path: Path | None) -> Any | None:
    if path is None:
        return None
    blob = path.read_bytes() if path.is_file() else b""
    cache = trt_config.create_timing_cache(blob)
    if not trt_config.set_timing_cache(cache, False):
        log.warning("timing cache %s does not fit this TensorRT/GPU; starting an empty one", path)
        cache = trt_config.create_timing_cache(b"")
        trt_config.set_timing_cache(cache, False)
    elif blob:
        log.info("timing cache: loaded %s (%d bytes)", path, len(blob))
    return cache


def _save_timing_cache(trt_config: Any, path: Path | None) -> None:
    if path is None:
        return
    cache = trt_config.get_timing_cache()
    if cache is not None:
        atomic_write_bytes(path, bytes(cache.serialize()))


def build_engine(onnx_path: Path, engine_path: Path, graph: str, settings: BuilderSettings,
                 profiles: Mapping[str, Mapping[str, Sequence[int]]], workspace_mb: int,
                 timing_cache: Path | None = None, calibrator: Any | None = None,
                 calibration_shape: Sequence[int] | None = None, device: str = "cuda") -> Path:
    """Parse, configure per `settings`, build, and write the serialized engine atomically to `engine_path`."""
    import torch

    trt = _trt()
    with torch.cuda.device(torch.device(device)):
        builder = trt.Builder(_logger())
        net_flags = 0
        for name in settings.network_flags:
            net_flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        network = builder.create_network(net_flags)
        parse_onnx(trt, network, onnx_path)
        config = builder.create_builder_config()
        if settings.workspace_api == "set_memory_pool_limit":
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        else:
            config.max_workspace_size = int(workspace_mb) << 20
        for name in settings.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, name))
        if settings.default_device_type == "DLA":
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = int(settings.dla_core)
        if profiles:
            profile = builder.create_optimization_profile()
            for name, s in profiles.items():
                profile.set_shape(name, tuple(s["min"]), tuple(s["opt"]), tuple(s["max"]))
            config.add_optimization_profile(profile)
        if calibrator is not None:
            config.int8_calibrator = calibrator
            if profiles and calibration_shape is not None:
                # Calibration runs at one fixed shape: the calibration profile's OPT (MIN/MAX are overwritten).
                calib = builder.create_optimization_profile()
                for name in profiles:
                    shp = tuple(calibration_shape)
                    calib.set_shape(name, shp, shp, shp)
                config.set_calibration_profile(calib)
        _load_timing_cache(config, timing_cache)
        progress = _BuildProgress(graph)
        monitor = _progress_monitor(trt, progress)
        if monitor is not None:
            config.progress_monitor = monitor
        log.info("TensorRT %s: building %s from %s (flags %s, network flags %s, workspace %d MiB)", trt.__version__,
                 Path(engine_path).name, Path(onnx_path).name, ",".join(settings.builder_flags) or "none",
                 ",".join(settings.network_flags) or "none", workspace_mb)
        with progress:
            plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ArtifactError(f"TensorRT could not build {graph} from {onnx_path} (see the TensorRT log above); "
                                f"try precision fp32_tf32 or a larger export.tensorrt.workspace_mb")
        _save_timing_cache(config, timing_cache)
        atomic_write_bytes(Path(engine_path), bytes(plan))
        log.info("TensorRT: wrote %s in %.1f s", engine_path, time.monotonic() - progress.t0)
    return Path(engine_path)


# --------------------------------------------------------------------------------------------- the export step
def build_engines(cfg: DeployConfig, bundle: Bundle, onnx: Mapping[str, Path], samples: Sequence[Any] = (),
                  reference: Any = None, device: str = "cuda", allow_build: bool = True) -> dict[str, Path]:
    """Engines for both graphs in the bundle: reuse a cached engine when its key matches, otherwise say why and
    build it. `reference` (an FP32 CenterPointPipeline) feeds INT8 calibration; `samples` are its frames."""
    import torch

    trt = _trt()
    if not torch.cuda.is_available():
        raise BackendUnavailableError("building or checking TensorRT engines needs a CUDA GPU, but torch sees none")
    device = device if str(device).startswith("cuda") else "cuda"
    env = trt_environment(device)
    plan = build_plan(cfg, bundle, onnx=onnx, env=env)
    if plan["problems"]:
        raise ConfigError(plan["problems"][0])
    t = cfg.export.tensorrt
    out: dict[str, Path] = {}
    for graph in GRAPHS:
        g = plan["graphs"][graph]
        engine_path = Path(g["engine"])
        if g["reusable"]:
            log.info("TensorRT %s: reusing %s (%s)", graph, engine_path.name, g["reason"])
            out[graph] = engine_path
            continue
        if not allow_build:
            raise ArtifactError(f"bundle {bundle.root}: the {graph} engine cannot be reused: {g['reason']}; run "
                                f"export with export.mode trt or both to rebuild it")
        log.info("TensorRT %s: building %s because %s", graph, engine_path.name, g["reason"])
        onnx_path = Path(onnx[graph])
        validate_profiles(onnx_path, g["profiles"])
        from .tensorrt_plan import _parse_version, has_qdq

        settings = builder_settings(t.precision, _parse_version(trt.__version__), has_qdq(onnx_path), t.dla_core)
        calibrator = calib_shape = None
        if settings.int8_calibration:
            calib_shape = g["calibration"]["batch_shape"]
            if reference is None or not samples:
                raise ConfigError("INT8 calibration needs frames and the FP32 reference pipeline: set "
                                  "data.num_frames > 0 (export.tensorrt.calibration_frames are taken from them)")
            frames = min(t.calibration_frames, len(samples))
            if frames < t.calibration_frames:
                log.warning("calibration: %d frames available (data.num_frames), %d asked for "
                            "(export.tensorrt.calibration_frames)", frames, t.calibration_frames)
            fp = calibration_fingerprint(cfg, graph, g["onnx_sha256"], env.trt_version, calib_shape)
            batches = calibration_batches(samples, reference, frames, calib_shape[0], graphs=(graph,))
            calibrator = make_calibrator(trt, t.calibrator, batches, GRAPH_INPUT[graph], calib_shape,
                                         calibration_cache_path(bundle, graph, t.calibrator, fp), device)
        build_engine(onnx_path, engine_path, graph, settings, g["profiles"], t.workspace_mb,
                     timing_cache=Path(g["timing_cache"]), calibrator=calibrator, calibration_shape=calib_shape,
                     device=device)
        key = g["_key"]
        bundle.record(engine_artifact(graph), engine_path, key.digest(), kind="tensorrt", graph=graph,
                      precision=t.precision, trt_version=env.trt_version, gpu=env.gpu_name,
                      compute_capability=env.compute_capability, builder_flags=list(settings.builder_flags),
                      network_flags=list(settings.network_flags), onnx=onnx_path.name, cache_key=key.fields())
        bundle.save()  # an engine build takes minutes: record it at once, not only at the end of the job
        out[graph] = engine_path
    return out
