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

from ...arrays import device_table, tensor_view
from ...config import CenterPointModelConfig
from . import voxelize_triton

POINT_DIMS = 5  # x, y, z, intensity, time_lag


@dataclass
class VoxelStats:
    """Per-cloud counts. Two different limits, counted apart: ``max_voxels`` drops whole pillars (whatever was
    in them is invisible to the model: objects may be missed), ``max_points_per_voxel`` truncates a kept pillar
    (normal for dense clouds near the sensor; the pillar is still seen)."""

    points_in: int = 0
    nan_dropped: int = 0  # any of x, y, z, intensity not finite
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
    points: Tensor  # (V, P, 5) float32 raw points, zero padded (the first 5 columns of ``slots``)
    num_points: Tensor  # (V,) int64
    coords: Tensor  # (V, 2) int64 as (y_idx, x_idx)
    stats: VoxelStats
    slots: Tensor | None = None  # (V, P, 6): the points and a last column, 1 where a slot holds a point, else 0


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
        # a view when the cloud already is contiguous float32 (a node's message bytes, often read-only)
        t = tensor_view(np.ascontiguousarray(points[:, :POINT_DIMS], dtype=np.float32))
    elif isinstance(points, Tensor):
        t = points[:, :POINT_DIMS].to(torch.float32)
    else:
        raise ValueError(f"points must be a numpy array or a torch tensor, got {type(points).__name__}")
    if device is not None:
        t = t.to(device)
    if t.shape[1] == 4:
        t = torch.cat([t, t.new_zeros(t.shape[0], 1)], dim=1)
    return t.contiguous()


def cell_index(values: Tensor, vmin: tuple[float, ...], size: tuple[float, ...], cells: tuple[int, ...]) -> Tensor:
    """(N, k) coordinates -> floor((v - vmin) / size) per column in float32, clamped to [0, cells - 1] (Autoware's
    formula); all k axes in one op chain (each op one node of the preprocess CUDA graph)."""
    dev = values.device
    idx = torch.floor((values - device_table(vmin, torch.float32, dev)) / device_table(size, torch.float32, dev))
    return torch.minimum(idx.to(torch.int64).clamp_(min=0), device_table(tuple(c - 1 for c in cells), torch.int64, dev))


def _assign(pts: Tensor, cfg: CenterPointModelConfig, real: Tensor | None) -> dict[str, Tensor]:
    """Pillar and slot of every point, at the cloud's static size N (no host sync). ``real`` (N,) bool marks
    the rows that are points (the rest is padding: never counted, never kept); None = all rows."""
    dev = pts.device
    n_in = pts.shape[0]
    v_max = cfg.max_voxels
    gx, gy = cfg.grid_size
    r = cfg.point_cloud_range

    # x, y, z and intensity: a point with a NaN/Inf intensity would poison its pillar's features, so it is
    # dropped here like a NaN position (the node hands over the message's bytes unchecked, zero-copy).
    finite = torch.isfinite(pts[:, :4]).all(dim=1)
    xyz = pts[:, :3]
    inside = (xyz >= device_table(tuple(r[:3]), torch.float32, dev)) & (xyz < device_table(tuple(r[3:]), torch.float32, dev))
    in_range = inside.all(dim=1) & finite  # (NaN compares false anyway: a non-finite x, y or z is never in range)
    if real is not None:
        finite = finite | ~real  # padding is not a NaN point
        in_range = in_range & real

    sentinel = gx * gy
    # int32 keys: a radix sort over half the bits (gx * gy < 2^31 for any grid a GPU holds).
    cell = cell_index(pts[:, :2], tuple(r[:2]), tuple(cfg.voxel_size[:2]), (gx, gy))  # (N, 2) x, y
    pid = torch.where(in_range, cell[:, 1] * gx + cell[:, 0], sentinel).to(torch.int32)

    # Group by pillar, input order inside a group (stable sort).
    pid_sorted, order = torch.sort(pid, stable=True)
    pos = torch.arange(n_in, device=dev)
    new_group = torch.ones(n_in, dtype=torch.bool, device=dev)
    if n_in > 1:
        torch.ne(pid_sorted[1:], pid_sorted[:-1], out=new_group[1:])
    valid = pid_sorted != sentinel  # sorted point is in range
    # Group start, per point: the first index of its pillar id in the sorted ids (a parallel binary search; a
    # running max over the group heads would be the same numbers, but torch's 1-D cummax is one CUDA block).
    start = torch.searchsorted(pid_sorted, pid_sorted)
    slot = pos - start

    # Pillars by first appearance: the first point of a group (stable sort) is its earliest input point; a
    # pillar's rank = how many pillars appear earlier in the input.
    heads = new_group & valid  # the first point of each pillar
    first = torch.zeros(n_in, dtype=torch.int64, device=dev).scatter_(0, order, heads.long())
    rank_by_input = torch.cumsum(first, 0) - 1
    rank = rank_by_input[order[start]]

    p_max = cfg.max_points_per_voxel
    pillar_kept = valid & (rank < v_max)
    slot_ok = slot < p_max
    # The six counters in one reduction: (6, N) flags summed along N.
    counters = torch.stack(
        [
            heads,  # pillars
            ~finite,
            valid,  # points in range
            pillar_kept & ~slot_ok,
            valid & ~pillar_kept,
            pillar_kept & (slot == p_max),  # pillars truncated: each has exactly one point at slot P
        ]
    ).sum(dim=1)
    return dict(order=order, pid_sorted=pid_sorted, new_group=new_group, rank=rank, slot=slot,
                pillar_kept=pillar_kept, slot_ok=slot_ok, counters=counters)


def _place(pts: Tensor, a: dict[str, Tensor], cfg: CenterPointModelConfig, rows: int
           ) -> tuple[Tensor, Tensor, Tensor]:
    """Slots (rows, P, 6), num_points (rows,), coords (rows, 2) of the first ``rows`` pillars (rows >= the
    kept pillar count: the rows beyond are empty: zero points, cell 0). A slot is a point's 5 columns and a 1
    (0 in an empty slot): the occupancy column ``encoder_features_from`` multiplies the per-pillar offsets with."""
    dev = pts.device
    p_max = cfg.max_points_per_voxel
    gx = cfg.grid_size[0]
    rank, pillar_kept = a["rank"], a["pillar_kept"]
    sel = pillar_kept & a["slot_ok"]
    trash = rows * p_max  # one extra row takes every point not placed; dropped below
    src = torch.cat([pts, torch.ones_like(pts[:, :1])], dim=1)[a["order"]]
    out = torch.zeros(trash + 1, POINT_DIMS + 1, dtype=torch.float32, device=dev)
    out.index_copy_(0, torch.where(sel, rank * p_max + a["slot"], trash), src)
    out = out[:trash].view(rows, p_max, POINT_DIMS + 1)

    heads = torch.where(a["new_group"] & pillar_kept, rank, rows)  # the first point of each kept pillar
    cell = torch.zeros(rows + 1, dtype=torch.int64, device=dev).index_copy_(
        0, heads, a["pid_sorted"].to(torch.int64))[:rows]
    # A pillar's point count is the slot + 1 of its last point (the next sorted point starts another group; the
    # roll brings new_group[0], always True, to the end). One write per kept pillar: no atomic adds, which on
    # CUDA queued up on the pillars near the sensor (25 us of the AWML-base preprocess for an index_add_).
    last = torch.where(a["new_group"].roll(-1) & pillar_kept, rank, rows)
    counts = torch.zeros(rows + 1, dtype=torch.int64, device=dev).index_copy_(0, last, a["slot"] + 1)[:rows]
    num_points = counts.clamp(max=p_max)
    coords = torch.stack([cell // gx, cell % gx], dim=1)
    return out, num_points, coords


def voxel_stats(counters: list[int], n_in: int, cfg: CenterPointModelConfig) -> VoxelStats:
    """VoxelStats from ``_assign``'s counters read on the host."""
    n_groups, n_nan, m, n_slot_over, n_pillar_over, n_pillars_trunc = (int(c) for c in counters)
    return VoxelStats(
        points_in=n_in,
        nan_dropped=n_nan,
        out_of_range=n_in - n_nan - m,
        points_truncated=n_slot_over,
        pillars_truncated=n_pillars_trunc,
        pillars_dropped=max(n_groups - cfg.max_voxels, 0),
        points_in_dropped_pillars=n_pillar_over,
        num_voxels=min(n_groups, cfg.max_voxels),
    )


def voxelize_padded(buf: Tensor, n_real: Tensor, cfg: CenterPointModelConfig
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``voxelize`` at fully static shapes (CUDA-graph capturable, no sync): the cloud is the first ``n_real``
    rows of ``buf`` (n_real: a (1,) int64 device tensor); outputs are padded to ``max_voxels`` pillars.
    Returns slots (max_voxels, P, 6) (``Voxels.slots``), num_points, coords and the (6,) counters
    (``voxel_stats``); the first ``num_voxels`` rows equal ``voxelize``'s bit for bit."""
    if voxelize_triton.available(buf):  # the same results in three kernels (see voxelize_triton)
        return voxelize_triton.voxelize_padded(buf, n_real, cfg)
    real = torch.arange(buf.shape[0], device=buf.device) < n_real
    a = _assign(buf, cfg, real)
    out, num_points, coords = _place(buf, a, cfg, cfg.max_voxels)
    return out, num_points, coords, a["counters"]


def voxelize(points: np.ndarray | Tensor, cfg: CenterPointModelConfig) -> Voxels:
    """Group a cloud into pillars. Works on the tensor's device; CPU and CUDA give identical results.

    Every step keeps the cloud's static size N (points out of range go to a sentinel pillar that sorts last), so
    on CUDA the only host synchronization is the one that reads the pillar count and the drop counters together.
    """
    pts = as_points(points)
    a = _assign(pts, cfg, None)
    stats = voxel_stats(a["counters"].tolist(), pts.shape[0], cfg)  # the one device sync
    slots, num_points, coords = _place(pts, a, cfg, stats.num_voxels)
    return Voxels(points=slots[..., :POINT_DIMS], num_points=num_points, coords=coords, stats=stats, slots=slots)
