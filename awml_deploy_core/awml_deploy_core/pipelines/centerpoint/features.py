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

import functools

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
    """points (V, P, 5) [x, y, z, intensity, time_lag]; num_points (V,); coords (V, 2) (y, x) or (V, 3) (b, y, x).

    Each group of feature columns is written by one op straight into the output (few, large kernels: the CUDA
    graph of the preprocess replays every op as a node); every element is the same float32 op as stated above.
    """
    n_feat = cfg.encoder_in_features
    if n_feat not in (9, 10, 11):  # guarded by the config type; kept for a clear message
        raise ValueError(f"encoder_in_features must be 9, 10 or 11, got {n_feat}")
    v, p = points.shape[0], points.shape[1]
    if v == 0:
        return points.new_zeros(0, p, n_feat)
    dev = points.device
    valid = torch.arange(p, device=dev)[None, :] < num_points[:, None]  # (V, P)
    xyz = points[:, :, :3]
    count = num_points.to(torch.float32).clamp(min=1.0)[:, None]
    mean = _sequential_sum(torch.where(valid[..., None], xyz, _const(0.0, dev))) / count  # (V, 3)

    vx, vy, vz = cfg.voxel_size
    r = cfg.point_cloud_range
    iyx = coords[:, -2:].to(torch.float32)  # (V, 2) y, x
    # centre_x = voxel_x / 2 + x_idx * voxel_x + range_min_x, centre_y likewise: both in one (V, 2) op chain.
    centre = (_const_pair(vx / 2, vy / 2, dev) + iyx.flip(1) * _const_pair(vx, vy, dev)) + _const_pair(r[0], r[1], dev)
    cz = _const(vz / 2, dev) + _const(r[2], dev)  # a single z cell (pillars)

    feats = points.new_empty(v, p, n_feat)
    if n_feat == 11:  # x, y, z, intensity, time_lag | mean offsets | centre offsets x, y | z - centre_z
        feats[:, :, 0:5].copy_(points[:, :, 0:5])
        m0 = 5
    else:  # x, y, z, time_lag | mean offsets | centre offsets x, y [| z - centre_z]
        feats[:, :, 0:3].copy_(points[:, :, 0:3])
        feats[:, :, 3].copy_(points[:, :, 4])
        m0 = 4
    torch.sub(xyz, mean[:, None, :], out=feats[:, :, m0:m0 + 3])
    torch.sub(points[:, :, 0:2], centre[:, None, :], out=feats[:, :, m0 + 3:m0 + 5])
    if n_feat != 9:
        torch.sub(points[:, :, 2], cz, out=feats[:, :, m0 + 5])
    return feats.masked_fill_(~valid[..., None], 0.0)


@functools.lru_cache(maxsize=64)
def _const(value: float, device: torch.device) -> Tensor:
    """A (1,) float32 device tensor, made once (a device tensor, not a Python scalar: see voxelize._f32)."""
    return torch.full((1,), value, dtype=torch.float32, device=device)


@functools.lru_cache(maxsize=64)
def _const_pair(a: float, b: float, device: torch.device) -> Tensor:
    return torch.tensor([a, b], dtype=torch.float32, device=device)
