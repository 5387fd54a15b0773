"""What the TensorRT export would build, and whether a cached engine may be reused: pure, no `tensorrt` needed.

Everything here runs where TensorRT is absent (CI, laptops): the engine cache key and its field-by-field
invalidation, the optimisation-profile check against the ONNX graph (read with `onnx` only), and the typed build
plan (`TrtPlan`, one `GraphPlan` per graph) that `tensorrt_build` executes, the loader checks engines against and
`tensorrt_dry_run` prints. Written once for every model family: graphs, names and ONNX files come from the family
declaration, dynamic-shape profiles and INT8 calibration from its `TrtRules` (`ModelFamily.tensorrt`).

A cached engine is reused only when everything that shapes a plan is unchanged: the ONNX bytes, the TensorRT
version, the GPU (name and compute capability), the precision, the optimisation profiles and the other builder
settings. Each of those is stored in the engine's manifest entry (`record_engine`), so a mismatch is reported by
name ("built by TensorRT 8.6.1, this is TensorRT 10.3.0") and the engine is rebuilt, never used silently.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle, sha256_file, sha256_json
from ..config import DeployConfig
from ..errors import ConfigError
from ..families import GraphSpec, ModelFamily, get_family, qdq_artifact, qdq_file_name
from .tensorrt_policy import BuilderSettings, builder_settings, has_qdq, load_onnx_graph, parse_version

log = logging.getLogger(__name__)

TRT_BUILD_CODE_VERSION = 1  # bump when tensorrt_build changes what it builds: invalidates cached engines
NOT_INSTALLED = "not installed"
UNKNOWN = "unknown"
API = ("direct tensorrt Python API (OnnxParser, build_serialized_network; runtime: set_tensor_address + "
       "execute_async_v3 from TensorRT 8.5, bindings + execute_async_v2 before)")
CALIBRATORS = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}
QUANT_KEY = "quantization_recipe"  # engine_extra's key for the Q/DQ recipe hash (export.quantize)
RECIPE_METADATA = "quantization_recipe_sha256"  # the Q/DQ ONNX's metadata key holding the same hash


# --------------------------------------------------------------------------------------------- names
def engine_file_names(cfg: DeployConfig) -> dict[str, str]:
    """Autoware's default engine paths sit next to the ONNX files with the same stem: `<onnx stem>.engine`."""
    names = get_family(cfg.family).onnx_file_names(cfg.model)
    return {k: Path(v).with_suffix(".engine").name for k, v in names.items()}


def engine_artifact(graph: str) -> str:
    """The engine's key in the bundle manifest."""
    return f"trt_{graph}"


def cache_dir(bundle: Bundle) -> Path:
    return bundle.root / "tensorrt_cache"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "gpu"


def timing_cache_path(bundle: Bundle, trt_version: str, gpu_name: str, compute_capability: str) -> Path:
    """One timing cache per TensorRT version and GPU: TensorRT rejects a cache from another version or device."""
    return cache_dir(bundle) / f"timing_trt{trt_version}_{_slug(gpu_name)}_sm{compute_capability.replace('.', '')}.cache"


def calibration_fingerprint(cfg: DeployConfig, graph: str, onnx_sha256: str, trt_version: str,
                            shape: Sequence[int]) -> str:
    """What an INT8 calibration cache depends on: graph, data, frame count, batch shape, calibrator, TensorRT."""
    t = cfg.export.tensorrt
    return sha256_json({"graph": graph, "onnx": onnx_sha256, "trt": trt_version, "calibrator": t.calibrator,
                        "frames": t.calibration_frames, "shape": list(shape),
                        "data": cfg.data.model_dump(mode="json"), "preprocess": cfg.model.model_dump(mode="json")})


def calibration_cache_path(bundle: Bundle, graph: str, calibrator: str, fingerprint: str) -> Path:
    return cache_dir(bundle) / f"calib_{graph}_{calibrator}_{fingerprint[:12]}.cache"


# --------------------------------------------------------------------------------------------- environment
@dataclass(frozen=True)
class TrtEnvironment:
    """The TensorRT version and GPU here; None where unknown (TensorRT not installed, no CUDA device)."""

    trt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None

    @property
    def complete(self) -> bool:
        return None not in (self.trt_version, self.gpu_name, self.compute_capability)


def trt_environment(device: str = "cuda") -> TrtEnvironment:
    """Detect TensorRT and the CUDA device without failing when either is missing."""
    version = None
    try:
        import tensorrt

        version = str(tensorrt.__version__)
    except ImportError:
        pass
    except Exception as e:  # noqa: BLE001 - a broken install reads as "not installed", with the reason logged
        log.warning("tensorrt is present but does not import (%s: %s); treating it as not installed",
                    type(e).__name__, e)
    gpu = cc = None
    try:
        import torch

        if torch.cuda.is_available():
            dev = torch.device(device if str(device).startswith("cuda") else "cuda")
            gpu = torch.cuda.get_device_name(dev)
            major, minor = torch.cuda.get_device_capability(dev)
            cc = f"{major}.{minor}"
    except Exception as e:  # noqa: BLE001 - no GPU information is not an error for planning
        log.debug("no CUDA device information: %s", e)
    return TrtEnvironment(version, gpu, cc)


# --------------------------------------------------------------------------------------------- cache key
def _plain(obj: Any) -> Any:
    """JSON-normal form (tuples -> lists, sorted keys) so a key read back from the manifest compares equal."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


@dataclass(frozen=True)
class CacheKey:
    """Everything that shapes a TensorRT plan. Stored field by field in the engine's manifest entry."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        return _plain({"onnx_sha256": self.onnx_sha256, "trt_version": self.trt_version, "gpu_name": self.gpu_name,
                       "compute_capability": self.compute_capability, "precision": self.precision,
                       "profiles": self.profiles, "extra": self.extra})

    def digest(self) -> str:
        return sha256_json(self.fields())


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: str, precision: str,
                     profiles: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """The hex digest identifying one engine build (see CacheKey)."""
    return CacheKey(onnx_sha256, trt_version, gpu_name, compute_capability, precision, dict(profiles),
                    dict(extra or {})).digest()


def format_profiles(p: Any) -> str:
    """Profiles in one line: `name min [..] opt [..] max [..]`, or that the graph has static shapes."""
    if not p:
        return "none (static shapes)"
    parts = []
    for name, s in sorted(p.items()):
        parts.append(f"{name} min {s.get('min')} opt {s.get('opt')} max {s.get('max')}" if isinstance(s, dict)
                     else f"{name} {s}")
    return ", ".join(parts)


def key_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Why an engine built under `recorded` does not fit `current`: one phrase per changed field."""
    r, c = _plain(dict(recorded)), _plain(dict(current))
    out: list[str] = []
    if r.get("trt_version") != c.get("trt_version"):
        out.append(f"built by TensorRT {r.get('trt_version')}, this is TensorRT {c.get('trt_version')} "
                   f"(engines are not portable across TensorRT versions)")
    if (r.get("gpu_name"), r.get("compute_capability")) != (c.get("gpu_name"), c.get("compute_capability")):
        out.append(f"built for {r.get('gpu_name')} (compute capability {r.get('compute_capability')}), this GPU is "
                   f"{c.get('gpu_name')} (compute capability {c.get('compute_capability')})")
    if r.get("onnx_sha256") != c.get("onnx_sha256"):
        out.append(f"the ONNX changed (sha256 {str(r.get('onnx_sha256'))[:12]} -> {str(c.get('onnx_sha256'))[:12]})")
    if r.get("precision") != c.get("precision"):
        out.append(f"precision changed ({r.get('precision')} -> {c.get('precision')})")
    if r.get("profiles") != c.get("profiles"):
        out.append(f"optimisation profiles changed ({format_profiles(r.get('profiles'))} -> "
                   f"{format_profiles(c.get('profiles'))})")
    re_, ce = r.get("extra") or {}, c.get("extra") or {}
    for k in sorted(set(re_) | set(ce)):
        if re_.get(k) != ce.get(k):
            if k == QUANT_KEY:
                a, b = (str(v)[:12] if v else "none (not quantized)" for v in (re_.get(k), ce.get(k)))
                out.append(f"quantization recipe changed ({a} -> {b})")
            else:
                out.append(f"{k} changed ({re_.get(k)} -> {ce.get(k)})")
    return out


def check_cached_engine(bundle: Bundle, graph: str, key: CacheKey) -> tuple[bool, str]:
    """(reusable, reason). Reusable only when the engine file is intact and every key field matches."""
    entry = bundle.artifacts.get(engine_artifact(graph))
    if not entry:
        return False, f"no {graph} engine in the bundle yet"
    path = bundle.root / entry["file"]
    if not path.exists():
        return False, f"engine file {path.name} is missing"
    if sha256_file(path) != entry.get("sha256"):
        return False, f"{path.name} does not match its manifest hash (it changed after it was built)"
    recorded = entry.get("cache_key")
    if not isinstance(recorded, dict):
        return False, f"the manifest entry of {path.name} records no cache key (built by an older tool)"
    diffs = key_differences(recorded, key.fields())
    if diffs:
        return False, "; ".join(diffs)
    if entry.get("inputs_hash") != key.digest():
        return False, f"the manifest's key hash for {path.name} does not match its recorded fields"
    return True, "same ONNX, TensorRT version, GPU, precision, profiles and builder settings; engine hash verified"


def record_engine(bundle: Bundle, graph: "GraphPlan", path: Path | None = None) -> None:
    """Record a built engine in the manifest the way `check_cached_engine` reads it back: its sha256, the key's
    digest as `inputs_hash` and every key field as `cache_key` (the caller saves the manifest)."""
    key, settings = graph.cache_key, graph.settings
    if key is None or settings is None:
        raise ConfigError(f"{graph.key}: no cache key to record the engine under ({graph.reason})")
    bundle.record(engine_artifact(graph.key), Path(path or graph.engine), key.digest(), kind="tensorrt",
                  graph=graph.key, precision=key.precision, trt_version=key.trt_version, gpu=key.gpu_name,
                  compute_capability=key.compute_capability, builder_flags=list(settings.builder_flags),
                  network_flags=list(settings.network_flags), onnx=Path(graph.onnx).name, cache_key=key.fields())


# --------------------------------------------------------------------------------------------- profiles
def graph_profiles(family: ModelFamily, cfg: DeployConfig, graph: str) -> dict[str, dict[str, list[int]]]:
    """The graph's optimisation profiles from the family's rule; none for a family with static shapes only."""
    return family.tensorrt.profiles(cfg, graph) if family.tensorrt is not None else {}


def _graph_inputs(model: Any) -> dict[str, list[int | str]]:
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        out[i.name] = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
                       for d in i.type.tensor_type.shape.dim]
    return out


def validate_profiles(onnx_path: Path, profile: Mapping[str, Mapping[str, Sequence[int]]],
                      axis_names: Mapping[str, Mapping[int, str]] | None = None) -> None:
    """Raise ConfigError when the profile contradicts the graph: unknown input, rank, a static dim the profile
    changes, min/opt/max order, or a dynamic input without a profile. ``axis_names`` (the family's) name axes and
    their config keys in the messages. Reads the ONNX with `onnx` only."""
    path = Path(onnx_path)
    inputs = _graph_inputs(load_onnx_graph(path))
    where = f"{path.name}"
    names = axis_names or {}
    for name, shapes in profile.items():
        if name not in inputs:
            raise ConfigError(f"{where}: optimisation profile names input '{name}', but the graph's inputs are "
                              f"{sorted(inputs)}")
        dims = inputs[name]
        mn, opt, mx = (list(shapes.get(k, [])) for k in ("min", "opt", "max"))
        for label, s in (("min", mn), ("opt", opt), ("max", mx)):
            if len(s) != len(dims):
                raise ConfigError(f"{where}: profile {label} shape {s} for '{name}' has rank {len(s)}, the graph's "
                                  f"input has rank {len(dims)} ({dims})")
        for axis, d in enumerate(dims):
            lo, mid, hi = mn[axis], opt[axis], mx[axis]
            what = names.get(name, {}).get(axis, f"axis {axis}")
            if isinstance(d, int) and d > 0:
                if not lo == mid == hi == d:
                    raise ConfigError(
                        f"{where}: '{name}' {what} is static {d} in the graph, but the profile asks for "
                        f"min {lo} / opt {mid} / max {hi}: export the ONNX with this model config, or fix the "
                        f"model config")
            elif not 1 <= lo <= mid <= hi:
                raise ConfigError(f"{where}: '{name}' dynamic {what} ({d}) needs 1 <= min <= opt <= max, got "
                                  f"{lo}, {mid}, {hi}")
    for name, dims in inputs.items():
        if any(not (isinstance(d, int) and d > 0) for d in dims) and name not in profile:
            raise ConfigError(f"{where}: input '{name}' has dynamic dims {dims} but no optimisation profile is set")


def check_graph_profiles(family: ModelFamily, spec: GraphSpec, onnx_path: Path,
                         profile: Mapping[str, Mapping[str, Sequence[int]]]) -> list[str]:
    """validate_profiles plus the family's own check; returns non-fatal notes, raises ConfigError on a problem."""
    rules = family.tensorrt
    validate_profiles(onnx_path, profile, rules.axis_names if rules else None)
    notes = rules.check_profiles(Path(onnx_path), spec.key, profile) if rules else []
    if spec.rows_independent:
        for name, s in profile.items():
            if s["min"][0] > 1:
                notes.append(f"inputs with fewer than {s['min'][0]} rows of '{name}' are zero-padded to "
                             f"{s['min'][0]} rows by the runner (each row is computed independently) and the "
                             f"padding is cut from the output")
    return notes


# --------------------------------------------------------------------------------------------- calibration
def fit_rows(x: np.ndarray, n: int) -> np.ndarray:
    """Exactly `n` rows: evenly spaced rows when there are more, the rows repeated in order when fewer.

    Repeating real rows (rather than zero-padding) keeps the activation statistics those of real data:
    the pipeline never feeds an all-zero row at run time.
    """
    v = x.shape[0]
    if v == 0:
        raise ValueError("no rows to fit")
    idx = np.linspace(0, v - 1, n).round().astype(np.int64) if v >= n else np.arange(n) % v
    return np.ascontiguousarray(x[idx], dtype=np.float32)


def calibration_shape(family: ModelFamily, cfg: DeployConfig, spec: GraphSpec) -> list[int] | None:
    """The fixed shape INT8 calibration feeds the graph: the family's rule, else its sole input's static shape."""
    if family.tensorrt is not None:
        return list(family.tensorrt.calibration_shape(cfg, spec.key))
    shape = spec.inputs[0].shape if len(spec.inputs) == 1 else None
    return list(shape) if shape is not None and all(isinstance(d, int) for d in shape) else None


# --------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class CalibrationPlan:
    """Implicit INT8: which calibrator, fed how many frames of which fixed shape, cached where."""

    input_name: str
    calibrator: str  # the TensorRT class, e.g. IInt8EntropyCalibrator2
    frames: int
    batch_shape: list[int]
    data: str
    cache: Path | None  # None until the ONNX hash and TensorRT version are known

    def to_dict(self) -> dict[str, Any]:
        return {"input_name": self.input_name, "calibrator": self.calibrator, "frames": self.frames,
                "batch_shape": list(self.batch_shape), "data": self.data,
                "cache": str(self.cache) if self.cache else "pending (named after ONNX hash and TensorRT version)"}


@dataclass
class GraphPlan:
    """One graph's engine: where from and to, how it is built per TensorRT version, and whether the cached one fits."""

    key: str  # the family's graph key (manifest key trt_<key>)
    name: str  # the graph's name, e.g. pts_voxel_encoder
    onnx: Path
    onnx_sha256: str | None  # None when the ONNX does not exist (yet); onnx_status says why
    onnx_status: str
    engine: Path
    profiles: dict[str, dict[str, list[int]]]
    workspace_mb: int
    dla_core: int | None
    explicit_quantization: bool
    builder: dict[str, BuilderSettings | None]  # per TensorRT version label; None: the policy is not valid there
    calibration: CalibrationPlan | None
    timing_cache: Path | None  # None until the TensorRT version and GPU are known
    quantization: str  # "none", or explicit quantization (Q/DQ) with its recipe hash
    quantization_recipe: str | None  # the Q/DQ recipe hash (export.quantize); None: not quantized or not known yet
    profile_check: str
    cache_key: CacheKey | None
    reusable: bool
    reason: str
    notes: list[str] = field(default_factory=list)

    @property
    def settings(self) -> BuilderSettings | None:
        """The builder settings to build with: the first TensorRT version's that is valid."""
        return next((s for s in self.builder.values() if s is not None), None)

    @property
    def tolerance(self) -> str | None:
        return self.settings.tolerance if self.settings else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "name": self.name, "onnx": str(self.onnx),
            "onnx_sha256": self.onnx_sha256 or self.onnx_status, "engine": str(self.engine),
            "profiles": self.profiles, "workspace_mb": self.workspace_mb, "dla_core": self.dla_core,
            "explicit_quantization": self.explicit_quantization, "quantization": self.quantization,
            "quantization_recipe": self.quantization_recipe,
            "builder": {k: None if s is None else {"flags": list(s.builder_flags),
                                                   "network_flags": list(s.network_flags),
                                                   "strongly_typed": s.strongly_typed,
                                                   "workspace_api": s.workspace_api,
                                                   "default_device_type": s.default_device_type,
                                                   "notes": list(s.notes)}
                        for k, s in self.builder.items()},
            "tolerance": self.tolerance,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "timing_cache": str(self.timing_cache) if self.timing_cache else
            "pending (named after TensorRT version and GPU)",
            "profile_check": self.profile_check, "cache_key": self.cache_key.digest() if self.cache_key else None,
            "reusable": self.reusable, "reason": self.reason, "notes": list(self.notes),
        }


@dataclass
class TrtPlan:
    """The full TensorRT build plan: the environment, what the export mode does, and one GraphPlan per graph."""

    tensorrt_version: str
    gpu: str
    compute_capability: str
    mode: str
    builds_engines: bool
    reuses_engines: bool
    onnx_source: str
    precision: str
    graphs: dict[str, GraphPlan]
    problems: list[str]
    api: str = API

    def to_dict(self) -> dict[str, Any]:
        return {"tensorrt_version": self.tensorrt_version, "gpu": self.gpu,
                "compute_capability": self.compute_capability, "api": self.api, "mode": self.mode,
                "builds_engines": self.builds_engines, "reuses_engines": self.reuses_engines,
                "onnx_source": self.onnx_source, "precision": self.precision,
                "graphs": {k: g.to_dict() for k, g in self.graphs.items()}, "problems": list(self.problems)}


def onnx_paths(cfg: DeployConfig, bundle: Bundle) -> tuple[dict[str, Path], str]:
    """Where the engines' ONNX comes from: export.onnx_source when set, else the bundle (work_dir); with
    export.quantize the bundle's INT8 Q/DQ graphs instead (those this run's export makes, in modes onnx/both)."""
    paths, source = _fp32_onnx_paths(cfg, bundle)
    if not cfg.export.quantize.enabled:
        return paths, source
    names = get_family(cfg.family).onnx_file_names(cfg.model)
    qdq = {k: bundle.root / bundle.artifacts[qdq_artifact(k)]["file"] for k in names
           if qdq_artifact(k) in bundle.artifacts}
    if cfg.export.mode in ("onnx", "both"):  # made again by this run: planned where export.quantize writes them
        qdq = {k: bundle.root / qdq_file_name(n) for k, n in names.items() if k in cfg.export.quantize.graphs}
    return {**paths, **qdq}, f"{source}; INT8 Q/DQ graphs ({', '.join(qdq) or 'none yet'}) from the bundle"


def _fp32_onnx_paths(cfg: DeployConfig, bundle: Bundle) -> tuple[dict[str, Path], str]:
    names = get_family(cfg.family).onnx_file_names(cfg.model)
    if cfg.export.mode in ("trt", "none") and cfg.export.onnx_source:
        src = Path(cfg.export.onnx_source)
        return {k: src / n for k, n in names.items()}, f"export.onnx_source ({src})"
    if cfg.export.mode in ("onnx", "both"):
        return {k: bundle.root / n for k, n in names.items()}, f"exported by this run into the bundle ({bundle.root})"
    return {k: bundle.root / n for k, n in names.items()}, f"the bundle in work_dir ({bundle.root})"


def quantization_recipe(bundle: Bundle, graph: str, onnx_path: Path) -> str | None:
    """The Q/DQ recipe hash of the graph's ONNX: the bundle's record when it is that file, else the file's own
    metadata (written by export.quantize); None for a graph that is not (yet) a quantized file."""
    entry = bundle.artifacts.get(qdq_artifact(graph))
    if entry and (bundle.root / entry["file"]).resolve() == Path(onnx_path).resolve():
        return entry.get("inputs_hash")
    if not Path(onnx_path).is_file():
        return None
    meta = {p.key: p.value for p in load_onnx_graph(Path(onnx_path)).metadata_props}
    return meta.get(RECIPE_METADATA)


def engine_extra(cfg: DeployConfig, settings: BuilderSettings, calibration: CalibrationPlan | None,
                 recipe: str | None = None) -> dict[str, Any]:
    """The cache key's `extra` field: builder settings beyond precision and profiles, and the Q/DQ recipe hash of
    an explicitly quantized graph (absent otherwise, so keys of unquantized engines stay as they were)."""
    t = cfg.export.tensorrt
    return {**({QUANT_KEY: recipe} if recipe else {}),
            "workspace_mb": t.workspace_mb, "dla_core": t.dla_core, "builder_flags": sorted(settings.builder_flags),
            "network_flags": sorted(settings.network_flags),
            "calibration": None if calibration is None else
            {"calibrator": calibration.calibrator, "frames": calibration.frames,
             "batch_shape": list(calibration.batch_shape), "data": cfg.data.model_dump(mode="json")},
            "builder_code": TRT_BUILD_CODE_VERSION}


def _builder_per_version(t: Any, env: TrtEnvironment, qdq: bool) -> tuple[dict[str, BuilderSettings | None],
                                                                          list[str]]:
    """Settings for this TensorRT, or for both generations (JetPack 5 / 6) when it is not installed."""
    versions = [env.trt_version] if env.trt_version else ["8.6", "10.3"]
    settings: dict[str, BuilderSettings | None] = {}
    invalid: list[str] = []
    for v in versions:
        label = v if env.trt_version else f"TensorRT {v} ({'JetPack 5' if v.startswith('8') else 'JetPack 6'})"
        try:
            settings[label] = builder_settings(t.precision, parse_version(v), qdq, t.dla_core)
        except ConfigError as e:
            settings[label] = None
            invalid.append(f"{label}: {e}")
    return settings, invalid


def _graph_plan(family: ModelFamily, cfg: DeployConfig, bundle: Bundle, spec: GraphSpec, onnx_path: Path,
                engine: Path, env: TrtEnvironment, problems: list[str]) -> GraphPlan:
    t = cfg.export.tensorrt
    exists = onnx_path.is_file()
    onnx_sha = sha256_file(onnx_path) if exists else None
    # A Q/DQ file export.quantize makes in this run counts as explicitly quantized before it exists.
    planned_qdq = not exists and cfg.export.quantize.enabled and onnx_path.stem.endswith("_int8")
    qdq = has_qdq(onnx_path) if exists else planned_qdq
    recipe = quantization_recipe(bundle, spec.key, onnx_path) if qdq and exists else None
    if planned_qdq:
        quantization = "explicit quantization (Q/DQ), recipe pending (export.quantize makes it in this run)"
    elif qdq:
        quantization = f"explicit quantization (Q/DQ), recipe {recipe[:12] if recipe else 'unknown'}"
    else:
        quantization = "none"
    profiles = graph_profiles(family, cfg, spec.key)
    notes: list[str] = []
    builder, invalid = _builder_per_version(t, env, qdq)
    if invalid and all(s is None for s in builder.values()):
        problems.append(f"{spec.key}: {invalid[0]}")
    else:
        notes += [f"not buildable on {m}" for m in invalid]
    first = next((s for s in builder.values() if s is not None), None)
    calibration = None
    if first is not None and first.int8_calibration:
        shape = calibration_shape(family, cfg, spec)
        if family.tensorrt is None or shape is None:
            problems.append(f"{spec.key}: family '{family.name}' declares no INT8 calibration data; use precision "
                            f"int8 with a Q/DQ ONNX, or another precision")
        else:
            cache = None
            if env.trt_version and onnx_sha:
                fp = calibration_fingerprint(cfg, spec.key, onnx_sha, env.trt_version, shape)
                cache = calibration_cache_path(bundle, spec.key, t.calibrator, fp)
            calibration = CalibrationPlan(
                spec.inputs[0].name, CALIBRATORS[t.calibrator], t.calibration_frames, shape,
                f"{cfg.data.source} frames (same preprocessing as evaluation)"
                + ("" if spec.key == family.graphs(cfg.model)[0].key else
                   f"; {spec.key} inputs = the FP32 reference pipeline's earlier graphs"), cache)
    timing = (timing_cache_path(bundle, env.trt_version, env.gpu_name, env.compute_capability)
              if env.complete else None)
    if exists:
        try:
            notes += check_graph_profiles(family, spec, onnx_path, profiles)
            profile_check = "ok"
        except ConfigError as e:
            profile_check = f"FAILED: {e}"
            problems.append(str(e))
    else:
        profile_check = "pending (no ONNX yet)"
    key = None
    if env.complete and onnx_sha and first is not None:
        key = CacheKey(onnx_sha, env.trt_version, env.gpu_name, env.compute_capability, t.precision, profiles,
                       engine_extra(cfg, first, calibration, recipe))
        reusable, reason = check_cached_engine(bundle, spec.key, key)
    else:
        why = [w for w, missing in (("TensorRT is not installed here", not env.trt_version),
                                     ("no CUDA GPU is visible", not env.gpu_name),
                                     ("the ONNX does not exist yet", not onnx_sha),
                                     ("the precision policy is not valid for this TensorRT", first is None))
               if missing]
        reusable, reason = False, "cannot be checked: " + ", ".join(why)
    return GraphPlan(
        key=spec.key, name=spec.name, onnx=onnx_path, onnx_sha256=onnx_sha,
        onnx_status=onnx_sha or ("exported by this run" if cfg.export.mode in ("onnx", "both")
                                 else "missing: run export with export.mode onnx first"),
        engine=engine, profiles=profiles, workspace_mb=t.workspace_mb, dla_core=t.dla_core,
        explicit_quantization=qdq, builder=builder, calibration=calibration, timing_cache=timing,
        quantization=quantization, quantization_recipe=recipe,
        profile_check=profile_check, cache_key=key, reusable=reusable, reason=reason, notes=notes)


def build_plan(cfg: DeployConfig, bundle: Bundle, onnx: Mapping[str, Path] | None = None,
               env: TrtEnvironment | None = None) -> TrtPlan:
    """The full TensorRT build plan for the config's family, per graph: settings, profiles, caches, calibrator,
    cache key and reuse."""
    env = env or trt_environment(cfg.device)
    family = get_family(cfg.family)
    paths, source = (dict(onnx), "given") if onnx is not None else onnx_paths(cfg, bundle)
    engines = engine_file_names(cfg)
    uses_trt = "tensorrt" in set(cfg.evaluate.backends) | {b for p in cfg.verify.scenarios for b in p}
    problems: list[str] = []
    graphs = {spec.key: _graph_plan(family, cfg, bundle, spec, Path(paths[spec.key]), bundle.root / engines[spec.key],
                                    env, problems)
              for spec in family.graphs(cfg.model)}
    return TrtPlan(
        tensorrt_version=env.trt_version or NOT_INSTALLED, gpu=env.gpu_name or UNKNOWN,
        compute_capability=env.compute_capability or UNKNOWN, mode=cfg.export.mode,
        builds_engines=cfg.export.mode in ("trt", "both"), reuses_engines=cfg.export.mode == "none" and uses_trt,
        onnx_source=source, precision=cfg.export.tensorrt.precision, graphs=graphs, problems=problems)
