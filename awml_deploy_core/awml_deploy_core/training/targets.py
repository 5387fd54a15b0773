"""CenterPoint training targets and losses (mmdet3d CenterHead conventions, our own code).

Targets per sample, on the output grid (grid / out_size_factor):
- heatmap (C, H, W): a gaussian per object at its integer centre cell; radius from the CornerNet
  ``gaussian_radius`` on the box's BEV size in output cells (min overlap 0.1), floored, at least 2;
  sigma = diameter / 6; overlapping gaussians take the maximum.
- anno_box (max_objs, 10): reg (centre - integer cell, x then y), z (gravity centre), log(l, w, h),
  sin(yaw), cos(yaw), vx, vy; ind = y * W + x; mask marks the used rows.
Losses: gaussian focal loss (alpha 2, gamma 4) on clamped sigmoid, normalised by the number of peaks;
L1 on the gathered regression outputs with per-channel code weights, normalised by the number of objects,
times ``bbox_loss_weight`` (0.25 as in mmdet3d/AWML configs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import CenterPointModelConfig

REG_KEYS = ("reg", "height", "dim", "rot", "vel")
_LOGIT_CLAMP = math.log((1 - 1e-4) / 1e-4)  # sigmoid clamped to [1e-4, 1 - 1e-4] (mmdet3d clip_sigmoid)


@dataclass
class TargetConfig:
    gaussian_overlap: float = 0.1
    min_radius: int = 2
    max_objs: int = 500
    # reg x2, height, dim x3, rot x2, vel x2 (AWML default/second_secfpn_base.py)
    code_weights: tuple[float, ...] = field(default=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2))
    bbox_loss_weight: float = 0.25
    min_points: int = 1  # objects with fewer lidar points get no target


def gaussian_radius(height: float, width: float, min_overlap: float) -> float:
    """CornerNet radius (as mmdet/mmdet3d compute it) for a box of height x width cells."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(max(b1**2 - 4 * a1 * c1, 0.0))) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(max(b2**2 - 4 * a2 * c2, 0.0))) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(max(b3**2 - 4 * a3 * c3, 0.0))) / 2
    return min(r1, r2, r3)


@lru_cache(maxsize=64)
def gaussian_kernel(radius: int) -> np.ndarray:
    d = 2 * radius + 1
    sigma = d / 6
    ax = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(ax[None, :] ** 2 + ax[:, None] ** 2) / (2 * sigma * sigma))
    g[g < np.finfo(g.dtype).eps * g.max()] = 0
    return g.astype(np.float32)


def draw_gaussian(heatmap: np.ndarray, cx: int, cy: int, radius: int) -> None:
    """In place: heatmap[y, x] = max(heatmap, gaussian centred at (cx, cy)), clipped at the borders."""
    g = gaussian_kernel(radius)
    h, w = heatmap.shape
    left, right = min(cx, radius), min(w - cx, radius + 1)
    top, bottom = min(cy, radius), min(h - cy, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return
    region = heatmap[cy - top : cy + bottom, cx - left : cx + right]
    np.maximum(region, g[radius - top : radius + bottom, radius - left : radius + right], out=region)


def build_targets(
    boxes: np.ndarray,
    labels: np.ndarray,
    velocities: np.ndarray,
    cfg: CenterPointModelConfig,
    tcfg: TargetConfig | None = None,
) -> dict[str, np.ndarray]:
    tcfg = tcfg or TargetConfig()
    gx, gy = cfg.grid_size
    f = cfg.out_size_factor
    w_out, h_out = gx // f, gy // f
    r = cfg.point_cloud_range
    vx, vy = cfg.voxel_size[0], cfg.voxel_size[1]
    heatmap = np.zeros((len(cfg.class_names), h_out, w_out), np.float32)
    anno = np.zeros((tcfg.max_objs, 10), np.float32)
    ind = np.zeros(tcfg.max_objs, np.int64)
    mask = np.zeros(tcfg.max_objs, np.float32)
    n = 0
    for box, label, vel in zip(np.asarray(boxes, np.float64), labels, np.asarray(velocities, np.float64)):
        if n >= tcfg.max_objs:
            break
        x, y, z, l, w, h, yaw = box
        if l <= 0 or w <= 0:
            continue
        cx = (x - r[0]) / vx / f
        cy = (y - r[1]) / vy / f
        ix, iy = int(math.floor(cx)), int(math.floor(cy))
        if not (0 <= ix < w_out and 0 <= iy < h_out):
            continue
        radius = gaussian_radius(w / vy / f, l / vx / f, tcfg.gaussian_overlap)
        radius = max(tcfg.min_radius, int(radius))
        draw_gaussian(heatmap[int(label)], ix, iy, radius)
        anno[n] = (cx - ix, cy - iy, z, math.log(l), math.log(w), math.log(h), math.sin(yaw), math.cos(yaw), vel[0], vel[1])
        ind[n] = iy * w_out + ix
        mask[n] = 1.0
        n += 1
    return {"heatmap": heatmap, "anno_box": anno, "ind": ind, "mask": mask}


def collate_targets(targets: list[dict[str, np.ndarray]], device: torch.device | str) -> dict[str, Tensor]:
    return {k: torch.from_numpy(np.stack([t[k] for t in targets])).to(device, non_blocking=True) for k in targets[0]}


def focal_loss(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Gaussian focal loss summed over everything; returns (per-class sums (C,), number of peaks)."""
    x = logits.float().clamp(-_LOGIT_CLAMP, _LOGIT_CLAMP)
    log_p, log_1mp = F.logsigmoid(x), F.logsigmoid(-x)
    p = torch.sigmoid(x)
    pos = target.eq(1).float()
    neg_w = torch.pow(1 - target, 4)
    loss = -(log_p * (1 - p) ** 2 * pos) - (log_1mp * p**2 * neg_w * (1 - pos))
    return loss.sum(dim=(0, 2, 3)), pos.sum()


def centerpoint_loss(raw: dict[str, Tensor], targets: dict[str, Tensor], tcfg: TargetConfig) -> tuple[Tensor, dict[str, Tensor]]:
    cls_sums, num_pos = focal_loss(raw["heatmap"], targets["heatmap"])
    loss_heatmap = cls_sums.sum() / num_pos.clamp(min=1)
    keys = [k for k in REG_KEYS if k in raw]
    pred = torch.cat([raw[k].float() for k in keys], dim=1)  # (B, 8 or 10, H, W)
    b, c = pred.shape[:2]
    pred = pred.permute(0, 2, 3, 1).reshape(b, -1, c)
    ind = targets["ind"]
    gathered = pred.gather(1, ind[..., None].expand(-1, -1, c))
    target = targets["anno_box"][..., :c]
    mask = targets["mask"]
    weights = mask[..., None] * pred.new_tensor(tcfg.code_weights[:c])
    num = mask.sum()
    loss_bbox = (torch.abs(gathered - target) * weights).sum() / (num + 1e-4) * tcfg.bbox_loss_weight
    total = loss_heatmap + loss_bbox
    parts = {"heatmap": loss_heatmap.detach(), "bbox": loss_bbox.detach()}
    return total, parts
