"""One metric configuration and one ground-truth rule for export's evaluation, replay scoring and training.

The same detections and ground truth go through the three code paths' metric functions and must give the same
numbers; the default AP must be the devkit's (checked against the independent loop reference); the ground truth
left out, and why, must be in the evaluation's to_dict (where report.json takes it from).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from awml_deploy_core.config import DeployConfig, EvaluateConfig, load_deploy_config
from awml_deploy_core.data.info_dataset import Sample
from awml_deploy_core.evaluate import BackendEvaluation, VoxelCounts, metric_config, score_detections
from awml_deploy_core.metrics.detection3d import AP_RULE_DEVKIT, evaluate_detection3d
from awml_deploy_core.metrics.latency import summarize_stages
from awml_deploy_core.replay.scoring import FrameRecord, FrameScorer, GroundTruth
from awml_deploy_core.structures import Boxes3D
from awml_deploy_core.training.train import score_heldout

sys.path.insert(0, os.path.dirname(__file__))
from reference_detection3d import reference_evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CFG = DeployConfig()
NAMES = tuple(CFG.model.class_names)
R = CFG.model.point_cloud_range  # [-40.96, -40.96, -3, 40.96, 40.96, 5]


def scene(seed: int, num_frames: int = 30):
    """Frames with GT spread over +-55 m (a good part outside the model's +-40.96 m), some GT without lidar
    points, and detections: noisy copies (also of out-of-range GT), misses, duplicates, wrong labels, FPs."""
    rng = np.random.default_rng(seed)
    gts, npts, preds = [], [], []
    for f in range(num_frames):
        n = int(rng.integers(1, 16))
        xy = rng.uniform(-55, 55, (n, 2))
        if f == 0:  # centres exactly on the range's edges: min is inside, max is outside
            xy[:4] = [[R[0], 0.0], [R[3], 0.0], [0.0, R[1]], [0.0, R[4]]][:n]
        lwh = rng.uniform(0.5, 5.0, (n, 3))
        yaw = rng.uniform(-math.pi, math.pi, n)
        vel = rng.normal(0, 3, (n, 2))
        labels = rng.integers(0, len(NAMES), n)
        gts.append(Boxes3D(np.column_stack([xy, rng.normal(0, 1, n), lwh, yaw]), None, labels, vel))
        npts.append(np.where(rng.random(n) < 0.15, 0, rng.integers(1, 200, n)).astype(np.int32))
        copies = np.repeat(np.arange(n), rng.choice([0, 1, 1, 1, 2], n))
        m = len(copies)
        k = int(rng.integers(0, 4))
        p_xy = np.vstack([xy[copies] + rng.normal(0, 0.8, (m, 2)), rng.uniform(-45, 45, (k, 2))])
        p_lwh = np.vstack([lwh[copies] * rng.uniform(0.8, 1.2, (m, 3)), rng.uniform(0.5, 5, (k, 3))])
        p_yaw = np.concatenate([yaw[copies] + rng.normal(0, 0.5, m), rng.uniform(-3, 3, k)])
        p_labels = np.concatenate([np.where(rng.random(m) < 0.1, rng.integers(0, len(NAMES), m), labels[copies]),
                                   rng.integers(0, len(NAMES), k)])
        boxes = np.column_stack([p_xy, np.zeros(m + k), p_lwh, p_yaw])
        preds.append(Boxes3D(boxes, rng.choice([0.2, 0.4, 0.5, 0.7, 0.9], m + k), p_labels,
                             np.vstack([vel[copies], rng.normal(0, 3, (k, 2))])))
    return preds, gts, npts


def as_samples(gts, npts) -> list[Sample]:
    """What InfoDataset gives export: valid = bbox_3d_isvalid = at least one lidar point."""
    return [Sample(np.zeros((0, 5), np.float32), 1000.0 + 0.1 * i, g, f"t{i}", Path("none"), n, n > 0)
            for i, (g, n) in enumerate(zip(gts, npts))]


def expected_counts(gts, npts) -> dict[str, int]:
    """Independent count, box by box: no points first, then the centre range test."""
    no_points = out = scored = 0
    for g, n in zip(gts, npts):
        for (x, y), k in zip(g.boxes[:, :2].tolist(), n.tolist()):
            if k == 0:
                no_points += 1
            elif not (np.float32(R[0]) <= np.float32(x) < np.float32(R[3])
                      and np.float32(R[1]) <= np.float32(y) < np.float32(R[4])):
                out += 1
            else:
                scored += 1
    return {"scored": scored, "excluded_out_of_range": out, "excluded_no_points": no_points}


def three_paths(preds, gts, npts, cfg: DeployConfig = CFG):
    """(export, replay, training): metrics and the ground-truth summary as each path reports it."""
    samples = as_samples(gts, npts)
    export_metrics, export_gt = score_detections(preds, samples, cfg.model, cfg.evaluate)
    export = BackendEvaluation("pytorch", list(preds), [{"total": 1.0}] * len(preds), export_metrics,
                               summarize_stages([{"total": 1.0}] * len(preds)), VoxelCounts(), export_gt)

    scorer = FrameScorer(GroundTruth.from_samples(samples, "test"), NAMES, 75.0, metric_config(cfg.model, cfg.evaluate))
    for s, p in zip(samples, preds):
        scorer.add(FrameRecord(int(round(s.timestamp * 1e9)), p))
    replay = scorer.result()

    frames = [{"boxes": g.boxes, "labels": g.labels, "velocities": g.velocities, "num_points": n}
              for g, n in zip(gts, npts)]
    train_metrics, train_gt, _ = score_heldout(preds, frames, cfg.model)
    return (export.to_dict(), replay.to_dict(), {"metrics": train_metrics.to_dict(), "ground_truth": train_gt})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_export_replay_and_training_give_the_same_numbers(seed):
    preds, gts, npts = scene(seed)
    export, replay, train = three_paths(preds, gts, npts)
    for key in ("map", "map_by_threshold", "ap", "aph", "tp_errors", "band_ap", "num_gt", "num_pred",
                "num_gt_out_of_range", "num_pred_out_of_range", "ap_rule", "eval_range"):
        assert export["metrics"][key] == replay["metrics"][key] == train["metrics"][key], key
    assert export["ground_truth"] == replay["ground_truth"] == train["ground_truth"]
    want = expected_counts(gts, npts)
    assert {k: export["ground_truth"][k] for k in want} == want
    assert want["excluded_out_of_range"] > 0 and want["excluded_no_points"] > 0 and want["scored"] > 50
    assert 0.0 < export["metrics"]["map"] < 1.0
    # replay's per-frame counts use the same scored GT
    assert sum(f["num_gt"] for f in replay_frames(preds, gts, npts)) == want["scored"]


def replay_frames(preds, gts, npts):
    samples = as_samples(gts, npts)
    scorer = FrameScorer(GroundTruth.from_samples(samples, "test"), NAMES, 75.0, metric_config(CFG.model, CFG.evaluate))
    return [scorer.add(FrameRecord(int(round(s.timestamp * 1e9)), p)) for s, p in zip(samples, preds)]


def test_envelope_opt_in_reaches_every_path_and_is_named():
    preds, gts, npts = scene(4)
    cfg = CFG.model_copy(update={"evaluate": EvaluateConfig(precision_envelope=True)})
    export, replay, _ = three_paths(preds, gts, npts, cfg)
    assert export["metrics"]["ap_rule"] == replay["metrics"]["ap_rule"] == "precision_envelope"
    assert export["metrics"]["map_by_threshold"] == replay["metrics"]["map_by_threshold"]
    devkit, _, _ = three_paths(preds, gts, npts)
    assert devkit["metrics"]["ap_rule"] == AP_RULE_DEVKIT
    assert export["metrics"]["map"] >= devkit["metrics"]["map"]  # the envelope only raises precision


@pytest.mark.parametrize("seed", [0, 5])
def test_default_ap_is_the_devkit_rule_to_1e9(seed):
    """The shipped defaults (config.py and config/centerpoint.yaml) give the devkit's AP: compared with the
    independent loop reference on GT that the test filters itself."""
    shipped = load_deploy_config(ROOT / "config" / "centerpoint.yaml")
    for cfg in (CFG, shipped):
        assert cfg.evaluate.precision_envelope is False
    preds, gts, npts = scene(seed)
    mcfg = metric_config(shipped.model, shipped.evaluate)
    def inside(b):
        x, y = b.boxes[:, 0].astype(np.float32), b.boxes[:, 1].astype(np.float32)
        return (x >= np.float32(R[0])) & (x < np.float32(R[3])) & (y >= np.float32(R[1])) & (y < np.float32(R[4]))

    kept = [g.select((n > 0) & inside(g)) for g, n in zip(gts, npts)]
    kept_preds = [p.select(inside(p)) for p in preds]
    samples = as_samples(gts, npts)
    result, _ = score_detections(preds, samples, shipped.model, shipped.evaluate)
    ref = reference_evaluate(kept_preds, kept, NAMES, {c: mcfg.thresholds_for(c) for c in NAMES}, mcfg.tp_threshold,
                             mcfg.distance_bands, mcfg.min_recall, mcfg.min_precision, False)
    for c in NAMES:
        for t, v in ref["ap"][c].items():
            a = result.ap[c][t]
            assert (math.isnan(a) and math.isnan(v)) or abs(a - v) <= 1e-9, (c, t, a, v)
    assert "AP rule: nuScenes devkit" in result.table()


def test_excluded_ground_truth_is_in_the_evaluations_to_dict():
    preds, gts, npts = scene(3)
    export, replay, train = three_paths(preds, gts, npts)
    want = expected_counts(gts, npts)
    for d in (export, replay, train):
        g = d["ground_truth"]
        assert (g["scored"], g["excluded_out_of_range"], g["excluded_no_points"]) == (
            want["scored"], want["excluded_out_of_range"], want["excluded_no_points"])
        assert "point_cloud_range" in g["rule"]
        assert sum(d["metrics"]["num_gt"].values()) == want["scored"]
        assert sum(d["metrics"]["num_gt_out_of_range"].values()) == want["excluded_out_of_range"]
    assert "voxel_overflow_frames" not in export
    assert set(export["voxelization"]) >= {"frames_with_pillars_dropped", "pillars_dropped",
                                           "frames_with_points_truncated", "points_truncated"}


def test_metric_config_needs_the_model_config():
    with pytest.raises(TypeError, match="cfg.model"):
        metric_config(NAMES, EvaluateConfig())  # type: ignore[arg-type]
    m = metric_config(CFG.model)
    assert m.eval_range == (R[0], R[1], R[3], R[4]) and m.precision_envelope is False
    assert m.distance_thresholds == tuple(CFG.evaluate.distance_thresholds)


def test_the_range_filters_detections_too():
    """Filter, then match: a detection of a box outside the range is neither TP nor FP; one inside the range
    whose box is outside is a FP."""
    gt = Boxes3D([[50.0, 0, 0, 4, 2, 1.5, 0], [10.0, 0, 0, 4, 2, 1.5, 0], [41.5, 5, 0, 4, 2, 1.5, 0]], None,
                 [0, 0, 0], None)
    det = Boxes3D([[50.0, 0, 0, 4, 2, 1.5, 0], [10.0, 0, 0, 4, 2, 1.5, 0], [40.5, 5, 0, 4, 2, 1.5, 0]],
                  [0.9, 0.8, 0.7], [0, 0, 0], None)
    r = evaluate_detection3d([det], [gt], metric_config(CFG.model))
    assert (r.num_gt["car"], r.num_gt_out_of_range["car"]) == (1, 2)
    assert (r.num_pred["car"], r.num_pred_out_of_range["car"]) == (2, 1)
    # ranks: TP (0.8) then FP (0.7): precision 1 up to recall 1, where it is 0.5 -> AP_DUPLICATE of the
    # metrics tests: (89 + 4/9) / 90
    assert r.ap["car"][2.0] == pytest.approx((89 + 4 / 9) / 90, abs=1e-12)
    line = replay_frames([det], [gt], [np.array([5, 5, 5])])[0]
    assert (line["tp"]["car"], line["fp"]["car"], line["fn"]["car"]) == (1, 1, 0)
    assert (line["num_gt_out_of_range"], line["num_detections_out_of_range"]) == (2, 1)


@pytest.mark.skipif(not (ROOT / "awml_deploy_core/awml_deploy_core/checkpoints/centerpoint_small.pth").is_file(),
                    reason="shipped checkpoint not present")
def test_real_pipeline_detections_score_alike_in_all_three_paths(tmp_path):
    """evaluate_backend on real frames through the real pipeline; its detections then go through replay's and
    training's metric paths."""
    from awml_deploy_core.loader import torch_runners
    from awml_deploy_core.data.info_dataset import InfoDataset, generate_dataset
    from awml_deploy_core.evaluate import evaluate_backend
    from awml_deploy_core.models.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
    from awml_deploy_core.pipelines.centerpoint.pipeline import CenterPointPipeline

    info = generate_dataset(tmp_path / "data", 3, seed=10_000)
    samples = [s for s in InfoDataset(info, class_names=NAMES)]
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT, CFG.model)
    pipeline = CenterPointPipeline(CFG.model, torch_runners(model, CFG.model), "cpu")
    ev = evaluate_backend("pytorch", pipeline, samples, CFG.evaluate.model_copy(update={"warmup": 0}), False)
    export = ev.to_dict()
    gts = [s.gt for s in samples]
    npts = [s.num_lidar_points for s in samples]
    assert all(np.array_equal(s.valid, n > 0) for s, n in zip(samples, npts))
    _, replay, train = three_paths(ev.detections, gts, npts)
    assert export["metrics"]["map_by_threshold"] == replay["metrics"]["map_by_threshold"] \
        == train["metrics"]["map_by_threshold"]
    assert export["ground_truth"] == replay["ground_truth"] == train["ground_truth"]
    assert export["ground_truth"] == {**expected_counts(gts, npts), "rule": export["ground_truth"]["rule"]}
    v = export["voxelization"]
    assert v["frames"] == 3 and v["pillars_dropped"] == 0  # 30,000 pillars are plenty here
    assert v["frames_with_points_truncated"] <= 3 and v["points_truncated"] >= v["pillars_truncated"]
