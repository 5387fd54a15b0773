"""ONNX -> TensorRT engine, one per graph, with the direct `tensorrt` Python API (TensorRT 8.5/8.6 and 10.x).

Why the direct API and not Polygraphy: the surface is small (parser, builder config, one profile, a calibrator,
a timing cache), every call below is checked against NVIDIA's API docs for both generations, and owning it
keeps the version differences visible in one pure function (`tensorrt_policy.builder_settings`) instead of inside
another library's compatibility layer; JetPack images ship `tensorrt` but not Polygraphy.

What to build comes from the typed plan (`tensorrt_plan.build_plan`); this module only executes it. `tensorrt` is
imported inside functions only: this module imports where TensorRT is absent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle, atomic_write_bytes
from ..config import DeployConfig
from ..errors import ArtifactError, BackendUnavailableError, ConfigError
from ..families import get_family
from .tensorrt_plan import GraphPlan, build_plan, record_engine, trt_environment
from .tensorrt_policy import BuilderSettings

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 10.0


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
    """Engines for every graph of the family in the bundle: reuse a cached engine when its key matches, otherwise
    say why and build it. `reference` (the family's FP32 pipeline) feeds INT8 calibration; `samples` are its
    frames."""
    import torch

    _trt()
    if not torch.cuda.is_available():
        raise BackendUnavailableError("building or checking TensorRT engines needs a CUDA GPU, but torch sees none")
    device = device if str(device).startswith("cuda") else "cuda"
    plan = build_plan(cfg, bundle, onnx=onnx, env=trt_environment(device))
    if plan.problems:
        raise ConfigError(plan.problems[0])
    out: dict[str, Path] = {}
    for key, g in plan.graphs.items():
        if g.reusable:
            log.info("TensorRT %s: reusing %s (%s)", key, g.engine.name, g.reason)
            out[key] = g.engine
            continue
        if not allow_build:
            raise ArtifactError(f"bundle {bundle.root}: the {key} engine cannot be reused: {g.reason}; run "
                                f"export with export.mode trt or both to rebuild it")
        log.info("TensorRT %s: building %s because %s", key, g.engine.name, g.reason)
        settings = g.settings
        if settings is None or g.cache_key is None:
            raise ConfigError(f"{g.onnx}: the {key} engine cannot be built: {g.reason}")
        calibrator = _calibrator(cfg, g, settings, samples, reference, device)
        build_engine(g.onnx, g.engine, key, settings, g.profiles, g.workspace_mb, timing_cache=g.timing_cache,
                     calibrator=calibrator, calibration_shape=g.calibration.batch_shape if calibrator else None,
                     device=device)
        record_engine(bundle, g)
        bundle.save()  # an engine build takes minutes: record it at once, not only at the end of the job
        out[key] = g.engine
    return out


def _calibrator(cfg: DeployConfig, g: GraphPlan, settings: BuilderSettings, samples: Sequence[Any], reference: Any,
                device: str) -> Any | None:
    """The INT8 calibrator for an implicitly quantized build, fed by the family's calibration batches; else None."""
    if not settings.int8_calibration:
        return None
    t, c = cfg.export.tensorrt, g.calibration
    rules = get_family(cfg.family).tensorrt
    if c is None or rules is None or c.cache is None:
        raise ConfigError(f"{g.key}: INT8 calibration is not planned ({g.reason}); use another precision")
    if reference is None or not samples:
        raise ConfigError("INT8 calibration needs frames and the FP32 reference pipeline: set "
                          "data.num_frames > 0 (export.tensorrt.calibration_frames are taken from them)")
    frames = min(t.calibration_frames, len(samples))
    if frames < t.calibration_frames:
        log.warning("calibration: %d frames available (data.num_frames), %d asked for "
                    "(export.tensorrt.calibration_frames)", frames, t.calibration_frames)
    batches = rules.calibration_batches(samples, reference, frames, c.batch_shape, (g.key,))
    return make_calibrator(_trt(), t.calibrator, batches, c.input_name, c.batch_shape, c.cache, device)
