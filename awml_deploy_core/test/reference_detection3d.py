"""A slow, plain reference for the 3D detection metrics, used only by the tests.

One detection at a time, the way the nuScenes devkit's ``accumulate`` reads: sort every detection of a class by
score, walk them, look at each GT of the same frame and class, keep the nearest untaken one, and call the detection
a TP when that distance is below the threshold. Deliberately shares no code with ``metrics/detection3d.py``.
"""

from __future__ import annotations

import math

import numpy as np


def as_items(frames, with_score):
    """Every box as a dict (frame, index, label, score, x, y, l, w, h, yaw, vx, vy), as Python floats."""
    out = []
    for f, b in enumerate(frames):
        for i in range(len(b)):
            box = [float(v) for v in b.boxes[i]]
            out.append(
                {
                    "frame": f,
                    "index": i,
                    "label": int(b.labels[i]),
                    "score": float(b.scores[i]) if with_score else None,
                    "x": box[0],
                    "y": box[1],
                    "l": box[3],
                    "w": box[4],
                    "h": box[5],
                    "yaw": box[6],
                    "vx": float(b.velocities[i][0]),
                    "vy": float(b.velocities[i][1]),
                }
            )
    return out


def _angle(a, b):
    d = a - b
    return abs(math.atan2(math.sin(d), math.cos(d)))


def greedy_match(dets, gts, threshold):
    """Returns a list of (det, gt or None) in rank order."""
    dets = sorted(dets, key=lambda d: (-d["score"], d["frame"], d["index"]))
    gts_by_frame = {}
    for gt in gts:  # in index order, so the lower index wins on equal distance
        gts_by_frame.setdefault(gt["frame"], []).append(gt)
    taken = set()
    result = []
    for det in dets:
        best, best_dist = None, math.inf
        for gt in gts_by_frame.get(det["frame"], []):
            if (gt["frame"], gt["index"]) in taken:
                continue
            dx = gt["x"] - det["x"]
            dy = gt["y"] - det["y"]
            dist = math.sqrt(dx * dx + dy * dy)
            if dist < best_dist:
                best, best_dist = gt, dist
        if best is not None and best_dist < threshold:
            taken.add((best["frame"], best["index"]))
            result.append((det, best))
        else:
            result.append((det, None))
    return result


def _ap(matches, num_gt, min_recall, min_precision, heading, envelope):
    if num_gt == 0:
        return math.nan
    if all(gt is None for _, gt in matches):
        return 0.0
    precision, recall = [], []
    tp_sum = 0.0
    for n, (det, gt) in enumerate(matches, start=1):
        if gt is not None:
            tp_sum += (1.0 - _angle(det["yaw"], gt["yaw"]) / math.pi) if heading else 1.0
        precision.append(tp_sum / n)
        recall.append(tp_sum / num_gt)
    if envelope:
        for k in range(len(precision) - 2, -1, -1):
            precision[k] = max(precision[k], precision[k + 1])
    # The devkit's grid. Not [k / 100]: recall often lands exactly on a grid value (7 of 20 GT = 0.35), and
    # linspace's 0.35000000000000003 lies beyond it (precision 0 there) where 35 / 100 would not.
    points = np.linspace(0.0, 1.0, 101)
    sampled = np.interp(points, recall, precision, right=0.0)
    first = round(100 * min_recall) + 1
    total = 0.0
    for p in sampled[first:]:
        total += max(p - min_precision, 0.0)
    return total / (101 - first) / (1.0 - min_precision)


def _errors(matches):
    sums = {"ate": [], "ase": [], "aoe": [], "ave": []}
    for det, gt in matches:
        if gt is None:
            continue
        sums["ate"].append(math.hypot(det["x"] - gt["x"], det["y"] - gt["y"]))
        inter = min(det["l"], gt["l"]) * min(det["w"], gt["w"]) * min(det["h"], gt["h"])
        union = det["l"] * det["w"] * det["h"] + gt["l"] * gt["w"] * gt["h"] - inter
        sums["ase"].append(1.0 - inter / union)
        sums["aoe"].append(_angle(det["yaw"], gt["yaw"]))
        sums["ave"].append(math.hypot(det["vx"] - gt["vx"], det["vy"] - gt["vy"]))
    return {k: (sum(v) / len(v) if v else math.nan) for k, v in sums.items()}


def reference_evaluate(
    predictions,
    ground_truths,
    class_names,
    thresholds,
    tp_threshold,
    bands,
    min_recall=0.1,
    min_precision=0.1,
    envelope=False,
):
    """``thresholds``: class name -> list of thresholds. Returns a dict with "ap", "aph" (class -> thr -> value),
    "aph_at_tp" (class -> value), "tp_errors" (class -> name -> value) and "band_ap" ((lo, hi) -> class -> AP)."""
    dets_all = as_items(predictions, with_score=True)
    gts_all = as_items(ground_truths, with_score=False)
    out = {"ap": {}, "aph": {}, "aph_at_tp": {}, "tp_errors": {}, "band_ap": {}}
    for c, name in enumerate(class_names):
        dets = [d for d in dets_all if d["label"] == c]
        gts = [g for g in gts_all if g["label"] == c]
        out["ap"][name], out["aph"][name] = {}, {}
        for t in thresholds[name]:
            matches = greedy_match(dets, gts, t)
            out["ap"][name][t] = _ap(matches, len(gts), min_recall, min_precision, False, envelope)
            out["aph"][name][t] = _ap(matches, len(gts), min_recall, min_precision, True, envelope)
        matches = greedy_match(dets, gts, tp_threshold)
        out["aph_at_tp"][name] = _ap(matches, len(gts), min_recall, min_precision, True, envelope)
        out["tp_errors"][name] = _errors(matches)
        for lo, hi in bands:

            def inside(b):
                r = math.sqrt(b["x"] * b["x"] + b["y"] * b["y"])
                return lo <= r < hi

            band_dets = [d for d in dets if inside(d)]
            band_gts = [g for g in gts if inside(g)]
            band_matches = greedy_match(band_dets, band_gts, tp_threshold)
            ap = _ap(band_matches, len(band_gts), min_recall, min_precision, False, envelope)
            out["band_ap"].setdefault((lo, hi), {})[name] = ap
    return out
