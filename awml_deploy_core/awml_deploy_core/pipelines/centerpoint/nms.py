"""Non-maximum suppression on decoded boxes (numpy, on the host; same result whatever the backend).

Two stages, in Autoware ``lidar_centerpoint``'s order (postprocess_kernel.cu, then node.cpp):
1. ``nms.kind``:
   - ``circle`` with ``nms.circle_nms_dist_threshold`` set: Autoware's rule (``circle_nms_kernel.cu``): greedy by
     score over ALL classes together; a box is suppressed when the squared BEV centre distance to a kept box is
     strictly below the squared threshold (float32, as the kernel).
   - ``circle`` without it: ours, greedy by score per class, radius ``nms.circle_radius[class]`` (same strict
     squared-distance test; Autoware has no per-class radius, see ``NmsConfig``).
   - ``bev_iou``: greedy by score, per class; suppressed when the exact rotated BEV IoU with a kept box of the
     same class exceeds ``nms.iou_threshold`` (not an Autoware step).
2. ``nms.iou_nms`` (Autoware's ``NonMaximumSuppression``, off by default): see ``autoware_iou_nms``.
Candidates are capped at ``nms.pre_max_size`` before stage 1 and ``nms.post_max_size`` after stage 2.
"""

from __future__ import annotations

import numpy as np

from ...config import CenterPointModelConfig
from ...export.autoware_params import autoware_class_name
from ...structures import Boxes3D

# Autoware's get2dIoU returns 0 when the union is below this (m^2; object_recognition_utils' default).
AUTOWARE_MIN_UNION_AREA = 0.01


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


def autoware_circle_nms(xy: np.ndarray, dist_threshold: float) -> np.ndarray:
    """Autoware's circle NMS: boxes sorted by descending score, one radius, class-agnostic. Returns the keep mask."""
    if len(xy) == 0:
        return np.zeros(0, dtype=bool)
    p = xy.astype(np.float32)
    d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1, dtype=np.float32)
    return _greedy(d2 < np.float32(dist_threshold) ** 2)


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


def _pair_iou(b: np.ndarray, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
    """Exact BEV IoU of box pairs (ii[k], jj[k]); 0 where the union is below Autoware's minimum."""
    if len(ii) == 0:
        return np.zeros(0)
    corners = bev_corners(b)
    inter = polygon_intersection_area(corners[ii], corners[jj])
    area = b[:, 3] * b[:, 4]
    union = area[ii] + area[jj] - inter
    ok = union >= AUTOWARE_MIN_UNION_AREA
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def autoware_iou_nms(
    boxes: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    mode: str,
    search_distance_2d: float,
    iou_threshold: float,
    target_class_names: list[str] = (),
) -> np.ndarray:
    """Autoware's IoU NMS (``non_maximum_suppression.cpp``) on boxes sorted by descending score -> keep mask.

    Box j is removed when some earlier box i of an eligible pair has BEV IoU(i, j) > ``iou_threshold``, whether
    or not i itself survives (Autoware fills a lower-triangular IoU matrix and drops every row whose maximum
    exceeds the threshold: a box removed only by a removed box is still removed, unlike greedy NMS). IoU is
    taken across classes. Eligible pairs (``mode``):
    - ``autoware`` (>= 0.40): squared centre distance <= search_distance_2d^2, unless the labels differ and one
      of them is PEDESTRIAN.
    - ``autoware_target_classes`` (<= 0.39): both labels in ``target_class_names`` (any distance), or squared
      centre distance <= search_distance_2d^2 (any classes).
    Labels are compared as Autoware sees them (``autoware_class_name``), so two of our classes that map to the
    same Autoware label count as the same label.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=bool)
    b = np.asarray(boxes, np.float64)
    aw = np.array([autoware_class_name(c) for c in class_names])[labels]
    d2 = (b[:, None, 0] - b[None, :, 0]) ** 2 + (b[:, None, 1] - b[None, :, 1]) ** 2
    near = d2 <= search_distance_2d**2
    if mode == "autoware":
        ped = aw == "PEDESTRIAN"
        eligible = near & ~((aw[:, None] != aw[None, :]) & (ped[:, None] | ped[None, :]))
    elif mode == "autoware_target_classes":
        targets = {autoware_class_name(c) for c in target_class_names}
        is_target = np.isin(aw, list(targets))
        eligible = near | (is_target[:, None] & is_target[None, :])
    else:
        raise ValueError(f"autoware_iou_nms: unknown mode {mode!r} (autoware | autoware_target_classes)")
    # IoU is 0 unless the circumscribed circles overlap: skip those pairs (and i >= j).
    half_diag = 0.5 * np.hypot(b[:, 3], b[:, 4])
    touch = np.sqrt(d2) < half_diag[:, None] + half_diag[None, :]
    ii, jj = np.nonzero(np.triu(eligible & touch, k=1))
    removed = np.zeros(n, dtype=bool)
    iou = _pair_iou(b, ii, jj)
    removed[jj[iou > iou_threshold]] = True
    return ~removed


def nms(dets: Boxes3D, cfg: CenterPointModelConfig) -> Boxes3D:
    if len(dets) == 0:
        return dets
    order = _score_order(dets.scores)[: cfg.nms.pre_max_size]
    d = dets.select(order)
    n = cfg.nms
    if n.kind == "circle" and n.circle_nms_dist_threshold is not None:
        keep = autoware_circle_nms(d.boxes[:, :2], n.circle_nms_dist_threshold)
    elif n.kind == "circle":
        radii = np.asarray(n.circle_radius, dtype=np.float64)
        if len(radii) == 1:
            radii = np.full(len(cfg.class_names), radii[0])
        keep = circle_nms(d.boxes[:, :2], d.labels, radii)
    else:
        keep = bev_iou_nms(d.boxes, d.labels, n.iou_threshold)
    d = d.select(np.nonzero(keep)[0])
    if n.iou_nms != "off" and len(d):
        keep = autoware_iou_nms(d.boxes, d.labels, cfg.class_names, n.iou_nms, n.iou_nms_search_distance_2d,
                                n.iou_nms_threshold, n.iou_nms_target_class_names)
        d = d.select(np.nonzero(keep)[0])
    return d.select(np.arange(min(len(d), n.post_max_size)))
