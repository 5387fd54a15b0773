"""Train the small calibration-status classifier on synthetic lidar + camera pairs, evaluate it on a held-out seed,
write the checkpoint.

    awml-deploy train --family calibration_status --out calibration_status_small.pth --scenes 960 --device cuda \\
        --time-budget-min 3.3

Training instants are ``sequence_seed(seed, i)`` scenes (``--seed`` below 10000), ``--frames-per-scene`` consecutive
sweeps each, rendered in parallel (lidar sweep + camera image of the same instant). Every step draws a fresh
perturbation per sample from the config's miscalibration generator (``pair_perturbation(seed, k)``, the ambiguous
band redrawn) and builds the inputs on the GPU with THE input builder (``build_batch``). Held-out evaluation uses
``--eval-seed`` (default 10000, never trained on): the same pairs, perturbations and pipeline as
``awml-deploy export config/calibration_status.yaml`` with ``data.num_frames = --eval-pairs``, scored by
``families.calibration_status_eval`` (scikit-learn). Writes ``--out`` (fp32 weights of the EMA model + model config +
meta) and ``--out`` with suffix ``.json`` (command, seeds, schedule, the held-out table).

Schedule: AdamW, linear warm-up then cosine decay; with ``--time-budget-min`` progress is max(step / planned,
elapsed / budget), so a run anneals and ends inside its budget. Augmentation: brightness/contrast jitter and a
random share of the lidar points dropped.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import CalibrationStatusModelConfig
from ..data.calibration_pairs import LABEL_INDEX, pair_perturbation, perturb_extrinsic
from ..models.calibration_status import build_calibration_status
from ..models.checkpoint import save_checkpoint
from ..pipelines.calibration.input_builder import BuilderSpec, build_batch
from .ema import ema_update

EVAL_SEED = 10_000
FRUSTUM_MARGIN = 0.3  # points kept up to this share of the image size outside it (perturbed views see them)


# ------------------------------------------------------------------------------------------ data
def render(job: tuple[int, int, int]) -> list[dict[str, np.ndarray]]:
    """Scene ``i`` of ``seed``: ``frames`` instants of (image, lidar points culled to a widened camera frustum, K,
    true extrinsic)."""
    from ..data.calibration_pairs import render_scene_pairs, scene_start_time
    from ..data.synthetic import sequence_seed

    seed, i, frames = job
    out = []
    for p in render_scene_pairs(sequence_seed(seed, i), frames, start_time=scene_start_time(i, frames)):
        h, w = p.image.shape[:2]
        pc = p.points[:, :3].astype(np.float64) @ p.T_true[:3, :3].T + p.T_true[:3, 3]
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = p.K[0, 0] * pc[:, 0] / z + p.K[0, 2]
            v = p.K[1, 1] * pc[:, 1] / z + p.K[1, 2]
        m = FRUSTUM_MARGIN
        keep = (z > 0.05) & (u > -m * w) & (u < (1 + m) * w) & (v > -m * h) & (v < (1 + m) * h)
        out.append({"image": p.image, "points": np.ascontiguousarray(p.points[keep]), "K": p.K, "T": p.T_true})
    return out


def _one_thread() -> None:
    """Worker processes: one OpenCV and one torch thread each (the pool is the parallelism)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def render_all(seed: int, scenes: int, frames: int, workers: int) -> list[dict[str, np.ndarray]]:
    jobs = [(seed, i, frames) for i in range(scenes)]
    if workers <= 1:
        return [f for j in jobs for f in render(j)]
    with mp.get_context("spawn").Pool(workers, initializer=_one_thread) as pool:
        return [f for seq in pool.imap(render, jobs, chunksize=2) for f in seq]


class GpuPairs:
    """Every rendered instant on the device: images [N, H, W, 3] uint8, all points in one tensor with offsets."""

    def __init__(self, frames: list[dict[str, np.ndarray]], device: str) -> None:
        self.images = torch.from_numpy(np.stack([f["image"] for f in frames])).to(device)
        counts = np.array([len(f["points"]) for f in frames])
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.points = torch.from_numpy(np.concatenate([f["points"] for f in frames])).to(device)
        self.K = np.stack([f["K"] for f in frames])
        self.T = np.stack([f["T"] for f in frames])
        self.device = device

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: np.ndarray, T_used: np.ndarray, spec: BuilderSpec, keep: np.ndarray,
              gen: torch.Generator) -> torch.Tensor:
        """[B, 5, H, W] by the input builder; ``keep`` [B]: the share of each frame's points kept (dropout)."""
        pts, bi = [], []
        for b, i in enumerate(idx):
            p = self.points[self.offsets[i]:self.offsets[i + 1]]
            if keep[b] < 1.0:
                p = p[torch.rand(len(p), device=self.device, generator=gen) < float(keep[b])]
            pts.append(p)
            bi.append(torch.full((len(p),), b, dtype=torch.long, device=self.device))
        x, _, _ = build_batch(self.images[idx], torch.cat(pts), torch.cat(bi),
                              torch.from_numpy(self.K[idx]).to(self.device),
                              torch.from_numpy(T_used).to(self.device), spec)
        return x


def photometric(x: torch.Tensor, spec: BuilderSpec, gen: torch.Generator) -> torch.Tensor:
    """Brightness/contrast jitter of the RGB channels, in pixel units, re-normalised."""
    B = x.shape[0]
    mean = torch.tensor(spec.image_mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.image_std, device=x.device).view(1, 3, 1, 1)
    a = torch.empty(B, 1, 1, 1, device=x.device).uniform_(0.7, 1.3, generator=gen)
    c = torch.empty(B, 1, 1, 1, device=x.device).uniform_(-25, 25, generator=gen)
    rgb = (x[:, :3] * std + mean) * a + c
    x = x.clone()
    x[:, :3] = (rgb.clamp(0, 255) - mean) / std
    return x


# ------------------------------------------------------------------------------------------ evaluation
def evaluate_held_out(model: torch.nn.Module, cfg: CalibrationStatusModelConfig, seed: int, pairs: int,
                      workers: int, device: str) -> Any:
    """The export job's evaluation: pairs of ``seed`` rendered as ``open_pair_dataset`` renders them, through the
    deployed pipeline (CPU input builder -> PyTorch graph) and ``evaluate_backend``."""
    from ..data.calibration_pairs import CalibrationPairDataset, generate_pair_scenes
    from ..families.calibration_status_eval import evaluate_backend
    from ..loader import torch_runners
    from ..pipelines.calibration.pipeline import CalibrationStatusPipeline

    mis = cfg.miscalibration
    scenes = -(-pairs // mis.pairs_per_scene)
    folder = Path(tempfile.mkdtemp(prefix="calib_eval_"))
    generate_pair_scenes(folder, seed, scenes, workers=workers)
    dataset = CalibrationPairDataset(folder, pairs, mis)
    samples = [dataset[i] for i in range(len(dataset))]
    pipe = CalibrationStatusPipeline(cfg, torch_runners(model, cfg, device, "calibration_status"), device)
    return evaluate_backend("pytorch", pipe, samples, 3, mis, progress=False)


def held_out_table(e: Any) -> str:
    m = e.metrics
    rows = [("labelled pairs (ambiguous excluded)", m.count), ("miscalibrated / calibrated", f"{m.positives} / "
                                                                                             f"{m.count - m.positives}"),
            ("accuracy", f"{m.accuracy:.4f}"), ("precision (miscalibrated)", f"{m.precision:.4f}"),
            ("recall (miscalibrated)", f"{m.recall:.4f}"), ("F1 (miscalibrated)", f"{m.f1:.4f}"),
            ("ROC-AUC", f"{m.roc_auc:.4f}"), ("false alarm rate (calibrated called miscalibrated)",
                                              f"{m.false_alarm_rate:.4f}"),
            (f"recall at >= 2 deg or >= 10 cm ({e.large_error_pairs} pairs)", f"{e.large_error_recall:.4f}"),
            ("confusion [[mis->mis, mis->cal], [cal->mis, cal->cal]]", str(m.confusion)),
            ("ambiguous band pairs / called miscalibrated", f"{e.ambiguous['pairs']} / "
                                                            f"{e.ambiguous['flagged_miscalibrated']}")]
    return "\n".join(f"| {k} | {v} |" for k, v in rows)


# ------------------------------------------------------------------------------------------ training
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="awml-deploy train --family calibration_status",
                                description=__doc__.splitlines()[0])
    p.add_argument("--family", default="calibration_status")
    p.add_argument("--out", default="calibration_status_small.pth")
    p.add_argument("--seed", type=int, default=3, help="training scene seed (below 10000)")
    p.add_argument("--scenes", type=int, default=960)
    p.add_argument("--frames-per-scene", type=int, default=2)
    p.add_argument("--steps", type=int, default=20000, help="planned steps (the time budget may end it sooner)")
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--workers", type=int, default=max(1, (mp.cpu_count() or 2)))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--time-budget-min", type=float, default=None)
    p.add_argument("--eval-pairs", type=int, default=600)
    p.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    p.add_argument("--base-channels", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    if a.seed >= EVAL_SEED:
        raise SystemExit(f"--seed {a.seed}: training seeds must be below {EVAL_SEED} (held-out seeds start there)")
    t_start = time.time()
    cfg = CalibrationStatusModelConfig(**({"base_channels": a.base_channels} if a.base_channels else {}))
    spec = BuilderSpec.of(cfg)
    torch.manual_seed(a.seed)
    torch.backends.cudnn.benchmark = a.device.startswith("cuda")  # one input shape throughout
    print(f"rendering {a.scenes} scenes x {a.frames_per_scene} instants (seed {a.seed}) on {a.workers} workers",
          flush=True)
    data = GpuPairs(render_all(a.seed, a.scenes, a.frames_per_scene, a.workers), a.device)
    t_data = time.time() - t_start
    print(f"rendered {len(data)} instants in {t_data:.0f} s; {data.points.shape[0]} points on {a.device}", flush=True)

    # channels_last on CUDA only (tensor cores); on the CPU its convolution backward corrupted the heap here
    fmt = torch.channels_last if a.device.startswith("cuda") else torch.contiguous_format
    model = build_calibration_status(cfg).to(a.device).to(memory_format=fmt)
    ema = copy.deepcopy(model).eval()
    decay = [p for p in model.parameters() if p.ndim > 1]
    other = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}],
                            lr=a.lr)
    budget = a.time_budget_min * 60 if a.time_budget_min else None
    gen = torch.Generator(device=a.device).manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    use_bf16 = a.device.startswith("cuda")
    mis = cfg.miscalibration
    t0 = time.time()
    step, log, k = 0, [], 0
    correct = seen = 0
    while True:
        progress = step / a.steps
        if budget:
            progress = max(progress, (time.time() - t0) / budget)
        if progress >= 1.0:
            break
        lr = a.lr * (step + 1) / a.warmup_steps if step < a.warmup_steps else \
            a.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.integers(0, len(data), a.batch)
        T_used, labels = np.empty((a.batch, 4, 4)), np.empty(a.batch, np.int64)
        for b, i in enumerate(idx):
            pert = pair_perturbation(a.seed, k, mis, exclude_ambiguous=True)
            k += 1
            T_used[b] = perturb_extrinsic(data.T[i], pert.rotation_deg, pert.translation_m, pert.axes_seed)
            labels[b] = LABEL_INDEX[pert.label]
        keep = np.where(rng.uniform(size=a.batch) < 0.5, rng.uniform(0.5, 1.0, a.batch), 1.0)
        with torch.no_grad():
            x = photometric(data.batch(idx, T_used, spec, keep, gen), spec, gen)
            x = x.contiguous(memory_format=fmt)
        y = torch.from_numpy(labels).to(a.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        d = min(0.999, (1 + step) / (10 + step))
        ema_update(ema, model, d)
        with torch.no_grad():
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        step += 1
        if step % 100 == 0:
            rec = {"step": step, "lr": round(lr, 6), "loss": round(float(loss.detach()), 4),
                   "train_acc": round(correct / seen, 4), "elapsed_s": round(time.time() - t0, 1)}
            correct = seen = 0
            log.append(rec)
            print(json.dumps(rec), flush=True)
    t_train = time.time() - t0
    print(f"trained {step} steps of {a.batch} in {t_train:.0f} s", flush=True)

    ema = ema.float().to(memory_format=torch.contiguous_format).eval()
    out = Path(a.out)
    command = "awml-deploy train " + shlex.join(argv)
    save_checkpoint(ema, cfg, out, {"command": command})  # before evaluation
    t1 = time.time()
    e = evaluate_held_out(ema, cfg, a.eval_seed, a.eval_pairs, a.workers, a.device) if a.eval_pairs else None
    table = held_out_table(e) if e is not None else None
    if table:
        print(table, flush=True)
    meta = {"command": command, "seed": a.seed, "scenes": a.scenes, "frames_per_scene": a.frames_per_scene,
            "eval_seed": a.eval_seed, "eval_pairs": a.eval_pairs, "steps": step, "batch": a.batch, "lr": a.lr,
            "render_s": round(t_data, 1), "train_s": round(t_train, 1), "eval_s": round(time.time() - t1, 1),
            "device": a.device, "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else None,
            "torch": str(torch.__version__)}
    summary = None
    if e is not None:
        d = e.to_dict()
        summary = {k: d[k] for k in ("metrics", "large_error_recall", "large_error_pairs", "ambiguous",
                                     "by_rotation", "by_translation")}
    meta["held_out"] = None if summary is None else {
        "accuracy": e.metrics.accuracy, "recall_miscalibrated": e.metrics.recall,
        "false_alarm_rate": e.metrics.false_alarm_rate, "roc_auc": e.metrics.roc_auc,
        "large_error_recall": e.large_error_recall}
    save_checkpoint(ema.cpu(), cfg, out, meta)
    report = {**meta, "model_config": cfg.model_dump(), "held_out": summary, "held_out_table": table,
              "loss_log": log[-30:]}
    from ..bundle import atomic_write_json

    atomic_write_json(out.with_suffix(".json"), report)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {out.with_suffix('.json')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
