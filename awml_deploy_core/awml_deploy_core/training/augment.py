"""Global augmentations applied consistently to points, boxes and velocities (mmdet3d order: flip, then
rotate, scale, translate).

- flip_y ("horizontal" BEV flip in mmdet3d): y -> -y, yaw -> -yaw, vy -> -vy
- flip_x ("vertical"): x -> -x, yaw -> pi - yaw, vx -> -vx
- rotation by r about +z: centres and velocities rotated, yaw -> yaw + r
- scaling by s: xyz, box sizes and velocities times s
- translation t: xyz + t
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class AugmentConfig:
    rot_range: tuple[float, float] = (-math.pi / 4, math.pi / 4)
    scale_range: tuple[float, float] = (0.95, 1.05)
    flip_x_prob: float = 0.5
    flip_y_prob: float = 0.5
    translation_std: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class AugmentParams:
    flip_x: bool = False
    flip_y: bool = False
    rotation: float = 0.0
    scale: float = 1.0
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)


def sample_params(rng: np.random.Generator, acfg: AugmentConfig) -> AugmentParams:
    return AugmentParams(
        flip_x=bool(rng.random() < acfg.flip_x_prob),
        flip_y=bool(rng.random() < acfg.flip_y_prob),
        rotation=float(rng.uniform(*acfg.rot_range)),
        scale=float(rng.uniform(*acfg.scale_range)),
        translation=tuple(float(rng.normal(0.0, s)) if s > 0 else 0.0 for s in acfg.translation_std),  # type: ignore[arg-type]
    )


def augment_points(points: Tensor, p: AugmentParams) -> Tensor:
    """points (N, >=3); columns after z are carried over unchanged."""
    xyz = points[:, :3]
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if p.flip_y:
        y = -y
    if p.flip_x:
        x = -x
    c, s = math.cos(p.rotation), math.sin(p.rotation)
    x, y = c * x - s * y, s * x + c * y
    x, y, z = x * p.scale + p.translation[0], y * p.scale + p.translation[1], z * p.scale + p.translation[2]
    return torch.cat([torch.stack([x, y, z], dim=1), points[:, 3:]], dim=1)


def augment_boxes(boxes: np.ndarray, velocities: np.ndarray, p: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    b = np.array(boxes, dtype=np.float64).reshape(-1, 7)
    v = np.array(velocities, dtype=np.float64).reshape(-1, 2)
    if p.flip_y:
        b[:, 1] = -b[:, 1]
        b[:, 6] = -b[:, 6]
        v[:, 1] = -v[:, 1]
    if p.flip_x:
        b[:, 0] = -b[:, 0]
        b[:, 6] = np.pi - b[:, 6]
        v[:, 0] = -v[:, 0]
    c, s = math.cos(p.rotation), math.sin(p.rotation)
    rot = np.array([[c, -s], [s, c]])
    b[:, :2] = b[:, :2] @ rot.T
    v = v @ rot.T
    b[:, 6] = (b[:, 6] + p.rotation + np.pi) % (2 * np.pi) - np.pi
    b[:, :6] *= p.scale
    v *= p.scale
    b[:, :3] += np.asarray(p.translation)
    return b.astype(np.float32), v.astype(np.float32)
