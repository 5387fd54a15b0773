"""`awml-deploy bench`: medians (and ratios measured side by side in one run) for the hot paths.

Speed targets live here, never in timed unit tests: this machine is shared and noisy, so read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

SECTIONS = ("data", "voxelize", "model", "encoder", "metrics", "backends", "int8", "yolox")
EXTRA_SECTIONS = ("fleet",)  # minutes long: only with --only fleet


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median per function, runs alternated so that load changes hit all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_data(rows: list[tuple[str, str, str]], repeats: int) -> None:
    from .data.synthetic import generate_frame

    frames = []
    ms = median_ms(lambda: frames.append(generate_frame(len(frames))), repeats, warmup=1)
    n = int(np.median([len(f.points) for f in frames]))
    rows.append(("synthetic frame generation", f"{ms:.0f} ms/frame", f"median {n} points"))


def _cloud(n: int) -> np.ndarray:
    """A realistic cloud of n points: synthetic lidar frames (about 134k points each) stacked and cut."""
    from .data.synthetic import generate_frame

    parts, total, seed = [], 0, 0
    while total < n:
        parts.append(generate_frame(seed).points_with_time_lag())
        total += len(parts[-1])
        seed += 1
    return np.concatenate(parts)[:n]


def bench_voxelize(rows: list[tuple[str, str, str]], repeats: int) -> None:
    from .config import CenterPointModelConfig, awml_base_model
    from .pipelines.centerpoint.features import encoder_features
    from .pipelines.centerpoint.voxelize import voxelize

    for name, cfg in (("small", CenterPointModelConfig()), ("awml-base", awml_base_model())):
        for n in (100_000, 200_000):
            pts = torch.from_numpy(_cloud(n))
            vox_ms = median_ms(lambda: voxelize(pts, cfg), repeats)
            vox = voxelize(pts, cfg)
            feat_ms = median_ms(lambda: encoder_features(vox, cfg), repeats)
            rows.append((f"voxelize {n // 1000}k points ({name})", f"{vox_ms:.1f} ms",
                         f"+ encoder features {feat_ms:.1f} ms, {vox.stats.num_voxels} pillars"))


def bench_model(rows: list[tuple[str, str, str]], repeats: int) -> None:
    from .config import CenterPointModelConfig, awml_base_model
    from .models.centerpoint import BackboneNeckHeadGraph, VoxelEncoderGraph, build_centerpoint, graph_shapes

    for name, cfg, reps in (("small", CenterPointModelConfig(), repeats), ("awml-base", awml_base_model(), 2)):
        model = build_centerpoint(cfg).eval()
        shapes = graph_shapes(cfg, num_voxels=min(cfg.max_voxels, 20000))
        head, enc = BackboneNeckHeadGraph(model), VoxelEncoderGraph(model)
        x, f = torch.zeros(shapes.spatial_features), torch.randn(shapes.input_features)
        with torch.inference_mode():
            head_ms = median_ms(lambda: head(x), reps)
            enc_ms = median_ms(lambda: enc(f), reps)
        rows.append((f"PyTorch CPU forward ({name}, {cfg.grid_size[0]}x{cfg.grid_size[1]})",
                     f"{head_ms:.0f} ms", f"backbone/neck/head; encoder {enc_ms:.1f} ms for 20k pillars"))


def bench_encoder(rows: list[tuple[str, str, str]], repeats: int) -> None:
    """The PyTorch pillar encoder on CPU at 20k pillars: BatchNorm folded into the linear layer (eval) vs not."""
    from .config import CenterPointModelConfig
    from .models.centerpoint import PFNLayer, VoxelEncoderGraph, build_centerpoint, graph_shapes

    cfg = CenterPointModelConfig()
    model = build_centerpoint(cfg).eval()
    enc = VoxelEncoderGraph(model)
    f = torch.randn(graph_shapes(cfg, num_voxels=20000).input_features)

    def run(fold: bool) -> Callable[[], object]:
        def go() -> object:
            PFNLayer.fold_bn = fold
            with torch.inference_mode():
                return enc(f)
        return go

    try:
        ms = interleaved_ms({"folded": run(True), "unfolded": run(False)}, repeats)
    finally:
        PFNLayer.fold_bn = True
    rows.append(("PyTorch CPU encoder, 20k pillars, BatchNorm folded", f"{ms['folded']:.1f} ms",
                 f"unfolded (BatchNorm1d with permutes) {ms['unfolded']:.1f} ms: "
                 f"{ms['unfolded'] / ms['folded']:.1f}x faster (same run, interleaved)"))


def bench_metrics(rows: list[tuple[str, str, str]], repeats: int) -> None:
    from .metrics.detection3d import Detection3DConfig, evaluate_detection3d
    from .structures import Boxes3D

    rng = np.random.default_rng(0)
    gts, preds = [], []
    for _ in range(1000):
        b = np.concatenate([rng.uniform(-50, 50, (50, 2)), rng.uniform(-1, 1, (50, 1)),
                            rng.uniform(0.5, 10, (50, 3)), rng.uniform(-3, 3, (50, 1))], 1)
        labels = rng.integers(0, 5, 50)
        gts.append(Boxes3D(b, None, labels, None))
        p = b + rng.normal(0, 0.5, b.shape)
        preds.append(Boxes3D(p, rng.uniform(0, 1, 50), labels, None))
    cfg = Detection3DConfig(class_names=("car", "truck", "bus", "bicycle", "pedestrian"))
    ms = median_ms(lambda: evaluate_detection3d(preds, gts, cfg), max(1, repeats // 2))
    rows.append(("3D metrics, 1,000 frames x 50 objects", f"{ms:.0f} ms", "4 thresholds, APH, TP errors, bands"))


def bench_backends(rows: list[tuple[str, str, str]], repeats: int) -> None:
    """ONNX Runtime CPU vs PyTorch CPU on the backbone/neck/head of the shipped model, alternated in one run."""
    from .loader import load_pipeline
    from .models.centerpoint import graph_shapes

    with tempfile.TemporaryDirectory() as tmp, load_pipeline(None, "pytorch") as pt, \
            load_pipeline(None, "onnxruntime", onnx_cache_dir=tmp) as ort:
        x = {"spatial_features": torch.randn(graph_shapes(pt.cfg.model).spatial_features)}
        pt_head, ort_head = pt.pipeline.runners["head"], ort.pipeline.runners["head"]
        med = interleaved_ms({"pytorch": lambda: pt_head(x), "onnxruntime": lambda: ort_head(x)}, repeats)
    rows.append(("backbone/head PyTorch CPU", f"{med['pytorch']:.1f} ms", "median, alternated with ONNX Runtime"))
    rows.append(("backbone/head ONNX Runtime CPU", f"{med['onnxruntime']:.1f} ms",
                 f"ratio ORT/PyTorch = {med['onnxruntime'] / med['pytorch']:.2f}"))


def bench_int8(rows: list[tuple[str, str, str]], repeats: int, fp32_dir: Path | None = None,
               calibration_frames: int = 4) -> None:
    """ONNX Runtime CPU, INT8 Q/DQ vs fp32, per graph, alternated in one run (issue 14).

    The graphs are `fp32_dir`'s (a bundle) or the shipped checkpoint exported to a temp dir; they are quantized
    (min-max, no guard: speed only) on `calibration_frames` frames of the calibration seed and fed a real frame."""
    from .backends.onnxruntime_backend import OrtGraphRunner
    from .config import DataConfig, QuantizeConfig
    from .export import quantize as qz
    from .export.onnx_export import export_centerpoint_onnx, onnx_file_names

    with tempfile.TemporaryDirectory(prefix="awml_bench_int8_") as tmp:
        if fp32_dir is None:
            from .deploy import resolve_checkpoint
            from .config import DEFAULT_CHECKPOINT
            from .models.checkpoint import load_checkpoint

            model, cfg = load_checkpoint(resolve_checkpoint(DEFAULT_CHECKPOINT))
            g = export_centerpoint_onnx(model, cfg, Path(tmp) / "fp32")
            fp32 = {k: g[k].path for k in ("encoder", "head")}
        else:
            from .config import CenterPointModelConfig

            cfg = CenterPointModelConfig()
            fp32 = {k: Path(fp32_dir) / n for k, n in onnx_file_names(cfg).items()}
        q = QuantizeConfig(enabled=True, method="minmax", calibration_frames=calibration_frames, guard_frames=0)
        source = qz.calibration_source(DataConfig(), q)
        frames = qz.calibration_samples(source, Path(tmp) / "data", cfg.class_names)
        calib = qz.collect_calibration(qz._fp32_pipeline(cfg, fp32["encoder"], fp32["head"]), frames, source)
        pair = qz.quantize_centerpoint(fp32, Path(tmp) / "int8", cfg, q, calib)
        for graph, label in (("encoder", "voxel encoder"), ("head", "backbone/neck/head")):
            x = {qz.GRAPH_INPUT[graph]: torch.from_numpy(calib.inputs(graph)[0][qz.GRAPH_INPUT[graph]])}
            runners = {"fp32": OrtGraphRunner(fp32[graph], f"fp32:{graph}"),
                       "int8": OrtGraphRunner(pair.paths[graph], f"int8:{graph}")}
            med = interleaved_ms({k: (lambda r=r: r(x)) for k, r in runners.items()}, repeats)
            shape = "x".join(str(d) for d in x[qz.GRAPH_INPUT[graph]].shape)
            rows.append((f"{label} ONNX Runtime CPU fp32", f"{med['fp32']:.1f} ms",
                         f"median, alternated with INT8 Q/DQ; input {shape}"))
            rows.append((f"{label} ONNX Runtime CPU INT8 Q/DQ", f"{med['int8']:.1f} ms",
                         f"speed-up fp32/INT8 = {med['fp32'] / med['int8']:.2f}x (target >= 1.5x)"))


def bench_fleet(rows: list[tuple[str, str, str]], repeats: int, bags: int = 6, seconds: float = 2.0,
                backend: str = "pytorch") -> None:
    """Fleet replay (issue 15) on a local Ray cluster of 2 CPUs: the same set of generated bags with 1 and with 2
    workers, alternated (1, 2, 2, 1, ...), median walls side by side; plus the per-task overhead and the
    throughput of one worker, the numbers the README's scale notes are computed from."""
    import os

    from .config import DeployConfig, EvaluateConfig
    from .data.rosbag_io import write_synthetic_bag
    from .replay.fleet import FleetSettings, fleet_evaluate, ray_cluster

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="awml_bench_fleet_") as tmp, ray_cluster(2, None, "cpu") as ray:
        root = Path(tmp)
        paths = [write_synthetic_bag(root / "set" / f"drive_{i}", seconds, seed=30_000 + i, progress=False).path
                 for i in range(bags)]
        cfg = DeployConfig(work_dir=str(root / "work"), evaluate=EvaluateConfig(warmup=1))
        settings = FleetSettings(backend=backend)

        def run(workers: int, tag: str) -> tuple[float, object]:
            t0 = time.perf_counter()
            out = fleet_evaluate(paths, cfg, settings, workers=workers, out_dir=root / tag, force=True,
                                 progress=False)
            return time.perf_counter() - t0, out

        run(2, "warm")  # each worker process loads its pipeline once; later tasks reuse it
        walls: dict[int, list[float]] = {1: [], 2: []}
        one = None
        for k in range(max(1, repeats // 3)):
            for w in ((1, 2) if k % 2 == 0 else (2, 1)):
                wall, out = run(w, f"w{w}_{k}")
                walls[w].append(wall)
                one = out if w == 1 else one
        noop = ray.remote(lambda: None).options(num_cpus=1)
        ray.get(noop.remote())
        t0 = time.perf_counter()
        for _ in range(20):
            ray.get(noop.remote())
        task_ms = (time.perf_counter() - t0) / 20 * 1e3
    frames = one.summary["counts"]["frames"]  # type: ignore[attr-defined]
    w1, w2 = statistics.median(walls[1]), statistics.median(walls[2])
    in_task = [r["wall_s"] - sum(f["latency_ms"]["total"] + f["io_ms"] for f in r["frames"]) / 1e3
               for r in one.results]  # type: ignore[attr-defined]
    driver = w1 - sum(r["wall_s"] for r in one.results)  # type: ignore[attr-defined]
    note = f"{bags} bags x {seconds:g} s ({frames} frames, {backend}, shipped model); load avg {load:.1f} on " \
           f"{os.cpu_count()} cores"
    rows.append(("fleet replay, 1 worker", f"{w1:.1f} s", f"{frames / w1:.2f} frames/s per worker; {note}"))
    rows.append(("fleet replay, 2 workers", f"{w2:.1f} s", f"speed-up 1->2 workers = {w1 / w2:.2f}x (target >= 1.6x)"))
    rows.append(("fleet per-task overhead", f"{statistics.median(in_task) * 1e3:.0f} ms/bag",
                 f"in the task, besides its frames (open the bag, read its ground truth, return the result); "
                 f"an empty Ray task round trip {task_ms:.1f} ms"))
    rows.append(("fleet driver, per set", f"{driver:.2f} s", f"{bags} bags, 1 worker: fingerprints, scheduling, "
                 f"results written, one aggregation over all frames, report with plots"))
    io = statistics.median(f["io_ms"] for r in one.results for f in r["frames"])  # type: ignore[attr-defined]
    pipe = statistics.median(f["latency_ms"]["total"] for r in one.results for f in r["frames"])  # type: ignore
    rows.append(("fleet per frame, 1 worker", f"{1e3 * w1 / frames:.0f} ms", f"pipeline {pipe:.0f} ms, bag read + "
                 f"decode {io:.1f} ms (medians); the rest is scoring and the per-task and per-set costs above"))


def bench_yolox(rows: list[tuple[str, str, str]], repeats: int) -> None:
    """YOLOX: camera rendering, letterbox, forward (small and T4 geometry; PyTorch vs ONNX Runtime, alternated),
    decode + NMS on the small model's output for a rendered frame."""
    from .backends.base import RunnerSet
    from .backends.onnxruntime_backend import OrtGraphRunner
    from .config import t4_yolox_model
    from .data.camera import generate_camera_frame
    from .export.yolox_onnx import export_yolox_onnx
    from .families import get_family
    from .loader import resolve_checkpoint, torch_runners
    from .models.yolox import build_yolox, load_yolox_checkpoint
    from .pipelines.yolox.preprocess import letterbox

    fam = get_family("yolox")
    rows.append(("yolox: render one camera frame (640x384)", f"{median_ms(lambda: generate_camera_frame(10_000), 3):.1f} ms",
                 "synthetic camera, one scene"))
    image = generate_camera_frame(10_000).image
    rows.append(("yolox: letterbox 640x384 -> 960x960", f"{median_ms(lambda: letterbox(image, (960, 960)), repeats):.2f} ms",
                 "bilinear + pad 114, CPU"))
    small, small_cfg = load_yolox_checkpoint(resolve_checkpoint(fam.default_checkpoint))
    t4_cfg = t4_yolox_model()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for label, model, cfg in (("small 384x640", small, small_cfg), ("T4 960x960", build_yolox(t4_cfg).eval(), t4_cfg)):
            path = export_yolox_onnx(model, cfg, Path(tmp), 17, True)["yolox"].path
            pt = torch_runners(model, cfg, "cpu", "yolox")["yolox"]
            ort = OrtGraphRunner(path, "onnxruntime:yolox")
            x = {"images": torch.rand(1, 3, *cfg.input_size) * 255}
            med = interleaved_ms({"pytorch": lambda: pt(x), "onnxruntime": lambda: ort(x)}, max(3, repeats // 2))
            rows.append((f"yolox forward {label} PyTorch CPU", f"{med['pytorch']:.1f} ms", "batch 1, alternated"))
            rows.append((f"yolox forward {label} ONNX Runtime CPU", f"{med['onnxruntime']:.1f} ms",
                         f"ratio ORT/PyTorch = {med['onnxruntime'] / med['pytorch']:.2f}"))
            if label.startswith("small"):
                pipe = fam.make_pipeline(cfg, RunnerSet({"yolox": ort}, "onnxruntime"), "cpu")
                batch, geos = pipe.preprocess([image])
                out = pipe.infer(batch)
                rows.append(("yolox decode + NMS (small, score 0.01)",
                             f"{median_ms(lambda: pipe.postprocess(out, geos), repeats):.2f} ms",
                             f"{len(pipe.postprocess(out, geos)[0])} boxes kept"))
            ort.close()
            pt.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="awml-deploy bench", description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=SECTIONS + EXTRA_SECTIONS,
                    help=f"run only these sections (default: all but {', '.join(EXTRA_SECTIONS)})")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement (default 7)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: the pipelines on the GPU per stage and precision (bench_gpu): CenterPoint with mAP by "
                         "precision (--only model), YOLOX small and T4 geometry (--only yolox)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows: list[tuple[str, str, str]] = []
    funcs = {"data": bench_data, "voxelize": bench_voxelize, "model": bench_model, "encoder": bench_encoder,
             "metrics": bench_metrics, "backends": bench_backends, "int8": bench_int8, "yolox": bench_yolox,
             "fleet": bench_fleet}
    console = Console(width=None if sys.stdout.isatty() else 160)  # logs and CI: no wrapping at 80
    if args.device == "cuda":  # the GPU section alone (bench_gpu.py)
        from .bench_gpu import bench_cuda, bench_cuda_accuracy, bench_cuda_yolox

        funcs = {"cuda": bench_cuda, "cuda-accuracy": lambda r, _: bench_cuda_accuracy(r), "yolox": bench_cuda_yolox}
        # on CUDA, --only model picks the CenterPoint sections and --only yolox the YOLOX one
        wanted = {"model": ("cuda", "cuda-accuracy"), "yolox": ("yolox",)}
        args.only = [n for k in (args.only or wanted) for n in wanted.get(k, ())] or list(funcs)
    for name in args.only or SECTIONS:
        with console.status(f"bench: {name}"):
            funcs[name](rows, args.repeats)
    table = Table(title=f"awml-deploy bench (torch threads: {torch.get_num_threads()})")
    for col in ("what", "median", "notes"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    return 0
