"""YOLOX training targets and loss: SimOTA assignment (YOLOX's dynamic-k matching) and the YOLOX loss.

Per image: candidate anchors are those whose centre lies in a ground-truth box or within 2.5 strides of its centre;
each ground truth takes its dynamic k = clamp(sum of its top-10 IoUs, 1) lowest-cost candidates, cost = class BCE +
3 * (-log IoU) (+ a large penalty outside box-and-centre); an anchor claimed twice goes to its cheapest ground truth.
Loss: 5 * (1 - IoU^2) on matched boxes, objectness BCE on every anchor, class BCE (target one-hot * IoU) on matched
anchors, normalised by the number of matches. Anchors whose centre lies in an ignore region and that match nothing
are left out of the objectness loss (neither object nor background).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CENTER_RADIUS = 2.5


def pair_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU [A, B] of xyxy boxes."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def aligned_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter).clamp(min=1e-9)


@torch.no_grad()
def simota_assign(boxes: torch.Tensor, obj: torch.Tensor, cls: torch.Tensor, centres: torch.Tensor,
                  strides: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (fg mask [A], matched gt index [A] (valid where fg), IoU with it [A])."""
    A, G = boxes.shape[0], gt_boxes.shape[0]
    fg = torch.zeros(A, dtype=torch.bool, device=boxes.device)
    idx = torch.zeros(A, dtype=torch.long, device=boxes.device)
    ious_out = torch.zeros(A, device=boxes.device)
    if G == 0:
        return fg, idx, ious_out
    cx, cy = centres[:, 0], centres[:, 1]
    in_box = ((cx[None] > gt_boxes[:, None, 0]) & (cx[None] < gt_boxes[:, None, 2])
              & (cy[None] > gt_boxes[:, None, 1]) & (cy[None] < gt_boxes[:, None, 3]))
    gcx, gcy = (gt_boxes[:, 0] + gt_boxes[:, 2]) / 2, (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2
    r = CENTER_RADIUS * strides[None, :, 0]
    in_ctr = ((cx[None] - gcx[:, None]).abs() < r) & ((cy[None] - gcy[:, None]).abs() < r)
    cand = (in_box | in_ctr).any(0)
    if not cand.any():
        return fg, idx, ious_out
    ci = cand.nonzero().squeeze(1)
    both = (in_box & in_ctr)[:, ci]
    ious = pair_iou(gt_boxes, boxes[ci].float())  # [G, Ac]
    p = (cls[ci].float().sigmoid() * obj[ci].float().sigmoid()[:, None]).sqrt().clamp(1e-6, 1 - 1e-6)
    onehot = F.one_hot(gt_labels, cls.shape[1]).float()
    cls_cost = F.binary_cross_entropy(p[None].expand(G, -1, -1), onehot[:, None].expand(-1, len(ci), -1),
                                      reduction="none").sum(-1)
    cost = cls_cost + 3.0 * -torch.log(ious + 1e-8) + 1e5 * (~both).float()
    k = torch.clamp(ious.topk(min(10, len(ci)), dim=1).values.sum(1).int(), min=1)
    kmax = int(k.max())
    _, pos = torch.topk(cost, kmax, dim=1, largest=False)  # [G, kmax], cheapest first
    take = torch.arange(kmax, device=cost.device)[None] < k[:, None]
    match = torch.zeros_like(cost, dtype=torch.bool)
    match.scatter_(1, pos, take)
    multi = match.sum(0) > 1
    if multi.any():
        best = cost[:, multi].argmin(0)
        match[:, multi] = False
        match[best, multi.nonzero().squeeze(1)] = True
    has = match.any(0)
    gi = match.float().argmax(0)
    sel = ci[has]
    fg[sel] = True
    idx[sel] = gi[has]
    ious_out[sel] = ious[gi[has], has.nonzero().squeeze(1)]
    return fg, idx, ious_out


def yolox_loss(reg: torch.Tensor, obj: torch.Tensor, cls: torch.Tensor, centres: torch.Tensor,
               strides: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, dict[str, float]]:
    """reg [B, A, 4] raw, obj [B, A] logits, cls [B, A, C] logits; centres [A, 2] anchor centres (pixels, grid *
    stride), strides [A, 1]; targets per image: boxes [G, 4] xyxy, labels [G], ignore_boxes [I, 4]."""
    xy = reg[..., :2].float() * strides + centres
    wh = torch.exp(reg[..., 2:].float().clamp(max=10)) * strides
    boxes = torch.cat((xy - wh / 2, xy + wh / 2), -1)
    obj_t = torch.zeros_like(obj, dtype=torch.float32)
    obj_w = torch.ones_like(obj, dtype=torch.float32)
    l_iou, l_cls, n_fg = boxes.new_zeros(()), boxes.new_zeros(()), 0
    for b, t in enumerate(targets):
        fg, gi, ious = simota_assign(boxes[b].detach(), obj[b].detach(), cls[b].detach(), centres, strides,
                                     t["boxes"], t["labels"])
        ign = t.get("ignore_boxes")
        if ign is not None and len(ign):
            cx, cy = centres[:, 0], centres[:, 1]
            inside = ((cx[None] > ign[:, None, 0]) & (cx[None] < ign[:, None, 2]) & (cy[None] > ign[:, None, 1])
                      & (cy[None] < ign[:, None, 3])).any(0)
            obj_w[b, inside & ~fg] = 0.0
        if not fg.any():
            continue
        n = int(fg.sum())
        n_fg += n
        obj_t[b, fg] = 1.0
        iou = aligned_iou(boxes[b][fg], t["boxes"][gi[fg]])
        l_iou = l_iou + (1 - iou.pow(2)).sum()
        cls_t = F.one_hot(t["labels"][gi[fg]], cls.shape[-1]).float() * ious[fg, None]
        l_cls = l_cls + F.binary_cross_entropy_with_logits(cls[b][fg].float(), cls_t, reduction="sum")
    l_obj = (F.binary_cross_entropy_with_logits(obj.float(), obj_t, reduction="none") * obj_w).sum()
    norm = max(n_fg, 1)
    total = (5.0 * l_iou + l_obj + l_cls) / norm
    return total, {"iou": float(l_iou.detach()) / norm, "obj": float(l_obj.detach()) / norm,
                   "cls": float(l_cls.detach()) / norm,
                   "fg": n_fg / max(len(targets), 1)}


@torch.no_grad()
def simota_assign_batched(boxes: torch.Tensor, obj: torch.Tensor, cls: torch.Tensor, centres: torch.Tensor,
                          strides: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                          gt_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``simota_assign`` for a whole batch at once (ground truth padded to G, ``gt_valid`` [B, G]); the same
    rule, computed over all anchors: non-candidates get an infinite cost. -> fg [B, A], gt index [B, A], IoU [B, A].
    """
    B, A = boxes.shape[:2]
    G = gt_boxes.shape[1]
    dev = boxes.device
    if G == 0:
        z = torch.zeros(B, A, dtype=torch.bool, device=dev)
        return z, torch.zeros(B, A, dtype=torch.long, device=dev), torch.zeros(B, A, device=dev)
    cx, cy = centres[None, None, :, 0], centres[None, None, :, 1]
    gb = gt_boxes[:, :, None, :]
    in_box = (cx > gb[..., 0]) & (cx < gb[..., 2]) & (cy > gb[..., 1]) & (cy < gb[..., 3])
    gcx, gcy = (gb[..., 0] + gb[..., 2]) / 2, (gb[..., 1] + gb[..., 3]) / 2
    r = CENTER_RADIUS * strides[None, None, :, 0]
    in_ctr = ((cx - gcx).abs() < r) & ((cy - gcy).abs() < r)
    valid = gt_valid[:, :, None]
    cand = ((in_box | in_ctr) & valid).any(1, keepdim=True)  # [B, 1, A]
    both = in_box & in_ctr
    bx = boxes.float()
    lt = torch.maximum(gt_boxes[:, :, None, :2], bx[:, None, :, :2])
    rb = torch.minimum(gt_boxes[:, :, None, 2:], bx[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    ag = (gt_boxes[..., 2:] - gt_boxes[..., :2]).clamp(min=0).prod(-1)[:, :, None]
    ab = (bx[..., 2:] - bx[..., :2]).clamp(min=0).prod(-1)[:, None, :]
    ious = inter / (ag + ab - inter).clamp(min=1e-9)  # [B, G, A]
    ious = torch.where(cand & valid, ious, torch.zeros_like(ious))
    p = (cls.float().sigmoid() * obj.float().sigmoid()[..., None]).sqrt().clamp(1e-6, 1 - 1e-6)  # [B, A, C]
    logp, log1p = torch.log(p), torch.log1p(-p)
    # BCE summed over classes against a one-hot target: -sum log(1-p) - (log p - log(1-p))[label]
    neg = -log1p.sum(-1)[:, None, :]  # [B, 1, A]
    lab = gt_labels.clamp(min=0)
    pick = torch.gather((logp - log1p).transpose(1, 2), 1, lab[:, :, None].expand(-1, -1, A))  # [B, G, A]
    cost = neg - pick + 3.0 * -torch.log(ious + 1e-8) + 1e5 * (~both).float()
    cost = torch.where(cand & valid, cost, torch.full_like(cost, float("inf")))
    ncand = cand.sum(-1).squeeze(1)  # [B]
    k = torch.clamp(ious.topk(10, dim=2).values.sum(-1).int(), min=1)  # [B, G]
    k = torch.minimum(k, ncand[:, None].clamp(min=1).int())
    kmax = int(k.max())
    _, pos = torch.topk(cost, kmax, dim=2, largest=False)
    take = (torch.arange(kmax, device=dev)[None, None] < k[..., None]) & gt_valid[..., None]
    match = torch.zeros_like(cost, dtype=torch.bool)
    match.scatter_(2, pos, take)
    match &= torch.isfinite(cost)
    multi = match.sum(1, keepdim=True) > 1  # [B, 1, A]
    best = torch.where(match, cost, torch.full_like(cost, float("inf"))).argmin(1, keepdim=True)
    only_best = torch.zeros_like(match).scatter_(1, best, True)
    match = torch.where(multi, only_best & match, match)
    fg = match.any(1)
    gi = match.float().argmax(1)
    iou_fg = torch.gather(ious, 1, gi[:, None]).squeeze(1) * fg
    return fg, gi, iou_fg


def yolox_loss_batched(reg: torch.Tensor, obj: torch.Tensor, cls: torch.Tensor, centres: torch.Tensor,
                       strides: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                       gt_valid: torch.Tensor, ign_valid: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """``yolox_loss`` with padded targets: gt_boxes [B, G, 4], gt_labels [B, G], gt_valid [B, G] (trained-on
    boxes), ign_valid [B, G] (ignore regions among the same rows)."""
    xy = reg[..., :2].float() * strides + centres
    wh = torch.exp(reg[..., 2:].float().clamp(max=10)) * strides
    boxes = torch.cat((xy - wh / 2, xy + wh / 2), -1)
    fg, gi, ious = simota_assign_batched(boxes.detach(), obj.detach(), cls.detach(), centres, strides, gt_boxes,
                                         gt_labels, gt_valid)
    cx, cy = centres[None, None, :, 0], centres[None, None, :, 1]
    gb = gt_boxes[:, :, None, :]
    in_ign = ((cx > gb[..., 0]) & (cx < gb[..., 2]) & (cy > gb[..., 1]) & (cy < gb[..., 3])
              & ign_valid[:, :, None]).any(1)
    obj_w = (~(in_ign & ~fg)).float()
    l_obj = (F.binary_cross_entropy_with_logits(obj.float(), fg.float(), reduction="none") * obj_w).sum()
    n_fg = int(fg.sum())
    norm = max(n_fg, 1)
    if n_fg:
        tgt = torch.gather(gt_boxes, 1, gi[..., None].expand(-1, -1, 4))[fg]
        iou = aligned_iou(boxes[fg], tgt)
        l_iou = (1 - iou.pow(2)).sum()
        labels = torch.gather(gt_labels, 1, gi)[fg]
        cls_t = F.one_hot(labels, cls.shape[-1]).float() * ious[fg][:, None]
        l_cls = F.binary_cross_entropy_with_logits(cls[fg].float(), cls_t, reduction="sum")
    else:
        l_iou = l_cls = boxes.sum() * 0.0
    total = (5.0 * l_iou + l_obj + l_cls) / norm
    return total, {"iou": float(l_iou.detach()) / norm, "obj": float(l_obj.detach()) / norm,
                   "cls": float(l_cls.detach()) / norm, "fg": n_fg / max(reg.shape[0], 1)}
