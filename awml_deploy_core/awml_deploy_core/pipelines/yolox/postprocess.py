"""Decode AWML's YOLOX output and suppress per class.

Decode (YOLOX): anchor at grid cell (x, y) of stride s: centre = (reg_xy + (x, y)) * s, size = exp(reg_wh) * s.
Score = objectness * best class score, label = that class (mmdet's and Autoware's rule: one label per anchor);
kept when score > score_threshold. NMS: greedy, per class (a box only suppresses boxes of its own class), IoU >
nms_iou removed; then the ``max_per_img`` best. Boxes are mapped back through the letterbox scale and clipped to
the original image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .preprocess import Letterbox


@dataclass
class Detections2D:
    """Boxes [K, 4] xyxy in original image pixels, scores [K], labels [K] (indices into class_names)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)


def make_grid(input_hw: tuple[int, int], strides: tuple[int, ...] | list[int],
              device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor, in the graph's order (levels by stride, each row-major): (x, y) cell [N, 2] and stride [N, 1]."""
    cells, per_stride = [], []
    for s in strides:
        h, w = input_hw[0] // s, input_hw[1] // s
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        cells.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), 1).float())
        per_stride.append(torch.full((h * w, 1), float(s), device=device))
    return torch.cat(cells), torch.cat(per_stride)


def decode_boxes(output: torch.Tensor, grid: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """[..., N, >=4] raw regression -> [..., N, 4] xyxy in network-input pixels."""
    xy = (output[..., :2] + grid) * strides
    wh = torch.exp(output[..., 2:4]) * strides
    return torch.cat((xy - wh / 2, xy + wh / 2), dim=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes [K, 4] x [M, 4]."""
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms_per_class(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy NMS within each class, in descending score order (ties: lower index first)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    b, lab = boxes[order].astype(np.float64), labels[order]
    ious = box_iou(b, b)
    ious[lab[:, None] != lab[None, :]] = 0.0
    suppressed = np.zeros(len(order), bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= ious[i] > iou
    return order[np.asarray(keep, np.int64)]


def postprocess(output: torch.Tensor, grid: torch.Tensor, strides: torch.Tensor, geos: list[Letterbox],
                score_threshold: float, nms_iou: float, max_per_img: int) -> list[Detections2D]:
    """[B, N, 5 + C] graph output -> one Detections2D per image, in original image pixels."""
    boxes = decode_boxes(output, grid, strides)
    cls_score, label = output[..., 5:].max(dim=-1)
    score = output[..., 4] * cls_score
    results = []
    for i, geo in enumerate(geos):
        mask = score[i] > score_threshold
        b = boxes[i][mask].detach().cpu().numpy()
        s = score[i][mask].detach().cpu().numpy()
        lab = label[i][mask].detach().cpu().numpy().astype(np.int64)
        keep = nms_per_class(b, s, lab, nms_iou)[:max_per_img] if len(s) else np.zeros(0, np.int64)
        h, w = geo.original_hw
        out_b = b[keep] / geo.scale
        out_b[:, 0::2] = out_b[:, 0::2].clip(0, w)
        out_b[:, 1::2] = out_b[:, 1::2].clip(0, h)
        results.append(Detections2D(out_b.astype(np.float32), s[keep].astype(np.float32), lab[keep]))
    return results
