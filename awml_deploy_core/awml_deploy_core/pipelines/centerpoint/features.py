"""Encoder input features in Autoware's layout.

Layout from Autoware lidar_centerpoint ``lib/preprocess/preprocess_kernel.cu`` (generateFeatures_kernel and
its intensity variant), per point of a pillar:
- 9:  x, y, z, time_lag, x - mean_x, y - mean_y, z - mean_z, x - centre_x, y - centre_y
- 10: the 9 above + z - centre_z
- 11: x, y, z, intensity, time_lag, the 3 mean offsets, the 3 centre offsets (intensity sits after z)
Mean = over the pillar's valid points; centre_x = voxel_x / 2 + x_idx * voxel_x + range_min_x (same for y;
z uses the single z cell). Padded slots are all zero. Intensity is used raw (0..255), as Autoware does.

Sums over the points of a pillar are sequential elementwise adds over the point slots (no reduction
kernel), so CPU and CUDA give the same bits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...config import CenterPointModelConfig
from .voxelize import Voxels


def _sequential_sum(values: Tensor) -> Tensor:
    """Sum over dim 1 of (V, P, K) in slot order: identical on every device."""
    acc = values[:, 0].clone()
    for j in range(1, values.shape[1]):
        acc = acc + values[:, j]
    return acc


def encoder_features(voxels: Voxels, cfg: CenterPointModelConfig) -> Tensor:
    return encoder_features_from(voxels.points, voxels.num_points, voxels.coords, cfg)


def encoder_features_from(points: Tensor, num_points: Tensor, coords: Tensor, cfg: CenterPointModelConfig) -> Tensor:
    """points (V, P, 5) [x, y, z, intensity, time_lag]; num_points (V,); coords (V, 2) (y, x) or (V, 3) (b, y, x)."""
    n_feat = cfg.encoder_in_features
    v, p = points.shape[0], points.shape[1]
    if v == 0:
        return points.new_zeros(0, p, n_feat)
    dev = points.device
    valid = torch.arange(p, device=dev)[None, :] < num_points[:, None]  # (V, P)
    xyz = points[:, :, :3]
    count = num_points.to(torch.float32).clamp(min=1.0)[:, None]
    mean = _sequential_sum(torch.where(valid[..., None], xyz, torch.zeros((), device=dev))) / count  # (V, 3)
    f_mean = xyz - mean[:, None, :]

    vx, vy, vz = cfg.voxel_size
    r = cfg.point_cloud_range
    iy = coords[:, -2].to(torch.float32)
    ix = coords[:, -1].to(torch.float32)

    def t(val: float) -> Tensor:
        return torch.full((1,), val, dtype=torch.float32, device=dev)

    cx = t(vx / 2) + ix * t(vx) + t(r[0])
    cy = t(vy / 2) + iy * t(vy) + t(r[1])
    cz = t(vz / 2) + t(r[2])  # a single z cell (pillars)
    f_cx = points[:, :, 0] - cx[:, None]
    f_cy = points[:, :, 1] - cy[:, None]

    x, y, z, inten, lag = (points[:, :, i] for i in range(5))
    if n_feat == 11:
        cols = [x, y, z, inten, lag, f_mean[..., 0], f_mean[..., 1], f_mean[..., 2], f_cx, f_cy, z - cz]
    elif n_feat == 10:
        cols = [x, y, z, lag, f_mean[..., 0], f_mean[..., 1], f_mean[..., 2], f_cx, f_cy, z - cz]
    elif n_feat == 9:
        cols = [x, y, z, lag, f_mean[..., 0], f_mean[..., 1], f_mean[..., 2], f_cx, f_cy]
    else:  # guarded by the config type; kept for a clear message
        raise ValueError(f"encoder_in_features must be 9, 10 or 11, got {n_feat}")
    feats = torch.stack(cols, dim=2)
    return torch.where(valid[..., None], feats, torch.zeros((), device=dev))
