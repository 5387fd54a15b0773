"""Non-maximum suppression on decoded boxes (numpy, on the host; same result whatever the backend).

- ``circle``: greedy by score, per class; a box is suppressed when its BEV centre lies strictly closer than
  the class radius to a kept box of the same class (Autoware ``circle_nms_kernel.cu`` compares squared
  distance with the squared threshold, strict ``<``; it uses one radius for all classes).
- ``bev_iou``: greedy by score, per class; suppressed when the exact rotated BEV IoU with a kept box of the
  same class exceeds ``nms.iou_threshold``.
Candidates are capped at ``nms.pre_max_size`` before and ``nms.post_max_size`` after suppression.
"""

from __future__ import annotations

import numpy as np

from ...config import CenterPointModelConfig
from ...structures import Boxes3D


def _score_order(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, kind="stable")


def _greedy(suppress: np.ndarray) -> np.ndarray:
    """suppress[i, j]: i (higher score) removes j. Returns the keep mask in the given order."""
    n = suppress.shape[0]
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if keep[i]:
            keep[i + 1 :] &= ~suppress[i, i + 1 :]
    return keep


def circle_nms(xy: np.ndarray, labels: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Boxes already sorted by descending score. radii: per class. Returns the keep mask."""
    if len(xy) == 0:
        return np.zeros(0, dtype=bool)
    xy = xy.astype(np.float64)
    d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    r = radii[labels].astype(np.float64)
    suppress = (labels[:, None] == labels[None, :]) & (d2 < (r**2)[:, None])
    return _greedy(suppress)


# ---------------------------------------------------------------------------- rotated BEV IoU
def bev_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) [x, y, z, l, w, h, yaw] or (N, 5) [x, y, l, w, yaw] -> (N, 4, 2) counter-clockwise corners."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.shape[1] == 7:
        b = b[:, [0, 1, 3, 4, 6]]
    x, y, l, w, yaw = b.T
    local = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
    px = local[None, :, 0] * l[:, None]
    py = local[None, :, 1] * w[:, None]
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    return np.stack([x[:, None] + c * px - s * py, y[:, None] + s * px + c * py], axis=-1)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside(points: np.ndarray, poly: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """points (K, n, 2) inside convex CCW poly (K, 4, 2) -> (K, n)."""
    edges = np.roll(poly, -1, axis=1) - poly  # (K, 4, 2)
    rel = points[:, :, None, :] - poly[:, None, :, :]  # (K, n, 4, 2)
    return (_cross(edges[:, None], rel) >= -eps).all(axis=2)


def polygon_intersection_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact intersection area of pairs of convex CCW quadrilaterals a[k], b[k]: (K, 4, 2) -> (K,)."""
    k = a.shape[0]
    if k == 0:
        return np.zeros(0)
    a_in_b = _inside(a, b)
    b_in_a = _inside(b, a)
    p, r = a[:, :, None, :], (np.roll(a, -1, axis=1) - a)[:, :, None, :]  # edges of a, (K, 4, 1, 2)
    q, s = b[:, None, :, :], (np.roll(b, -1, axis=1) - b)[:, None, :, :]  # edges of b, (K, 1, 4, 2)
    denom = _cross(r, s)  # (K, 4, 4)
    qp = q - p
    ok = np.abs(denom) > 1e-12
    safe = np.where(ok, denom, 1.0)
    t = _cross(qp, s) / safe
    u = _cross(qp, r) / safe
    eps = 1e-9
    hit = ok & (t >= -eps) & (t <= 1 + eps) & (u >= -eps) & (u <= 1 + eps)
    cross_pts = (p + t[..., None] * r).reshape(k, 16, 2)
    pts = np.concatenate([a, b, cross_pts], axis=1)  # (K, 24, 2)
    valid = np.concatenate([a_in_b, b_in_a, hit.reshape(k, 16)], axis=1)
    count = valid.sum(1)
    centre = (pts * valid[..., None]).sum(1) / np.maximum(count, 1)[:, None]
    ang = np.arctan2(pts[..., 1] - centre[:, None, 1], pts[..., 0] - centre[:, None, 0])
    ang = np.where(valid, ang, np.inf)
    order = np.argsort(ang, axis=1, kind="stable")
    sp = np.take_along_axis(pts, order[..., None], axis=1)
    sv = np.take_along_axis(valid, order, axis=1)
    sp = np.where(sv[..., None], sp, sp[:, :1])  # pad with the first vertex: zero-area closing segments
    area = 0.5 * np.abs(_cross(sp, np.roll(sp, -1, axis=1)).sum(1))
    return np.where(count >= 3, area, 0.0)


def rotated_iou_bev(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Pairwise exact BEV IoU, (N, 7) x (M, 7) -> (N, M)."""
    n, m = len(boxes_a), len(boxes_b)
    if n == 0 or m == 0:
        return np.zeros((n, m))
    ca, cb = bev_corners(boxes_a), bev_corners(boxes_b)
    ia, ib = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    inter = polygon_intersection_area(ca[ia.ravel()], cb[ib.ravel()]).reshape(n, m)
    area_a = np.asarray(boxes_a, np.float64)[:, 3] * np.asarray(boxes_a, np.float64)[:, 4]
    area_b = np.asarray(boxes_b, np.float64)[:, 3] * np.asarray(boxes_b, np.float64)[:, 4]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def bev_iou_nms(boxes: np.ndarray, labels: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Boxes sorted by descending score -> keep mask. IoU is computed only for same-class pairs whose
    circumscribed circles overlap."""
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=bool)
    b = np.asarray(boxes, np.float64)
    half_diag = 0.5 * np.hypot(b[:, 3], b[:, 4])
    d = np.hypot(b[:, None, 0] - b[None, :, 0], b[:, None, 1] - b[None, :, 1])
    near = (labels[:, None] == labels[None, :]) & (d < half_diag[:, None] + half_diag[None, :])
    np.fill_diagonal(near, False)
    ii, jj = np.nonzero(np.triu(near))
    suppress = np.zeros((n, n), dtype=bool)
    if len(ii):
        ca = bev_corners(b)
        inter = polygon_intersection_area(ca[ii], ca[jj])
        area = b[:, 3] * b[:, 4]
        union = area[ii] + area[jj] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        suppress[ii, jj] = iou > iou_threshold
    return _greedy(suppress)


def nms(dets: Boxes3D, cfg: CenterPointModelConfig) -> Boxes3D:
    if len(dets) == 0:
        return dets
    order = _score_order(dets.scores)[: cfg.nms.pre_max_size]
    d = dets.select(order)
    if cfg.nms.kind == "circle":
        radii = np.asarray(cfg.nms.circle_radius, dtype=np.float64)
        if len(radii) == 1:
            radii = np.full(len(cfg.class_names), radii[0])
        keep = circle_nms(d.boxes[:, :2], d.labels, radii)
    else:
        keep = bev_iou_nms(d.boxes, d.labels, cfg.nms.iou_threshold)
    kept = d.select(np.nonzero(keep)[0][: cfg.nms.post_max_size])
    return kept
