"""The encoder features on CUDA as Triton kernels (used where ``triton`` imports and the slots are on a GPU).

Why by hand: torch has no single op for "pillar mean by a fixed pairwise tree, then gather these columns,
subtract a per-pillar offset, zero the empty slots". The portable code in ``features.py`` (the tree as log2(P)
strided adds, then one batched (P, 6) @ (6, F) matmul per pillar) took 215 us of the AWML-base preprocess on an
H200 (64,000 x 32 x 11 outputs: cuBLAS is poor at inner size 6, and the strided adds are slow). Two kernels:
- ``features_with_mean`` (P a power of two, as AWML base's 32): the mean tree and the features in one pass;
  97 us there;
- ``features`` (any P, as the small model's 20): the mean from torch, the features in one pass; 74 us for the
  small model's 30,000 x 20 x 11 (127 us with the matmul).

Same bits as ``features.py`` (int32 bit patterns compared by ``test_gpu_paths.py`` on a GPU, and by
``test_triton_kernels.py`` in Triton's interpreter on CPU):
- the mean: the same pairwise tree (slot j + slot j + P/2, halving), the same float32 adds, then an IEEE
  round-to-nearest division (``tl.div_rn``; Triton's plain ``/`` may be approximate) by max(count, 1);
- a feature: the matmul gives ``x + (-offset)`` plus exact zeros (one rounding; a point's -0.0 becomes +0.0 by
  the added zeros) in an occupied slot, +0.0 in an empty one. Here ``(x - offset) + 0.0`` (one rounding; ``+ 0.0``
  turns -0.0 into +0.0, changes nothing else, and may not be folded away under IEEE rules) and 0.0.
There is no float multiplication, so no fused multiply-add can change a bit.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from ...arrays import device_table

try:
    import triton
    import triton.language as tl
except ImportError:  # no triton (CPU-only torch, CI): features.py's torch code runs
    triton = None

ROWS_PER_PROGRAM = 128  # (pillar, slot) rows per program: 128 x 16 lanes (4 pillars of 32 slots)
# AWML_DEPLOY_TRITON=0 turns the kernels off (the torch code runs, same results): an escape hatch for a platform
# whose Triton build misbehaves.
ENABLED = triton is not None and os.environ.get("AWML_DEPLOY_TRITON", "1") != "0"


def available(slots: Tensor) -> bool:
    """True where ``features`` runs: triton (not turned off), and (V, P, 6) slots on a CUDA device."""
    return ENABLED and slots.is_cuda and slots.dim() == 3 and slots.shape[2] == 6


def mean_in_kernel(p: int) -> bool:
    """True where ``features_with_mean`` runs (where ``available``): P a power of two, at most 128 (its tiles are
    powers of two; torch's tree treats an odd slot count differently)."""
    return p & (p - 1) == 0 and p <= ROWS_PER_PROGRAM


if triton is not None:

    @triton.jit
    def _store_features(slots_ptr, cols_ptr, out_ptr, row, f, mask, occupied, offset, F: tl.constexpr):
        """out[row, f] = slots[row, cols[f]] - offset where the slot is occupied, else 0 (``row``, ``f``,
        ``mask``, ``occupied`` and ``offset`` broadcast against each other; f on the last axis)."""
        col = tl.load(cols_ptr + f, mask=f < F, other=0)
        x = tl.load(slots_ptr + row * 6 + col, mask=mask, other=0.0)
        value = tl.where(occupied != 0.0, (x - offset) + 0.0, 0.0)
        tl.store(out_ptr + row * F + f, value, mask=mask)

    @triton.jit
    def _features_kernel(slots_ptr, cols_ptr, offsets_ptr, out_ptr, n_rows,
                         P: tl.constexpr, F: tl.constexpr, F_POW2: tl.constexpr, ROWS: tl.constexpr):
        rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
        f = tl.arange(0, F_POW2)[None, :]
        row_ok = rows < n_rows
        mask = row_ok[:, None] & (f < F)
        occupied = tl.load(slots_ptr + rows * 6 + 5, mask=row_ok, other=0.0)[:, None]
        offset = tl.load(offsets_ptr + (rows // P)[:, None] * F + f, mask=mask, other=0.0)
        _store_features(slots_ptr, cols_ptr, out_ptr, rows[:, None], f, mask, occupied, offset, F)

    @triton.jit
    def _pairwise_sum(x, LEVELS: tl.constexpr):
        """(B, 2**LEVELS) -> (B,): column j + column j + W/2, halving, as features._pairwise_sum."""
        for _ in tl.static_range(LEVELS):
            # [b, j, i] = x[b, i * W/2 + j] (W = x.shape[1]; inline: a local would turn it into a tensor)
            pairs = tl.permute(tl.reshape(x, (x.shape[0], 2, x.shape[1] // 2)), (0, 2, 1))
            head, tail = tl.split(pairs)
            x = head + tail
        return tl.reshape(x, (x.shape[0],))

    @triton.jit
    def _features_mean_kernel(slots_ptr, num_ptr, centre_ptr, cz_ptr, cols_ptr, out_ptr, n_pillars,
                              P: tl.constexpr, PB: tl.constexpr, F: tl.constexpr, F_POW2: tl.constexpr,
                              LEVELS: tl.constexpr, M0: tl.constexpr, WITH_CZ: tl.constexpr):
        pillar = tl.program_id(0).to(tl.int64) * PB + tl.arange(0, PB)  # (PB,)
        pillar_ok = pillar < n_pillars
        slot = tl.arange(0, P)
        row = pillar[:, None] * P + slot[None, :]  # (PB, P)
        in_pillar = pillar_ok[:, None]
        # the mean over the slots (empty slots hold 0), as features.py: tree sum / max(count, 1)
        count = tl.maximum(tl.load(num_ptr + pillar, mask=pillar_ok, other=1).to(tl.float32), 1.0)
        mx = tl.div_rn(_pairwise_sum(tl.load(slots_ptr + row * 6 + 0, mask=in_pillar, other=0.0), LEVELS), count)
        my = tl.div_rn(_pairwise_sum(tl.load(slots_ptr + row * 6 + 1, mask=in_pillar, other=0.0), LEVELS), count)
        mz = tl.div_rn(_pairwise_sum(tl.load(slots_ptr + row * 6 + 2, mask=in_pillar, other=0.0), LEVELS), count)
        cx = tl.load(centre_ptr + pillar * 2, mask=pillar_ok, other=0.0)
        cy = tl.load(centre_ptr + pillar * 2 + 1, mask=pillar_ok, other=0.0)
        # the offset of every feature column: 0 (raw), the mean, the centre
        f = tl.arange(0, F_POW2)[None, None, :]  # (1, 1, F)
        off = tl.where(f == M0, mx[:, None, None], 0.0)
        off = tl.where(f == M0 + 1, my[:, None, None], off)
        off = tl.where(f == M0 + 2, mz[:, None, None], off)
        off = tl.where(f == M0 + 3, cx[:, None, None], off)
        off = tl.where(f == M0 + 4, cy[:, None, None], off)
        if WITH_CZ:
            off = tl.where(f == M0 + 5, tl.load(cz_ptr), off)
        mask = in_pillar[:, :, None] & (f < F)  # (PB, P, F)
        occupied = tl.load(slots_ptr + row * 6 + 5, mask=in_pillar, other=0.0)[:, :, None]
        _store_features(slots_ptr, cols_ptr, out_ptr, row[:, :, None], f, mask, occupied, off, F)


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
        _features_kernel[grid](slots, device_table(cols, torch.int32, slots.device), offsets, out, n_rows,
                               P=p, F=n_feat, F_POW2=triton.next_power_of_2(n_feat), ROWS=ROWS_PER_PROGRAM)
    return out


def features_with_mean(slots: Tensor, num_points: Tensor, centre: Tensor, cz: Tensor, cols: tuple[int, ...],
                       m0: int) -> Tensor:
    """slots (V, P, 6) float32 (P: ``mean_in_kernel``), num_points (V,), centre (V, 2) float32 pillar centres
    (x, y), cz (1,) the z centre, cols: the slot column of each feature, m0: the first offset column (mean x, y, z,
    centre x, y[, z] follow) -> (V, P, F) features, as ``features.encoder_features_from``."""
    v, p, _ = slots.shape
    n_feat = len(cols)
    out = torch.empty(v, p, n_feat, dtype=torch.float32, device=slots.device)
    if v:
        pb = ROWS_PER_PROGRAM // p
        cols_t = device_table(cols, torch.int32, slots.device)
        _features_mean_kernel[(triton.cdiv(v, pb),)](
            slots.contiguous(), num_points.contiguous(), centre.contiguous(), cz, cols_t, out, v,
            P=p, PB=pb, F=n_feat, F_POW2=triton.next_power_of_2(n_feat), LEVELS=p.bit_length() - 1, M0=m0,
            WITH_CZ=n_feat > m0 + 5)
    return out
