"""Pillar voxelization: deterministic, vectorized, identical on CPU and CUDA.

Range test and cell index follow Autoware lidar_centerpoint ``lib/preprocess/preprocess_kernel.cu``
(generateVoxels_random_kernel): a point is kept when ``min <= v < max`` on x, y and z, and its cell is
``floor((v - min) / size)`` in float32, clamped to the grid. Unlike Autoware (random point order from GPU
atomics, pillars in grid-scan order) the order here is fixed: pillars by the first appearance of one of
their points in the input, points inside a pillar in input order; the first ``max_points_per_voxel``
points and the first ``max_voxels`` pillars are kept. Everything dropped is counted in ``VoxelStats``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from ...config import CenterPointModelConfig

POINT_DIMS = 5  # x, y, z, intensity, time_lag


@dataclass
class VoxelStats:
    """Per-cloud counts. Two different limits, counted apart: ``max_voxels`` drops whole pillars (whatever was
    in them is invisible to the model: objects may be missed), ``max_points_per_voxel`` truncates a kept pillar
    (normal for dense clouds near the sensor; the pillar is still seen)."""

    points_in: int = 0
    nan_dropped: int = 0  # any of x, y, z not finite
    out_of_range: int = 0
    points_truncated: int = 0  # dropped because their (kept) pillar already held max_points_per_voxel
    pillars_truncated: int = 0  # kept pillars that held more than max_points_per_voxel points
    pillars_dropped: int = 0  # pillars dropped beyond max_voxels
    points_in_dropped_pillars: int = 0  # points that fell in those dropped pillars
    num_voxels: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def points_used(self) -> int:
        return (self.points_in - self.nan_dropped - self.out_of_range - self.points_truncated
                - self.points_in_dropped_pillars)


@dataclass
class Voxels:
    points: Tensor  # (V, P, 5) float32 raw points, zero padded
    num_points: Tensor  # (V,) int64
    coords: Tensor  # (V, 2) int64 as (y_idx, x_idx)
    stats: VoxelStats


def as_points(points: np.ndarray | Tensor, device: str | torch.device | None = None) -> Tensor:
    """Validate and convert a cloud to a float32 (N, 5) tensor [x, y, z, intensity, time_lag].

    (N, 4) clouds get time_lag 0; columns after the fifth are ignored.
    """
    shape = tuple(points.shape)
    if len(shape) != 2 or shape[1] < 4:
        raise ValueError(
            f"points must have shape (N, >=4) with columns x, y, z, intensity[, time_lag], got shape {shape}"
        )
    if isinstance(points, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(points[:, :POINT_DIMS], dtype=np.float32))
    elif isinstance(points, Tensor):
        t = points[:, :POINT_DIMS].to(torch.float32)
    else:
        raise ValueError(f"points must be a numpy array or a torch tensor, got {type(points).__name__}")
    if device is not None:
        t = t.to(device)
    if t.shape[1] == 4:
        t = torch.cat([t, t.new_zeros(t.shape[0], 1)], dim=1)
    return t.contiguous()


def _f32(value: float, like: Tensor) -> Tensor:
    # A device tensor, not a Python scalar: CUDA kernels may turn division by a CPU scalar into a
    # multiplication by its reciprocal, which would break CPU/CUDA bit-equality.
    return torch.full((1,), value, dtype=torch.float32, device=like.device)


def cell_index(values: Tensor, vmin: float, size: float, cells: int) -> Tensor:
    """floor((v - vmin) / size) in float32, clamped to [0, cells - 1] (Autoware's formula)."""
    idx = torch.floor((values - _f32(vmin, values)) / _f32(size, values).expand_as(values))
    return idx.to(torch.int64).clamp_(0, cells - 1)


def voxelize(points: np.ndarray | Tensor, cfg: CenterPointModelConfig) -> Voxels:
    """Group a cloud into pillars. Works on the tensor's device; CPU and CUDA give identical results."""
    pts = as_points(points)
    dev = pts.device
    n_in = pts.shape[0]
    p_max, v_max = cfg.max_points_per_voxel, cfg.max_voxels
    gx, gy = cfg.grid_size
    r = cfg.point_cloud_range

    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    finite = torch.isfinite(pts[:, :3]).all(dim=1)
    in_range = (
        (x >= _f32(r[0], x)) & (x < _f32(r[3], x))
        & (y >= _f32(r[1], y)) & (y < _f32(r[4], y))
        & (z >= _f32(r[2], z)) & (z < _f32(r[5], z))
    )  # NaN compares false: non-finite points are never in range
    keep_idx = torch.nonzero(in_range).squeeze(1)  # ascending: input order
    m = keep_idx.shape[0]

    ix = cell_index(x[keep_idx], r[0], cfg.voxel_size[0], gx)
    iy = cell_index(y[keep_idx], r[1], cfg.voxel_size[1], gy)
    pid = iy * gx + ix

    # Group by pillar, input order inside a group (stable sort).
    pid_sorted, order = torch.sort(pid, stable=True)
    new_group = torch.ones(m, dtype=torch.bool, device=dev)
    if m > 1:
        torch.ne(pid_sorted[1:], pid_sorted[:-1], out=new_group[1:])
    group_of = torch.cumsum(new_group, 0) - 1  # group index of each sorted point
    starts = torch.nonzero(new_group).squeeze(1)  # sorted position where each group begins
    n_groups = starts.shape[0]
    slot = torch.arange(m, device=dev) - starts[group_of]
    counts = torch.diff(starts, append=torch.full((1,), m, dtype=torch.int64, device=dev))

    # Pillars by first appearance: the first point of a group (stable sort) is its earliest input point.
    group_order = torch.argsort(order[starts])  # unique keys: no ties
    rank_of_group = torch.empty(n_groups, dtype=torch.int64, device=dev)
    rank_of_group[group_order] = torch.arange(n_groups, device=dev)
    rank = rank_of_group[group_of]

    n_vox = min(n_groups, v_max)
    pillar_kept = rank < v_max
    slot_ok = slot < p_max
    sel = torch.nonzero(pillar_kept & slot_ok).squeeze(1)
    out = torch.zeros(n_vox * p_max, POINT_DIMS, dtype=torch.float32, device=dev)
    out.index_copy_(0, rank[sel] * p_max + slot[sel], pts[keep_idx[order[sel]]])
    out = out.view(n_vox, p_max, POINT_DIMS)

    kept_groups = group_order[:n_vox]  # group indices in rank order
    num_points = counts[kept_groups].clamp(max=p_max)
    cell = pid_sorted[starts[kept_groups]]
    coords = torch.stack([cell // gx, cell % gx], dim=1)

    counters = torch.stack(
        [
            (~finite).sum(),
            (pillar_kept & ~slot_ok).sum(),
            (~pillar_kept).sum(),
            (counts[kept_groups] > p_max).sum(),
        ]
    ).tolist()  # one device sync
    stats = VoxelStats(
        points_in=n_in,
        nan_dropped=int(counters[0]),
        out_of_range=n_in - int(counters[0]) - m,
        points_truncated=int(counters[1]),
        pillars_truncated=int(counters[3]),
        pillars_dropped=max(n_groups - v_max, 0),
        points_in_dropped_pillars=int(counters[2]),
        num_voxels=n_vox,
    )
    return Voxels(points=out, num_points=num_points, coords=coords, stats=stats)

