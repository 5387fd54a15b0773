"""3D detection metrics: hand-computed cases, then agreement with the slow reference in reference_detection3d.py."""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np
import pytest

from awml_deploy_core.metrics.detection3d import (
    Detection3DConfig,
    band_label,
    evaluate_detection3d,
    heading_weight,
    match_frame,
)
from awml_deploy_core.structures import Boxes3D

sys.path.insert(0, os.path.dirname(__file__))
from reference_detection3d import as_items, greedy_match, reference_evaluate  # noqa: E402

CLASSES = ("car", "pedestrian", "bicycle")
CAR, PED, BIKE = 0, 1, 2

# AP of one GT found by the top detection, plus a lower-scored duplicate on the same GT.
# recall/precision per detection: (1, 1), (1, 0.5); np.interp gives precision 1 below recall 1 and 0.5 at recall 1.
# calc_ap keeps the 90 points 0.11 .. 1.00: 89 of (1 - 0.1) / 0.9 = 1 and one of (0.5 - 0.1) / 0.9 = 4/9.
AP_DUPLICATE = (89 + 4 / 9) / 90


def obj(x, y, label=CAR, score=0.9, yaw=0.0, lwh=(4.0, 2.0, 1.5), vel=(0.0, 0.0)):
    return (x, y, label, score, yaw, lwh, vel)


def frame(*objs) -> Boxes3D:
    if not objs:
        return Boxes3D()
    return Boxes3D(
        boxes=[[x, y, 0.5, *lwh, yaw] for x, y, _, _, yaw, lwh, _ in objs],
        scores=[o[3] for o in objs],
        labels=[o[2] for o in objs],
        velocities=[o[6] for o in objs],
    )


def evaluate(preds, gts, **kwargs):
    return evaluate_detection3d(preds, gts, Detection3DConfig(class_names=CLASSES, **kwargs))


def scene():
    """Three frames with cars and pedestrians (no bicycles)."""
    return [
        frame(obj(5, 0), obj(12, 3), obj(-8, 2, PED)),
        frame(obj(25, -4), obj(3, 3, PED), obj(4, 3.8, PED)),
        frame(obj(45, 10)),
    ]


# --------------------------------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------------------------------


def test_perfect_detections_give_ap_one_and_zero_errors():
    gts = scene()
    result = evaluate(gts, gts)
    for name in ("car", "pedestrian"):
        assert all(v == pytest.approx(1.0) for v in result.ap[name].values())
        assert all(v == pytest.approx(1.0) for v in result.aph[name].values())
        assert all(v == pytest.approx(0.0) for v in result.tp_errors[name].values())
    assert result.map == pytest.approx(1.0)
    assert result.maph == pytest.approx(1.0)
    assert result.num_gt == {"car": 4, "pedestrian": 3, "bicycle": 0}


def test_class_without_gt_is_nan_and_left_out_of_means():
    gts = scene()
    preds = [frame(*[obj(5, 0), obj(12, 3), obj(-8, 2, PED), obj(30, 30, BIKE, 0.95)]), gts[1], gts[2]]
    result = evaluate(preds, gts)
    assert all(math.isnan(v) for v in result.ap["bicycle"].values())
    assert all(math.isnan(v) for v in result.tp_errors["bicycle"].values())
    assert result.map == pytest.approx(1.0)
    assert result.map_by_threshold[2.0] == pytest.approx(1.0)
    assert result.num_pred["bicycle"] == 1
    assert result.to_dict()["ap"]["bicycle"]["2.0"] is None


def test_empty_predictions_give_zero():
    gts = scene()
    result = evaluate([Boxes3D() for _ in gts], gts)
    assert result.ap["car"] == {0.5: 0.0, 1.0: 0.0, 2.0: 0.0, 4.0: 0.0}
    assert result.map == 0.0 and result.maph == 0.0
    assert math.isnan(result.tp_errors["car"]["ate"])  # no TP, no error


def test_all_false_positives_give_zero():
    gts = scene()
    preds = [frame(obj(100, 100), obj(-8, 2, CAR)), frame(obj(3, 3, CAR)), Boxes3D()]  # far away or wrong class
    result = evaluate(preds, gts)
    assert result.ap["car"][4.0] == 0.0
    assert result.ap["pedestrian"][4.0] == 0.0


def test_duplicate_detection_is_a_false_positive():
    gts = [frame(obj(5, 0))]
    preds = [frame(obj(5.1, 0, score=0.9), obj(5.2, 0, score=0.8))]
    result = evaluate(preds, gts)
    assert result.ap["car"][2.0] == pytest.approx(AP_DUPLICATE, abs=1e-12)
    fm = match_frame(preds[0], gts[0], 3, 2.0)
    assert fm.tp.tolist() == [1, 0, 0] and fm.fp.tolist() == [1, 0, 0] and fm.fn.tolist() == [0, 0, 0]
    assert fm.pairs.tolist() == [[0, 0]]


def test_duplicate_ranked_above_the_true_detection():
    # The far detection (1.5 m off) outranks the exact one.
    gts = [frame(obj(5, 0))]
    preds = [frame(obj(5.0, 0, score=0.8), obj(6.5, 0, score=0.9))]
    result = evaluate(preds, gts)
    # At 2 m it takes the GT first and the exact one is the FP: the same curve as above.
    assert result.ap["car"][2.0] == pytest.approx(AP_DUPLICATE, abs=1e-12)
    # At 1 m it is a FP ranked first: (recall, precision) = (0, 0), (1, 0.5); np.interp draws the line p = r / 2,
    # so the kept points are max(0.005 k - 0.1, 0) / 0.9 for k = 11..100: sum 16.2 / 0.9 over 90 points = 0.2.
    assert result.ap["car"][1.0] == pytest.approx(0.2, abs=1e-12)
    # With a precision envelope (not the devkit's rule) the curve is 0.5 everywhere: (0.5 - 0.1) / 0.9.
    enveloped = evaluate(preds, gts, precision_envelope=True)
    assert enveloped.ap["car"][1.0] == pytest.approx(4 / 9, abs=1e-12)


def test_one_class_missing_from_predictions():
    gts = scene()
    preds = [frame(obj(5, 0), obj(12, 3)), frame(obj(25, -4)), frame(obj(45, 10))]  # cars only
    result = evaluate(preds, gts)
    assert result.ap["car"][2.0] == pytest.approx(1.0)
    assert result.ap["pedestrian"][2.0] == 0.0
    assert result.map == pytest.approx(0.5)


def test_threshold_decides_tp_or_fp():
    gts = [frame(obj(10, 0))]
    preds = [frame(obj(11.5, 0))]  # 1.5 m away
    result = evaluate(preds, gts)
    assert result.ap["car"] == {0.5: 0.0, 1.0: 0.0, 2.0: pytest.approx(1.0), 4.0: pytest.approx(1.0)}
    assert result.map_by_threshold[1.0] == 0.0
    assert result.map == pytest.approx(0.5)
    # Exactly on the threshold is not a match (devkit: distance < threshold).
    on_edge = evaluate([frame(obj(12, 0))], gts)
    assert on_edge.ap["car"][2.0] == 0.0 and on_edge.ap["car"][4.0] == pytest.approx(1.0)


def test_per_class_thresholds():
    gts = [frame(obj(10, 0), obj(-10, 0, PED))]
    preds = [frame(obj(11.5, 0), obj(-10.7, 0, PED))]
    result = evaluate(preds, gts, class_distance_thresholds={"pedestrian": (0.5, 1.0)})
    assert set(result.ap["pedestrian"]) == {0.5, 1.0}
    assert result.ap["pedestrian"] == {0.5: 0.0, 1.0: pytest.approx(1.0)}
    # mean over classes of each class's mean over its thresholds: car (0+0+1+1)/4, pedestrian (0+1)/2
    assert result.map == pytest.approx(0.5)
    assert result.map_by_threshold[4.0] == pytest.approx(1.0)  # only the car has a 4 m threshold


def test_tp_errors_on_known_offsets():
    gts = [frame(obj(0, 0, yaw=3.0, lwh=(4, 2, 1.5), vel=(1, 0)))]
    preds = [frame(obj(0.3, 0.4, yaw=-3.0, lwh=(4, 1, 1.5), vel=(1, 1)))]
    errors = evaluate(preds, gts).tp_errors["car"]
    assert errors["ate"] == pytest.approx(0.5, abs=1e-6)  # 0.3, 0.4 -> 0.5 m
    assert errors["ase"] == pytest.approx(0.5, abs=1e-6)  # inter 4*1*1.5 = 6, union 12 + 6 - 6 = 12
    assert errors["aoe"] == pytest.approx(2 * math.pi - 6.0, abs=1e-6)  # 3 and -3 rad are 0.283 rad apart
    assert errors["ave"] == pytest.approx(1.0, abs=1e-6)


def test_heading_weight_and_aph_for_a_90_degree_error():
    assert heading_weight(np.array([0.0]), np.array([math.pi / 2]))[0] == pytest.approx(0.5)
    assert heading_weight(np.array([math.pi]), np.array([-math.pi]))[0] == pytest.approx(1.0)
    # Three cars found; the lowest-scored one is turned by 90 degrees (weight 0.5). Weighted cumulative TP 1, 2, 2.5:
    # recall 1/3, 2/3, 5/6 with precision 1, 1, 5/6. np.interp: precision 1 up to recall 2/3, then the line
    # p = 5/3 - r up to 5/6, then 0. (One car alone would put the cut exactly on the 0.50 recall point, where the
    # float32 yaw decides.)
    gts = [frame(obj(10, 0), obj(20, 0), obj(30, 0))]
    preds = [frame(obj(10, 0, score=0.9), obj(20, 0, score=0.8), obj(30, 0, score=0.7, yaw=math.pi / 2))]
    result = evaluate(preds, gts)
    assert result.ap["car"][2.0] == pytest.approx(1.0)
    kept = [1.0 if k <= 66 else (5 / 3 - k / 100 - 0.1) / 0.9 if k <= 83 else 0.0 for k in range(11, 101)]
    assert result.aph["car"][2.0] == pytest.approx(sum(kept) / 90, abs=1e-6)
    assert result.aph_at_tp["car"] == result.aph["car"][2.0]


def test_distance_bands_filter_gt_and_detections():
    gts = [frame(obj(10, 0), obj(30, 0), obj(50, 0), obj(20.5, 0, PED))]
    preds = [frame(obj(10.5, 0), obj(50, 1, score=0.8), obj(25, 5, score=0.7), obj(19.5, 0, PED))]
    result = evaluate(preds, gts)
    assert list(result.band_ap) == ["0-20m", "20-40m", "40m+"]
    assert result.band_ap["0-20m"]["car"] == pytest.approx(1.0)
    assert result.band_ap["20-40m"]["car"] == 0.0  # its GT missed, one FP in the band
    assert result.band_ap["40m+"]["car"] == pytest.approx(1.0)
    assert math.isnan(result.band_ap["0-20m"]["bicycle"])
    # The pedestrian straddles 20 m: matched overall, but each side of the band edge sees only half of the pair.
    assert result.ap["pedestrian"][2.0] == pytest.approx(1.0)
    assert math.isnan(result.band_ap["0-20m"]["pedestrian"])  # no GT in 0-20 m, one FP
    assert result.band_ap["20-40m"]["pedestrian"] == 0.0


def test_match_frame_greedy_by_score_then_nearest():
    gts = frame(obj(0, 0), obj(2, 0), obj(5, 5, PED))
    # 0.9 at x=0.9 is nearer GT 0 (0.9 m vs 1.1 m); then 0.8 at x=-0.5 finds only GT 1, 2.5 m away: a FP at 2 m.
    preds = frame(obj(-0.5, 0, score=0.8), obj(0.9, 0, score=0.9), obj(5, 5.2, PED, score=0.3))
    fm = match_frame(preds, gts, 3, 2.0)
    assert fm.tp.tolist() == [1, 1, 0] and fm.fp.tolist() == [1, 0, 0] and fm.fn.tolist() == [1, 0, 0]
    assert fm.pairs.tolist() == [[1, 0], [2, 2]]
    assert fm.pred_to_gt.tolist() == [-1, 0, 2]
    assert fm.gt_matched.tolist() == [True, False, True]
    # Per-class thresholds: the pedestrian at 0.2 m fails a 0.1 m threshold.
    fm = match_frame(preds, gts, 3, [2.0, 0.1, 2.0])
    assert fm.tp.tolist() == [1, 0, 0] and fm.fp.tolist() == [1, 1, 0] and fm.fn.tolist() == [1, 1, 0]
    # Empty inputs.
    fm = match_frame(Boxes3D(), gts, 3, 2.0)
    assert fm.fn.tolist() == [2, 1, 0] and fm.pairs.shape == (0, 2)


def test_no_frames_and_no_gt_at_all():
    result = evaluate([], [])
    assert math.isnan(result.map) and all(math.isnan(v) for v in result.ap["car"].values())
    result = evaluate([frame(obj(1, 1))], [Boxes3D()])
    assert math.isnan(result.map) and result.num_pred["car"] == 1
    json.dumps(result.to_dict(), allow_nan=False)
    assert "mAP -" in result.table()


def test_invalid_inputs_raise_value_error():
    gts = scene()
    with pytest.raises(ValueError, match="3 ground-truth"):
        evaluate(gts[:2], gts)
    with pytest.raises(ValueError, match=r"predictions\[1\] box 0: label 5 is out of range"):
        evaluate([Boxes3D(), frame(obj(0, 0, 5)), Boxes3D()], gts)
    with pytest.raises(ValueError, match=r"ground_truths\[0\] box 1: label -1"):
        evaluate(gts, [frame(obj(0, 0), obj(1, 1, -1)), Boxes3D(), Boxes3D()])
    with pytest.raises(ValueError, match="score is NaN"):
        evaluate([frame(obj(0, 0, score=float("nan"))), Boxes3D(), Boxes3D()], gts)
    with pytest.raises(ValueError, match="unknown classes"):
        Detection3DConfig(class_names=CLASSES, class_distance_thresholds={"truck": (1.0,)})
    with pytest.raises(ValueError, match="threshold"):
        match_frame(Boxes3D(), Boxes3D(), 3, [1.0, 2.0])


def test_to_dict_is_json_safe_and_table_lists_classes():
    gts = scene()
    result = evaluate(gts, gts)
    d = result.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert list(d["ap"]["car"]) == ["0.5", "1.0", "2.0", "4.0"]
    assert d["tp_errors"]["bicycle"]["ate"] is None
    assert len(d["pr_curves"]["car"]["2.0"]["recall"]) == 101
    assert json.loads(text)["map"] == pytest.approx(1.0)
    table = result.table()
    for token in ("car", "pedestrian", "bicycle", "AP@0.5", "APH@2.0", "AVE", "mean", "mAP 1.0000"):
        assert token in table


# --------------------------------------------------------------------------------------------------------------------
# Agreement with the reference loop on random scenes
# --------------------------------------------------------------------------------------------------------------------


def random_scene(seed: int, num_frames: int = 40, num_classes: int = 3):
    """Crowded frames (objects in clusters, so matches compete), duplicates, misses, wrong labels, FPs, and scores
    from a short list of values so that ties are common."""
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for _ in range(num_frames):
        n = int(rng.integers(0, 14))
        centres = rng.uniform(-60, 60, (max(n // 3, 1), 2))
        xy = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 2.0, (n, 2))
        lwh = rng.uniform(0.5, 5.0, (n, 3))
        yaw = rng.uniform(-math.pi, math.pi, n)
        vel = rng.normal(0, 3, (n, 2))
        labels = rng.integers(0, num_classes, n)
        gts.append(Boxes3D(np.column_stack([xy, rng.normal(0, 1, n), lwh, yaw]), None, labels, vel))

        copies = np.repeat(np.arange(n), rng.choice([0, 1, 1, 1, 2], n))  # misses and duplicates
        m = len(copies)
        p_xy = xy[copies] + rng.normal(0, 1.2, (m, 2))
        p_lwh = lwh[copies] * rng.uniform(0.7, 1.3, (m, 3))
        p_yaw = yaw[copies] + rng.normal(0, 0.8, m)
        p_vel = vel[copies] + rng.normal(0, 1, (m, 2))
        p_labels = np.where(rng.random(m) < 0.1, rng.integers(0, num_classes, m), labels[copies])
        k = int(rng.integers(0, 4))  # pure false positives
        p_xy = np.vstack([p_xy, rng.uniform(-60, 60, (k, 2))])
        p_lwh = np.vstack([p_lwh, rng.uniform(0.5, 5.0, (k, 3))])
        p_yaw = np.concatenate([p_yaw, rng.uniform(-math.pi, math.pi, k)])
        p_vel = np.vstack([p_vel, rng.normal(0, 3, (k, 2))])
        p_labels = np.concatenate([p_labels, rng.integers(0, num_classes, k)])
        scores = rng.choice([0.2, 0.4, 0.5, 0.7, 0.9], m + k)
        boxes = np.column_stack([p_xy, rng.normal(0, 1, m + k), p_lwh, p_yaw])
        preds.append(Boxes3D(boxes, scores, p_labels, p_vel))
    return preds, gts


def assert_close(a, b, where):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            assert_close(a[key], b[key], f"{where}[{key}]")
    elif math.isnan(a) or math.isnan(b):
        assert math.isnan(a) and math.isnan(b), f"{where}: {a} vs {b}"
    else:
        assert abs(a - b) <= 1e-9, f"{where}: {a} vs {b}"


CONFIGS = {
    "default": {},
    "per_class_envelope": {
        "class_distance_thresholds": {"pedestrian": (0.3, 0.75, 1.5)},
        "tp_threshold": 1.5,  # not among the car's thresholds: an extra matching pass
        "precision_envelope": True,
        "distance_bands": ((0.0, 30.0), (30.0, math.inf)),
    },
    "no_min_recall": {"min_recall": 0.0, "min_precision": 0.0, "distance_thresholds": (1.0, 3.0)},
}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_agrees_with_reference(seed, name):
    preds, gts = random_scene(seed)
    config = Detection3DConfig(class_names=CLASSES, **CONFIGS[name])
    result = evaluate_detection3d(preds, gts, config)
    ref = reference_evaluate(
        preds,
        gts,
        CLASSES,
        {c: config.thresholds_for(c) for c in CLASSES},
        config.tp_threshold,
        config.distance_bands,
        config.min_recall,
        config.min_precision,
        config.precision_envelope,
    )
    assert_close(result.ap, ref["ap"], "ap")
    assert_close(result.aph, ref["aph"], "aph")
    assert_close(result.aph_at_tp, ref["aph_at_tp"], "aph_at_tp")
    assert_close(result.tp_errors, ref["tp_errors"], "tp_errors")
    assert_close(result.band_ap, {band_label(*b): v for b, v in ref["band_ap"].items()}, "band_ap")
    assert 0.0 < result.map < 1.0  # the scene is neither trivial nor hopeless


def test_match_frame_agrees_with_reference():
    preds, gts = random_scene(7, num_frames=20)
    for p, g in zip(preds, gts):
        fm = match_frame(p, g, 3, 1.0)
        for c in range(3):
            dets = [d for d in as_items([p], True) if d["label"] == c]
            ref = greedy_match(dets, [t for t in as_items([g], False) if t["label"] == c], 1.0)
            assert fm.tp[c] == sum(gt is not None for _, gt in ref)
            assert sorted(fm.pairs[p.labels[fm.pairs[:, 0]] == c].tolist()) == sorted(
                [d["index"], gt["index"]] for d, gt in ref if gt is not None
            )


def test_timing_1000_frames(capsys):
    """1,000 frames x 50 GT x ~60 detections, 5 classes. Prints the time; does not assert it."""
    rng = np.random.default_rng(0)
    names = ("car", "truck", "bus", "bicycle", "pedestrian")
    preds, gts = [], []
    for _ in range(1000):
        xy = rng.uniform(-70, 70, (50, 2))
        lwh = rng.uniform(0.5, 10, (50, 3))
        labels = rng.integers(0, 5, 50)
        gts.append(Boxes3D(np.column_stack([xy, np.zeros(50), lwh, rng.uniform(-3, 3, 50)]), None, labels, None))
        keep = rng.random(50) < 0.9
        k = 60 - int(keep.sum())
        p_xy = np.vstack([xy[keep] + rng.normal(0, 0.8, (keep.sum(), 2)), rng.uniform(-70, 70, (k, 2))])
        p_lwh = np.vstack([lwh[keep], rng.uniform(0.5, 10, (k, 3))])
        p_labels = np.concatenate([labels[keep], rng.integers(0, 5, k)])
        boxes = np.column_stack([p_xy, np.zeros(60), p_lwh, rng.uniform(-3, 3, 60)])
        preds.append(Boxes3D(boxes, rng.random(60), p_labels, None))
    start = time.perf_counter()
    result = evaluate_detection3d(preds, gts, Detection3DConfig(class_names=names))
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nevaluate_detection3d, 1000 frames x 50 GT x 60 detections, 5 classes: {elapsed:.2f} s")
    assert 0.0 < result.map < 1.0


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_eval_range_equals_the_reference_on_boxes_filtered_by_hand(name):
    """eval_range leaves out GT and detections whose BEV centre is outside [min, max), nothing else; counted."""
    preds, gts = random_scene(11)
    rng = (-30.0, -25.0, 35.0, 40.0)
    config = Detection3DConfig(class_names=CLASSES, eval_range=rng, **CONFIGS[name])
    result = evaluate_detection3d(preds, gts, config)
    def filtered(frames):
        kept, out = [], {c: 0 for c in CLASSES}
        for b in frames:
            inside = [rng[0] <= x < rng[2] and rng[1] <= y < rng[3] for x, y in b.boxes[:, :2].tolist()]
            kept.append(b.select(np.array(inside, bool)))
            for ok, label in zip(inside, b.labels.tolist()):
                out[CLASSES[label]] += not ok
        return kept, out

    kept, out = filtered(gts)
    kept_preds, pred_out = filtered(preds)
    ref = reference_evaluate(kept_preds, kept, CLASSES, {c: config.thresholds_for(c) for c in CLASSES},
                             config.tp_threshold, config.distance_bands, config.min_recall, config.min_precision,
                             config.precision_envelope)
    assert_close(result.ap, ref["ap"], "ap")
    assert_close(result.band_ap, {band_label(*b): v for b, v in ref["band_ap"].items()}, "band_ap")
    assert result.num_gt_out_of_range == out and sum(out.values()) > 0
    assert result.num_pred_out_of_range == pred_out and sum(pred_out.values()) > 0
    d = json.loads(json.dumps(result.to_dict()))
    assert d["num_gt_out_of_range"] == out and d["eval_range"] == list(rng)
    assert d["num_pred_out_of_range"] == pred_out
    assert d["ap_rule"] == ("precision_envelope" if config.precision_envelope else "nuscenes_devkit")
    assert ("AP rule: precision envelope" if config.precision_envelope else "AP rule: nuScenes devkit") in result.table()


def test_eval_range_is_checked():
    for bad in ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, math.inf, 1.0), (1.0, 2.0, 3.0)):
        with pytest.raises(ValueError, match="eval_range"):
            Detection3DConfig(class_names=CLASSES, eval_range=bad)
