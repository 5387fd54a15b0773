"""`awml-deploy bench --device cuda`: the CenterPoint pipeline on a CUDA GPU, per stage, every PyTorch precision
side by side in one run, against the floor (the fp16 CUDA-graph head alone); host synchronizations counted.

Stage times come from the pipeline's own timer (it synchronizes between stages so each stage is timed alone);
synchronizations are counted separately, on preprocess and postprocess called as the pipeline calls them, with
``torch.cuda.set_sync_debug_mode("warn")`` (one warning per synchronizing CUDA call).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# (precision, cuda_graph) columns of the bench; on CUDA the config's default is the graph (PyTorchConfig)
VARIANTS: tuple[tuple[str, bool], ...] = (("fp32", False), ("tf32", False), ("fp16", False), ("fp32", True),
                                          ("fp16", True))
STAGES = ("preprocess", "encoder", "scatter", "head", "postprocess", "total")
REALISTIC_CANDIDATES = 300  # cells above the score threshold for the random-weight model (a trained one: ~100s)


_primed: list[bool] = []


def _label(precision: str, graph: bool) -> str:
    return precision + ("+graph" if graph else " eager")


def count_syncs(fn: Callable[[], Any], sites: list[str] | None = None) -> tuple[Any, int]:
    """(fn(), how many synchronizing CUDA calls it made), read from PyTorch's sync debug warnings; ``sites``
    collects where each one was made (file:line)."""
    prev = torch.cuda.get_sync_debug_mode()
    if not _primed:  # the first switch of the debug mode itself warns once (torch/cuda/__init__.py): not fn's
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.cuda.set_sync_debug_mode("warn")
            torch.cuda.set_sync_debug_mode(prev)
        _primed.append(True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            out = fn()
        finally:
            torch.cuda.set_sync_debug_mode(prev)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    if sites is not None:
        sites.extend(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return out, len(syncs)


def p50_p99(values: list[float]) -> tuple[float, float]:
    v = sorted(values)
    return statistics.median(v), v[min(len(v) - 1, math.ceil(0.99 * len(v)) - 1)]


def _timed_ms(fn: Callable[[], Any], repeats: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _models() -> list[tuple[str, Any, Any]]:
    """(name, model, model config): the shipped small checkpoint, and AWML base with random weights."""
    from .config import awml_base_model
    from .families import get_family
    from .models.centerpoint import build_centerpoint

    fam = get_family("centerpoint")
    from .loader import resolve_checkpoint

    small, small_cfg = fam.load_checkpoint(resolve_checkpoint(str(fam.default_checkpoint)), None)
    torch.manual_seed(0)
    base_cfg = awml_base_model()
    return [("small (shipped checkpoint)", small.eval(), small_cfg),
            ("awml-base (random weights)", build_centerpoint(base_cfg).eval(), base_cfg)]


def _realistic_bias(model: Any, cfg: Any, cloud: torch.Tensor) -> int:
    """Shift the heatmap bias so that REALISTIC_CANDIDATES cells pass the score threshold on ``cloud`` (random
    weights put far more above it than a trained model). Returns the count after the shift."""
    from .loader import torch_runners
    from .pipelines.centerpoint.pipeline import CenterPointPipeline

    pipe = CenterPointPipeline(cfg, torch_runners(model, cfg, "cuda"), "cuda")
    logits = pipe(cloud, return_raw=True).raw["heatmap"][0].amax(0).reshape(-1)
    t = math.log(cfg.score_threshold / (1 - cfg.score_threshold))
    kth = torch.topk(logits, REALISTIC_CANDIDATES + 1).values[-1]
    shift = float(t - kth) - 1e-3  # the (k+1)-th cell lands just below the threshold
    with torch.no_grad():
        model.pts_bbox_head.task_heads[0].heatmap[-1].bias += shift
    return _candidates(pipe(cloud, return_raw=True).raw["heatmap"], cfg)


def _candidates(heatmap: torch.Tensor, cfg: Any) -> int:
    return int((torch.sigmoid(heatmap[0]).amax(0) > cfg.score_threshold).sum())


def _cloud_on_gpu(n: int) -> torch.Tensor:
    from .bench import _cloud

    return torch.from_numpy(_cloud(n)).cuda()


def bench_cuda(rows: list[tuple[str, str, str]], repeats: int) -> None:
    """Per-stage p50/p99 for small and AWML base, 100k and 200k points, each precision; syncs per frame."""
    from .config import DeployConfig, PyTorchConfig
    from .loader import load_pipeline

    if not torch.cuda.is_available():
        rows.append(("cuda pipeline", "skipped", "torch sees no CUDA device"))
        return
    frames = max(repeats, 50)
    clouds = {n: _cloud_on_gpu(n) for n in (100_000, 200_000)}
    for name, model, mcfg in _models():
        model = model.cuda()
        if "random" in name:
            cand = _realistic_bias(model, mcfg, clouds[200_000])
            rows.append((f"cuda {name}", "-", f"heatmap bias shifted: {cand} cells pass the score threshold at 200k"))
        floor = None
        for precision, graph in sorted(VARIANTS, key=lambda v: v != ("fp16", True)):  # the floor first
            cfg = DeployConfig(model=mcfg, pytorch=PyTorchConfig(precision=precision, cuda_graph=graph))
            with load_pipeline(cfg, "pytorch", "cuda", model=model) as lp:
                pipe = lp.pipeline
                if floor is None:
                    head = pipe.runners["head"]
                    x = {"spatial_features": torch.randn(head.inputs[0].shape, device="cuda")}
                    floor = statistics.median(_timed_ms(lambda: head(x), frames))
                    rows.append((f"cuda {name}: head alone fp16+graph", f"{floor:.2f} ms", "the floor (p50)"))
                for n, cloud in clouds.items():
                    for _ in range(5):
                        pipe(cloud)
                    t = {k: [] for k in STAGES}
                    for _ in range(frames):
                        out = pipe(cloud)
                        for k in STAGES:
                            t[k].append(out.timings_ms[k])
                    sites: list[str] = []
                    # as __call__ runs them: padded preprocess (stats in flight), postprocess's one transfer
                    pre, s_pre = count_syncs(lambda: pipe.preprocess(cloud, padded=True), sites)
                    heads = pipe.head(pipe.scatter(pipe.encode(pre.input_features), pre.coords, pre.padded))
                    dets, s_post = count_syncs(lambda: pipe.postprocess(heads), sites)
                    vstats = pre.stats.resolve() if pre.padded else pre.stats
                    p = {k: p50_p99(v) for k, v in t.items()}
                    stages = " ".join(f"{k[:4]} {p[k][0]:.2f}/{p[k][1]:.2f}" for k in STAGES[:-1])
                    label = _label(precision, graph)
                    rows.append((f"cuda {name} {n // 1000}k {label}",
                                 f"{p['total'][0]:.2f} ms (p99 {p['total'][1]:.2f})",
                                 f"p50/p99 ms: {stages}; pre+post p50 "
                                 f"{p['preprocess'][0] + p['postprocess'][0]:.2f}; syncs pre {s_pre} post {s_post}; "
                                 f"{vstats.num_voxels} pillars, {_candidates(heads['heatmap'], mcfg)} cand., "
                                 f"{len(dets)} dets; x{p['total'][0] / floor:.2f} of floor; syncs at "
                                 f"{', '.join(sites)}"))
        host = clouds[200_000].cpu().numpy()
        up = _timed_ms(lambda: torch.from_numpy(host).cuda(), frames)
    rows.append(("cuda cloud upload 200k (pageable numpy -> GPU)", f"{statistics.median(up):.2f} ms",
                 "not part of preprocess above (the cloud is given on the GPU)"))


def bench_cuda_accuracy(rows: list[tuple[str, str, str]], config: str | Path = "config/centerpoint.yaml") -> None:
    """mAP@2m of each precision on the demo frames (the config's data), on the GPU."""
    import tempfile

    from .config import load_deploy_config
    from .families import get_family
    from .loader import load_pipeline

    if not torch.cuda.is_available() or not Path(config).is_file():
        rows.append(("cuda mAP by precision", "skipped", f"no CUDA device or no {config}"))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        samples = None
        for precision, graph in VARIANTS:
            cfg = load_deploy_config(config, {"pytorch.precision": precision, "pytorch.cuda_graph": graph})
            with load_pipeline(cfg, "pytorch", "cuda") as lp:
                fam = get_family(lp.cfg.family)
                if samples is None:
                    ds = fam.open_dataset(lp.cfg, Path(tmp), False)
                    samples = [ds[i] for i in range(min(lp.cfg.data.num_frames, len(ds)))]
                e = fam.evaluate(f"pytorch-{precision}", lp.pipeline, samples, lp.cfg, False)
                results[_label(precision, graph)] = fam.metric_columns(e)["mAP@2m"]
    ref = results["fp32 eager"]
    rows.append((f"cuda mAP@2m by precision ({len(samples)} frames of {config})", f"fp32 eager {ref:.4f}",
                 ", ".join(f"{k} {v:.4f} (d {v - ref:+.4f})" for k, v in results.items() if k != "fp32 eager")))


YOLOX_VARIANTS: tuple[tuple[str, bool], ...] = (("fp32", False), ("fp16", False), ("fp16", True))


def bench_cuda_yolox(rows: list[tuple[str, str, str]], repeats: int) -> None:
    """YOLOX on the GPU: per-stage p50/p99 of the shared pipeline (letterbox, graph, decode + NMS) for the small
    shipped model on a rendered 640x384 frame and the T4 geometry (960x960, random weights, objectness at its
    initial prior so candidates stay realistic) on that frame upscaled to 1920x1080, batch 1 and 6 (AWML's export
    batch), each PyTorch precision side by side; host synchronizations per frame counted as in bench_cuda."""
    import cv2

    from .config import t4_yolox_model
    from .data.camera import generate_camera_frame
    from .families import get_family
    from .loader import resolve_checkpoint, torch_runners
    from .models.yolox import build_yolox, load_yolox_checkpoint

    if not torch.cuda.is_available():
        rows.append(("cuda yolox", "skipped", "torch sees no CUDA device"))
        return
    fam = get_family("yolox")
    small, small_cfg = load_yolox_checkpoint(resolve_checkpoint(fam.default_checkpoint))
    torch.manual_seed(0)
    t4_cfg = t4_yolox_model()
    frame = generate_camera_frame(10_000).image
    cases = [("small 384x640", small.eval(), small_cfg, frame, (1,)),
             ("T4 960x960", build_yolox(t4_cfg).eval(), t4_cfg, cv2.resize(frame, (1920, 1080)), (1, 6))]
    for label, model, cfg, image, batches in cases:
        for precision, graph in YOLOX_VARIANTS:
            pipe = fam.make_pipeline(cfg, torch_runners(model, cfg, "cuda", "yolox", precision, graph), "cuda")
            for b in batches:
                images = [image] * b
                stages: dict[str, list[float]] = {s: [] for s in ("preprocess", "inference", "postprocess", "total")}
                for _ in range(5):
                    pipe(images)
                for _ in range(repeats * 3):
                    for s, v in pipe(images).timings_ms.items():
                        stages[s].append(v)
                batch, geos = pipe.preprocess(images)
                out = pipe.infer(batch)
                _, pre_syncs = count_syncs(lambda: pipe.preprocess(images))
                dets, post_syncs = count_syncs(lambda: pipe.postprocess(out, geos))
                cells = ", ".join(f"{s} {p50_p99(v)[0]:.2f}/{p50_p99(v)[1]:.2f}" for s, v in stages.items())
                name = f"{precision}{' + CUDA graph' if graph else ''}"
                rows.append((f"cuda yolox {label} batch {b} {name}", f"{p50_p99(stages['total'])[0]:.2f} ms",
                             f"p50/p99 ms: {cells}; syncs pre {pre_syncs} post {post_syncs}; "
                             f"{len(dets[0])} boxes"))
            pipe.close()
