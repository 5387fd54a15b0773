"""summary.json of both replays comes from one ReplaySummary: keys pinned to the format before the merge."""

from __future__ import annotations

import json

import numpy as np

from awml_deploy_core.replay.criteria import ReplayCriteria
from awml_deploy_core.replay.scoring import FrameRecord, GroundTruth, score_frames
from awml_deploy_core.replay.summary import SUMMARY_SCHEMA_VERSION, ReplaySummary
from awml_deploy_core.structures import Boxes3D

NAMES = ("car", "pedestrian")
SCORE_KEYS = ["class_names", "tolerance_ms", "match_threshold_m", "gt_source", "counts", "drop_rate", "skipped_frames",
              "out_of_order_frames", "frame_totals", "map_at_2m", "ap_at_2m", "metrics", "latency_ms"]
HEAD = ["schema_version", "kind", "mode", "created", "complete", "stopped", "error", "bag", "lidar_topic",
        "max_frames", "backend", "model", "checkpoint", "device"]
OFFLINE_KEYS = [*HEAD, *SCORE_KEYS, "wall_s", "throughput_fps", "criteria", "gates", "passed"]
REALTIME_KEYS = [*HEAD, *SCORE_KEYS, "dropped_frames", "wall_s", "throughput_fps", "realtime", "criteria", "gates",
                 "passed"]


def _scores(detect: bool = True):
    box = Boxes3D(boxes=np.array([[1, 2, 0, 4, 2, 1.5, 0.3]], np.float32), labels=[0])
    gt = GroundTruth([1_000, 2_000], [box, box], "test")
    frames = [FrameRecord(1_000, box if detect else Boxes3D(), {"total": 5.0}), FrameRecord(2_000, None)]
    return score_frames(frames, gt, NAMES)


def _summary(mode: str, **kw) -> ReplaySummary:
    return ReplaySummary(mode=mode, bag="/bag", lidar_topic="/lidar", backend="onnxruntime", model="m",
                         checkpoint={"path": "c", "sha256": None}, device="cpu", scores=_scores(), **kw)


def test_offline_keys_unchanged():
    s = _summary("offline", max_frames=3, wall_s=1.5, throughput_fps=2.0)
    d = s.to_dict()
    assert list(d) == OFFLINE_KEYS
    assert d["schema_version"] == SUMMARY_SCHEMA_VERSION == 1 and d["kind"] == "replay_eval"
    assert d["complete"] is True and d["max_frames"] == 3 and d["counts"]["dropped"] == 1
    json.dumps(d, allow_nan=False)


def test_realtime_keys_unchanged():
    s = _summary("realtime", dropped_frames=[{"index": 1, "stamp_ns": 2_000}], realtime={"rate": 1.0})
    assert list(s.to_dict()) == REALTIME_KEYS
    s.offline_agreement = {"compared": 1}
    assert list(s.to_dict()) == [*REALTIME_KEYS, "offline_agreement"]


def test_judge():
    s = _summary("offline")
    s.judge()
    assert s.gates == [] and s.passed is True  # no criteria: passed = something was scored
    s = _summary("offline", criteria=ReplayCriteria(min_scored_frames=2))
    s.judge()
    assert [g["passed"] for g in s.gates] == [False] and s.passed is False  # 1 of 2 frames scored (1 dropped)
    s = _summary("realtime", criteria=ReplayCriteria(min_scored_frames=1))
    s.judge([{"name": "extra", "passed": False, "detail": ""}])
    assert [g["passed"] for g in s.gates] == [True, False] and s.passed is False
    s = _summary("offline", stopped="interrupted", criteria=ReplayCriteria(min_scored_frames=1))
    s.judge()
    d = s.to_dict()
    assert d["complete"] is False and d["gates"] == [] and d["passed"] is None
    assert d["criteria"]["min_scored_frames"] == 1
