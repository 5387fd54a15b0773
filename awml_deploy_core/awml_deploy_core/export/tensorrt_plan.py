"""What the TensorRT export would build, and whether a cached engine may be reused: pure, no `tensorrt` needed.

Everything here runs where TensorRT is absent (CI, laptops): the engine cache key and its field-by-field
invalidation, the optimisation-profile check against the ONNX graph (read with `onnx` only), the INT8 calibration
batches (the same preprocessing as evaluation), and the `--dry-run` plan. `tensorrt_build` does the building.

A cached engine is reused only when everything that shapes a plan is unchanged: the ONNX bytes, the TensorRT
version, the GPU (name and compute capability), the precision, the optimisation profiles and the other builder
settings. Each of those is stored in the engine's manifest entry, so a mismatch is reported by name
("built by TensorRT 8.6.1, this is TensorRT 10.3.0") and the engine is rebuilt, never used silently.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bundle import Bundle, sha256_file, sha256_json
from ..config import CenterPointModelConfig, DeployConfig
from ..errors import ConfigError
from .onnx_export import onnx_file_names

if TYPE_CHECKING:
    from rich.console import Console

    from ..pipelines.centerpoint.pipeline import CenterPointPipeline

log = logging.getLogger(__name__)

GRAPHS = ("encoder", "head")
GRAPH_INPUT = {"encoder": "input_features", "head": "spatial_features"}
TRT_BUILD_CODE_VERSION = 1  # bump when tensorrt_build changes what it builds: invalidates cached engines
NOT_INSTALLED = "not installed"
UNKNOWN = "unknown"


# --------------------------------------------------------------------------------------------- names
def engine_file_names(model_cfg: CenterPointModelConfig) -> dict[str, str]:
    """Autoware's default engine paths sit next to the ONNX files with the same stem."""
    return {k: Path(v).with_suffix(".engine").name for k, v in onnx_file_names(model_cfg).items()}


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


def _fmt_profiles(p: Any) -> str:
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
        out.append(f"optimisation profiles changed ({_fmt_profiles(r.get('profiles'))} -> "
                   f"{_fmt_profiles(c.get('profiles'))})")
    re_, ce = r.get("extra") or {}, c.get("extra") or {}
    for k in sorted(set(re_) | set(ce)):
        if re_.get(k) != ce.get(k):
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


# --------------------------------------------------------------------------------------------- profiles
def encoder_profiles(cfg: DeployConfig) -> dict[str, dict[str, list[int]]]:
    """min/opt/max for the encoder's dynamic num_voxels; P and F come from the model config."""
    t, m = cfg.export.tensorrt, cfg.model
    p, f = m.max_points_per_voxel, m.encoder_in_features
    return {"input_features": {"min": [t.num_voxels_min, p, f], "opt": [t.num_voxels_opt, p, f],
                               "max": [t.num_voxels_max, p, f]}}


def graph_profiles(cfg: DeployConfig, graph: str) -> dict[str, dict[str, list[int]]]:
    return encoder_profiles(cfg) if graph == "encoder" else {}  # the head's input is static


def _onnx_model(onnx_path: Path):
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise ConfigError(f"{path}: ONNX file not found; run export with export.mode onnx (or both) first")
    return onnx.load(str(path), load_external_data=False)


def has_qdq(onnx_path: Path) -> bool:
    """True when the graph is explicitly quantized (QuantizeLinear/DequantizeLinear nodes)."""
    model = _onnx_model(onnx_path)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _graph_inputs(model) -> dict[str, list[int | str]]:
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        out[i.name] = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
                       for d in i.type.tensor_type.shape.dim]
    return out


def _model_max_voxels(model) -> int | None:
    for p in model.metadata_props:
        if p.key == "model_config":
            try:
                return int(json.loads(p.value)["max_voxels"])
            except (ValueError, KeyError, TypeError):
                return None
    return None


def validate_profiles(onnx_path: Path, profile: Mapping[str, Mapping[str, Sequence[int]]]) -> None:
    """Raise ConfigError when the profile contradicts the graph: unknown input, rank, static dims (P, F), order,
    a dynamic input without a profile, or num_voxels_max below the model's max_voxels (dense frames would not
    fit the engine). Reads the ONNX with `onnx` only."""
    path = Path(onnx_path)
    model = _onnx_model(path)
    inputs = _graph_inputs(model)
    where = f"{path.name}"
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
            if isinstance(d, int) and d > 0:
                if not lo == mid == hi == d:
                    what = {1: "max_points_per_voxel (P)", 2: "encoder_in_features (F)"}.get(axis, f"axis {axis}") \
                        if name == "input_features" else f"axis {axis}"
                    raise ConfigError(
                        f"{where}: '{name}' {what} is static {d} in the graph, but the profile asks for "
                        f"min {lo} / opt {mid} / max {hi}: export the ONNX with this model config, or fix "
                        f"model.max_points_per_voxel / model.encoder_in_features")
            elif not 1 <= lo <= mid <= hi:
                raise ConfigError(f"{where}: '{name}' dynamic axis {axis} ({d}) needs 1 <= min <= opt <= max, got "
                                  f"{lo}, {mid}, {hi} (export.tensorrt.num_voxels_min/opt/max)")
        if name == "input_features":
            max_voxels = _model_max_voxels(model)
            if max_voxels is not None and mx[0] < max_voxels:
                raise ConfigError(
                    f"{where}: export.tensorrt.num_voxels_max={mx[0]} is below the model's max_voxels={max_voxels} "
                    f"recorded in the ONNX: frames with more pillars would not fit the engine; raise "
                    f"num_voxels_max to at least {max_voxels} or lower model.max_voxels")
    for name, dims in inputs.items():
        if any(not (isinstance(d, int) and d > 0) for d in dims) and name not in profile:
            raise ConfigError(f"{where}: input '{name}' has dynamic dims {dims} but no optimisation profile is set")


def profile_notes(onnx_path: Path, profile: Mapping[str, Mapping[str, Sequence[int]]]) -> list[str]:
    """Non-fatal remarks (e.g. a profile larger than the pipeline can ever feed)."""
    notes = []
    if "input_features" in profile:
        try:
            max_voxels = _model_max_voxels(_onnx_model(onnx_path))
        except ConfigError:
            return notes
        mx = profile["input_features"]["max"][0]
        if max_voxels is not None and mx > max_voxels:
            notes.append(f"num_voxels_max {mx} exceeds model.max_voxels {max_voxels}: the pipeline never feeds more "
                         f"than {max_voxels} pillars (the extra range costs memory only)")
        mn = profile["input_features"]["min"][0]
        if mn > 1:
            notes.append(f"frames with fewer than {mn} pillars are zero-padded to {mn} rows by the runner "
                         f"(each pillar is encoded independently) and the padding is cut from the output")
    return notes


# --------------------------------------------------------------------------------------------- calibration
def fit_rows(x: np.ndarray, n: int) -> np.ndarray:
    """Exactly `n` rows: evenly spaced rows when there are more, the rows repeated in order when fewer.

    Repeating real pillars (rather than zero-padding) keeps the activation statistics those of real data:
    the pipeline never feeds an all-zero pillar at run time.
    """
    v = x.shape[0]
    if v == 0:
        raise ValueError("no rows to fit")
    idx = np.linspace(0, v - 1, n).round().astype(np.int64) if v >= n else np.arange(n) % v
    return np.ascontiguousarray(x[idx], dtype=np.float32)


def calibration_batches(samples: Iterable[Any], pipeline: "CenterPointPipeline", num_frames: int, num_voxels: int,
                        graphs: Sequence[str] = GRAPHS) -> Iterator[dict[str, np.ndarray]]:
    """What the INT8 calibrators are fed, one dict per frame, from the SAME preprocessing as evaluation.

    encoder: `input_features` = pipeline.preprocess(points).input_features fitted to `num_voxels` rows
    (the calibration profile's fixed shape). head: `spatial_features` = the reference pipeline's encoder output
    scattered to the BEV canvas (computed from the real, unfitted pillars). Frames without pillars are skipped
    (the pipeline skips the graphs for them too). Deterministic: same samples -> same batches.
    """
    import torch

    done = 0
    for s in samples:
        if done >= num_frames:
            break
        pre = pipeline.preprocess(s.points)
        if pre.input_features.shape[0] == 0:
            log.debug("calibration: frame %s has no pillars; skipped", getattr(s, "token", "?"))
            continue
        batch: dict[str, np.ndarray] = {}
        if "encoder" in graphs:
            batch["input_features"] = fit_rows(pre.input_features.detach().float().cpu().numpy(), num_voxels)
        if "head" in graphs:
            with torch.inference_mode():
                spatial = pipeline.scatter(pipeline.encode(pre.input_features), pre.coords)
            batch["spatial_features"] = np.ascontiguousarray(spatial.detach().float().cpu().numpy())
        yield batch
        done += 1


# --------------------------------------------------------------------------------------------- plan
def onnx_paths(cfg: DeployConfig, bundle: Bundle) -> tuple[dict[str, Path], str]:
    """Where the engines' ONNX comes from: export.onnx_source when set, else the bundle (work_dir)."""
    names = onnx_file_names(cfg.model)
    if cfg.export.mode in ("trt", "none") and cfg.export.onnx_source:
        src = Path(cfg.export.onnx_source)
        return {k: src / n for k, n in names.items()}, f"export.onnx_source ({src})"
    if cfg.export.mode in ("onnx", "both"):
        return {k: bundle.root / n for k, n in names.items()}, f"exported by this run into the bundle ({bundle.root})"
    return {k: bundle.root / n for k, n in names.items()}, f"the bundle in work_dir ({bundle.root})"


def _parse_version(v: str) -> tuple[int, int]:
    parts = [int(p) for p in re.findall(r"\d+", v)[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def build_plan(cfg: DeployConfig, bundle: Bundle, onnx: Mapping[str, Path] | None = None,
               env: TrtEnvironment | None = None) -> dict[str, Any]:
    """The full TensorRT build plan, per graph: settings, profiles, caches, calibrator, cache key and reuse."""
    from .tensorrt_build import builder_settings  # pure; imported here to keep the modules' import order simple

    env = env or trt_environment(cfg.device)
    t = cfg.export.tensorrt
    paths, source = (dict(onnx), "given") if onnx is not None else onnx_paths(cfg, bundle)
    engines = engine_file_names(cfg.model)
    builds = cfg.export.mode in ("trt", "both")
    uses_trt = "tensorrt" in set(cfg.evaluate.backends) | {b for p in cfg.verify.scenarios for b in p}
    plan: dict[str, Any] = {
        "tensorrt_version": env.trt_version or NOT_INSTALLED,
        "gpu": env.gpu_name or UNKNOWN,
        "compute_capability": env.compute_capability or UNKNOWN,
        "api": "direct tensorrt Python API (OnnxParser, build_serialized_network; runtime: set_tensor_address + "
               "execute_async_v3 from TensorRT 8.5, bindings + execute_async_v2 before)",
        "mode": cfg.export.mode,
        "builds_engines": builds,
        "reuses_engines": cfg.export.mode == "none" and uses_trt,
        "onnx_source": source,
        "precision": t.precision,
        "graphs": {},
        "problems": [],
    }
    versions = [env.trt_version] if env.trt_version else ["8.6", "10.3"]
    for graph in GRAPHS:
        onnx_path = Path(paths[graph])
        exists = onnx_path.is_file()
        onnx_sha = sha256_file(onnx_path) if exists else None
        qdq = has_qdq(onnx_path) if exists else False
        profiles = graph_profiles(cfg, graph)
        g: dict[str, Any] = {
            "onnx": str(onnx_path),
            "onnx_sha256": onnx_sha or ("exported by this run" if cfg.export.mode in ("onnx", "both")
                                        else "missing: run export with export.mode onnx first"),
            "engine": str(bundle.root / engines[graph]),
            "profiles": profiles,
            "workspace_mb": t.workspace_mb,
            "dla_core": t.dla_core,
            "explicit_quantization": qdq,
            "notes": [],
        }
        settings, invalid = {}, []
        for v in versions:
            label = v if env.trt_version else f"TensorRT {v} ({'JetPack 5' if v.startswith('8') else 'JetPack 6'})"
            try:
                settings[label] = builder_settings(t.precision, _parse_version(v), qdq, t.dla_core)
            except ConfigError as e:
                settings[label] = None
                invalid.append(f"{label}: {e}")
        if invalid and all(s is None for s in settings.values()):
            plan["problems"].append(f"{graph}: {invalid[0]}")
        else:
            g["notes"] += [f"not buildable on {m}" for m in invalid]
        g["builder"] = {k: (None if s is None else {"flags": list(s.builder_flags),
                                                   "network_flags": list(s.network_flags),
                                                   "strongly_typed": s.strongly_typed,
                                                   "workspace_api": s.workspace_api,
                                                   "default_device_type": s.default_device_type,
                                                   "notes": list(s.notes)})
                        for k, s in settings.items()}
        first = next((s for s in settings.values() if s is not None), None)
        g["tolerance"] = first.tolerance if first else None
        calib_shape = ([t.num_voxels_opt, cfg.model.max_points_per_voxel, cfg.model.encoder_in_features]
                       if graph == "encoder" else
                       [1, cfg.model.pillar_channels, cfg.model.grid_size[1], cfg.model.grid_size[0]])
        if first is not None and first.int8_calibration:
            fp = calibration_fingerprint(cfg, graph, onnx_sha or "pending", env.trt_version or "pending", calib_shape)
            g["calibration"] = {
                "calibrator": {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}[t.calibrator],
                "frames": t.calibration_frames, "batch_shape": calib_shape,
                "data": f"{cfg.data.source} frames (same preprocessing as evaluation)"
                        + ("; head batches = FP32 reference encoder + scatter" if graph == "head" else ""),
                "cache": str(calibration_cache_path(bundle, graph, t.calibrator, fp))
                if env.trt_version and onnx_sha else "pending (named after ONNX hash and TensorRT version)",
            }
        else:
            g["calibration"] = None
        g["timing_cache"] = (str(timing_cache_path(bundle, env.trt_version, env.gpu_name, env.compute_capability))
                             if env.complete else "pending (named after TensorRT version and GPU)")
        if exists:
            try:
                validate_profiles(onnx_path, profiles)
                g["profile_check"] = "ok"
                g["notes"] += profile_notes(onnx_path, profiles)
            except ConfigError as e:
                g["profile_check"] = f"FAILED: {e}"
                plan["problems"].append(str(e))
        else:
            g["profile_check"] = "pending (no ONNX yet)"
        key = None
        if env.complete and onnx_sha and first is not None:
            key = CacheKey(onnx_sha, env.trt_version, env.gpu_name, env.compute_capability, t.precision, profiles,
                           engine_extra(cfg, first, g["calibration"]))
            g["cache_key"] = key.digest()
            g["reusable"], g["reason"] = check_cached_engine(bundle, graph, key)
        else:
            g["cache_key"] = None
            g["reusable"] = False
            why = []
            if not env.trt_version:
                why.append("TensorRT is not installed here")
            if not env.gpu_name:
                why.append("no CUDA GPU is visible")
            if not onnx_sha:
                why.append("the ONNX does not exist yet")
            if first is None:
                why.append("the precision policy is not valid for this TensorRT")
            g["reason"] = "cannot be checked: " + ", ".join(why)
        g["_key"] = key
        plan["graphs"][graph] = g
    return plan


def engine_extra(cfg: DeployConfig, settings: Any, calibration: Mapping[str, Any] | None) -> dict[str, Any]:
    """The cache key's `extra` field: builder settings beyond precision and profiles."""
    t = cfg.export.tensorrt
    return {"workspace_mb": t.workspace_mb, "dla_core": t.dla_core, "builder_flags": sorted(settings.builder_flags),
            "network_flags": sorted(settings.network_flags),
            "calibration": None if not calibration else {k: calibration[k] for k in ("calibrator", "frames",
                                                                                        "batch_shape")}
            | {"data": cfg.data.model_dump(mode="json")},
            "builder_code": TRT_BUILD_CODE_VERSION}


def print_dry_run(cfg: DeployConfig, bundle: Bundle, console: "Console") -> int:
    """Print the build plan (works without TensorRT); 0, or ConfigError after printing when the plan is invalid."""
    from rich.table import Table

    plan = build_plan(cfg, bundle)
    console.print("[bold]TensorRT build plan[/] (dry run: nothing is built)")
    console.print(f"TensorRT: {plan['tensorrt_version']}   GPU: {plan['gpu']} (compute capability "
                  f"{plan['compute_capability']})")
    console.print(f"export.mode: {plan['mode']}   precision: {plan['precision']}   ONNX: {plan['onnx_source']}")
    if not plan["builds_engines"] and not plan["reuses_engines"]:
        console.print(f"export.mode '{plan['mode']}' builds no TensorRT engines; the plan below is what modes "
                      f"'trt'/'both' would build.")
    console.print(f"API: {plan['api']}")
    for graph, g in plan["graphs"].items():
        table = Table(title=f"{graph}: {Path(g['onnx']).name} -> {Path(g['engine']).name}", show_header=False,
                      title_justify="left")
        table.add_column("item", style="bold")
        table.add_column("value")
        table.add_row("onnx sha256", str(g["onnx_sha256"])[:64])
        for label, b in g["builder"].items():
            if b is None:
                table.add_row(f"builder ({label})", "[red]precision not available (see note)[/]")
                continue
            flags = ", ".join(b["flags"]) or "none"
            net = ", ".join(b["network_flags"]) or "none"
            table.add_row(f"builder ({label})" if len(g["builder"]) > 1 else "builder flags",
                          f"{flags}; network: {net}; workspace via {b['workspace_api']}; device "
                          f"{b['default_device_type']}")
            for n in b["notes"]:
                table.add_row("", f"note: {n}")
        table.add_row("profiles", _fmt_profiles(g["profiles"]))
        table.add_row("profile check", g["profile_check"])
        table.add_row("workspace", f"{g['workspace_mb']} MiB")
        table.add_row("DLA", "off (GPU)" if g["dla_core"] is None else f"core {g['dla_core']} + GPU_FALLBACK")
        table.add_row("timing cache", g["timing_cache"])
        c = g["calibration"]
        table.add_row("INT8 calibration", "none" if c is None else
                      f"{c['calibrator']}, {c['frames']} frames of {c['batch_shape']}; {c['data']}; cache {c['cache']}")
        table.add_row("verify tolerance", str(g["tolerance"]))
        table.add_row("cache key", g["cache_key"] or "n/a")
        table.add_row("cached engine", ("[green]reusable[/]: " if g["reusable"] else "[yellow]rebuild[/]: ")
                      + g["reason"])
        for n in g["notes"]:
            table.add_row("note", n)
        console.print(table)
    if plan["problems"]:
        for p in plan["problems"]:
            console.print(f"[red]problem[/]: {p}")
        raise ConfigError(plan["problems"][0])
    return 0
