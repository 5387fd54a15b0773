"""Encoder input features in Autoware's layout.

Layout from Autoware lidar_centerpoint ``lib/preprocess/preprocess_kernel.cu`` (generateFeatures_kernel and
its intensity variant), per point of a pillar:
- 9:  x, y, z, time_lag, x - mean_x, y - mean_y, z - mean_z, x - centre_x, y - centre_y
- 10: the 9 above + z - centre_z
- 11: x, y, z, intensity, time_lag, the 3 mean offsets, the 3 centre offsets (intensity sits after z)
Mean = over the pillar's valid points; centre_x = voxel_x / 2 + x_idx * voxel_x + range_min_x (same for y;
z uses the single z cell). Padded slots are all zero. Intensity is used raw (0..255), as Autoware does.

Sums over the points of a pillar are a fixed tree of elementwise adds over the point slots (no reduction
kernel, whose order differs between devices), so CPU and CUDA give the same bits.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import Tensor

from ...arrays import device_table
from ...config import CenterPointModelConfig
from . import features_triton
from .voxelize import POINT_DIMS, Voxels


def _pairwise_sum(values: Tensor) -> Tensor:
    """Sum over dim 1 of (V, P, K) by a fixed pairwise tree (slot j + slot j + half, halving until one is left):
    identical on every device, and log2(P) kernels instead of P - 1 (each one a node of the preprocess CUDA
    graph: at 64,000 pillars of 32 slots the slot-by-slot sum took 0.2 ms of the H200's preprocess)."""
    acc = values
    while acc.shape[1] > 1:
        half = acc.shape[1] // 2
        head = acc[:, :half] + acc[:, half:2 * half]
        acc = head if acc.shape[1] == 2 * half else torch.cat([head, acc[:, 2 * half:]], dim=1)
    return acc[:, 0]


# Which point column each feature column starts from (feature = that column - its offset).
_SOURCE_COLUMNS = {11: (0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2), 10: (0, 1, 2, 4, 0, 1, 2, 0, 1, 2), 9: (0, 1, 2, 4, 0, 1, 2, 0, 1)}


def encoder_features(voxels: Voxels, cfg: CenterPointModelConfig) -> Tensor:
    slots = voxels.slots if voxels.slots is not None else voxels.points
    return encoder_features_from(slots, voxels.num_points, voxels.coords, cfg)


def encoder_features_from(slots: Tensor, num_points: Tensor, coords: Tensor, cfg: CenterPointModelConfig) -> Tensor:
    """slots (V, P, 5 or 6) [x, y, z, intensity, time_lag(, occupied)], zero in the empty slots, as ``voxelize``
    writes them (``Voxels.slots``; without the occupancy column it is made here, one pass more); num_points (V,);
    coords (V, 2) (y, x) or (V, 3) (b, y, x).

    Every feature is a point column minus a per-pillar offset (0, the mean or the centre): per pillar, one
    (P, 6) @ (6, F) product of the slots with [column selection; -offset], all pillars in one batched matmul
    (one full-width pass over the output; building the F columns group by group cost several times as much, on
    the GPU and on the CPU). Each element sums one point value, one -offset times the occupancy (1 or 0) and
    exact zeros, so it is the one float32 subtraction stated above (or 0 in an empty slot), whatever order the
    matmul adds in: the same bits on every device. TF32 or reduced-precision matmul is switched off for it.
    """
    n_feat = cfg.encoder_in_features
    if n_feat not in _SOURCE_COLUMNS:  # guarded by the config type; kept for a clear message
        raise ValueError(f"encoder_in_features must be 9, 10 or 11, got {n_feat}")
    v, p = slots.shape[0], slots.shape[1]
    if v == 0:
        return slots.new_zeros(0, p, n_feat)
    dev = slots.device
    if slots.shape[2] == POINT_DIMS:
        occupied = (torch.arange(p, device=dev)[None, :] < num_points[:, None]).to(torch.float32)
        slots = torch.cat([slots, occupied[..., None]], dim=2)
    vx, vy, vz = cfg.voxel_size
    r = cfg.point_cloud_range
    iyx = coords[:, -2:].to(torch.float32)  # (V, 2) y, x
    # centre_x = voxel_x / 2 + x_idx * voxel_x + range_min_x, centre_y likewise: both in one (V, 2) op chain.
    f32 = torch.float32
    centre = (device_table((vx / 2, vy / 2), f32, dev) + iyx.flip(1) * device_table((vx, vy), f32, dev)) \
        + device_table((r[0], r[1]), f32, dev)
    cz = device_table((vz / 2,), f32, dev) + device_table((r[2],), f32, dev)  # a single z cell (pillars)

    m0 = 5 if n_feat == 11 else 4  # first offset column: after x, y, z[, intensity], time_lag
    on_triton = features_triton.available(slots)  # the same bits in one kernel (see features_triton)
    if on_triton and features_triton.mean_in_kernel(p):
        return features_triton.features_with_mean(slots, num_points, centre, cz, _SOURCE_COLUMNS[n_feat], m0)
    count = num_points.to(torch.float32).clamp(min=1.0)[:, None]
    mean = _pairwise_sum(slots[:, :, :3]) / count  # (V, 3); empty slots are 0
    if on_triton:
        parts = [slots.new_zeros(v, m0), mean, centre] + ([] if n_feat == 9 else [cz.expand(v, 1)])
        return features_triton.features(slots, _SOURCE_COLUMNS[n_feat], torch.cat(parts, dim=1))
    weights = slots.new_zeros(v, POINT_DIMS + 1, n_feat)  # rows: the 5 point columns, then the occupancy
    weights[:, :POINT_DIMS] = _selection(_SOURCE_COLUMNS[n_feat], dev)
    torch.neg(mean, out=weights[:, POINT_DIMS, m0:m0 + 3])
    torch.neg(centre, out=weights[:, POINT_DIMS, m0 + 3:m0 + 5])
    if n_feat != 9:
        torch.neg(cz.expand(v), out=weights[:, POINT_DIMS, m0 + 5])
    with _exact_fp32_matmul():
        return torch.bmm(slots, weights)


@contextlib.contextmanager
def _exact_fp32_matmul() -> Iterator[None]:
    """float32 matmul at full precision while inside (TF32 / bf16 modes would round the coordinates)."""
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(prev)


@functools.lru_cache(maxsize=64)
def _selection(cols: tuple[int, ...], device: torch.device) -> Tensor:
    """(5, F) 0/1: feature column j takes point column cols[j]."""
    sel = torch.zeros(POINT_DIMS, len(cols), dtype=torch.float32)
    sel[list(cols), list(range(len(cols)))] = 1.0
    return sel.to(device)
