"""The miscalibrated drive (``awml-deploy make-bag --calibration-drive``) and its replay: offline (pipeline on the bag's pairs)
and in real time (bag_player -> calibration_status_node -> recorder, separate processes over DDS), scored against
the drive's labels; both agree on every pair the node processed.

Model: the shipped calibration checkpoint when it exists, else a small fixed-seed untrained classifier (the
agreement does not depend on the model being any good; the scores are reported, not gated, here).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "install" / "awml_deploy_nodes" / "lib" / "awml_deploy_nodes"
SHIPPED = ROOT / "awml_deploy_core" / "awml_deploy_core" / "checkpoints" / "calibration_status_small.pth"
FRAMES, BAD = 8, (4, 8)


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    from awml_deploy_core.cli import main

    out = tmp_path_factory.mktemp("drive") / "calib_drive"
    assert main(["make-bag", str(out), "--calibration-drive", "--seconds", str(FRAMES / 10), "--seed", "10001",
                 "--miscalibrated-frames", f"{BAD[0]}:{BAD[1]}", "--miscalibration", "3.0,0.1"]) == 0
    return out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    if SHIPPED.is_file():
        return SHIPPED
    import torch

    from awml_deploy_core.config import CalibrationStatusModelConfig
    from awml_deploy_core.models.calibration_status import build_calibration_status
    from awml_deploy_core.models.checkpoint import save_checkpoint

    cfg = CalibrationStatusModelConfig(base_channels=8)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = build_calibration_status(cfg)
    torch.random.set_rng_state(state)
    return save_checkpoint(model, cfg, tmp_path_factory.mktemp("ckpt") / "tiny.pth")


def test_drive_is_physically_miscalibrated_in_its_segment(drive):
    from awml_deploy_core.data.calibration_bag import read_drive_pairs, read_labels
    from awml_deploy_core.data.calibration_pairs import extrinsic_error
    from awml_deploy_core.data.camera import CameraSpec, render_frame
    from awml_deploy_core.data.lidar import LidarSpec
    from awml_deploy_core.data.synthetic import build_layout

    labels = read_labels(drive)
    assert [f["label"] for f in labels["frames"]] == ["calibrated"] * BAD[0] + ["miscalibrated"] * (BAD[1] - BAD[0])
    nominal = np.asarray(labels["nominal_extrinsic"]).reshape(4, 4)
    true = np.asarray(labels["perturbation"]["true_extrinsic"]).reshape(4, 4)
    np.testing.assert_allclose(nominal, CameraSpec().T_cam_lidar)  # the node is told the nominal camera
    rot, trans = extrinsic_error(nominal, true)
    assert abs(rot - 3.0) < 1e-6 and abs(trans - 0.1) < 1e-6
    pairs = list(read_drive_pairs(drive, labels))
    assert [p.stamp_ns for p in pairs] == [f["stamp_ns"] for f in labels["frames"]]
    # Inside the segment the image is the moved camera's view, outside the nominal camera's (same scene, instant).
    layout = build_layout(10001, FRAMES, LidarSpec())
    for k in (BAD[0] - 1, BAD[0]):
        t = labels["frames"][k]["stamp_ns"] / 1e9
        nominal_view = render_frame(layout, k, CameraSpec(), t).image
        moved_view = render_frame(layout, k, CameraSpec(extrinsic=tuple(true.ravel())), t).image
        expected = moved_view if k >= BAD[0] else nominal_view
        np.testing.assert_array_equal(pairs[k].image, expected)
        assert not np.array_equal(nominal_view, moved_view)


def test_replay_offline_and_realtime_agree(tmp_path, ros_env, drive, ckpt):
    """`calibration_replay` (player, node and this recorder over DDS, then the offline replay) agrees pair by pair."""
    out = tmp_path / "replay"
    log = tmp_path / "calibration_replay.log"
    proc = subprocess.run([str(LIB / "calibration_replay"), str(drive), "--checkpoint", str(ckpt), "--backend",
                           "pytorch", "--rate", "0.2", "--out", str(out)], env=ros_env, cwd=ROOT,
                          stdout=log.open("w"), stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text + "".join(p.read_text() for p in (out / "logs").glob("*.log"))
    print(text)
    summary = json.loads((out / "summary.json").read_text())
    offline = {d["stamp_ns"]: d for d in json.loads((out / "offline_decisions.json").read_text())}
    agreement = summary["agreement"]
    assert agreement["agree"] and "AGREE" in text, agreement
    assert len(offline) == FRAMES and summary["offline"]["pairs_scored"] == FRAMES
    recorded = [json.loads(l) for l in (out / "statuses.jsonl").read_text().splitlines()]
    assert len(recorded) >= FRAMES // 2, f"only {len(recorded)} of {FRAMES} pairs processed in real time"
    # Every processed pair, independently of compare(): the node's float32 scores are the offline ones.
    flagged = 0
    for m in recorded:
        s = m["header"]["stamp"]["sec"] * 1_000_000_000 + m["header"]["stamp"]["nanosec"]
        assert m["calibrated_score"] == float(np.float32(offline[s]["calibrated_score"]))
        assert m["miscalibrated_score"] == float(np.float32(offline[s]["miscalibrated_score"]))
        assert m["is_calibrated"] == offline[s]["is_calibrated"]
        flagged += not m["is_calibrated"]
    assert agreement["compared"] == len(recorded) and len(agreement["not_processed"]) == FRAMES - len(recorded)
    # Scored alike: the real-time run's counts are the offline ones restricted to the processed pairs.
    rt = summary["realtime"]
    assert rt["pairs_scored"] == len(recorded) and sum(c["flagged"] for c in rt["counts"].values()) == flagged
    if ckpt == SHIPPED:  # the shipped classifier sees a 3 deg / 10 cm move (measured: all 8 pairs right)
        assert summary["offline"]["accuracy"] >= 0.75, summary["offline"]


def test_scoring_and_comparison_rules():
    from awml_deploy_core.replay.calibration_replay import compare, score

    labels = {"frames": [{"stamp_ns": 1, "label": "calibrated"}, {"stamp_ns": 2, "label": "calibrated"},
                         {"stamp_ns": 3, "label": "miscalibrated"}, {"stamp_ns": 4, "label": "ambiguous"}]}
    d = [{"stamp_ns": 1, "is_calibrated": True}, {"stamp_ns": 2, "is_calibrated": False},
         {"stamp_ns": 3, "is_calibrated": False}, {"stamp_ns": 4, "is_calibrated": False}]
    s = score(d, labels)
    assert (s["pairs_scored"], s["pairs_ambiguous"], s["accuracy"], s["recall_miscalibrated"],
            s["false_alarm_rate"]) == (3, 1, 2 / 3, 1.0, 0.5)
    off = [{"stamp_ns": 1, "is_calibrated": True, "calibrated_score": 0.7, "miscalibrated_score": 0.3},
           {"stamp_ns": 2, "is_calibrated": False, "calibrated_score": 0.2, "miscalibrated_score": 0.8}]
    rt = [{"stamp_ns": 1, "is_calibrated": True, "calibrated_score": float(np.float32(0.7)),
           "miscalibrated_score": float(np.float32(0.3))}]
    c = compare(off, rt)
    assert c["agree"] and c["compared"] == 1 and c["not_processed"] == [2]
    rt[0]["calibrated_score"] = 0.7  # float64, not what a float32 field carries: differs
    assert not compare(off, rt)["agree"]
