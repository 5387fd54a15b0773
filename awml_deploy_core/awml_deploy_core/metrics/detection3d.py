"""3D detection metrics in the style of the nuScenes devkit (centre-distance matching), vectorized with numpy.

What follows the devkit (facts read from nuscenes-devkit ``python-sdk/nuscenes/eval/detection/algo.py``
``accumulate`` / ``calc_ap`` / ``calc_tp``, ``detection/data_classes.py`` ``DetectionMetricData`` and
``common/utils.py`` ``center_distance`` / ``scale_iou`` / ``yaw_diff`` / ``velocity_l2``; the code here is our own):

* **Matching**, per class and distance threshold: the detections of *all* frames in descending score order; each
  one takes the nearest (BEV centre distance) not-yet-taken GT of its class in its frame, and is a TP when that
  distance is *strictly* below the threshold (devkit: ``min_dist < dist_th``), else a FP. Equal distances: the lower
  GT index wins. Equal scores: earlier frame first, then lower index within the frame (the devkit orders ties by
  reversed list position; only equal-score detections can come out in another order).
* **Curve**: per detection, precision ``tp / (tp + fp)`` and recall ``tp / num_gt`` (cumulative counts), resampled
  onto 101 recall points 0, 0.01, ..., 1 with ``np.interp(points, recall, precision, right=0)`` - so precision is 0
  beyond the largest recall reached, and equals the first precision below the first recall reached. The devkit
  takes **no** precision envelope; ``Detection3DConfig.precision_envelope=True`` takes one (running maximum from the
  right on the per-detection precision, before resampling, as VOC/COCO do). Default: devkit behaviour.
* **AP** (``calc_ap``): keep the resampled precision at indices ``> round(100 * min_recall)`` (the devkit's "+1 to
  exclude the min recall bin"), subtract ``min_precision``, clip at 0, mean, divide by ``1 - min_precision``.
* A class with GT but no TP at all (no detections, or only FPs): AP 0 (devkit ``no_predictions``).

The evaluated range (``Detection3DConfig.eval_range``, see :func:`in_eval_range`): a GT box or a detection is
scored only when its BEV centre lies inside it, ``x_min <= x < x_max`` and ``y_min <= y < y_max`` (the voxelizer's
own test on points, so exactly where the model can place a centre; AWML/mmdet3d's ObjectRangeFilter uses the open
interval, which differs only on the boundary). Both are filtered, then matched - the nuScenes-style
filter-then-match rule (the devkit filters both by a per-class distance from the ego instead), so a detection of
a box outside the range is neither a TP nor a FP. With ``eval_range=None`` everything is scored.

Where we differ from the devkit (on purpose, documented):

* A class with **no GT** gets AP NaN (the devkit gives 0); NaN is left out of every mean, so a class absent from the
  data does not pull mAP down. Its TP errors are NaN as well.
* **TP errors** are the plain mean over the TPs matched at ``tp_threshold`` (NaN values, e.g. unknown velocities,
  ignored; NaN when a class has no TP). The devkit instead averages cumulative means resampled on the recall bins
  from ``min_recall`` to the largest recall reached, and uses 1.0 when there is no TP.
* Orientation error uses a period of 2*pi for every class (the devkit uses pi for barriers; pedestrians could
  argue for pi too, but one rule for all keeps the numbers comparable across classes).

Added on top:

* **APH** (Waymo style): each TP counts with weight ``1 - dyaw / pi``, dyaw the yaw difference wrapped to
  [0, pi], in the cumulative TP used by *both* precision and recall (FPs still count 1 in the precision
  denominator); then the same resampling and ``calc_ap`` as AP.
* **Distance bands**: GT *and* detections are filtered by the BEV range of their own centre from the origin,
  band ``[lo, hi)``, and AP is recomputed at ``tp_threshold``. A detection just inside a band whose GT lies just
  outside is a FP there (the nuScenes-style filter-then-match rule).

Speed: matching is greedy, so sequential within one (frame, class) group, but groups are independent and the
global score order restricted to a group is the group's own order. So all groups of all thresholds and bands are
matched together, in lock step over the rank of the detection within its group (``_greedy_match``); the Python
loop runs about as many times as the largest group has detections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..structures import Boxes3D

NUM_RECALL_POINTS = 101
RECALL_POINTS = np.linspace(0.0, 1.0, NUM_RECALL_POINTS)
TP_ERROR_NAMES = ("ate", "ase", "aoe", "ave")
AP_RULE_DEVKIT = "nuscenes_devkit"
AP_RULE_ENVELOPE = "precision_envelope"
AP_RULE_TEXT = {
    AP_RULE_DEVKIT: "nuScenes devkit (no precision envelope)",
    AP_RULE_ENVELOPE: "precision envelope (running max of precision before resampling; not the devkit's rule)",
}


# --------------------------------------------------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Detection3DConfig:
    """What to evaluate.

    ``class_names``: label index -> name (``Boxes3D.labels`` index into it).
    ``distance_thresholds``: BEV centre-distance match thresholds in metres, for every class unless
    ``class_distance_thresholds`` gives a class its own tuple.
    ``tp_threshold``: the threshold at which TP errors, ``aph_at_tp`` and band APs are computed; it need not be
    one of the AP thresholds.
    ``distance_bands``: ``[lo, hi)`` BEV ranges from the origin, in metres.
    ``precision_envelope``: False = nuScenes devkit (no envelope); True = running max from the right first.
    ``eval_range``: BEV ``(x_min, y_min, x_max, y_max)``, metres; GT and detections whose centre lies outside
    are not scored (counted in ``Detection3DResult.num_gt_out_of_range`` / ``num_pred_out_of_range``). None:
    everything is scored.
    """

    class_names: Sequence[str]
    distance_thresholds: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    class_distance_thresholds: dict[str, tuple[float, ...]] | None = None
    tp_threshold: float = 2.0
    distance_bands: tuple[tuple[float, float], ...] = ((0.0, 20.0), (20.0, 40.0), (40.0, math.inf))
    min_recall: float = 0.1
    min_precision: float = 0.1
    precision_envelope: bool = False
    eval_range: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        self.class_names = tuple(str(n) for n in self.class_names)
        if not self.class_names:
            raise ValueError("Detection3DConfig.class_names is empty: give the model's class names in label order")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"Detection3DConfig.class_names has duplicates: {list(self.class_names)}")
        self.distance_thresholds = _check_thresholds(self.distance_thresholds, "distance_thresholds")
        if self.class_distance_thresholds is not None:
            unknown = sorted(set(self.class_distance_thresholds) - set(self.class_names))
            if unknown:
                raise ValueError(
                    f"Detection3DConfig.class_distance_thresholds names unknown classes {unknown}; "
                    f"known: {list(self.class_names)}"
                )
            self.class_distance_thresholds = {
                name: _check_thresholds(ths, f"class_distance_thresholds[{name!r}]")
                for name, ths in self.class_distance_thresholds.items()
            }
        if not (math.isfinite(self.tp_threshold) and self.tp_threshold > 0):
            raise ValueError(f"Detection3DConfig.tp_threshold must be a positive number, got {self.tp_threshold}")
        self.tp_threshold = float(self.tp_threshold)
        bands = []
        for band in self.distance_bands:
            lo, hi = (float(v) for v in band)
            if not (lo >= 0 and hi > lo):
                raise ValueError(f"Detection3DConfig.distance_bands: band {band} must satisfy 0 <= lo < hi")
            bands.append((lo, hi))
        self.distance_bands = tuple(bands)
        if not 0 <= self.min_recall < 1:
            raise ValueError(f"Detection3DConfig.min_recall must be in [0, 1), got {self.min_recall}")
        if not 0 <= self.min_precision < 1:
            raise ValueError(f"Detection3DConfig.min_precision must be in [0, 1), got {self.min_precision}")
        if self.eval_range is not None:
            r = tuple(float(v) for v in self.eval_range)
            if len(r) != 4 or not all(math.isfinite(v) for v in r) or not (r[0] < r[2] and r[1] < r[3]):
                raise ValueError(
                    f"Detection3DConfig.eval_range must be finite (x_min, y_min, x_max, y_max) with min < max, "
                    f"got {self.eval_range}"
                )
            self.eval_range = r

    @property
    def ap_rule(self) -> str:
        """Which AP rule the numbers follow: "nuscenes_devkit" (no envelope) or "precision_envelope"."""
        return AP_RULE_ENVELOPE if self.precision_envelope else AP_RULE_DEVKIT

    def thresholds_for(self, class_name: str) -> tuple[float, ...]:
        if self.class_distance_thresholds and class_name in self.class_distance_thresholds:
            return self.class_distance_thresholds[class_name]
        return self.distance_thresholds


def _check_thresholds(values: Sequence[float], where: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not out or not all(math.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"Detection3DConfig.{where} must be a non-empty list of positive metres, got {values}")
    if len(set(out)) != len(out):
        raise ValueError(f"Detection3DConfig.{where} has duplicates: {values}")
    return out


def band_label(lo: float, hi: float) -> str:
    """``(0, 20) -> "0-20m"``, ``(40, inf) -> "40m+"``."""
    return f"{lo:g}m+" if math.isinf(hi) else f"{lo:g}-{hi:g}m"


def threshold_key(threshold: float) -> str:
    """The stable string form of a threshold used in ``to_dict`` and table headers: ``0.5 -> "0.5"``, ``2 -> "2.0"``."""
    return str(float(threshold))


@dataclass
class Detection3DResult:
    """All numbers of one evaluation. NaN means "not defined" (a class without GT, a class without TP).

    ``ap`` / ``aph``: class -> threshold -> AP / APH over all frames.
    ``map_by_threshold`` / ``maph_by_threshold``: threshold -> mean over the classes evaluated at that threshold
    whose AP is not NaN.
    ``map`` / ``maph``: mean over classes (NaN ones left out) of each class's mean over its own thresholds; with the
    same thresholds for every class this is the mean over all (class, threshold) pairs, as nuScenes' mAP.
    ``aph_at_tp``: class -> APH at ``tp_threshold`` (the table's APH column; equal to ``aph[c][tp_threshold]`` when
    that threshold is among the AP thresholds).
    ``tp_errors``: class -> {"ate" m, "ase" 1-IoU, "aoe" rad, "ave" m/s}, mean over TPs at ``tp_threshold``.
    ``band_ap``: band label ("0-20m", "20-40m", "40m+") -> class -> AP at ``tp_threshold`` with GT and detections
    both filtered by the band; ``band_map``: band label -> mean of those over classes (NaN left out).
    ``num_gt`` / ``num_pred``: per class, all frames, no band filter; ``num_gt`` counts scored GT only.
    ``ap_rule``: "nuscenes_devkit" or "precision_envelope" (see ``Detection3DConfig.precision_envelope``).
    ``eval_range`` / ``num_gt_out_of_range`` / ``num_pred_out_of_range``: the BEV range scored, and per class the
    GT boxes and detections left out because their centre lies outside it (``num_gt`` / ``num_pred`` exclude them).
    ``pr_curves``: class -> threshold -> (recall, precision) at the 101 recall points used for AP (NaN precision for
    a class without GT), for plots.
    """

    class_names: tuple[str, ...]
    thresholds: tuple[float, ...]
    ap: dict[str, dict[float, float]]
    aph: dict[str, dict[float, float]]
    map_by_threshold: dict[float, float]
    maph_by_threshold: dict[float, float]
    map: float
    maph: float
    tp_errors: dict[str, dict[str, float]]
    band_ap: dict[str, dict[str, float]]
    num_gt: dict[str, int]
    num_pred: dict[str, int]
    pr_curves: dict[str, dict[float, tuple[np.ndarray, np.ndarray]]]
    tp_threshold: float = 2.0
    aph_at_tp: dict[str, float] = field(default_factory=dict)
    band_map: dict[str, float] = field(default_factory=dict)
    ap_rule: str = AP_RULE_DEVKIT
    eval_range: tuple[float, float, float, float] | None = None
    num_gt_out_of_range: dict[str, int] = field(default_factory=dict)
    num_pred_out_of_range: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-safe (NaN -> None, thresholds as strings like "0.5"), keys in a stable order."""

        def by_thr(d: dict[float, float]) -> dict[str, float | None]:
            return {threshold_key(t): _json_float(v) for t, v in d.items()}

        return {
            "ap_rule": self.ap_rule,
            "class_names": list(self.class_names),
            "thresholds": [threshold_key(t) for t in self.thresholds],
            "tp_threshold": self.tp_threshold,
            "map": _json_float(self.map),
            "maph": _json_float(self.maph),
            "map_by_threshold": by_thr(self.map_by_threshold),
            "maph_by_threshold": by_thr(self.maph_by_threshold),
            "ap": {c: by_thr(self.ap[c]) for c in self.class_names},
            "aph": {c: by_thr(self.aph[c]) for c in self.class_names},
            "aph_at_tp": {c: _json_float(self.aph_at_tp.get(c, math.nan)) for c in self.class_names},
            "tp_errors": {
                c: {k: _json_float(self.tp_errors[c][k]) for k in TP_ERROR_NAMES} for c in self.class_names
            },
            "band_ap": {b: {c: _json_float(v[c]) for c in self.class_names} for b, v in self.band_ap.items()},
            "band_map": {b: _json_float(v) for b, v in self.band_map.items()},
            "num_gt": {c: int(self.num_gt[c]) for c in self.class_names},
            "num_pred": {c: int(self.num_pred[c]) for c in self.class_names},
            "eval_range": list(self.eval_range) if self.eval_range is not None else None,
            "num_gt_out_of_range": {c: int(self.num_gt_out_of_range.get(c, 0)) for c in self.class_names},
            "num_pred_out_of_range": {c: int(self.num_pred_out_of_range.get(c, 0)) for c in self.class_names},
            "pr_curves": {
                c: {
                    threshold_key(t): {
                        "recall": [_json_float(v) for v in rec],
                        "precision": [_json_float(v) for v in prec],
                    }
                    for t, (rec, prec) in self.pr_curves[c].items()
                }
                for c in self.class_names
            },
        }

    def table(self) -> str:
        """Plain-text table: one row per class and a mean row (NaN shown as "-")."""
        thr = self.thresholds
        tp_key = threshold_key(self.tp_threshold)
        header = (
            ["class", "#gt", "#pred"]
            + [f"AP@{threshold_key(t)}" for t in thr]
            + [f"APH@{tp_key}", "ATE", "ASE", "AOE", "AVE"]
        )
        rows = []
        for c in self.class_names:
            rows.append(
                [c, str(self.num_gt[c]), str(self.num_pred[c])]
                + [_fmt(self.ap[c].get(t, math.nan)) for t in thr]
                + [_fmt(self.aph_at_tp.get(c, math.nan))]
                + [_fmt(self.tp_errors[c][k]) for k in TP_ERROR_NAMES]
            )
        rows.append(
            ["mean", str(sum(self.num_gt.values())), str(sum(self.num_pred.values()))]
            + [_fmt(self.map_by_threshold.get(t, math.nan)) for t in thr]
            + [_fmt(_nanmean([self.aph_at_tp.get(c, math.nan) for c in self.class_names]))]
            + [_fmt(_nanmean([self.tp_errors[c][k] for c in self.class_names])) for k in TP_ERROR_NAMES]
        )
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        lines = ["  ".join(s.ljust(w) if i == 0 else s.rjust(w) for i, (s, w) in enumerate(zip(r, widths)))
                 for r in [header] + rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"mAP {_fmt(self.map)}  mAPH {_fmt(self.maph)}  (mean over classes with GT and thresholds)")
        lines.append(f"AP rule: {AP_RULE_TEXT.get(self.ap_rule, self.ap_rule)}")
        if self.eval_range is not None:
            r = self.eval_range
            lines.append(f"evaluated range x [{r[0]:g}, {r[2]:g}), y [{r[1]:g}, {r[3]:g}) m: ground truth "
                         f"{sum(self.num_gt.values())} scored, {sum(self.num_gt_out_of_range.values())} outside; "
                         f"detections {sum(self.num_pred.values())} scored, "
                         f"{sum(self.num_pred_out_of_range.values())} outside")
        return "\n".join(lines)


def _json_float(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _nanmean(values) -> float:
    arr = np.asarray(list(values), dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if len(arr) else math.nan


# --------------------------------------------------------------------------------------------------------------------
# Input flattening and validation
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Flat:
    """All frames' boxes in one set of arrays (float64), with the frame and the index inside the frame."""

    frame: np.ndarray
    index: np.ndarray
    label: np.ndarray
    score: np.ndarray
    box: np.ndarray
    vel: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)


def _flatten(frames: Sequence[Boxes3D], what: str, num_classes: int) -> _Flat:
    for i, b in enumerate(frames):
        if not isinstance(b, Boxes3D):
            raise ValueError(f"{what}[{i}] is a {type(b).__name__}, expected Boxes3D")
    counts = np.array([len(b) for b in frames], dtype=np.int64)
    n = int(counts.sum())
    frame = np.repeat(np.arange(len(frames), dtype=np.int64), counts)
    index = np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)

    def cat(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        if n == 0:
            return np.zeros(shape, dtype)
        return np.concatenate([getattr(b, name) for b in frames]).astype(dtype, copy=False)

    flat = _Flat(
        frame=frame,
        index=index,
        label=cat("labels", (0,), np.int64),
        score=cat("scores", (0,), np.float64),
        box=cat("boxes", (0, 7), np.float64),
        vel=cat("velocities", (0, 2), np.float64),
    )

    def fail(mask: np.ndarray, message: str) -> None:
        k = int(np.flatnonzero(mask)[0])
        raise ValueError(f"{what}[{flat.frame[k]}] box {flat.index[k]}: {message}")

    bad = (flat.label < 0) | (flat.label >= num_classes)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        fail(bad, f"label {flat.label[k]} is out of range for {num_classes} classes (labels index class_names)")
    if np.isnan(flat.score).any():
        fail(np.isnan(flat.score), "score is NaN; drop or fix such detections before evaluating")
    if not np.isfinite(flat.box).all():
        fail(~np.isfinite(flat.box).all(axis=1), "box has a NaN or infinite value")
    return flat


# --------------------------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------------------------


def _greedy_match(
    key_d: np.ndarray,
    score_d: np.ndarray,
    local_d: np.ndarray,
    xy_d: np.ndarray,
    thr_d: np.ndarray,
    key_g: np.ndarray,
    local_g: np.ndarray,
    xy_g: np.ndarray,
) -> np.ndarray:
    """Greedy nearest-centre matching inside groups; returns, per detection, the matched GT's index or -1.

    A group (``key``) is one (setting, frame, class); detections match GT of the same key only. Inside a group,
    detections go by descending score, then ascending ``local_d``; each takes the nearest untaken GT (lowest
    ``local_g`` on equal distance) when the distance is < its ``thr_d`` (constant within a group).

    Groups are independent, so they advance in lock step: step k handles the k-th detection of every group that
    has one. Groups are bucketed by GT count (powers of two) so that padding stays small when sizes are skewed.
    """
    num_d = len(key_d)
    match = np.full(num_d, -1, np.int64)
    if num_d == 0 or len(key_g) == 0:
        return match
    order_d = np.lexsort((local_d, -score_d, key_d))
    order_g = np.lexsort((local_g, key_g))
    ukey_d, start_d, count_d = np.unique(key_d[order_d], return_index=True, return_counts=True)
    ukey_g, start_g, count_g = np.unique(key_g[order_g], return_index=True, return_counts=True)
    _, in_d, in_g = np.intersect1d(ukey_d, ukey_g, assume_unique=True, return_indices=True)
    if len(in_d) == 0:
        return match
    start_d, count_d, start_g, count_g = start_d[in_d], count_d[in_d], start_g[in_g], count_g[in_g]
    px, py = xy_d[order_d, 0], xy_d[order_d, 1]
    gx_all, gy_all = xy_g[order_g, 0], xy_g[order_g, 1]
    thr_sorted = thr_d[order_d]
    match_sorted = np.full(num_d, -1, np.int64)  # position in the sorted GT arrays

    bucket = np.ceil(np.log2(count_g)).astype(np.int64)
    for b in np.unique(bucket):
        sel = np.flatnonzero(bucket == b)
        sel = sel[np.argsort(-count_d[sel], kind="stable")]  # most detections first: active groups are a prefix
        ds, dc, gs, gc = start_d[sel], count_d[sel], start_g[sel], count_g[sel]
        cols = np.arange(gc.max())
        valid = cols[None, :] < gc[:, None]
        gidx = gs[:, None] + np.where(valid, cols[None, :], 0)
        gx, gy = gx_all[gidx], gy_all[gidx]
        taken = ~valid  # padding counts as taken
        thr = thr_sorted[ds]
        neg_dc = -dc
        for k in range(int(dc[0])):
            a = int(np.searchsorted(neg_dc, -k, side="left"))  # groups with more than k detections
            pos = ds[:a] + k
            dx = gx[:a] - px[pos][:, None]
            dy = gy[:a] - py[pos][:, None]
            dist = np.sqrt(dx * dx + dy * dy)
            dist[taken[:a]] = np.inf
            j = dist.argmin(axis=1)
            hit = np.flatnonzero(dist[np.arange(a), j] < thr[:a])
            taken[hit, j[hit]] = True
            match_sorted[pos[hit]] = gs[hit] + j[hit]

    matched = match_sorted >= 0
    match[order_d[matched]] = order_g[match_sorted[matched]]
    return match


@dataclass
class FrameMatch:
    """Matching of one frame. ``tp``/``fp``/``fn``: (num_classes,) counts. ``pairs``: (M, 2) ``[pred index, gt index]``
    in the order the greedy rule made them (descending score). ``pred_to_gt``: (N_pred,) matched GT index or -1.
    ``gt_matched``: (N_gt,) bool."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    pairs: np.ndarray
    pred_to_gt: np.ndarray
    gt_matched: np.ndarray


def match_frame(pred: Boxes3D, gt: Boxes3D, num_classes: int, threshold: float | Sequence[float]) -> FrameMatch:
    """Match one frame with the same greedy rule as ``evaluate_detection3d``; ``threshold`` is one distance in
    metres for all classes or one per class (length ``num_classes``)."""
    thr = np.asarray(threshold, dtype=np.float64)
    thr = np.full(num_classes, float(thr)) if thr.ndim == 0 else thr.reshape(-1)
    if len(thr) != num_classes or not (np.isfinite(thr) & (thr > 0)).all():
        raise ValueError(f"match_frame: threshold must be a positive float or {num_classes} of them, got {threshold}")
    p = _flatten([pred], "pred", num_classes)
    g = _flatten([gt], "gt", num_classes)
    pred_to_gt = _greedy_match(
        p.label, p.score, p.index, p.box[:, :2], thr[p.label], g.label, g.index, g.box[:, :2]
    )
    is_tp = pred_to_gt >= 0
    tp = np.bincount(p.label[is_tp], minlength=num_classes)
    fp = np.bincount(p.label[~is_tp], minlength=num_classes)
    fn = np.bincount(g.label, minlength=num_classes) - tp
    rank = np.lexsort((p.index, -p.score))
    rank = rank[is_tp[rank]]
    pairs = np.stack([rank, pred_to_gt[rank]], axis=1).astype(np.int64).reshape(-1, 2)
    gt_matched = np.zeros(len(g), bool)
    gt_matched[pred_to_gt[is_tp]] = True
    return FrameMatch(tp=tp, fp=fp, fn=fn, pairs=pairs, pred_to_gt=pred_to_gt, gt_matched=gt_matched)


# --------------------------------------------------------------------------------------------------------------------
# Curves and errors
# --------------------------------------------------------------------------------------------------------------------


def yaw_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest absolute angle between yaws, period 2*pi, in [0, pi]."""
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) % (2 * np.pi)
    return np.minimum(d, 2 * np.pi - d)


def heading_weight(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Waymo APH weight of a TP: 1 for the same heading, 0.5 at 90 degrees, 0 when opposite."""
    return 1.0 - yaw_difference(a, b) / np.pi


def precision_at_recall_points(
    is_tp: np.ndarray, tp_weight: np.ndarray, num_gt: int, envelope: bool = False
) -> np.ndarray:
    """Precision at the 101 recall points from detections in rank order (devkit ``accumulate``).

    ``tp_weight`` is what a TP adds to the cumulative TP (1 for AP, the heading weight for APH); FPs add 0.
    No GT: NaN. No TP at all: zeros (devkit ``no_predictions``).
    """
    if num_gt == 0:
        return np.full(NUM_RECALL_POINTS, np.nan)
    if not np.any(is_tp):
        return np.zeros(NUM_RECALL_POINTS)
    cum_tp = np.cumsum(np.where(is_tp, tp_weight, 0.0))
    precision = cum_tp / np.arange(1, len(cum_tp) + 1)
    recall = cum_tp / float(num_gt)
    if envelope:
        precision = np.maximum.accumulate(precision[::-1])[::-1]
    return np.interp(RECALL_POINTS, recall, precision, right=0.0)


def average_precision(precision: np.ndarray, min_recall: float, min_precision: float) -> float:
    """devkit ``calc_ap`` on precision sampled at the 101 recall points; NaN in, NaN out."""
    kept = precision[round(100 * min_recall) + 1 :] - min_precision
    return float(np.mean(np.clip(kept, 0.0, None))) / (1.0 - min_precision)


def _class_means(values: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    ok = ~np.isnan(values)
    sums = np.bincount(labels[ok], weights=values[ok], minlength=num_classes)
    counts = np.bincount(labels[ok], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


# --------------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------------


def in_eval_range(boxes: Boxes3D, eval_range: Sequence[float] | None) -> np.ndarray:
    """Which boxes are scored: BEV centre inside ``eval_range`` = (x_min, y_min, x_max, y_max), half-open
    ``[min, max)`` and compared in float32 like the voxelizer compares points. None: all of them."""
    if eval_range is None:
        return np.ones(len(boxes), bool)
    r = np.asarray(eval_range, np.float32)
    x, y = boxes.boxes[:, 0].astype(np.float32), boxes.boxes[:, 1].astype(np.float32)
    return (x >= r[0]) & (x < r[2]) & (y >= r[1]) & (y < r[3])


def select_in_range(boxes: Boxes3D, config: Detection3DConfig) -> tuple[Boxes3D, np.ndarray]:
    """The boxes of one frame (GT or detections) that ``config`` scores, and per class the number left out."""
    keep = in_eval_range(boxes, config.eval_range)
    n = len(config.class_names)
    dropped = np.bincount(boxes.labels[~keep], minlength=n)[:n] if len(boxes) else np.zeros(n, np.int64)
    return (boxes if keep.all() else boxes.select(keep)), dropped


def evaluate_detection3d(
    predictions: Sequence[Boxes3D], ground_truths: Sequence[Boxes3D], config: Detection3DConfig
) -> Detection3DResult:
    """AP / APH per class and threshold, mAP, TP errors and per-band AP over a dataset (one Boxes3D per frame).

    See the module docstring for the exact rules and where they follow the nuScenes devkit.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(
            f"evaluate_detection3d: {len(predictions)} prediction frames but {len(ground_truths)} ground-truth "
            "frames; give one Boxes3D per frame for both, in the same order"
        )
    names = tuple(config.class_names)
    num_classes = len(names)
    num_frames = len(predictions)
    # Validate before filtering, so that errors name the caller's frame and box index.
    _flatten(predictions, "predictions", num_classes)
    _flatten(ground_truths, "ground_truths", num_classes)
    kept_pred, pred_out = _in_range_frames(predictions, config)
    kept_gt, gt_out = _in_range_frames(ground_truths, config)
    pred = _flatten(kept_pred, "predictions", num_classes)
    gt = _flatten(kept_gt, "ground_truths", num_classes)

    # Settings ("runs"): one per distinct threshold, one at tp_threshold if needed, one per band.
    class_thr = [config.thresholds_for(n) for n in names]
    thresholds = tuple(sorted(set().union(*class_thr)))
    run_thr: list[np.ndarray] = []  # per class; NaN = class not evaluated in this run
    run_masks: list[tuple[np.ndarray | None, np.ndarray | None]] = []
    for t in thresholds:
        run_thr.append(np.array([t if t in ct else np.nan for ct in class_thr]))
        run_masks.append((None, None))
    tp_thr = config.tp_threshold
    if all(tp_thr in ct for ct in class_thr):
        tp_run = thresholds.index(tp_thr)
    else:
        tp_run = len(run_thr)
        run_thr.append(np.full(num_classes, tp_thr))
        run_masks.append((None, None))
    range_p = np.sqrt(pred.box[:, 0] ** 2 + pred.box[:, 1] ** 2)
    range_g = np.sqrt(gt.box[:, 0] ** 2 + gt.box[:, 1] ** 2)
    band_runs: dict[str, int] = {}
    for lo, hi in config.distance_bands:
        band_runs[band_label(lo, hi)] = len(run_thr)
        run_thr.append(np.full(num_classes, tp_thr))
        run_masks.append(((range_p >= lo) & (range_p < hi), (range_g >= lo) & (range_g < hi)))
    thr_table = np.stack(run_thr)  # (runs, classes)
    num_runs = len(run_thr)

    # Instances: (run, detection) and (run, GT) pairs taking part in that run.
    def instances(flat: _Flat, which: int) -> tuple[np.ndarray, np.ndarray]:
        active = ~np.isnan(thr_table[:, flat.label])  # (runs, N)
        for r, masks in enumerate(run_masks):
            if masks[which] is not None:
                active[r] &= masks[which]
        run, idx = np.nonzero(active)
        return run.astype(np.int64), idx.astype(np.int64)

    run_d, idx_d = instances(pred, 0)
    run_g, idx_g = instances(gt, 1)
    lab_d, lab_g = pred.label[idx_d], gt.label[idx_g]
    key_d = (run_d * num_frames + pred.frame[idx_d]) * num_classes + lab_d
    key_g = (run_g * num_frames + gt.frame[idx_g]) * num_classes + lab_g
    match = _greedy_match(
        key_d,
        pred.score[idx_d],
        pred.index[idx_d],
        pred.box[idx_d, :2],
        thr_table[run_d, lab_d],
        key_g,
        gt.index[idx_g],
        gt.box[idx_g, :2],
    )
    is_tp = match >= 0
    matched_gt = np.full(len(match), -1, np.int64)  # flat GT index, -1 for a FP
    matched_gt[is_tp] = idx_g[match[is_tp]]
    weight = np.zeros(len(match))  # APH weight of each TP
    weight[is_tp] = heading_weight(pred.box[idx_d[is_tp], 6], gt.box[matched_gt[is_tp], 6])

    # Curves per (run, class): detections in global rank order (score desc, frame, index).
    order = np.lexsort((pred.index[idx_d], pred.frame[idx_d], -pred.score[idx_d], lab_d, run_d))
    seg = (run_d * num_classes + lab_d)[order]
    bounds = np.searchsorted(seg, np.arange(num_runs * num_classes + 1))
    npos = np.bincount(run_g * num_classes + lab_g, minlength=num_runs * num_classes)
    ones = np.ones(len(order))
    curves_ap: dict[tuple[int, int], np.ndarray] = {}
    curves_aph: dict[tuple[int, int], np.ndarray] = {}
    for r in range(num_runs):
        for c in range(num_classes):
            if np.isnan(thr_table[r, c]):
                continue
            s = r * num_classes + c
            sl = order[bounds[s] : bounds[s + 1]]
            env = config.precision_envelope
            curves_ap[r, c] = precision_at_recall_points(is_tp[sl], ones[: len(sl)], int(npos[s]), env)
            curves_aph[r, c] = precision_at_recall_points(is_tp[sl], weight[sl], int(npos[s]), env)

    def ap_of(curve: np.ndarray) -> float:
        return average_precision(curve, config.min_recall, config.min_precision)

    ap = {names[c]: {t: ap_of(curves_ap[thresholds.index(t), c]) for t in class_thr[c]} for c in range(num_classes)}
    aph = {names[c]: {t: ap_of(curves_aph[thresholds.index(t), c]) for t in class_thr[c]} for c in range(num_classes)}
    pr_curves = {
        names[c]: {t: (RECALL_POINTS.copy(), curves_ap[thresholds.index(t), c]) for t in class_thr[c]}
        for c in range(num_classes)
    }
    map_by_threshold = {t: _nanmean([ap[n][t] for n in names if t in ap[n]]) for t in thresholds}
    maph_by_threshold = {t: _nanmean([aph[n][t] for n in names if t in aph[n]]) for t in thresholds}
    mean_ap = _nanmean([_nanmean(ap[n].values()) for n in names])
    mean_aph = _nanmean([_nanmean(aph[n].values()) for n in names])
    aph_at_tp = {names[c]: ap_of(curves_aph[tp_run, c]) for c in range(num_classes)}

    # TP errors at tp_threshold: plain mean over TPs (NaN values ignored).
    sel = np.flatnonzero(is_tp & (run_d == tp_run))
    pb, gb = pred.box[idx_d[sel]], gt.box[matched_gt[sel]]
    dxy = pb[:, :2] - gb[:, :2]
    lwh_p, lwh_g = pb[:, 3:6], gb[:, 3:6]
    inter = np.prod(np.minimum(lwh_p, lwh_g), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (np.prod(lwh_p, axis=1) + np.prod(lwh_g, axis=1) - inter)
    dv = pred.vel[idx_d[sel]] - gt.vel[matched_gt[sel]]
    errors = {
        "ate": np.sqrt(dxy[:, 0] ** 2 + dxy[:, 1] ** 2),
        "ase": 1.0 - iou,
        "aoe": yaw_difference(pb[:, 6], gb[:, 6]),
        "ave": np.sqrt(dv[:, 0] ** 2 + dv[:, 1] ** 2),
    }
    per_class = {k: _class_means(v, lab_d[sel], num_classes) for k, v in errors.items()}
    tp_errors = {names[c]: {k: float(per_class[k][c]) for k in TP_ERROR_NAMES} for c in range(num_classes)}

    band_ap = {label: {names[c]: ap_of(curves_ap[r, c]) for c in range(num_classes)} for label, r in band_runs.items()}
    band_map = {label: _nanmean(v.values()) for label, v in band_ap.items()}
    num_gt_c = np.bincount(gt.label, minlength=num_classes)
    num_pred_c = np.bincount(pred.label, minlength=num_classes)

    return Detection3DResult(
        class_names=names,
        thresholds=thresholds,
        ap=ap,
        aph=aph,
        map_by_threshold=map_by_threshold,
        maph_by_threshold=maph_by_threshold,
        map=mean_ap,
        maph=mean_aph,
        tp_errors=tp_errors,
        band_ap=band_ap,
        num_gt={n: int(num_gt_c[c]) for c, n in enumerate(names)},
        num_pred={n: int(num_pred_c[c]) for c, n in enumerate(names)},
        pr_curves=pr_curves,
        tp_threshold=tp_thr,
        aph_at_tp=aph_at_tp,
        band_map=band_map,
        ap_rule=config.ap_rule,
        eval_range=config.eval_range,
        num_gt_out_of_range={n: int(gt_out[c]) for c, n in enumerate(names)},
        num_pred_out_of_range={n: int(pred_out[c]) for c, n in enumerate(names)},
    )


def _in_range_frames(frames: Sequence[Boxes3D], config: Detection3DConfig) -> tuple[list[Boxes3D], np.ndarray]:
    out = np.zeros(len(config.class_names), np.int64)
    kept = []
    for b in frames:
        k, dropped = select_in_range(b, config)
        kept.append(k)
        out += dropped
    return kept, out
