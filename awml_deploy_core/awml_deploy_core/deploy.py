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
from .errors import BackendUnavailableError, ConfigError
from .export_report import Console, build_report, print_summary
from .families import ModelFamily, get_family, qdq_artifact
from .loader import LoadedPipeline, export_graphs, load_pipeline, onnx_source_paths, qdq_onnx, resolve_checkpoint

INT8 = "onnxruntime_int8"

log = logging.getLogger(__name__)


def existing_onnx(family: ModelFamily, cfg: DeployConfig, bundle: Bundle) -> dict[str, Path]:
    """The graphs modes trt/none use: ``export.onnx_source`` when set, else the bundle's (hash-checked)."""
    source = onnx_source_paths(family, cfg)
    return source if source is not None else {k: bundle.verify(k) for k in family.onnx_file_names(cfg.model)}


def _engines(cfg: DeployConfig, bundle: Bundle, reference: Any, onnx: dict[str, Path], samples: list) -> None:
    """TensorRT engines for every graph: reused when their cache key matches, else built (modes trt/both)."""
    from .export.tensorrt_build import build_engines

    device = cfg.device if cfg.device.startswith("cuda") else "cuda"
    build_engines(cfg, bundle, onnx, samples, reference if cfg.export.tensorrt.precision == "int8" else None,
                  device, allow_build=cfg.export.mode in ("trt", "both"))


def _quantize(family: ModelFamily, cfg: DeployConfig, bundle: Bundle, onnx: dict[str, Path], cache_dir: Path,
              samples: list) -> tuple[Any, dict[str, Any]]:
    """INT8 Q/DQ graphs by the family's quantizer and accuracy guard, recorded in the bundle (an older recipe's are
    dropped first); returns the guard result and the manifest's ``quantization`` section."""
    if family.quantize is None:
        raise ConfigError(f"export.quantize.enabled: family '{family.name}' declares no INT8 quantization; set "
                          f"export.quantize.enabled: false")
    result = family.quantize(onnx, bundle.root, cfg, cache_dir, samples)
    for spec in family.graphs(cfg.model):
        bundle.artifacts.pop(qdq_artifact(spec.key), None)
    guard = {k: v for k, v in result.to_dict().items() if k not in ("sensitivity", "files")}
    section: dict[str, Any] = {"recipe": None, "recipe_sha256": None, "calibration_fingerprint": None,
                               "guard": guard}
    pair = result.pair
    if pair is not None:
        for k, path in pair.paths.items():
            if Path(path).resolve() == Path(onnx[k]).resolve():
                continue  # a graph left in fp32 (export.quantize.graphs)
            bundle.record(qdq_artifact(k), Path(path), pair.recipe_hash, kind="onnx_qdq", graph=k,
                          fp32=Path(onnx[k]).name, fp32_sha256=sha256_file(onnx[k]), recipe_sha256=pair.recipe_hash)
        section.update(recipe=pair.recipe, recipe_sha256=pair.recipe_hash,
                       calibration_fingerprint=pair.recipe.get("calibration", {}).get("fingerprint"),
                       files={k: Path(p).name for k, p in pair.paths.items()})
    log.info("quantize: %s", result.reason)
    return result, section


def _with_int8(cfg: DeployConfig, ok: bool) -> DeployConfig:
    """Evaluate and verify the Q/DQ graphs next to fp32 (unless listed already); without them (guard failed) drop
    every backend that would run them."""
    backends, scenarios = list(cfg.evaluate.backends), list(cfg.verify.scenarios)
    if ok:
        if INT8 not in backends:
            backends.append(INT8)
        if not any(cand == INT8 for _, cand in scenarios):
            scenarios.append(("onnxruntime", INT8))
    else:
        dropped = {INT8, "tensorrt"}
        skipped = dropped & ({*backends} | {b for pair in scenarios for b in pair})
        if skipped:
            log.warning("quantize: the accuracy guard failed (no Q/DQ graphs), so %s not run",
                        " and ".join(sorted(skipped)) + (" are" if len(skipped) > 1 else " is"))
        backends = [b for b in backends if b not in dropped]
        scenarios = [p for p in scenarios if not dropped & set(p)]
    return cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"backends": backends}),
                                  "verify": cfg.verify.model_copy(update={"scenarios": scenarios})})


def _guard_gate(result: Any) -> dict[str, Any]:
    d = result.to_dict()
    return {"name": f"INT8 accuracy guard ({d['metric']} drop <= {d['budget']:g})", "passed": bool(result.ok),
            "detail": result.reason}


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
    quant, quant_section, trt_onnx = None, None, onnx
    if cfg.export.quantize.enabled:
        if cfg.export.mode in ("onnx", "both"):
            quant, quant_section = _quantize(family, cfg, bundle, onnx, work / "data", samples)
            bundle.save(quantization=quant_section)
        cfg = _with_int8(cfg, quant is None or quant.ok)
        backends = list(dict.fromkeys([*cfg.evaluate.backends, *(b for s in cfg.verify.scenarios for b in s)]))
        if quant is None or quant.ok:
            trt_onnx = qdq_onnx(family, cfg, bundle, onnx)  # TensorRT builds the explicitly quantized graphs

    loaded: dict[str, LoadedPipeline] = {}
    try:
        guard_failed = quant is not None and not quant.ok
        if not guard_failed and (cfg.export.mode in ("trt", "both") or
                                 (cfg.export.mode == "none" and "tensorrt" in backends)):
            reference = load_pipeline(cfg, "pytorch", "cuda", precision="fp32", bundle=bundle, model=model)
            try:
                _engines(cfg, bundle, reference.pipeline, trt_onnx, samples)
            finally:
                reference.close()
        for b in backends:
            loaded[b] = load_pipeline(cfg, b, bundle=bundle, model=model)
        pipelines = {b: lp.pipeline for b, lp in loaded.items()}

        verification = []
        if cfg.verify.enabled:
            n = min(cfg.verify.num_samples, len(samples))
            for ref, cand in cfg.verify.scenarios:
                precision = loaded[cand].precision
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

    precisions = {b: lp.precision for b, lp in loaded.items()}
    gates = (([_guard_gate(quant)] if quant is not None else [])
             + _gates(family, cfg, verification, evaluations, precisions))
    dataset_info = {"description": repr(dataset), "fingerprint": dataset.fingerprint(), "frames": len(samples)}
    checkpoint = {"path": str(ckpt_path), "sha256": ckpt_sha}
    files = {**onnx, **{qdq_artifact(k): p for k, p in trt_onnx.items() if p != onnx[k]}}
    quant_report = None if quant is None else {**quant_section, "guard": quant.to_dict()}
    report = build_report(family, cfg, bundle, checkpoint, dataset_info, files, verification, evaluations, gates,
                          quant_report)
    print_summary(console, family, evaluations, gates, work)
    bundle.save(config=cfg.model_dump(mode="json"), checkpoint=checkpoint, dataset=dataset_info,
                report={"json": "report.json", "markdown": "report.md", "passed": report["passed"]})
    return 0 if report["passed"] else 1


def _gates(family: ModelFamily, cfg: DeployConfig, verification: list, evaluations: dict,
           precisions: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Verification and metric gates. An INT8 backend's metric may drop by the INT8 budget
    (export.quantize.max_metric_drop, the guard's) when quantization is on, other backends' by
    evaluate.map_tolerance."""
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
            int8 = cfg.export.quantize.enabled and (precisions or {}).get(name) == "int8"
            tol = cfg.export.quantize.max_metric_drop if int8 else cfg.evaluate.map_tolerance
            ok = not math.isnan(value) and value >= ref_value - tol
            gates.append({"name": f"{metric} {name} >= pytorch - {tol:g}"
                                  + (" (export.quantize.max_metric_drop)" if int8 else ""), "passed": ok,
                          "detail": f"{name} {value:.4f} vs pytorch {ref_value:.4f}"})
    return gates
