"""Train the small CenterPoint on fresh synthetic scenes, evaluate it on a held-out set, write the checkpoint.

    python -m awml_deploy_core.training.train --out centerpoint_small.pth --seed 0 --frames 4000 --epochs 40 \
        --eval-frames 300 --device cuda --time-budget-min 7 --deadline-min 9.3   # the shipped checkpoint's run

Writes ``--out`` (checkpoint, fp32 state dict + model config + meta) and ``--out`` with suffix ``.json`` (loss
summary, held-out AP table, the exact command, seeds, git commit, wall times). Frames are generated once, in
parallel, and kept in memory (on the GPU when training there); augmentation, voxelization and targets run
per step with the same pre-processing code the deployed pipeline uses.

Schedule: AdamW + one-cycle (cosine warm-up over 30 %, cosine decay to lr/1e4). With ``--time-budget-min``
the schedule's progress is max(step / planned_steps, elapsed / budget), so a run always anneals and ends
inside the budget (the steps actually done are recorded). Training state is saved every ``--save-every-s``
seconds next to the checkpoint (``<out>.state.pt``); ``--resume`` continues from it.
Held-out evaluation uses ``--eval-seed`` (default 10000), never used for training: training scenes use
``sequence_seed(seed, i)`` and evaluation ``sequence_seed(eval_seed, i)``; ``--seed`` must stay below 10000.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import CenterPointModelConfig
from ..models.centerpoint import CenterPoint, build_centerpoint
from ..models.checkpoint import save_checkpoint
from ..pipelines.centerpoint.features import encoder_features
from ..pipelines.centerpoint.voxelize import voxelize
from ..structures import Boxes3D
from .augment import AugmentConfig, augment_boxes, augment_points, sample_params
from .targets import TargetConfig, build_targets, centerpoint_loss, collate_targets

EVAL_SEED = 10_000


# ------------------------------------------------------------------------------------------ data
def _make_frame(job: tuple[int, int]) -> dict[str, np.ndarray]:
    from ..data.synthetic import generate_sequence, sequence_seed

    seed, index = job
    f = next(generate_sequence(sequence_seed(seed, index), 1))
    return {
        "points": f.points,  # (N, 4); the pipeline adds time_lag 0 (a single sweep)
        "boxes": f.gt.boxes,
        "labels": f.gt.labels,
        "velocities": f.gt.velocities,
        "num_points": f.num_lidar_points,
    }


def generate_cache(seed: int, num_frames: int, workers: int, desc: str) -> list[dict[str, np.ndarray]]:
    """Frames i = 0..num_frames-1 of ``generate_frames(seed, num_frames)`` (same scenes), in parallel."""
    from tqdm import tqdm

    jobs = [(seed, i) for i in range(num_frames)]
    if workers <= 1:
        return [_make_frame(j) for j in tqdm(jobs, desc=desc, mininterval=5)]
    with mp.get_context("spawn").Pool(workers) as pool:
        return list(tqdm(pool.imap(_make_frame, jobs, chunksize=4), total=num_frames, desc=desc, mininterval=5))


def frame_gt(frame: dict[str, np.ndarray], min_points: int = 1) -> tuple[Boxes3D, int]:
    """A held-out frame's GT boxes holding >= min_points lidar points, and how many held fewer. The range rule
    is the metric configuration's (``evaluate.metric_config``), as in export's evaluation and replay."""
    from ..evaluate import with_lidar_points

    gt = Boxes3D(frame["boxes"], None, frame["labels"], frame["velocities"])
    return with_lidar_points(gt, np.asarray(frame["num_points"]) >= min_points)


def score_heldout(
    preds: list[Boxes3D], frames: list[dict[str, Any]], cfg: CenterPointModelConfig, min_points: int = 1
) -> tuple[Any, dict[str, Any], list[Boxes3D]]:
    """Training's metric path: detections per frame against the frames' GT, scored with the deploy config's
    metric configuration (defaults of ``EvaluateConfig``). Returns metrics, the GT summary and the GT used."""
    from ..config import EvaluateConfig
    from ..evaluate import ground_truth_summary, metric_config
    from ..metrics.detection3d import evaluate_detection3d

    picked = [frame_gt(fr, min_points) for fr in frames]
    gts = [g for g, _ in picked]
    result = evaluate_detection3d(preds, gts, metric_config(cfg, EvaluateConfig()))
    return result, ground_truth_summary(result, sum(n for _, n in picked)), gts


# ---------------------------------------------------------------------------------------- schedule
def one_cycle_lr(progress: float, lr_max: float, pct_start: float = 0.3, div: float = 10.0, final_div: float = 1e4) -> float:
    p = min(max(progress, 0.0), 1.0)
    if p < pct_start:
        a = (1 - math.cos(math.pi * p / pct_start)) / 2
        return lr_max / div + (lr_max - lr_max / div) * a
    a = (1 + math.cos(math.pi * (p - pct_start) / (1 - pct_start))) / 2
    return lr_max / final_div + (lr_max - lr_max / final_div) * a


def batch_indices(step: int, batch_size: int, num_frames: int, seed: int) -> list[int]:
    """Deterministic for (seed, step): consecutive slices of per-epoch permutations."""
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(k, num_frames)
        perm = _perm(seed, epoch, num_frames)
        out.append(int(perm[pos]))
    return out


_PERMS: dict[tuple[int, int, int], np.ndarray] = {}


def _perm(seed: int, epoch: int, n: int) -> np.ndarray:
    key = (seed, epoch, n)
    if key not in _PERMS:
        _PERMS.clear()
        _PERMS[key] = np.random.default_rng([seed, 7, epoch]).permutation(n)
    return _PERMS[key]


def make_batch(
    frames: list[dict[str, Any]],
    indices: list[int],
    step: int,
    seed: int,
    cfg: CenterPointModelConfig,
    acfg: AugmentConfig,
    tcfg: TargetConfig,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    rng = np.random.default_rng([seed, 11, step])
    feats, coords, targets = [], [], []
    for b, i in enumerate(indices):
        fr = frames[i]
        p = sample_params(rng, acfg)
        pts = augment_points(fr["points_t"], p)
        vox = voxelize(pts, cfg)
        feats.append(encoder_features(vox, cfg))
        coords.append(torch.cat([torch.full_like(vox.coords[:, :1], b), vox.coords], dim=1))
        keep = fr["num_points"] >= tcfg.min_points
        boxes, vel = augment_boxes(fr["boxes"][keep], fr["velocities"][keep], p)
        targets.append(build_targets(boxes, fr["labels"][keep], vel, cfg, tcfg))
    return torch.cat(feats), torch.cat(coords), collate_targets(targets, device)


# -------------------------------------------------------------------------------------- evaluation
def evaluate_frames(
    model: CenterPoint,
    cfg: CenterPointModelConfig,
    frames: list[dict[str, Any]],
    device: torch.device,
    min_points: int = 1,
    variants: dict[str, CenterPointModelConfig] | None = None,
):
    """Run the deployed pipeline on ``frames`` and score it. ``variants``: other post-processing configs
    (same network outputs) scored alongside; their mAP by threshold is returned in ``extra``."""
    from ..config import EvaluateConfig
    from ..evaluate import metric_config
    from ..metrics.detection3d import evaluate_detection3d
    from ..pipelines.centerpoint.decode import decode
    from ..pipelines.centerpoint.nms import nms

    from ..config import DeployConfig
    from ..loader import load_pipeline

    pipe = load_pipeline(DeployConfig(model=cfg), "pytorch", str(device), model=model).pipeline
    variants = variants or {}
    preds, times = [], []
    var_preds: dict[str, list[Boxes3D]] = {k: [] for k in variants}
    for fr in frames:
        out = pipe(fr["points"], return_raw=bool(variants))
        preds.append(out.detections)
        times.append(out.timings_ms["total"])
        for name, vcfg in variants.items():
            var_preds[name].append(nms(decode(out.raw, vcfg), vcfg) if out.raw and "heatmap" in out.raw else Boxes3D())
    result, gt_summary, gts = score_heldout(preds, frames, cfg, min_points)
    dcfg = metric_config(cfg, EvaluateConfig())
    extra: dict[str, Any] = {
        "num_frames": len(frames),
        "ground_truth": gt_summary,
        "num_gt": gt_summary["scored"],
        "num_gt_per_class": [result.num_gt[c] for c in cfg.class_names],
        "detections_per_frame": float(np.mean([len(p) for p in preds])),
        "pipeline_total_ms_median": float(np.median(times)),
    }
    if variants:
        extra["postprocess_variants"] = {}
        for name, vcfg in variants.items():
            r = evaluate_detection3d(var_preds[name], gts, dcfg)
            extra["postprocess_variants"][name] = {
                "nms": vcfg.nms.model_dump(),
                "score_threshold": vcfg.score_threshold,
                "map_by_threshold": {str(k): float(v) for k, v in r.map_by_threshold.items()},
                "ap_at_2m": {c: float(r.ap[c][2.0]) for c in cfg.class_names},
            }
    return result, extra


def postprocess_variants(cfg: CenterPointModelConfig) -> dict[str, CenterPointModelConfig]:
    """Post-processing alternatives worth knowing about when choosing the deploy defaults."""
    def with_nms(**nms: Any) -> CenterPointModelConfig:
        data = cfg.model_dump()
        data["nms"].update(nms)
        return CenterPointModelConfig.model_validate(data)

    return {
        "circle_half_radius": with_nms(circle_radius=[r / 2 for r in cfg.nms.circle_radius]),
        "circle_autoware_0.5m": with_nms(circle_radius=[0.5]),
        "bev_iou_0.2": with_nms(kind="bev_iou", iou_threshold=0.2),
    }


@torch.no_grad()
def recalibrate_batchnorm(model: CenterPoint, batches) -> None:
    """Reset BN running statistics and re-estimate them as a plain average over ``batches`` (train mode,
    no gradients): removes the lag of momentum 0.01 statistics at the end of a short schedule."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for feats, coords, batch_size in batches:
        model(feats, coords, batch_size=batch_size)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


# -------------------------------------------------------------------------------------------- misc
def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _log(msg: str, log_file: Path | None) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if log_file is not None:
        with open(log_file, "a") as f:
            f.write(line + "\n")


def preprocess_identical_on_devices(points: np.ndarray, cfg: CenterPointModelConfig, device: torch.device) -> bool | None:
    """Voxelization + encoder features on CPU and on ``device``: bit-identical?"""
    if device.type == "cpu":
        return None
    a = voxelize(torch.from_numpy(points), cfg)
    b = voxelize(torch.from_numpy(points).to(device), cfg)
    fa, fb = encoder_features(a, cfg), encoder_features(b, cfg).cpu()
    return bool(
        torch.equal(a.points, b.points.cpu()) and torch.equal(a.coords, b.coords.cpu()) and torch.equal(fa, fb) and a.stats == b.stats
    )


# -------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="awml-deploy train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="checkpoint path (.pth); metrics go to the same name with .json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=4000, help="training scenes, generated once")
    ap.add_argument("--epochs", type=float, default=40.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the one-cycle schedule")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--time-budget-min", type=float, default=None, help="cap on the training loop's wall time")
    ap.add_argument(
        "--deadline-min", type=float, default=None, help="cap on the whole run's wall time (the training budget shrinks to fit)"
    )
    ap.add_argument("--state", type=Path, default=None, help="resumable training state (default: <out>.state.pt)")
    ap.add_argument("--eval-frames", type=int, default=200)
    ap.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--save-every-s", type=float, default=60.0)
    ap.add_argument("--bn-recalib-batches", type=int, default=40, help="re-estimate BN statistics on this many batches after training (0: off)")
    ap.add_argument("--resume", action="store_true", help="continue from <out>.state.pt if it exists")
    ap.add_argument("--no-amp", action="store_true", help="train in fp32 on CUDA (default: bf16 autocast)")
    ap.add_argument("--log", type=Path, default=None, help="also append progress lines to this file")
    args = ap.parse_args(argv)
    if not 0 <= args.seed < EVAL_SEED:
        ap.error(f"--seed must be in [0, {EVAL_SEED}): seeds from {EVAL_SEED} on are held out for evaluation")
    if args.eval_seed < EVAL_SEED:
        ap.error(f"--eval-seed must be >= {EVAL_SEED} so that evaluation scenes are never trained on")
    if args.frames < 1 or args.batch_size < 1 or args.epochs <= 0:
        ap.error("--frames, --batch-size and --epochs must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    t_start = time.perf_counter()
    log_file = args.log
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    cfg = CenterPointModelConfig()
    tcfg, acfg = TargetConfig(), AugmentConfig()
    out = args.out
    state_path = args.state or out.with_name(out.name + ".state.pt")
    json_path = out.with_suffix(".json")
    walls: dict[str, float] = {}

    # 1. data, generated before CUDA is touched
    t0 = time.perf_counter()
    train_frames = generate_cache(args.seed, args.frames, args.workers, "train scenes")
    eval_frames = generate_cache(args.eval_seed, args.eval_frames, args.workers, "eval scenes") if args.eval_frames else []
    walls["generate_s"] = time.perf_counter() - t0
    n_pts = float(np.mean([len(f["points"]) for f in train_frames]))
    _log(f"generated {len(train_frames)} train + {len(eval_frames)} eval frames in {walls['generate_s']:.1f}s ({n_pts:.0f} points/frame)", log_file)
    for f in train_frames:
        f["points_t"] = torch.from_numpy(f["points"]).to(device)
    identical = preprocess_identical_on_devices(train_frames[0]["points"], cfg, device)

    # 2. model and optimizer
    torch.manual_seed(args.seed)
    model = build_centerpoint(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr / 10, weight_decay=args.weight_decay)
    planned = max(1, int(math.ceil(args.epochs * args.frames / args.batch_size)))
    budget_s = args.time_budget_min * 60 if args.time_budget_min else None
    if args.deadline_min:  # keep ~1.5 min for evaluation and writing
        left = args.deadline_min * 60 - (time.perf_counter() - t_start) - 90
        budget_s = min(budget_s or math.inf, max(left, 30.0))
    step, train_elapsed, history = 0, 0.0, []
    if args.resume and state_path.is_file():
        st = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        step, train_elapsed = int(st["step"]), float(st["train_elapsed"])
        history = [list(map(float, h)) for h in st["history"].tolist()]
        _log(f"resumed from {state_path} at step {step} ({train_elapsed:.0f}s trained)", log_file)
    use_amp = device.type == "cuda" and not args.no_amp
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def save_state() -> None:
        tmp = state_path.with_name(state_path.name + ".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "train_elapsed": train_elapsed,
                "history": torch.tensor(history if history else np.zeros((0, 4)), dtype=torch.float64),
            },
            tmp,
        )
        os.replace(tmp, state_path)
        save_checkpoint(model, cfg, out, {"partial": True, "step": step, "seed": args.seed})

    # 3. train
    from tqdm import tqdm

    model.train()
    progress = 0.0
    acc = {"loss": 0.0, "heatmap": 0.0, "bbox": 0.0, "n": 0}
    t_loop = time.perf_counter() - train_elapsed
    last_save = time.perf_counter()
    bar = tqdm(total=planned, initial=step, desc="train", mininterval=15, file=sys.stderr)
    while True:
        train_elapsed = time.perf_counter() - t_loop
        progress = step / planned
        if budget_s:
            progress = max(progress, train_elapsed / budget_s)
        if progress >= 1.0:
            break
        lr = one_cycle_lr(progress, args.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = batch_indices(step, args.batch_size, len(train_frames), args.seed)
        feats, coords, targets = make_batch(train_frames, idx, step, args.seed, cfg, acfg, tcfg, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            raw = model(feats, coords, batch_size=len(idx))
        loss, parts = centerpoint_loss(raw, targets, tcfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 35.0)
        opt.step()
        step += 1
        bar.update(1)
        acc["loss"] += float(loss.detach())
        acc["heatmap"] += float(parts["heatmap"])
        acc["bbox"] += float(parts["bbox"])
        acc["n"] += 1
        if acc["n"] >= 50:
            n = acc["n"]
            history.append([step, acc["loss"] / n, acc["heatmap"] / n, acc["bbox"] / n])
            _log(
                f"step {step}/{planned} progress {progress:.3f} lr {lr:.2e} loss {acc['loss'] / n:.4f} "
                f"(heatmap {acc['heatmap'] / n:.4f}, bbox {acc['bbox'] / n:.4f}) {train_elapsed:.0f}s",
                log_file,
            )
            acc = {"loss": 0.0, "heatmap": 0.0, "bbox": 0.0, "n": 0}
        if time.perf_counter() - last_save > args.save_every_s:
            save_state()
            last_save = time.perf_counter()
    bar.close()
    walls["train_s"] = train_elapsed
    if args.bn_recalib_batches > 0:
        t0 = time.perf_counter()

        def recalib_batches():
            for k in range(args.bn_recalib_batches):
                s_ = 10_000_000 + k  # augmentation draws apart from the training steps
                idx_ = batch_indices(s_, args.batch_size, len(train_frames), args.seed)
                f_, c_, _ = make_batch(train_frames, idx_, s_, args.seed, cfg, acfg, tcfg, device)
                yield f_, c_, len(idx_)

        recalibrate_batchnorm(model, recalib_batches())
        walls["bn_recalib_s"] = time.perf_counter() - t0
    model.eval()
    _log(f"trained {step} steps ({step * args.batch_size / len(train_frames):.1f} epochs) in {train_elapsed:.0f}s", log_file)

    # 4. held-out evaluation through the deployed pipeline
    t0 = time.perf_counter()
    eval_info: dict[str, Any] = {}
    if eval_frames:
        result, extra = evaluate_frames(model, cfg, eval_frames, device, variants=postprocess_variants(cfg))
        eval_info = {"seed": args.eval_seed, **extra, "metrics": result.to_dict(), "table": result.table()}
        _log("held-out evaluation:\n" + result.table(), log_file)
    walls["eval_s"] = time.perf_counter() - t0

    # 5. checkpoint + JSON
    meta = {
        "trained_by": "awml_deploy_core.training.train",
        "command": "python -m awml_deploy_core.training.train " + shlex.join(argv),
        "seed": args.seed,
        "eval_seed": args.eval_seed,
        "steps": step,
        "git_commit": _git_commit(),
    }
    if eval_info:
        meta["heldout_map"] = {k: v for k, v in eval_info["metrics"].get("map_by_threshold", {}).items()}
    model_cpu = model.to("cpu")
    save_checkpoint(model_cpu, cfg, out, meta)
    walls["total_s"] = time.perf_counter() - t_start
    hist = np.asarray(history) if history else np.zeros((0, 4))
    report = {
        **meta,
        "argv": argv,
        "frames": args.frames,
        "batch_size": args.batch_size,
        "epochs_planned": args.epochs,
        "epochs_done": step * args.batch_size / len(train_frames),
        "planned_steps": planned,
        "schedule": "one-cycle, time-capped" if budget_s else "one-cycle",
        "time_budget_min": args.time_budget_min,
        "deadline_min": args.deadline_min,
        "train_budget_s": budget_s,
        "lr_max": args.lr,
        "weight_decay": args.weight_decay,
        "amp": "bf16" if use_amp else "fp32",
        "bn_recalib_batches": args.bn_recalib_batches,
        "augment": vars(acfg),
        "targets": vars(tcfg),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "preprocess_cpu_cuda_bit_identical": identical,
        "wall_time_s": walls,
        "loss": {
            "first": hist[0].tolist() if len(hist) else None,
            "last": hist[-1].tolist() if len(hist) else None,
            "curve_columns": ["step", "loss", "heatmap", "bbox"],
            "curve": hist[:: max(1, len(hist) // 40)].round(5).tolist(),
        },
        "eval": eval_info,
        "checkpoint": {"path": out.name, "bytes": out.stat().st_size, "sha256": _sha256(out)},
        "model_config": cfg.model_dump(),
    }
    json_path.write_text(json.dumps(report, indent=2))
    if state_path.is_file():
        state_path.unlink()
    _log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {json_path}; total {walls['total_s']:.0f}s", log_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
