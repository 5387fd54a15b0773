"""Circle NMS on the decoded candidates at a fixed size (no data-dependent shape: CUDA-graph capturable).

The same kept set as ``nms.nms`` (numpy) for ``nms.kind == "circle"`` with ``iou_nms == "off"``: the same
candidate order (``decode_packed``'s rows are already in descending score order, ties in raster order), the same
``pre_max_size`` / ``post_max_size`` caps and the same distance test in the same precision (float64 for our
per-class radii, float32 for Autoware's threshold; one torch op per arithmetic step, so no fused multiply-add).

Greedy NMS keeps row j when no kept row i < j suppresses it. Its keep mask is the unique fixed point of
``keep[j] = not any(keep[i] and S[i, j] for i < j)``; iterating that map from "all kept" fixes one more row per
step at least, and a step that changes nothing has reached the fixed point. ``FIXPOINT_STEPS`` steps are run at a
fixed count; the result carries whether the last step changed nothing, and the caller falls back to the host NMS
otherwise (a suppression chain longer than the step count), so the result is always the exact greedy one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ...arrays import device_table
from ...config import CenterPointModelConfig

FIXPOINT_STEPS = 10  # enough for the chains of real scenes; a longer one falls back to the host


def gpu_nms_supported(cfg: CenterPointModelConfig) -> bool:
    return cfg.nms.kind == "circle" and cfg.nms.iou_nms == "off"


def _suppress(packed: Tensor, cfg: CenterPointModelConfig) -> Tensor:
    """S[i, j]: candidate i, if kept, removes candidate j (any i, j; the caller keeps i < j)."""
    n = cfg.nms
    dev = packed.device
    if n.circle_nms_dist_threshold is not None:  # Autoware: class-agnostic, float32
        x, y = packed[:, 0], packed[:, 1]
        dx = x[:, None] - x[None, :]
        dy = y[:, None] - y[None, :]
        d2 = dx * dx + dy * dy
        thr2 = float(np.float32(n.circle_nms_dist_threshold) ** 2)
        return d2 < device_table((thr2,), torch.float32, dev)
    radii = list(n.circle_radius)
    if len(radii) == 1:
        radii = radii * len(cfg.class_names)
    x, y = packed[:, 0].double(), packed[:, 1].double()
    label = packed[:, 8].long()
    dx = x[:, None] - x[None, :]
    dy = y[:, None] - y[None, :]
    d2 = dx * dx + dy * dy
    r = device_table(tuple(float(v) for v in radii), torch.float64, dev)[label]
    return (label[:, None] == label[None, :]) & (d2 < (r * r)[:, None])


def circle_nms_keep(packed: Tensor, cfg: CenterPointModelConfig, steps: int = FIXPOINT_STEPS
                    ) -> tuple[Tensor, Tensor]:
    """packed: ``decode_packed`` rows (K, 12), column 11 = candidate kept by decode. Returns (keep (K,) bool after
    NMS and the post-NMS cap, converged () bool: False = use the host NMS instead)."""
    k = packed.shape[0]
    cand = packed[:, 11] > 0
    eligible = cand & (torch.cumsum(cand.to(torch.int32), 0) <= cfg.nms.pre_max_size)
    upper = torch.ones(k, k, dtype=torch.bool, device=packed.device).triu_(1)
    s = (_suppress(packed, cfg) & upper & eligible[:, None] & eligible[None, :]).to(torch.float32)
    # keep[j] = relu(eligible[j] - sum_i keep[i] S[i, j]): small integers, exact in float32; 2 kernels a step.
    base = eligible.to(torch.float32)
    keep = base
    prev = keep
    for _ in range(steps):
        prev = keep
        keep = torch.addmv(base, s.t(), keep, alpha=-1).clamp_(min=0.0)
    converged = (prev == keep).all()
    keep = keep > 0
    keep = keep & (torch.cumsum(keep.to(torch.int32), 0) <= cfg.nms.post_max_size)
    return keep, converged
