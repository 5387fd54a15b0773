"""Train the small YOLOX on synthetic camera frames, evaluate it on a held-out seed, write the checkpoint.

    awml-deploy train --family yolox --out yolox_small.pth --frames 5000 --device cuda --time-budget-min 4.5

Training frames are ``sequence_seed(seed, i)`` scenes (``--seed`` below 10000), rendered in parallel exactly as
``generate_camera_frames(seed, n)`` renders them; held-out evaluation uses ``--eval-seed`` (default 10000, never
trained on) through the deployed pipeline (letterbox -> graph -> decode -> NMS) and pycocotools over the present
classes with ignore regions honoured. Writes ``--out`` (fp32 weights of the EMA model + model config + meta) and
``--out`` with suffix ``.json`` (command, seeds, schedule, held-out metrics and the per-class table).

Schedule: AdamW, linear warm-up then cosine decay; with ``--time-budget-min`` the schedule's progress is
max(step / planned steps, elapsed / budget) so a run always anneals and ends inside the budget. Augmentation on the
GPU: horizontal flip and a random zoom/shift (pad 114), boxes moved alike.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import YOLOXModelConfig
from ..models.checkpoint import save_checkpoint
from ..models.yolox import YOLOX, build_yolox
from .yolox_loss import yolox_loss_batched
from .ema import ema_update

EVAL_SEED = 10_000


# ------------------------------------------------------------------------------------------ data
def render(job: tuple[int, int, tuple[int, int], bool]) -> dict[str, np.ndarray]:
    """Frame ``i`` of ``generate_camera_frames(seed, n)``, letterboxed to the network input (uint8); ``keep_raw``
    keeps the original image and boxes too (held-out frames run through the whole pipeline)."""
    from ..data.camera import generate_camera_sequence
    from ..data.lidar import LidarSpec
    from ..data.synthetic import sequence_seed
    from ..pipelines.yolox.preprocess import letterbox

    seed, i, input_hw, keep_raw = job
    torch.set_num_threads(1)
    t0 = i * (LidarSpec().sweep_period + 1.0)
    f = next(generate_camera_sequence(sequence_seed(seed, i), 1, start_time=t0))
    img, geo = letterbox(f.image, input_hw)
    out = {"image": img.round().clamp(0, 255).to(torch.uint8).numpy(), "boxes": f.boxes * geo.scale,
           "labels": f.labels, "ignore": f.ignore}
    if keep_raw:
        out.update(raw=f.image, raw_boxes=f.boxes)
    return out


def render_all(seed: int, n: int, input_hw: tuple[int, int], workers: int, keep_raw: bool = False
               ) -> list[dict[str, np.ndarray]]:
    jobs = [(seed, i, input_hw, keep_raw) for i in range(n)]
    if workers <= 1:
        return [render(j) for j in jobs]
    with mp.get_context("fork").Pool(workers) as pool:
        return list(pool.imap(render, jobs, chunksize=4))


def pack(frames: list[dict[str, np.ndarray]], device: str) -> dict[str, torch.Tensor]:
    """Images [N, 3, H, W] uint8 and padded boxes [N, G, 4], labels [N, G] (-1 pad), ignore [N, G] on ``device``."""
    g = max(1, max(len(f["labels"]) for f in frames))
    boxes = np.zeros((len(frames), g, 4), np.float32)
    labels = np.full((len(frames), g), -1, np.int64)
    ignore = np.zeros((len(frames), g), bool)
    for i, f in enumerate(frames):
        k = len(f["labels"])
        boxes[i, :k], labels[i, :k], ignore[i, :k] = f["boxes"], f["labels"], f["ignore"]
    images = torch.from_numpy(np.stack([f["image"] for f in frames]))
    return {"images": images.to(device), "boxes": torch.from_numpy(boxes).to(device),
            "labels": torch.from_numpy(labels).to(device), "ignore": torch.from_numpy(ignore).to(device)}


# ------------------------------------------------------------------------------------------ augmentation
def augment(images: torch.Tensor, boxes: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip and zoom/shift per sample: x_out = x_in * s + t (pad 114). Boxes [B, G, 4] moved alike."""
    b, _, h, w = images.shape
    dev = images.device
    flip = torch.rand(b, generator=gen, device=dev) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    boxes = torch.where(flip[:, None, None], torch.stack((w - boxes[..., 2], boxes[..., 1], w - boxes[..., 0],
                                                          boxes[..., 3]), -1), boxes)
    s = torch.exp(torch.empty(b, device=dev).uniform_(math.log(0.7), math.log(1.4), generator=gen))
    s = torch.where(torch.rand(b, generator=gen, device=dev) < 0.6, s, torch.ones_like(s))
    tx = (torch.rand(b, generator=gen, device=dev) * (1 - s)) * w
    ty = (torch.rand(b, generator=gen, device=dev) * (1 - s)) * h
    # affine_grid maps output normalised coords to input ones: x_in = (x_out - t) / s
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = 1 / s
    theta[:, 1, 1] = 1 / s
    theta[:, 0, 2] = (1 / s - 1) - 2 * tx / (w * s)
    theta[:, 1, 2] = (1 / s - 1) - 2 * ty / (h * s)
    grid = F.affine_grid(theta, (b, 3, h, w), align_corners=False)
    out = F.grid_sample(images - 114.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 114.0
    nb = boxes * s[:, None, None] + torch.stack((tx, ty, tx, ty), -1)[:, None]
    nb = torch.stack((nb[..., 0].clamp(0, w), nb[..., 1].clamp(0, h), nb[..., 2].clamp(0, w),
                      nb[..., 3].clamp(0, h)), -1)
    return out, nb


def batch_targets(boxes: torch.Tensor, labels: torch.Tensor, ignore: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded rows -> (boxes, labels >= 0, trained-on mask, ignore-region mask); boxes under 2 px after
    augmentation become ignore regions."""
    valid = labels >= 0
    small = ((boxes[..., 2] - boxes[..., 0]) < 2) | ((boxes[..., 3] - boxes[..., 1]) < 2)
    ign = valid & (ignore | small)
    return boxes, labels.clamp(min=0), valid & ~ign, ign


def anchor_points(cfg: YOLOXModelConfig, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    from ..pipelines.yolox.postprocess import make_grid

    grid, strides = make_grid(tuple(cfg.input_size), cfg.strides, device)
    return grid * strides, strides


def flat_logits(levels: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    reg = torch.cat([r.flatten(2) for r, _, _ in levels], 2).permute(0, 2, 1)
    obj = torch.cat([o.flatten(2) for _, o, _ in levels], 2)[:, 0]
    cls = torch.cat([c.flatten(2) for _, _, c in levels], 2).permute(0, 2, 1)
    return reg, obj, cls


# ------------------------------------------------------------------------------------------ evaluation
def evaluate_model(model: YOLOX, cfg: YOLOXModelConfig, frames: list[dict[str, np.ndarray]], device: str
                   ) -> Any:
    """Held-out COCO metrics through the deployed pipeline on the PyTorch backend."""
    from ..loader import torch_runners
    from ..metrics.detection2d import GroundTruth2D, evaluate_coco
    from ..pipelines.yolox.pipeline import YOLOXPipeline

    pipe = YOLOXPipeline(cfg, torch_runners(model, cfg, device, "yolox"), device)
    dets = [pipe(f["raw"]).detections for f in frames]
    gts = [GroundTruth2D(f["raw_boxes"], f["labels"], f["ignore"], *f["raw"].shape[:2]) for f in frames]
    return evaluate_coco(gts, dets, cfg.class_names)


# ------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="awml-deploy train --family yolox", description=__doc__.splitlines()[0])
    p.add_argument("--family", default="yolox")
    p.add_argument("--out", default="yolox_small.pth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--workers", type=int, default=max(1, (mp.cpu_count() or 2)))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--time-budget-min", type=float, default=None)
    p.add_argument("--deadline-min", type=float, default=None,
                   help="whole-run wall limit: training stops early enough to leave time for evaluation")
    p.add_argument("--eval-frames", type=int, default=300)
    p.add_argument("--eval-seed", type=int, default=EVAL_SEED)
    p.add_argument("--widen", type=float, default=None)
    p.add_argument("--init", default=None, help="start from this checkpoint's weights (fine-tuning)")
    p.add_argument("--warmup-steps", type=int, default=300)
    p.add_argument("--input-size", type=int, nargs=2, default=None)
    a = p.parse_args(argv)
    if not 0 <= a.seed < EVAL_SEED or a.seed + a.frames > EVAL_SEED:
        p.error(f"--seed/--frames must stay inside the training seeds 0..{EVAL_SEED - 1}")
    if a.eval_seed < EVAL_SEED:
        p.error(f"--eval-seed must be >= {EVAL_SEED} (held out)")
    return a


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    t_start = time.time()
    over: dict[str, Any] = {}
    if a.widen:
        over["widen_factor"] = a.widen
    if a.input_size:
        over["input_size"] = list(a.input_size)
    cfg = YOLOXModelConfig(**over)
    hw = (cfg.input_size[0], cfg.input_size[1])
    torch.manual_seed(a.seed)
    print(f"rendering {a.frames} training frames (seed {a.seed}) and {a.eval_frames} held-out frames (seed "
          f"{a.eval_seed}) on {a.workers} workers", flush=True)
    train = render_all(a.seed, a.frames, hw, a.workers)
    held = render_all(a.eval_seed, a.eval_frames, hw, a.workers, True) if a.eval_frames else []
    t_data = time.time() - t_start
    print(f"rendered in {t_data:.0f} s; {sum(len(f['labels']) for f in train)} training boxes", flush=True)
    data = pack(train, a.device)
    for f in train:
        f.clear()
    del train

    if a.init:
        from ..models.yolox import load_yolox_checkpoint

        model, cfg = load_yolox_checkpoint(a.init, cfg)
        model.train()
    else:
        model = build_yolox(cfg)
    model = model.to(a.device).to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval()
    decay_params = [p for n, p in model.named_parameters() if p.ndim > 1]
    other = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay_params, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.999))
    centres, strides = anchor_points(cfg, a.device)
    n = data["images"].shape[0]
    steps_per_epoch = max(1, n // a.batch)
    planned = steps_per_epoch * a.epochs
    warm = max(1, min(a.warmup_steps, planned // 10))
    budget = a.time_budget_min * 60 if a.time_budget_min else None
    if a.deadline_min:
        left = a.deadline_min * 60 - (time.time() - t_start) - 20 - 0.06 * a.eval_frames
        budget = min(budget or left, left)
        print(f"training budget {budget:.0f} s", flush=True)
    gen = torch.Generator(device=a.device).manual_seed(a.seed)
    use_bf16 = a.device.startswith("cuda")
    t0 = time.time()
    step, updates, log = 0, 0, []
    done = False
    for epoch in range(a.epochs):
        perm = torch.randperm(n, device=a.device, generator=gen)
        for it in range(steps_per_epoch):
            progress = step / planned
            if budget:
                progress = max(progress, (time.time() - t0) / budget)
            if progress >= 1.0:
                done = True
                break
            lr = a.lr * (step + 1) / warm if step < warm else a.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[it * a.batch:(it + 1) * a.batch]
            imgs, boxes = augment(data["images"][idx].float(), data["boxes"][idx], gen)
            imgs = imgs.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                reg, obj, cls = flat_logits(model.forward_raw(imgs))
            loss, parts = yolox_loss_batched(reg, obj, cls, centres, strides,
                                             *batch_targets(boxes, data["labels"][idx], data["ignore"][idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            updates += 1
            d = 0.9998 * (1 - math.exp(-updates / 500))
            ema_update(ema, model, d)
            step += 1
            if step % 50 == 0:
                rec = {"step": step, "epoch": epoch, "lr": lr, "loss": float(loss.detach()), **parts,
                       "elapsed_s": round(time.time() - t0, 1)}
                log.append(rec)
                print(json.dumps(rec), flush=True)
        if done:
            break
    t_train = time.time() - t0
    print(f"trained {step} steps ({step / steps_per_epoch:.1f} epochs) in {t_train:.0f} s", flush=True)

    ema = ema.float().to(memory_format=torch.contiguous_format).eval()
    out = Path(a.out)
    save_checkpoint(ema, cfg, out, {"command": "awml-deploy train " + shlex.join(argv)})  # before evaluation
    metrics = evaluate_model(ema, cfg, held, a.device) if held else None
    if metrics is not None:
        print(metrics.table(), flush=True)
    meta = {"command": "awml-deploy train " + shlex.join(argv), "init": a.init, "seed": a.seed, "frames": a.frames,
            "eval_seed": a.eval_seed, "eval_frames": a.eval_frames, "steps": step,
            "epochs_done": round(step / steps_per_epoch, 2), "batch": a.batch, "lr": a.lr,
            "render_s": round(t_data, 1), "train_s": round(t_train, 1), "device": a.device,
            "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else None,
            "torch": str(torch.__version__)}
    meta["held_out"] = {"AP": metrics.map, "AP50": metrics.ap50, "per_class_ap50": metrics.per_class_ap50} \
        if metrics else None
    save_checkpoint(ema.cpu(), cfg, out, meta)
    report = {**meta, "model_config": cfg.model_dump(), "held_out": metrics.to_dict() if metrics else None,
              "held_out_table": metrics.table() if metrics else None, "loss_log": log[-20:]}
    from ..bundle import atomic_write_json

    atomic_write_json(out.with_suffix(".json"), report)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {out.with_suffix('.json')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
