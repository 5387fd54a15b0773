"""The calibration drive (``awml-deploy make-bag --cameras 1 --miscalibrated-frames A:B``) and its replay on the one
replay machinery: offline (``awml-deploy replay-eval --config <calibration_status>``) and in real time
(``replay_evaluation``: bag_player -> calibration_status_node -> output_recorder, separate processes over DDS), scored
against the labels in the bag's camera sidecar; the two agree on every pair the node processed.

Model: the shipped calibration checkpoint when it exists, else a small fixed-seed untrained classifier (the
agreement does not depend on the model being any good; accuracy is gated only for the shipped one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "install" / "awml_deploy_nodes" / "lib" / "awml_deploy_nodes"
AWML = Path(sys.executable).parent / "awml-deploy"
SHIPPED = ROOT / "awml_deploy_core" / "awml_deploy_core" / "checkpoints" / "calibration_status_small.pth"
FRAMES, BAD = 6, (3, 6)
SEED = 10001


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    from awml_deploy_core.cli import main

    out = tmp_path_factory.mktemp("drive") / "calib_drive"
    assert main(["make-bag", str(out), "--cameras", "1", "--seconds", str(FRAMES / 10), "--seed", str(SEED),
                 "--miscalibrated-frames", f"{BAD[0]}:{BAD[1]}", "--miscalibration", "3.0,0.1"]) == 0
    return out


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    """config/calibration_status.yaml with the shipped checkpoint, or a tiny untrained one when it is missing."""
    root = tmp_path_factory.mktemp("cfg")
    data = yaml.safe_load((ROOT / "config" / "calibration_status.yaml").read_text())
    data.update(work_dir=str(root / "work"), evaluate={"warmup": 1})
    if not SHIPPED.is_file():
        import torch

        from awml_deploy_core.config import CalibrationStatusModelConfig
        from awml_deploy_core.models.calibration_status import build_calibration_status
        from awml_deploy_core.models.checkpoint import save_checkpoint

        model_cfg = CalibrationStatusModelConfig(base_channels=8)
        state = torch.random.get_rng_state()
        torch.manual_seed(0)
        model = build_calibration_status(model_cfg)
        torch.random.set_rng_state(state)
        data["checkpoint"] = str(save_checkpoint(model, model_cfg, root / "tiny.pth"))
        data["model"]["base_channels"] = 8
    path = root / "calibration_status.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _frames(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_drive_is_physically_miscalibrated_in_its_segment(drive):
    """camera0's images in [A, B) are the moved camera's view, outside the nominal one's; CameraInfo and lidar2cam
    stay nominal; the sidecar labels each image by the true pose's error."""
    from awml_deploy_core.data.calibration_pairs import extrinsic_error, perturb_extrinsic
    from awml_deploy_core.data.camera import CameraSpec, render_frame
    from awml_deploy_core.data.rosbag_camera import camera_info_topic, image_topic, read_images
    from awml_deploy_core.data.rosbag_io import BagReader
    from awml_deploy_core.data.synthetic import build_layout

    info = json.loads((drive / "awml_info" / "camera_infos.json").read_text())
    entries = info["data_list"]
    assert [e["images"]["camera0"]["calibration"]["label"] for e in entries] == (
        ["calibrated"] * BAD[0] + ["miscalibrated"] * (BAD[1] - BAD[0]))
    nominal = CameraSpec().T_cam_lidar
    for e in entries:
        np.testing.assert_allclose(np.asarray(e["images"]["camera0"]["lidar2cam"]), nominal)  # what the node is told
    true = perturb_extrinsic(nominal, 3.0, 0.1, SEED)  # independent of the writer: the documented perturbation
    rot, trans = extrinsic_error(nominal, true)
    assert abs(rot - 3.0) < 1e-6 and abs(trans - 0.1) < 1e-6
    c = entries[BAD[0]]["images"]["camera0"]["calibration"]
    assert abs(c["rotation_error_deg"] - 3.0) < 1e-6 and abs(c["translation_error_m"] - 0.1) < 1e-6
    np.testing.assert_allclose(np.asarray(info["metainfo"]["miscalibration"]["true_lidar2cam"]), true)
    layout = build_layout(SEED, FRAMES)
    with BagReader(drive) as reader:
        images = list(read_images(reader, image_topic("camera0")))
        assert reader.topics[camera_info_topic("camera0")].count == FRAMES
    assert [s for s, _, _ in images] == [e["timestamp_ns"] for e in entries]
    for k in (BAD[0] - 1, BAD[0]):
        t = entries[k]["timestamp_ns"] / 1e9
        nominal_view = render_frame(layout, k, CameraSpec(), t).image
        moved_view = render_frame(layout, k, CameraSpec(extrinsic=tuple(true.ravel())), t).image
        np.testing.assert_array_equal(images[k][2], moved_view if k >= BAD[0] else nominal_view)
        assert not np.array_equal(nominal_view, moved_view)


def test_replay_offline_and_realtime_agree(tmp_path, ros_env, drive, config):
    """replay-eval scores the drive offline; replay_evaluation runs calibration_status_node on it over DDS and
    agrees pair by pair (verdict and float32 scores) with that offline run (the --check-offline gate)."""
    off, rt = tmp_path / "offline", tmp_path / "realtime"
    criteria = ROOT / "config" / "replay_criteria_calibration.yaml"
    p = subprocess.run([str(AWML), "replay-eval", str(drive), "--config", str(config), "--backend", "pytorch",
                        "--out", str(off)], env=ros_env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    s_off = json.loads((off / "summary.json").read_text())
    f_off = _frames(off / "frames.jsonl")
    assert s_off["task"] == "calibration_status" and s_off["counts"]["scored"] == FRAMES
    assert [f["label"] for f in f_off] == ["calibrated"] * BAD[0] + ["miscalibrated"] * (BAD[1] - BAD[0])
    # The summary's metrics follow from the per-pair lines (independent count here).
    flagged = [not f["is_calibrated"] for f in f_off]
    mis = [f["label"] == "miscalibrated" for f in f_off]
    tp = sum(a and b for a, b in zip(flagged, mis))
    fp = sum(a and not b for a, b in zip(flagged, mis))
    assert s_off["accuracy"] == pytest.approx(sum(a == b for a, b in zip(flagged, mis)) / FRAMES)
    assert s_off["recall_miscalibrated"] == pytest.approx(tp / sum(mis))
    assert s_off["false_alarm_rate"] == pytest.approx(fp / (FRAMES - sum(mis)))
    assert (off / "report.md").is_file() and "Calibration status" in (off / "report.md").read_text()

    log = tmp_path / "replay_evaluation.log"
    with log.open("w") as f:
        p = subprocess.run([str(LIB / "replay_evaluation"), str(drive), "--config", str(config), "--backend",
                            "pytorch", "--rate", "0.2", "--out", str(rt), "--check-offline", str(off),
                            "--criteria", str(criteria) if SHIPPED.is_file() else str(_loose(tmp_path))],
                           env=ros_env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    logs = "".join(x.read_text() for x in (rt / "logs").glob("*.log")) if (rt / "logs").is_dir() else ""
    assert p.returncode == 0, text + logs
    print(text)
    s_rt = json.loads((rt / "summary.json").read_text())
    a = s_rt["offline_agreement"]
    assert a["compared"] >= FRAMES // 2 and not a["mismatched"], a
    assert "is_calibrated" in a["keys"] and "calibrated_score" in a["keys"]
    # Independently of the gate: every decided pair's float32 scores are the offline ones.
    by_stamp = {f["stamp_ns"]: f for f in f_off}
    decided = [f for f in _frames(rt / "frames.jsonl") if f["status"] == "scored"]
    assert len(decided) == a["compared"]
    for f in decided:
        o = by_stamp[f["stamp_ns"]]
        assert (f["is_calibrated"], f["calibrated_score"], f["miscalibrated_score"]) == (
            o["is_calibrated"], float(np.float32(o["calibrated_score"])), float(np.float32(o["miscalibrated_score"])))
    assert all(g["passed"] for g in s_rt["gates"]), s_rt["gates"]
    if SHIPPED.is_file():  # the shipped classifier sees a 3 deg / 10 cm move (measured: every pair right)
        assert s_off["accuracy"] >= 0.9 and s_off["passed"] is True, s_off


def _loose(tmp: Path) -> Path:
    path = tmp / "criteria.yaml"
    path.write_text("min_scored_frames: 1\n")
    return path


def test_scoring_rules_and_criteria(tmp_path):
    """Labels from the errors and the config's thresholds, ambiguous apart, the metrics, and the criteria."""
    from awml_deploy_core.config import MiscalibrationConfig
    from awml_deploy_core.errors import ConfigError
    from awml_deploy_core.replay.calibration import TASK, Decision, Truth
    from awml_deploy_core.replay.criteria import ReplayCriteria, apply_criteria

    mc = MiscalibrationConfig()
    names = ("miscalibrated", "calibrated")
    cases = [(Truth(0.0, 0.0), True), (Truth(0.0, 0.0), False), (Truth(3.0, 0.1), False), (Truth(3.0, 0.1), True),
             (Truth(0.7, 0.0), False)]  # 0.7 deg: between half (0.5) and the threshold (1.0): ambiguous
    lines, dets, gts = [], [], []
    for truth, calibrated in cases:
        line, d, g = TASK.score_frame(Decision(calibrated, 0.5, 0.5), truth, mc, names)
        lines.append(line)
        dets.append(d)
        gts.append(g)
    assert [l["label"] for l in lines] == ["calibrated", "calibrated", "miscalibrated", "miscalibrated", "ambiguous"]
    assert [l["correct"] for l in lines] == [True, False, True, False, None]
    assert lines[2]["tp"] == {"miscalibrated": 1, "calibrated": 0} and lines[1]["fp"]["miscalibrated"] == 1
    m = TASK.aggregate(dets, gts, mc).to_dict()
    assert (m["pairs_scored"], m["pairs_ambiguous"], m["accuracy"], m["recall_miscalibrated"],
            m["precision_miscalibrated"], m["false_alarm_rate"]) == (4, 1, 0.5, 0.5, 0.5, 0.5)
    assert m["f1_miscalibrated"] == pytest.approx(0.5)
    summary = {"task": "calibration_status", "class_names": list(names),
               "counts": {"frames": 5, "scored": 5, "skipped": 0, "dropped": 0},
               **TASK.headline_fields(TASK.aggregate(dets, gts, mc), names)}
    c = ReplayCriteria.model_validate({"classification": {"min_accuracy": 0.5, "min_recall": 0.6,
                                                          "max_false_alarm_percent": 50}})
    gates = {g["name"]: g["passed"] for g in apply_criteria(c, summary, lines)}
    assert gates == {"scored frames >= 1": True, "accuracy >= 0.5": True, "recall of miscalibrated >= 0.6": False,
                     "false alarms (calibrated pairs flagged) <= 50%": True}
    with pytest.raises(ConfigError, match="AP criteria"):
        TASK.check_criteria(ReplayCriteria.model_validate({"min_map": 0.5}), names, None, "c.yaml")
