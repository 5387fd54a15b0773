"""The `export` job: checkpoint -> ONNX (and engines) -> verification -> evaluation -> bundle + report.

Written once for every model family: what is family-specific comes from the family's declaration, every pipeline
comes from the loader. Returns the CLI exit code: 0 when every gate passed, 1 when one failed. Errors raise
AwmlDeployError subclasses. Rendering lives in ``export_report``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from .bundle import Bundle, ensure_writable_dir, sha256_file
from .config import DeployConfig
from .errors import ArtifactError, BackendUnavailableError
from .export_report import Console, build_report, print_summary
from .families import ModelFamily, get_family
from .loader import LoadedPipeline, backend_precision, export_graphs, load_pipeline, resolve_checkpoint

log = logging.getLogger(__name__)


def existing_onnx(family: ModelFamily, cfg: DeployConfig, bundle: Bundle) -> dict[str, Path]:
    """The graphs modes trt/none use: ``export.onnx_source`` when set, else the bundle's (hash-checked)."""
    names = family.onnx_file_names(cfg.model)
    if cfg.export.onnx_source:
        src = Path(cfg.export.onnx_source)
        paths = {k: src / n for k, n in names.items()}
        for p in paths.values():
            if not p.is_file():
                raise ArtifactError(f"{p}: ONNX file named by export.onnx_source not found")
        return paths
    return {k: bundle.verify(k) for k in names}


def _engines(cfg: DeployConfig, bundle: Bundle, reference: Any, onnx: dict[str, Path], samples: list) -> None:
    """TensorRT engines for every graph: reused when their cache key matches, else built (modes trt/both)."""
    from .export.tensorrt_build import build_engines

    device = cfg.device if cfg.device.startswith("cuda") else "cuda"
    build_engines(cfg, bundle, onnx, samples, reference if cfg.export.tensorrt.precision == "int8" else None,
                  device, allow_build=cfg.export.mode in ("trt", "both"))


def run_deploy(cfg: DeployConfig, dry_run: bool = False, progress: bool = True) -> int:
    console = Console(width=None)
    family = get_family(cfg.family)
    work = ensure_writable_dir(Path(cfg.work_dir))
    bundle = Bundle.open(work)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device '{cfg.device}' asked for, but torch sees no CUDA device here")
    backends = list(dict.fromkeys([*cfg.evaluate.backends, *(b for s in cfg.verify.scenarios for b in s)]))
    if dry_run:
        from .export.tensorrt_dry_run import print_dry_run

        return print_dry_run(cfg, bundle, console)
    if cfg.export.mode in ("trt", "both") or "tensorrt" in backends:
        from .backends.tensorrt_backend import import_tensorrt

        import_tensorrt()

    ckpt_path = resolve_checkpoint(cfg.checkpoint)
    ckpt_sha = sha256_file(ckpt_path)
    model, _ = family.load_checkpoint(ckpt_path, cfg.model)
    log.info("checkpoint %s (sha256 %s)", ckpt_path, ckpt_sha[:12])

    dataset = family.open_dataset(cfg, work / "data", progress)
    samples = [dataset[i] for i in range(min(cfg.data.num_frames, len(dataset)))]
    log.info("data: %d frames from %r (fingerprint %s)", len(samples), dataset, dataset.fingerprint()[:12])

    onnx = export_graphs(family, cfg, model, bundle, ckpt_sha) if cfg.export.mode in ("onnx", "both") \
        else existing_onnx(family, cfg, bundle)
    for path in family.bundle_files(cfg, bundle.root):
        bundle.record(f"file:{path.name}", path, sha256_file(path), kind="vehicle_config")

    loaded: dict[str, LoadedPipeline] = {}
    try:
        if cfg.export.mode in ("trt", "both") or (cfg.export.mode == "none" and "tensorrt" in backends):
            reference = load_pipeline(cfg, "pytorch", "cuda", precision="fp32", bundle=bundle, model=model)
            try:
                _engines(cfg, bundle, reference.pipeline, onnx, samples)
            finally:
                reference.close()
        for b in backends:
            loaded[b] = load_pipeline(cfg, b, bundle=bundle, model=model)
        pipelines = {b: lp.pipeline for b, lp in loaded.items()}

        verification = []
        if cfg.verify.enabled:
            n = min(cfg.verify.num_samples, len(samples))
            for ref, cand in cfg.verify.scenarios:
                precision = backend_precision(cand, cfg, onnx)
                res = family.verify((ref, pipelines[ref]), (cand, pipelines[cand]), samples[:n],
                                    cfg.verify.tolerances[precision], precision, progress)
                log.info("verify %s -> %s: %s", ref, cand, "passed" if res.passed else "FAILED")
                verification.append(res)

        evaluations = {}
        if cfg.evaluate.enabled:
            for b in cfg.evaluate.backends:
                evaluations[b] = family.evaluate(b, pipelines[b], samples, cfg, progress)
    finally:
        for lp in loaded.values():
            lp.close()

    gates = _gates(family, cfg, verification, evaluations)
    dataset_info = {"description": repr(dataset), "fingerprint": dataset.fingerprint(), "frames": len(samples)}
    checkpoint = {"path": str(ckpt_path), "sha256": ckpt_sha}
    report = build_report(family, cfg, bundle, checkpoint, dataset_info, onnx, verification, evaluations, gates)
    print_summary(console, family, evaluations, gates, work)
    bundle.save(config=cfg.model_dump(mode="json"), checkpoint=checkpoint, dataset=dataset_info,
                report={"json": "report.json", "markdown": "report.md", "passed": report["passed"]})
    return 0 if report["passed"] else 1


def _gates(family: ModelFamily, cfg: DeployConfig, verification: list, evaluations: dict) -> list[dict[str, Any]]:
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
        metric, ref_value = next(iter(family.metric_columns(ref).items()))
        for name, e in evaluations.items():
            if name == "pytorch":
                continue
            value = family.metric_columns(e)[metric]
            ok = not math.isnan(value) and value >= ref_value - cfg.evaluate.map_tolerance
            gates.append({"name": f"{metric} {name} >= pytorch - {cfg.evaluate.map_tolerance:g}", "passed": ok,
                          "detail": f"{name} {value:.4f} vs pytorch {ref_value:.4f}"})
    return gates
