"""One way to load a model: ``load_pipeline(source, backend, device)`` for every family, backend and consumer.

The export job's evaluation, ``replay-eval`` (offline and real time), bench and every node call it, so a model is
found, checked and assembled the same way wherever it runs. ``select_runners`` is the repository's one
backend-selection function.

Sources:
- a bundle folder (``manifest.json``): its config, its ONNX files (hash-checked), its TensorRT engines (cache key
  checked against this TensorRT and GPU), and for PyTorch the checkpoint it recorded (hash-checked);
- a deploy config (YAML path or ``DeployConfig``): its checkpoint; ONNX from ``export.onnx_source``, from the
  bundle in its ``work_dir`` when that was exported from the same inputs, or else exported once into an ONNX cache
  keyed by the same input hash the export job uses; TensorRT engines from the ``work_dir`` bundle;
- a checkpoint (path or ``package://``): the model config it stores, ONNX through the cache.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .backends.base import GraphRunner, RunnerSet
from .bundle import MANIFEST, Bundle, ensure_writable_dir, sha256_file, sha256_json
from .config import BACKENDS, DeployConfig, load_deploy_config, validate
from .errors import ArtifactError, BackendUnavailableError, CheckpointError, ConfigError
from .families import ModelFamily, get_family, qdq_artifact

log = logging.getLogger(__name__)

# onnxruntime_int8: the bundle's INT8 Q/DQ graphs (export.quantize) on ONNX Runtime, same runners as onnxruntime
ORT_BACKENDS = ("onnxruntime", "onnxruntime_int8")
EXPORTER_VERSION = 1  # bump when the export code changes what it writes: invalidates cached ONNX artifacts
Source = str | Path | DeployConfig | None
# (engine path, graph spec, device) -> runner; the default builds TrtGraphRunner (a test may pass a stand-in)
EngineRunnerFactory = Callable[[Path, Any, str], GraphRunner]


# --------------------------------------------------------------------------------------------- helpers
def package_version() -> str:
    try:
        return importlib.metadata.version("awml_deploy_core")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def resolve_checkpoint(uri: str) -> Path:
    """``package://awml_deploy_core/<path>`` (the shipped checkpoints) or a filesystem path."""
    if uri.startswith("package://"):
        package, _, rel = uri[len("package://"):].partition("/")
        try:
            path = Path(str(importlib.resources.files(package) / rel))
        except ModuleNotFoundError:
            raise ConfigError(f"checkpoint: package '{package}' of {uri} is not installed") from None
    else:
        path = Path(uri).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (config key 'checkpoint')")
    return path


def onnx_inputs_hash(family: ModelFamily, cfg: DeployConfig, checkpoint_sha256: str) -> str:
    """What shapes the exported graphs: checkpoint bytes, the model config minus post-processing, opset,
    simplification, exporter and torch versions. The export job and the ONNX cache key on the same hash."""
    arch = cfg.model.model_dump(mode="json", exclude=set(family.postprocess_keys))
    return sha256_json({"checkpoint": checkpoint_sha256, "model": arch, "opset": cfg.export.opset,
                        "simplify": cfg.export.simplify, "exporter": EXPORTER_VERSION, "torch": torch.__version__})


def export_graphs(family: ModelFamily, cfg: DeployConfig, model: Any, bundle: Bundle, checkpoint_sha256: str
                  ) -> dict[str, Path]:
    """The family's ONNX graphs in ``bundle``: reused when made from the same inputs (hash-checked), else exported
    and recorded (the manifest is written by the caller's ``bundle.save``)."""
    names = family.onnx_file_names(cfg.model)
    key = onnx_inputs_hash(family, cfg, checkpoint_sha256)
    if all(bundle.reusable(k, key) for k in names):
        log.info("ONNX: reusing %s (same checkpoint, config and exporter; hashes verified)", ", ".join(names.values()))
        return {k: bundle.path(k) for k in names}
    log.info("ONNX: exporting %s (opset %d) into %s", ", ".join(names.values()), cfg.export.opset, bundle.root)
    graphs = family.export_onnx(model, cfg.model, bundle.root, cfg.export.opset, cfg.export.simplify,
                                package_version())
    for k, g in graphs.items():
        bundle.record(k, g.path, key, kind="onnx", opset=cfg.export.opset, simplified=g.simplified,
                      simplify_error=g.simplify_error)
    return {k: g.path for k, g in graphs.items()}


def default_onnx_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "awml_deploy" / "onnx"


def _cached_onnx(family: ModelFamily, cfg: DeployConfig, model: Any, checkpoint: Path,
                 cache_root: str | Path | None) -> dict[str, Path]:
    """ONNX of ``model`` in ``<cache>/<model name>-<input hash>``, exported there once. The folder is a bundle
    (manifest with config and checkpoint), so it can later be used as a source itself."""
    sha = sha256_file(checkpoint)
    key = onnx_inputs_hash(family, cfg, sha)
    root = ensure_writable_dir(Path(cache_root or default_onnx_cache()).expanduser() / f"{cfg.model.name}-{key[:12]}")
    bundle = Bundle.open(root)
    paths = export_graphs(family, cfg, model, bundle, sha)
    bundle.save(config=cfg.model_dump(mode="json"), checkpoint={"path": str(checkpoint), "sha256": sha})
    return paths


def bundle_config(bundle: Bundle) -> DeployConfig:
    data = bundle.manifest.get("config")
    if not isinstance(data, dict):
        raise ArtifactError(f"bundle {bundle.root}: manifest.json has no 'config' section; re-run awml-deploy export")
    return validate(DeployConfig, data, source=f"{bundle.root / MANIFEST}: config")


def bundle_checkpoint(bundle: Bundle) -> Path:
    """The checkpoint the bundle was exported from, after checking it still has the recorded sha256."""
    entry = bundle.manifest.get("checkpoint") or {}
    path = Path(entry.get("path", ""))
    if not entry.get("path") or not path.is_file():
        raise ArtifactError(f"bundle {bundle.root}: the checkpoint it was exported from ({entry.get('path')}) is not "
                            f"there; give a checkpoint explicitly (the pytorch backend runs the checkpoint)")
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        raise ArtifactError(f"bundle {bundle.root}: checkpoint {path} changed since the export (sha256 differs from "
                            f"the manifest); re-run export or give a checkpoint explicitly")
    return path


# --------------------------------------------------------------------------------------------- sources
@dataclass
class ResolvedSource:
    cfg: DeployConfig
    bundle: Bundle | None  # a bundle to take artifacts from (the source itself, or the config's work_dir)
    is_bundle: bool  # the source IS a bundle: its artifacts are authoritative (no checkpoint needed)
    checkpoint: str | None  # checkpoint URI the model weights come from (None: the bundle's recorded one)
    description: str


def _looks_like_checkpoint(path: Path) -> bool:
    return path.suffix in (".pth", ".pt", ".ckpt")


def resolve_source(source: Source, checkpoint: str | None = None) -> ResolvedSource:
    """Bundle folder, deploy config (path or object), or checkpoint (path or package:// URI; None = shipped)."""
    if isinstance(source, DeployConfig):
        return ResolvedSource(source, _work_dir_bundle(source), False, checkpoint or source.checkpoint, "config")
    if source is None or (isinstance(source, str) and source.startswith("package://")):
        uri = checkpoint or str(source or get_family("centerpoint").default_checkpoint)
        return _checkpoint_source(uri)
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise ConfigError(f"{path}: a folder source must be an export bundle, but it holds no {MANIFEST} (make "
                              f"one with `awml-deploy export CONFIG --work-dir {path}`)")
        bundle = Bundle.open(path)
        return ResolvedSource(bundle_config(bundle), bundle, True, checkpoint, f"bundle {path}")
    if path.suffix in (".yaml", ".yml"):
        cfg = load_deploy_config(path)
        return ResolvedSource(cfg, _work_dir_bundle(cfg), False, checkpoint or cfg.checkpoint, f"config {path}")
    if _looks_like_checkpoint(path) or not path.exists():
        return _checkpoint_source(str(checkpoint or path))
    raise ConfigError(f"{path}: not a bundle folder, a deploy config (.yaml) or a checkpoint (.pth)")


def _checkpoint_source(uri: str) -> ResolvedSource:
    """A checkpoint names no family: the family is the one whose model config accepts the stored ``model_config``
    (strict configs: another family's keys are errors), CenterPoint's first."""
    from pydantic import ValidationError

    from .families import FAMILIES
    from .models.checkpoint import _read

    path = resolve_checkpoint(uri)
    stored = _read(path, "cpu").get("model_config")
    if not isinstance(stored, dict):
        from .models.checkpoint import stored_model_config

        stored_model_config(path)  # raises its one-line error
    for name in FAMILIES:
        family = get_family(name)
        try:
            model = family.model_config.model_validate(stored)
        except ValidationError:
            continue
        cfg = DeployConfig(family=family.name, model=model, checkpoint=str(path))
        return ResolvedSource(cfg, None, False, str(path), f"checkpoint {path}")
    from .models.checkpoint import stored_model_config

    stored_model_config(path)  # fits no family: CenterPoint's one-line reason (the historical default)
    raise CheckpointError(f"{path}: its stored model_config fits no model family ({', '.join(FAMILIES)})")


def _work_dir_bundle(cfg: DeployConfig) -> Bundle | None:
    root = Path(cfg.work_dir)
    return Bundle.open(root) if (root / MANIFEST).is_file() else None


# --------------------------------------------------------------------------------------------- runners
def backend_precision(backend: str, cfg: DeployConfig, onnx: Mapping[str, Path] | None = None) -> str:
    """The precision a backend runs at (InferenceStats.precision, verify.tolerances key): ``pytorch.precision`` for
    PyTorch, fp32 for ONNX Runtime, int8 for its Q/DQ variant, the engines' for TensorRT (int8 when the graphs
    carry Q/DQ nodes)."""
    if backend == "pytorch":
        return cfg.pytorch.precision
    if backend == "onnxruntime_int8":
        return "int8"
    if backend != "tensorrt":
        return "fp32"
    from .export.tensorrt_policy import has_qdq, verification_precision

    qdq = bool(onnx) and all(Path(p).is_file() for p in onnx.values()) and any(has_qdq(p) for p in onnx.values())
    return verification_precision(cfg.export.tensorrt.precision, qdq)


def find_engines(family: ModelFamily, cfg: DeployConfig, bundle: Bundle, env: Any = None) -> dict[str, Path]:
    """The bundle's TensorRT engine per graph, each checked against its recorded cache key (ONNX hash, TensorRT
    version, GPU, precision, profiles, builder settings); a mismatch is an ArtifactError naming the reason."""
    from .export.tensorrt_plan import build_plan, engine_artifact, trt_environment

    env = env or trt_environment(cfg.device)
    plan = build_plan(cfg, bundle, env=env)
    engines: dict[str, Path] = {}
    for g in family.graphs(cfg.model):
        entry = plan.graphs[g.key]
        if engine_artifact(g.key) not in bundle.artifacts:
            raise ArtifactError(f"bundle {bundle.root}: no TensorRT {g.key} engine; build them with `awml-deploy "
                                f"export CONFIG --mode trt` (export.tensorrt.precision {cfg.export.tensorrt.precision})")
        if not entry.reusable:
            raise ArtifactError(f"bundle {bundle.root}: the TensorRT {g.key} engine does not fit here: "
                                f"{entry.reason}; rebuild it with `awml-deploy export CONFIG --mode trt`")
        engines[g.key] = bundle.verify(engine_artifact(g.key))
    return engines


def _trt_runner(path: Path, spec: Any, device: str) -> GraphRunner:
    from .backends.tensorrt_backend import TrtGraphRunner

    return TrtGraphRunner(path, f"tensorrt:{spec.name}", device, pad_rows_to_min=spec.rows_independent)


@dataclass
class _Model:
    """The PyTorch model, loaded at most once per load_pipeline call."""

    family: ModelFamily
    cfg: DeployConfig
    checkpoint: Path | None
    module: Any = None

    def get(self) -> Any:
        if self.module is None:
            if self.checkpoint is None:
                raise CheckpointError("no checkpoint to build the PyTorch model from; give one")
            self.module, _ = self.family.load_checkpoint(self.checkpoint, self.cfg.model)
        return self.module


def torch_runners(model: Any, model_cfg: Any, device: str = "cpu", family: str = "centerpoint",
                  precision: str = "fp32", cuda_graph: bool = False) -> RunnerSet:
    """The family's graphs of an in-memory PyTorch model (training, tests, calibration references), at
    ``precision`` (fp32 | tf32 | fp16); ``cuda_graph`` captures the graphs of static shape (CUDA only)."""
    from .backends.torch_backend import TorchGraphRunner, check_torch_options

    check_torch_options(precision, cuda_graph, device)  # before moving weights anywhere
    fam = get_family(family)
    modules = fam.torch_modules(model)
    return RunnerSet({s.key: TorchGraphRunner(modules[s.key], f"pytorch:{s.name}", s.inputs, s.output_names, device,
                                              precision, cuda_graph)
                      for s in fam.graphs(model_cfg)}, "pytorch")


def ort_providers(cfg: DeployConfig, device: str) -> list[str]:
    """ONNX Runtime execution providers: ``onnxruntime.providers`` when set explicitly, else chosen from the device
    (cuda -> CUDA then CPU). A GPU provider this onnxruntime lacks is one line naming onnxruntime-gpu."""
    o = cfg.onnxruntime
    if "providers" in o.model_fields_set or not device.startswith("cuda"):
        providers = list(o.providers)
    else:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    gpu = [p for p in providers if p != "CPUExecutionProvider"]
    if gpu:
        from .backends.onnxruntime_backend import _ort

        available = set(_ort().get_available_providers())
        missing = [p for p in gpu if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"onnxruntime on device {device}: this onnxruntime has no {', '.join(missing)} (available: "
                f"{', '.join(sorted(available))}); install onnxruntime-gpu instead of onnxruntime, or use device cpu")
    return providers


def ort_runners(family: ModelFamily, cfg: DeployConfig, onnx: Mapping[str, Path], providers: Sequence[str],
                backend: str = "onnxruntime") -> RunnerSet:
    """The family's graphs on ONNX Runtime from ``onnx`` (graph key -> file), with ``cfg.onnxruntime``'s settings:
    the one construction of ONNX Runtime runners (fp32 and Q/DQ alike)."""
    from .backends.onnxruntime_backend import OrtGraphRunner

    o = cfg.onnxruntime
    return RunnerSet({s.key: OrtGraphRunner(onnx[s.key], f"{backend}:{s.name}", list(providers),
                                            o.graph_optimization, o.intra_op_threads, o.allow_spinning)
                      for s in family.graphs(cfg.model)}, backend)


def onnx_pipeline(model_cfg: Any, onnx: Mapping[str, Path], device: str = "cpu", family: str = "centerpoint") -> Any:
    """A pipeline on ONNX Runtime from given graph files (fp32 or Q/DQ), default ONNX Runtime settings: for the
    quantizer's calibration and guard, which hold files rather than a bundle."""
    cfg = DeployConfig(family=family, model=model_cfg)
    fam = get_family(family)
    return fam.make_pipeline(model_cfg, ort_runners(fam, cfg, onnx, ort_providers(cfg, device)), device)


def qdq_onnx(family: ModelFamily, cfg: DeployConfig, bundle: Bundle | None, fp32: Mapping[str, Path]
             ) -> dict[str, Path]:
    """The bundle's INT8 Q/DQ graphs (hash-checked), the fp32 file for a graph left unquantized; ArtifactError when
    the bundle has none, or when they were made from other fp32 graphs than ``fp32``."""
    where = f"bundle {bundle.root}" if bundle is not None else "this source (no export bundle)"
    keys = [s.key for s in family.graphs(cfg.model)]
    if bundle is None or not any(qdq_artifact(k) in bundle.artifacts for k in keys):
        raise ArtifactError(f"{where} has no INT8 Q/DQ graphs ({', '.join(qdq_artifact(k) for k in keys)}); run "
                            f"export with export.quantize.enabled: true (export.mode onnx or both)")
    out: dict[str, Path] = {}
    for k in keys:
        if qdq_artifact(k) not in bundle.artifacts:
            out[k] = Path(fp32[k])
            continue
        out[k] = bundle.verify(qdq_artifact(k))
        made_from = bundle.artifacts[qdq_artifact(k)].get("fp32_sha256")
        if made_from and k in fp32 and sha256_file(fp32[k]) != made_from:
            raise ArtifactError(f"{where}: {out[k].name} was quantized from another {k} ONNX than "
                                f"{Path(fp32[k]).name} (fp32 sha256 {made_from[:12]} recorded); re-run export with "
                                f"export.quantize.enabled: true")
    return out


def select_runners(family: ModelFamily, backend: str, cfg: DeployConfig, device: str, *, model: _Model,
                   bundle: Bundle | None, bundle_is_source: bool, onnx_cache_dir: str | Path | None = None,
                   engine_runner: EngineRunnerFactory | None = None, trt_env: Any = None
                   ) -> tuple[RunnerSet, dict[str, Any]]:
    """THE backend choice: the family's graphs on ``backend``, and where their artifacts came from."""
    specs = family.graphs(cfg.model)
    if backend == "pytorch":
        from .backends.torch_backend import check_torch_options

        p = cfg.pytorch
        graph = p.cuda_graph if p.cuda_graph is not None else torch.device(device).type == "cuda"
        check_torch_options(p.precision, graph, device)  # before loading the checkpoint
        return (torch_runners(model.get(), cfg.model, device, family.name, p.precision, graph),
                {"checkpoint": str(model.checkpoint or "the given in-memory model"), "precision": p.precision,
                 "cuda_graph": graph})
    providers = ort_providers(cfg, device) if backend in ORT_BACKENDS else []  # before any export
    if backend == "onnxruntime_int8" and (bundle is None or not any(qdq_artifact(s.key) in bundle.artifacts
                                                                    for s in specs)):
        qdq_onnx(family, cfg, bundle, {})  # the one-line "no Q/DQ graphs" error, before any export
    onnx = _onnx_for(family, cfg, model, bundle, bundle_is_source, onnx_cache_dir)
    if backend in ORT_BACKENDS:
        if backend == "onnxruntime_int8":
            onnx = qdq_onnx(family, cfg, bundle, onnx)
        return (ort_runners(family, cfg, onnx, providers, backend),
                {"onnx": {k: str(p) for k, p in onnx.items()}, "providers": providers})
    if backend == "tensorrt":
        if engine_runner is None:
            from .backends.tensorrt_backend import import_tensorrt

            import_tensorrt()
        if bundle is None:
            raise ConfigError("the tensorrt backend runs the engines of an export bundle: give the bundle folder "
                              "(the work_dir of `awml-deploy export CONFIG --mode both`) or a config whose work_dir "
                              "holds one")
        from .export.tensorrt_plan import onnx_paths

        engines = find_engines(family, cfg, bundle, trt_env)
        onnx = {**onnx, **onnx_paths(cfg, bundle)[0]} if cfg.export.quantize.enabled else onnx  # Q/DQ built from
        make = engine_runner or _trt_runner
        runners = {s.key: make(engines[s.key], s, device) for s in specs}
        return RunnerSet(runners, backend), {"onnx": {k: str(p) for k, p in onnx.items()},
                                             "engines": {k: str(p) for k, p in engines.items()}}
    raise ConfigError(f"backend: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def onnx_source_paths(family: ModelFamily, cfg: DeployConfig) -> dict[str, Path] | None:
    """The graphs in ``export.onnx_source`` (each must exist), or None when it is not set."""
    if not cfg.export.onnx_source:
        return None
    src = Path(cfg.export.onnx_source)
    paths = {k: src / n for k, n in family.onnx_file_names(cfg.model).items()}
    for p in paths.values():
        if not p.is_file():
            raise ArtifactError(f"{p}: ONNX file named by export.onnx_source not found")
    return paths


def _onnx_for(family: ModelFamily, cfg: DeployConfig, model: _Model, bundle: Bundle | None, bundle_is_source: bool,
              onnx_cache_dir: str | Path | None) -> dict[str, Path]:
    names = family.onnx_file_names(cfg.model)
    source = onnx_source_paths(family, cfg)
    if source is not None:
        return source
    if bundle is not None and bundle_is_source:
        return {k: bundle.verify(k) for k in names}
    if bundle is not None and model.checkpoint is not None:
        key = onnx_inputs_hash(family, cfg, sha256_file(model.checkpoint))
        if all(bundle.reusable(k, key) for k in names):
            return {k: bundle.path(k) for k in names}
        log.info("bundle %s holds no ONNX exported from this checkpoint and config: using the ONNX cache",
                 bundle.root)
    if model.checkpoint is None:
        raise ArtifactError("no ONNX to run: give an export bundle, or a checkpoint to export from")
    return _cached_onnx(family, cfg, model.get(), model.checkpoint, onnx_cache_dir)


# --------------------------------------------------------------------------------------------- loader
def check_backend(backend: str) -> None:
    """Fail early, with the one line every entry point shares, when ``backend`` is unknown or its runtime is missing
    (TensorRT: ``import_tensorrt``'s line) — before bags are read or processes started."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "tensorrt":
        from .backends.tensorrt_backend import import_tensorrt

        import_tensorrt()


@dataclass
class LoadedPipeline:
    """A ready pipeline and what it was built from; ``close()`` (or ``with``) releases the backend."""

    pipeline: Any
    family: ModelFamily
    cfg: DeployConfig
    backend: str
    precision: str
    device: str
    source: str
    artifacts: dict[str, Any] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        """What ran, for reports: the checkpoint (path, sha256) when one was read, and the ONNX files."""
        out: dict[str, Any] = dict(self.artifacts.get("checkpoint_file") or {})
        if "onnx" in self.artifacts:
            out["onnx"] = self.artifacts["onnx"]
        if "engines" in self.artifacts:
            out["engines"] = self.artifacts["engines"]
        if "providers" in self.artifacts:
            out["onnxruntime_providers"] = self.artifacts["providers"]
        if self.backend == "pytorch":
            out["pytorch"] = {"precision": self.precision, "cuda_graph": bool(self.artifacts.get("cuda_graph"))}
        return out

    def close(self) -> None:
        self.pipeline.close()

    def __enter__(self) -> "LoadedPipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_pipeline(source: Source, backend: str = "onnxruntime", device: str | None = None, *,
                  checkpoint: str | None = None, precision: str | None = None, engine_precision: str | None = None,
                  model_overrides: Mapping[str, Any] | None = None, bundle: Bundle | None = None,
                  model: Any = None, onnx_cache_dir: str | Path | None = None,
                  engine_runner: EngineRunnerFactory | None = None, trt_env: Any = None) -> LoadedPipeline:
    """The family's pipeline on ``backend`` from a bundle, a deploy config or a checkpoint (see the module doc).

    ``checkpoint`` overrides the source's weights; ``precision`` selects the PyTorch backend's (fp32 | tf32 | fp16,
    over ``pytorch.precision``); ``engine_precision`` (TensorRT policy) must match the engines' when given;
    ``model_overrides`` change post-processing keys of the model config (e.g. ``score_threshold``); ``bundle`` (its
    artifacts are then taken as they are, hash-checked) and ``model`` let the export job pass what it holds.
    """
    if engine_runner is None:
        check_backend(backend)
    elif backend not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    src = resolve_source(source, checkpoint)
    cfg = src.cfg
    family = get_family(cfg.family)
    if bundle is not None:  # the export job's own bundle: its artifacts are the ones to run
        src.bundle, src.is_bundle = bundle, True
    if model_overrides:
        cfg = _override_model(cfg, family, model_overrides)
    device = device or cfg.device
    if backend == "tensorrt" and not device.startswith("cuda"):
        device = "cuda"
    if device.startswith("cuda") and backend != "tensorrt" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device '{device}' asked for, but torch sees no CUDA device here; use "
                                      f"device cpu")
    if precision is not None and backend == "pytorch" and precision != cfg.pytorch.precision:
        from .backends.torch_backend import PRECISIONS

        if precision not in PRECISIONS:
            raise ConfigError(f"precision: the pytorch backend runs {', '.join(PRECISIONS)}, not {precision!r}")
        cfg = cfg.model_copy(update={"pytorch": cfg.pytorch.model_copy(update={"precision": precision})})
    if engine_precision is not None and backend == "tensorrt" and engine_precision != cfg.export.tensorrt.precision:
        raise ConfigError(f"precision: the bundle's engines were built with precision "
                          f"{cfg.export.tensorrt.precision!r}, not {engine_precision!r}; ask for "
                          f"{cfg.export.tensorrt.precision!r} or rebuild the engines")
    ckpt = _checkpoint_path(src, backend) if model is None else None  # a given model is used as it is
    m = _Model(family, cfg, ckpt, model)
    runners, artifacts = select_runners(family, backend, cfg, device, model=m, bundle=src.bundle,
                                        bundle_is_source=src.is_bundle, onnx_cache_dir=onnx_cache_dir,
                                        engine_runner=engine_runner, trt_env=trt_env)
    if m.checkpoint is not None:
        artifacts["checkpoint_file"] = {"path": str(m.checkpoint), "sha256": sha256_file(m.checkpoint)}
    pipeline = family.make_pipeline(cfg.model, runners, device)
    onnx = {k: Path(p) for k, p in artifacts.get("onnx", {}).items()}
    return LoadedPipeline(pipeline, family, cfg, backend, backend_precision(backend, cfg, onnx), device,
                          src.description, artifacts)


def _checkpoint_path(src: ResolvedSource, backend: str) -> Path | None:
    """The weights' file when the backend needs them: PyTorch always; ONNX Runtime when there is no bundle."""
    if src.is_bundle and src.checkpoint is None:
        return bundle_checkpoint(src.bundle) if backend == "pytorch" else None
    if src.checkpoint is None:
        return None
    return resolve_checkpoint(src.checkpoint)


def _override_model(cfg: DeployConfig, family: ModelFamily, overrides: Mapping[str, Any]) -> DeployConfig:
    wrong = sorted(set(overrides) - set(family.postprocess_keys))
    if wrong:
        raise ConfigError(f"model overrides: {', '.join(wrong)} would change the exported graphs; only "
                          f"post-processing keys may be overridden ({', '.join(sorted(family.postprocess_keys))})")
    model = validate(family.model_config, {**cfg.model.model_dump(), **overrides}, source="model overrides")
    return cfg.model_copy(update={"model": model})
