"""The encoder features on CUDA as one Triton kernel (used where ``triton`` imports and the slots are on a GPU).

Why by hand: torch has no single op for "gather these columns, subtract a per-pillar offset, zero the empty slots".
The portable formula in ``features.py`` (one batched (P, 6) @ (6, F) matmul per pillar) took 127 us of the
AWML-base preprocess on an H200 (64,000 x 32 x 11 outputs: cuBLAS is poor at inner size 6), plus five small
kernels building the weights. This kernel reads each slot once and writes each feature once.

Same bits as the matmul: there every occupied element is ``x + (-offset)`` plus exact zeros (one rounding, the
subtraction; a point's -0.0 becomes +0.0 by the added zeros), every empty one +0.0. Here: ``(x - offset) + 0.0``
(one rounding; ``+ 0.0`` turns -0.0 into +0.0 and changes nothing else, and is not folded away: IEEE forbids it)
and 0.0 in the empty slots. No multiply, so no fused multiply-add can change a bit.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # no triton (CPU-only torch, CI): the matmul formula runs
    triton = None

ROWS_PER_PROGRAM = 128  # slots (pillar, point) per program: 128 x 16 lanes


def available(slots: Tensor) -> bool:
    return triton is not None and slots.is_cuda and slots.dim() == 3 and slots.shape[2] == 6


if triton is not None:

    @triton.jit
    def _features_kernel(slots_ptr, cols_ptr, offsets_ptr, out_ptr, n_rows,
                         P: tl.constexpr, F: tl.constexpr, F_POW2: tl.constexpr, ROWS: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
        f = tl.arange(0, F_POW2)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & (f < F)[None, :]
        col = tl.load(cols_ptr + f, mask=f < F, other=0)
        x = tl.load(slots_ptr + rows[:, None] * 6 + col[None, :], mask=mask, other=0.0)
        occupied = tl.load(slots_ptr + rows * 6 + 5, mask=row_ok, other=0.0)
        offset = tl.load(offsets_ptr + (rows // P)[:, None] * F + f[None, :], mask=mask, other=0.0)
        value = tl.where(occupied[:, None] != 0.0, (x - offset) + 0.0, 0.0)
        tl.store(out_ptr + rows[:, None] * F + f[None, :], value, mask=mask)


@functools.lru_cache(maxsize=16)
def _columns(cols: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.tensor(cols, dtype=torch.int32, device=device)


def features(slots: Tensor, cols: tuple[int, ...], offsets: Tensor) -> Tensor:
    """slots (V, P, 6) float32 (``Voxels.slots``), cols: the slot column of each of the F features, offsets
    (V, F) float32 (0 where a feature is the raw column) -> (V, P, F): ``slots[..., cols] - offsets`` in the
    occupied slots, 0 in the empty ones."""
    v, p, _ = slots.shape
    n_feat = len(cols)
    slots = slots.contiguous()
    offsets = offsets.contiguous()
    out = torch.empty(v, p, n_feat, dtype=torch.float32, device=slots.device)
    n_rows = v * p
    if n_rows:
        grid = (triton.cdiv(n_rows, ROWS_PER_PROGRAM),)
        _features_kernel[grid](slots, _columns(cols, slots.device), offsets, out, n_rows,
                               P=p, F=n_feat, F_POW2=triton.next_power_of_2(n_feat), ROWS=ROWS_PER_PROGRAM)
    return out
