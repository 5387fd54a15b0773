"""``voxelize_padded`` on CUDA as three Triton kernels around torch's radix sort and cumsum.

Why by hand: the torch code in ``voxelize.py`` is ~70 small elementwise, gather and scatter kernels per frame (the
range test, the cell index, the group heads, the ranks, the six counters, the placement). Inside the preprocess
CUDA graph each costs a launch gap besides its work, and together they were most of the AWML-base preprocess on
an H200. No torch op fuses a chain of gathers and scatters; ``torch.compile`` would add a compiler and its
start-up to every node. So:

- ``_cells_kernel``: per input row, the range and finiteness tests and the pillar id (``cell_index``'s float32
  ``floor((v - min) / size)`` with an IEEE division, clamped), padding rows (past ``n_real``) to the sentinel;
  counts the non-finite points;
- torch's stable sort of the ids (the same sort as ``voxelize``'s);
- ``_groups_kernel``: per sorted row, its group's start (a binary search: ``torch.searchsorted``'s left index),
  its slot, and whether it heads its pillar, scattered back to input order for the rank cumsum;
- torch's cumsum of the heads (ranks by first appearance);
- ``_place_kernel``: per sorted row, its pillar's rank; writes the slot row, the pillar's cell and point count,
  and adds the other five counters (integer atomics: the totals do not depend on their order).

Same numbers as ``voxelize_padded``'s torch code, bit for bit: the only float operations are the subtraction and
the correctly rounded division of ``cell_index`` and the comparisons; everything else is integer. Checked against
the CPU by ``test_gpu_paths.py`` on a GPU, and on any machine with ``triton`` in its interpreter
(``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...arrays import device_table
from ...config import CenterPointModelConfig
from .features_triton import ENABLED, triton

BLOCK = 1024  # rows per program

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _cells_kernel(pts_ptr, n_real_ptr, table_ptr, pid_ptr, counters_ptr, n_rows,
                      GX: tl.constexpr, GY: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        in_buf = row < n_rows
        real = in_buf & (row < tl.load(n_real_ptr))
        x = tl.load(pts_ptr + row * 5 + 0, mask=in_buf, other=0.0)
        y = tl.load(pts_ptr + row * 5 + 1, mask=in_buf, other=0.0)
        z = tl.load(pts_ptr + row * 5 + 2, mask=in_buf, other=0.0)
        i = tl.load(pts_ptr + row * 5 + 3, mask=in_buf, other=0.0)
        finite = ((x == x) & (tl.abs(x) != float("inf")) & (y == y) & (tl.abs(y) != float("inf"))
                  & (z == z) & (tl.abs(z) != float("inf")) & (i == i) & (tl.abs(i) != float("inf")))
        # table: range min x, y, z, range max x, y, z, voxel size x, y (float32, as voxelize's device tables)
        inside = ((x >= tl.load(table_ptr + 0)) & (y >= tl.load(table_ptr + 1)) & (z >= tl.load(table_ptr + 2))
                  & (x < tl.load(table_ptr + 3)) & (y < tl.load(table_ptr + 4)) & (z < tl.load(table_ptr + 5)))
        in_range = inside & finite & real
        cx = tl.floor(tl.div_rn(x - tl.load(table_ptr + 0), tl.load(table_ptr + 6)))
        cy = tl.floor(tl.div_rn(y - tl.load(table_ptr + 1), tl.load(table_ptr + 7)))
        # clamped as floats, and 0 where the row is not used: a far or non-finite point's index would not
        # convert to an integer
        ix = tl.where(in_range, tl.minimum(tl.maximum(cx, 0.0), GX - 1.0), 0.0).to(tl.int32)
        iy = tl.where(in_range, tl.minimum(tl.maximum(cy, 0.0), GY - 1.0), 0.0).to(tl.int32)
        pid = tl.where(in_range, iy * GX + ix, GX * GY)
        tl.store(pid_ptr + row, pid, mask=in_buf)
        tl.atomic_add(counters_ptr + 1, tl.sum((real & ~finite).to(tl.int32), axis=0))

    @triton.jit
    def _groups_kernel(pid_ptr, order_ptr, first_ptr, slot_ptr, head_src_ptr, n_rows,
                       STEPS: tl.constexpr, SENTINEL: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = row < n_rows
        pid = tl.load(pid_ptr + row, mask=ok, other=0)
        prev = tl.load(pid_ptr + row - 1, mask=ok & (row > 0), other=-1)
        heads = (pid != prev) & (pid != SENTINEL)
        # the group's start: the first index whose id is >= this one (the ids are sorted)
        lo = tl.zeros((BLOCK,), dtype=tl.int64)
        hi = tl.zeros((BLOCK,), dtype=tl.int64) + n_rows
        for _ in range(STEPS):
            active = ok & (lo < hi)
            mid = (lo + hi) // 2
            below = active & (tl.load(pid_ptr + mid, mask=active, other=0) < pid)
            lo = tl.where(below, mid + 1, lo)
            hi = tl.where(active & ~below, mid, hi)
        order = tl.load(order_ptr + row, mask=ok, other=0)
        tl.store(first_ptr + order, heads.to(tl.int32), mask=ok)  # order is a permutation: every row written
        tl.store(slot_ptr + row, (row - lo).to(tl.int32), mask=ok)
        tl.store(head_src_ptr + row, tl.load(order_ptr + lo, mask=ok, other=0), mask=ok)

    @triton.jit
    def _place_kernel(pts_ptr, pid_ptr, order_ptr, slot_ptr, head_src_ptr, rank_ptr, out_ptr, num_ptr, coords_ptr,
                      counters_ptr, n_rows, V_MAX: tl.constexpr, P: tl.constexpr, GX: tl.constexpr,
                      SENTINEL: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        ok = row < n_rows
        pid = tl.load(pid_ptr + row, mask=ok, other=SENTINEL)
        prev = tl.load(pid_ptr + row - 1, mask=ok & (row > 0), other=-1)
        nxt = tl.load(pid_ptr + row + 1, mask=ok & (row + 1 < n_rows), other=-1)
        valid = pid != SENTINEL
        heads = (pid != prev) & valid
        last = pid != nxt  # the last point of its group
        slot = tl.load(slot_ptr + row, mask=ok, other=0)
        # rank: how many pillars appear earlier in the input (cumsum of the heads in input order, minus one)
        rank = tl.load(rank_ptr + tl.load(head_src_ptr + row, mask=ok & valid, other=0), mask=ok & valid,
                       other=1).to(tl.int64) - 1
        kept = valid & (rank < V_MAX)
        slot_ok = slot < P
        sel = kept & slot_ok
        src = tl.load(order_ptr + row, mask=sel, other=0)
        dst = (rank * P + slot) * 6
        for c in tl.static_range(5):
            tl.store(out_ptr + dst + c, tl.load(pts_ptr + src * 5 + c, mask=sel, other=0.0), mask=sel)
        tl.store(out_ptr + dst + 5, tl.full((BLOCK,), 1.0, tl.float32), mask=sel)
        tl.store(coords_ptr + rank * 2, (pid // GX).to(tl.int64), mask=heads & kept)
        tl.store(coords_ptr + rank * 2 + 1, (pid % GX).to(tl.int64), mask=heads & kept)
        tl.store(num_ptr + rank, tl.minimum(slot + 1, P).to(tl.int64), mask=last & kept)
        tl.atomic_add(counters_ptr + 0, tl.sum(heads.to(tl.int32), axis=0))
        tl.atomic_add(counters_ptr + 2, tl.sum(valid.to(tl.int32), axis=0))
        tl.atomic_add(counters_ptr + 3, tl.sum((kept & ~slot_ok).to(tl.int32), axis=0))
        tl.atomic_add(counters_ptr + 4, tl.sum((valid & ~kept).to(tl.int32), axis=0))
        tl.atomic_add(counters_ptr + 5, tl.sum((kept & (slot == P)).to(tl.int32), axis=0))


def available(buf: Tensor) -> bool:
    """True where ``voxelize_padded`` runs: triton (not turned off) and the cloud on a CUDA device."""
    return ENABLED and buf.is_cuda


def voxelize_padded(buf: Tensor, n_real: Tensor, cfg: CenterPointModelConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``voxelize.voxelize_padded`` (same arguments, same results; the counters as int32)."""
    dev = buf.device
    n = buf.shape[0]
    gx, gy = cfg.grid_size
    p, v_max = cfg.max_points_per_voxel, cfg.max_voxels
    r = cfg.point_cloud_range
    sentinel = gx * gy
    buf = buf.contiguous()
    counters = torch.zeros(6, dtype=torch.int32, device=dev)
    out = torch.zeros(v_max, p, 6, dtype=torch.float32, device=dev)
    num_points = torch.zeros(v_max, dtype=torch.int64, device=dev)
    coords = torch.zeros(v_max, 2, dtype=torch.int64, device=dev)
    if n == 0:
        return out, num_points, coords, counters
    grid = (triton.cdiv(n, BLOCK),)
    table = device_table((*r, *cfg.voxel_size[:2]), torch.float32, dev)
    pid = torch.empty(n, dtype=torch.int32, device=dev)
    _cells_kernel[grid](buf, n_real, table, pid, counters, n, GX=gx, GY=gy, BLOCK=BLOCK)
    pid_sorted, order = torch.sort(pid, stable=True)
    first = torch.empty(n, dtype=torch.int32, device=dev)
    slot = torch.empty(n, dtype=torch.int32, device=dev)
    head_src = torch.empty(n, dtype=torch.int64, device=dev)
    _groups_kernel[grid](pid_sorted, order, first, slot, head_src, n, STEPS=n.bit_length(), SENTINEL=sentinel,
                         BLOCK=BLOCK)
    rank_plus_one = torch.cumsum(first, 0, dtype=torch.int32)
    _place_kernel[grid](buf, pid_sorted, order, slot, head_src, rank_plus_one, out, num_points, coords, counters, n,
                        V_MAX=v_max, P=p, GX=gx, SENTINEL=sentinel, BLOCK=BLOCK)
    return out, num_points, coords, counters
