"""The `export` job: checkpoint -> ONNX (and engines) -> verification -> evaluation -> bundle + report.

Returns the CLI exit code: 0 when every gate passed, 1 when one failed. Errors raise AwmlDeployError subclasses.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from . import evaluate as ev
from .backends.base import CenterPointRunners
from .bundle import Bundle, ensure_writable_dir, sha256_file, sha256_json
from .config import DeployConfig
from .errors import ArtifactError, BackendUnavailableError, CheckpointError, ConfigError
from .export.onnx_export import export_centerpoint_onnx, onnx_file_names
from .models.centerpoint import CenterPoint
from .models.checkpoint import load_checkpoint
from .pipelines.centerpoint.pipeline import CenterPointPipeline
from .report import markdown_table, plot_latency, plot_pr_curves, plot_verification, write_report

log = logging.getLogger(__name__)
EXPORTER_VERSION = 1  # bump when the export code changes what it writes: invalidates cached artifacts


def resolve_checkpoint(uri: str) -> Path:
    """`package://awml_deploy_core/<path>` (the shipped checkpoints) or a filesystem path."""
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


def _package_version() -> str:
    try:
        return importlib.metadata.version("awml_deploy_core")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _require_tensorrt() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        raise BackendUnavailableError(
            f"TensorRT was asked for (export.mode/evaluate.backends) but the Python package 'tensorrt' is not "
            f"importable here ({e}); install TensorRT (pip install 'awml_deploy_core[tensorrt]' on x86, JetPack's "
            f"python3-libnvinfer on Jetson) or use export.mode onnx without the tensorrt backend"
        ) from None


# --------------------------------------------------------------------------------------------- steps
def _export_onnx(cfg: DeployConfig, model: CenterPoint, bundle: Bundle, ckpt_sha: str) -> dict[str, Path]:
    names = onnx_file_names(cfg.model)
    arch = cfg.model.model_dump(exclude={"score_threshold", "class_score_thresholds", "max_num", "nms"})
    inputs_hash = sha256_json({"checkpoint": ckpt_sha, "model": arch, "opset": cfg.export.opset,
                               "simplify": cfg.export.simplify, "exporter": EXPORTER_VERSION,
                               "torch": torch.__version__})
    if all(bundle.reusable(k, inputs_hash) for k in names):
        log.info("ONNX: reusing %s (same checkpoint, config and exporter; hashes verified)",
                 ", ".join(names.values()))
        return {k: bundle.path(k) for k in names}
    log.info("ONNX: exporting %s (opset %d)", ", ".join(names.values()), cfg.export.opset)
    t0 = time.perf_counter()
    graphs = export_centerpoint_onnx(model, cfg.model, bundle.root, cfg.export.opset, cfg.export.simplify,
                                     _package_version())
    for key, g in graphs.items():
        bundle.record(key, g.path, inputs_hash, kind="onnx", opset=cfg.export.opset, simplified=g.simplified,
                      simplify_error=g.simplify_error)
    log.info("ONNX: exported and checked against the Autoware contract in %.1f s", time.perf_counter() - t0)
    return {k: g.path for k, g in graphs.items()}


def existing_onnx(cfg: DeployConfig, bundle: Bundle) -> dict[str, Path]:
    names = onnx_file_names(cfg.model)
    if cfg.export.onnx_source:
        src = Path(cfg.export.onnx_source)
        paths = {k: src / n for k, n in names.items()}
        for p in paths.values():
            if not p.is_file():
                raise ArtifactError(f"{p}: ONNX file named by export.onnx_source not found")
        return paths
    return {k: bundle.verify(k) for k in names}


def _engines(cfg: DeployConfig, bundle: Bundle, model: CenterPoint, onnx: dict[str, Path],
             samples: list) -> dict[str, Path]:
    """TensorRT engines for both graphs: reused when their cache key matches, else built (modes trt/both)."""
    from .backends.torch_backend import torch_runners
    from .export.tensorrt_build import build_engines

    device = cfg.device if cfg.device.startswith("cuda") else "cuda"
    reference = None
    if cfg.export.tensorrt.precision == "int8":  # the FP32 reference pipeline feeds INT8 calibration
        reference = CenterPointPipeline(cfg.model, torch_runners(model, device), device)
    return build_engines(cfg, bundle, onnx, samples, reference, device,
                         allow_build=cfg.export.mode in ("trt", "both"))


def runners_for(backend: str, cfg: DeployConfig, model: CenterPoint, onnx: dict[str, Path],
             engines: dict[str, Path] | None = None) -> CenterPointRunners:
    if backend == "pytorch":
        from .backends.torch_backend import torch_runners

        return torch_runners(model, cfg.device)
    if backend == "onnxruntime":
        from .backends.onnxruntime_backend import onnxruntime_runners

        o = cfg.onnxruntime
        return onnxruntime_runners(onnx["encoder"], onnx["head"], o.providers, o.graph_optimization,
                                   o.intra_op_threads, o.allow_spinning)
    _require_tensorrt()
    from .backends.tensorrt_backend import tensorrt_runners

    if engines is None:
        raise ArtifactError("the tensorrt backend needs engines: use export.mode trt, both, or none with a bundle "
                            "that holds them")
    return tensorrt_runners(engines["encoder"], engines["head"], cfg.device)


def build_pipeline(cfg: DeployConfig, backend: str) -> tuple[CenterPointPipeline, dict[str, Any]]:
    """The deploy pipeline for ``backend``, as ``export`` builds it: the config's checkpoint, and for
    onnxruntime the ONNX files of the bundle in ``cfg.work_dir`` (hash-checked; run ``export`` first)."""
    ckpt = resolve_checkpoint(cfg.checkpoint)
    model, _ = load_checkpoint(ckpt, cfg.model)
    onnx: dict[str, Path] = {}
    if backend == "onnxruntime":
        bundle = Bundle.open(Path(cfg.work_dir))
        onnx = existing_onnx(cfg, bundle)
        if not cfg.export.onnx_source:
            _check_bundle_model(bundle, cfg)
    pipeline = CenterPointPipeline(cfg.model, runners_for(backend, cfg, model, onnx), cfg.device)
    info = {"path": str(ckpt), "sha256": sha256_file(ckpt)}
    if onnx:
        info["onnx"] = {k: str(p) for k, p in onnx.items()}
    return pipeline, info


_POSTPROCESS_KEYS = ("score_threshold", "class_score_thresholds", "max_num", "nms")  # not part of the graphs


def _check_bundle_model(bundle: Any, cfg: DeployConfig) -> None:
    """The bundle's graphs must have been exported for this model geometry (a changed default, e.g. points per
    pillar, would otherwise surface as an ONNX Runtime shape error in the middle of the replay)."""
    stored = ((bundle.manifest.get("config") or {}).get("model")) or {}
    now = cfg.model.model_dump(mode="json")
    diff = [k for k in now if k not in _POSTPROCESS_KEYS and k in stored and stored[k] != now[k]]
    if diff:
        shown = ", ".join(f"{k}: bundle {stored[k]!r}, config {now[k]!r}" for k in diff[:3])
        raise ArtifactError(f"bundle {bundle.root}: its ONNX graphs were exported for another model ({shown}); "
                            "re-run `awml-deploy export` with this config")


def _precision(backend: str, cfg: DeployConfig, onnx: dict[str, Path] | None = None) -> str:
    """The verify.tolerances key for a backend: fp32 for PyTorch/ONNX Runtime, the engine's precision for TensorRT."""
    if backend != "tensorrt":
        return "fp32"
    from .export.tensorrt_build import verification_precision
    from .export.tensorrt_plan import has_qdq

    qdq = bool(onnx) and all(p.is_file() for p in onnx.values()) and any(has_qdq(p) for p in onnx.values())
    return verification_precision(cfg.export.tensorrt.precision, qdq)


# --------------------------------------------------------------------------------------------- job
def run_deploy(cfg: DeployConfig, dry_run: bool = False, progress: bool = True) -> int:
    console = Console(width=None if sys.stdout.isatty() else 160)  # logs and CI: no wrapping at 80
    work = ensure_writable_dir(Path(cfg.work_dir))
    bundle = Bundle.open(work)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device '{cfg.device}' asked for, but torch sees no CUDA device here")
    wants_trt = cfg.export.mode in ("trt", "both") or "tensorrt" in cfg.evaluate.backends
    if dry_run:
        from .export.tensorrt_plan import print_dry_run

        return print_dry_run(cfg, bundle, console)
    if wants_trt:
        _require_tensorrt()

    ckpt_path = resolve_checkpoint(cfg.checkpoint)
    ckpt_sha = sha256_file(ckpt_path)
    model, _ = load_checkpoint(ckpt_path, cfg.model)
    log.info("checkpoint %s (sha256 %s)", ckpt_path, ckpt_sha[:12])

    dataset = ev.open_dataset(cfg.data, work / "data", cfg.model.class_names, progress)
    samples = ev.take_samples(dataset, cfg.data.num_frames, progress)
    log.info("data: %d frames from %r (fingerprint %s)", len(samples), dataset, dataset.fingerprint()[:12])

    onnx = _export_onnx(cfg, model, bundle, ckpt_sha) if cfg.export.mode in ("onnx", "both") \
        else existing_onnx(cfg, bundle)

    backends = list(dict.fromkeys([*cfg.evaluate.backends, *(b for s in cfg.verify.scenarios for b in s)]))
    engines = None
    if cfg.export.mode in ("trt", "both") or (cfg.export.mode == "none" and "tensorrt" in backends):
        engines = _engines(cfg, bundle, model, onnx, samples)
    pipelines = {b: CenterPointPipeline(cfg.model, runners_for(b, cfg, model, onnx, engines), cfg.device)
                 for b in backends}

    verification = []
    if cfg.verify.enabled:
        n = min(cfg.verify.num_samples, len(samples))
        for ref, cand in cfg.verify.scenarios:
            precision = _precision(cand, cfg, onnx)
            res = ev.verify_backends((ref, pipelines[ref]), (cand, pipelines[cand]), samples[:n],
                                     cfg.verify.tolerances[precision], precision, progress)
            log.info("verify %s -> %s: %s", ref, cand, "passed" if res.passed else "FAILED")
            verification.append(res)

    evaluations = {}
    if cfg.evaluate.enabled:
        for b in cfg.evaluate.backends:
            evaluations[b] = ev.evaluate_backend(b, pipelines[b], samples, cfg.evaluate, progress)

    gates = _gates(cfg, verification, evaluations)
    report = _report(cfg, bundle, ckpt_path, ckpt_sha, dataset, samples, onnx, verification, evaluations, gates)
    _print_summary(console, evaluations, verification, gates, work)
    bundle.save(config=cfg.model_dump(mode="json"), checkpoint={"path": str(ckpt_path), "sha256": ckpt_sha},
                dataset={"description": repr(dataset), "fingerprint": dataset.fingerprint(),
                         "frames": len(samples)},
                report={"json": "report.json", "markdown": "report.md", "passed": report["passed"]})
    return 0 if report["passed"] else 1


def _gates(cfg: DeployConfig, verification: list, evaluations: dict) -> list[dict[str, Any]]:
    gates = []
    for res in verification:
        worst = res.summary()
        detail = ", ".join(f"{k} max abs err {v['max_abs']:.2e}" for k, v in worst.items())
        mism = sum(not s.detections.identical_count for s in res.samples)
        gates.append({"name": f"verify {res.reference}->{res.candidate} ({res.precision}: atol {res.atol:g}, "
                              f"rtol {res.rtol:g})", "passed": res.passed,
                      "detail": f"{detail}; detection-count mismatches: {mism}/{len(res.samples)} frames"})
    ref = evaluations.get("pytorch")
    if ref is not None:
        ref_map = ev.map_at(ref.metrics)
        for name, e in evaluations.items():
            if name == "pytorch":
                continue
            m = ev.map_at(e.metrics)
            ok = not math.isnan(m) and m >= ref_map - cfg.evaluate.map_tolerance
            gates.append({"name": f"mAP {name} >= pytorch - {cfg.evaluate.map_tolerance:g}", "passed": ok,
                          "detail": f"{name} {m:.4f} vs pytorch {ref_map:.4f}"})
    return gates


def _report(cfg: DeployConfig, bundle: Bundle, ckpt_path: Path, ckpt_sha: str, dataset: Any, samples: list,
            onnx: dict[str, Path], verification: list, evaluations: dict, gates: list) -> dict[str, Any]:
    plots = bundle.root / "plots"
    comparison = []
    for name, e in evaluations.items():
        lat = e.latency["total"]
        comparison.append({"backend": name, "mAP@2m": ev.map_at(e.metrics), "mAP": e.metrics.map,
                           "mAPH": e.metrics.maph, "latency_p50_ms": lat.p50, "latency_p99_ms": lat.p99,
                           "head_p50_ms": e.latency["head"].p50, "encoder_p50_ms": e.latency["encoder"].p50})
    passed = all(g["passed"] for g in gates)
    report = {
        "kind": "centerpoint_export",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": cfg.model.name,
        "config": cfg.model_dump(mode="json"),
        "checkpoint": {"path": str(ckpt_path), "sha256": ckpt_sha},
        "dataset": {"description": repr(dataset), "fingerprint": dataset.fingerprint(), "frames": len(samples)},
        "artifacts": {k: {"file": p.name, "sha256": sha256_file(p)} for k, p in onnx.items()},
        "verification": [v.to_dict() for v in verification],
        "evaluation": {k: e.to_dict() for k, e in evaluations.items()},
        "comparison": comparison,
        "gates": gates,
        "passed": passed,
    }
    md = [f"# {cfg.model.name}: export report", "",
          f"Result: **{'PASSED' if passed else 'FAILED'}** — {len(samples)} frames from {dataset!r}", ""]
    if comparison:
        md += ["## Backends side by side", "", markdown_table(
            ["backend", "mAP@2m", "mAP", "mAPH", "total p50 ms", "total p99 ms", "encoder p50 ms", "head p50 ms"],
            [[c["backend"], c["mAP@2m"], c["mAP"], c["mAPH"], c["latency_p50_ms"], c["latency_p99_ms"],
              c["encoder_p50_ms"], c["head_p50_ms"]] for c in comparison]), ""]
    md += ["## Gates", "", markdown_table(["gate", "passed", "detail"],
                                           [[g["name"], "yes" if g["passed"] else "NO", g["detail"]] for g in gates]), ""]
    if evaluations:
        plot_latency({k: e.timings for k, e in evaluations.items()}, plots / "latency.png")
        curves = {k: {c: {str(float(t)): v for t, v in per.items()} for c, per in e.metrics.pr_curves.items()}
                  for k, e in evaluations.items()}
        plot_pr_curves(curves, cfg.model.class_names, "2.0", plots / "pr_curves.png")
        md += ["## Latency", "", "![latency](plots/latency.png)", ""]
        for name, e in evaluations.items():
            md += [f"### {name}", "", markdown_table(
                ["stage", "p50", "p90", "p95", "p99", "mean", "std", "max"],
                [[s, v.p50, v.p90, v.p95, v.p99, v.mean, v.std, v.max] for s, v in e.latency.items()]), "",
                "```", e.metrics.table(), "```", ""]
        md += ["## Precision / recall at 2 m", "", "![pr](plots/pr_curves.png)", ""]
    if verification:
        plot_verification(report["verification"], plots / "verification.png")
        md += ["## Verification", "", "![verification](plots/verification.png)", ""]
        for v in report["verification"]:
            md += [f"### {v['reference']} -> {v['candidate']} ({v['precision']}, atol {v['atol']:g}, "
                   f"rtol {v['rtol']:g}): {'passed' if v['passed'] else 'FAILED'}", "",
                   markdown_table(["output", "max abs", "p99 abs", "max rel", "out of tolerance"],
                                  [[k, s["max_abs"], s["p99_abs"], s["max_rel"], s["out_of_tolerance"]]
                                   for k, s in v["summary"].items()]), ""]
    write_report(bundle.root, report, "\n".join(md) + "\n")
    return report


def _print_summary(console: Console, evaluations: dict, verification: list, gates: list, work: Path) -> None:
    table = Table(title="Backends on the same frames")
    for col in ("backend", "mAP@2m", "mAP", "mAPH", "total p50 ms", "total p99 ms", "head p50 ms"):
        table.add_column(col, justify="right" if col != "backend" else "left")
    for name, e in evaluations.items():
        lat = e.latency
        table.add_row(name, f"{ev.map_at(e.metrics):.4f}", f"{e.metrics.map:.4f}", f"{e.metrics.maph:.4f}",
                      f"{lat['total'].p50:.1f}", f"{lat['total'].p99:.1f}", f"{lat['head'].p50:.1f}")
    console.print(table)
    for g in gates:
        console.print(f"[{'green' if g['passed'] else 'red'}]{'PASS' if g['passed'] else 'FAIL'}[/] {g['name']}: "
                      f"{g['detail']}")
    console.print(f"report: {work / 'report.md'} (JSON: {work / 'report.json'}); bundle manifest: "
                  f"{work / 'manifest.json'}")
