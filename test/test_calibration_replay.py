"""The miscalibrated drive (``awml-deploy make-bag --calibration-drive``) and its replay: offline (pipeline on the bag's pairs)
and in real time (bag_player -> calibration_status_node -> recorder, separate processes over DDS), scored against
the drive's labels; both agree on every pair the node processed.

Model: the shipped calibration checkpoint when it exists, else a small fixed-seed untrained classifier (the
agreement does not depend on the model being any good; the scores are reported, not gated, here).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ros_helpers import start_proc, stop, wait_for_line

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
    from awml_deploy_core.data.calibration_bag import read_labels
    from awml_deploy_core.replay.calibration_replay import main as replay_main

    labels = read_labels(drive)
    name = "calib_replay"
    params = {"checkpoint": str(ckpt), "backend": "pytorch", "mode": "active",
              "extrinsic": labels["nominal_extrinsic"], "processing_time_budget_ms": 10000.0}
    pfile = tmp_path / "node.param.yaml"
    pfile.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    topics = labels["topics"]
    node_log, rec_log, play_log = tmp_path / "node.log", tmp_path / "rec.log", tmp_path / "player.log"
    status_topic = f"/{name}/output/calibration_status"
    procs = []
    try:
        procs.append(start_proc(["record_topics.py", "--out-dir", str(tmp_path / "rec"), "--topic",
                                 f"{status_topic}=awml_deploy_msgs/msg/CalibrationStatus"], ros_env, rec_log))
        procs.append(start_proc([str(LIB / "calibration_status_node"), "--ros-args", "-r", f"__node:={name}",
                                 "--params-file", str(pfile), "-r", f"~/input/pointcloud:={topics['lidar']}",
                                 "-r", f"~/input/image:={topics['image']}",
                                 "-r", f"~/input/camera_info:={topics['camera_info']}"], ros_env, node_log))
        wait_for_line(rec_log, "ready")
        wait_for_line(node_log, "ready:", timeout=180)
        player = start_proc([str(LIB / "bag_player"), "--ros-args", "-p", f"bag:={drive}", "-p", "rate:=0.2",
                             "-p", "linger_s:=1.0"], ros_env, play_log)
        procs.append(player)
        assert player.wait(240) == 0, play_log.read_text() + node_log.read_text()
        rec = tmp_path / "rec" / (status_topic.strip("/").replace("/", "_") + ".jsonl")
        # The node may still be classifying the last pair: wait until the recording stops growing.
        deadline, seen, still = time.monotonic() + 60, -1, 0
        while time.monotonic() < deadline and still < 6:
            n = len(rec.read_text().splitlines()) if rec.exists() else 0
            still, seen = (still + 1, seen) if n == seen else (0, n)
            if n >= FRAMES:
                break
            time.sleep(0.5)
        assert procs[1].poll() is None, node_log.read_text()
    finally:
        stop(*procs)

    out = tmp_path / "score"
    code = replay_main([str(drive), "--checkpoint", str(ckpt), "--backend", "pytorch", "--recording", str(rec),
                        "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text())
    offline = {d["stamp_ns"]: d for d in json.loads((out / "offline_decisions.json").read_text())}
    agreement = summary["agreement"]
    assert code == 0 and agreement["agree"], agreement
    assert len(offline) == FRAMES and summary["offline"]["pairs_scored"] == FRAMES
    recorded = [json.loads(l) for l in rec.read_text().splitlines()]
    assert len(recorded) >= FRAMES // 2, f"only {len(recorded)} of {FRAMES} pairs processed in real time"
    # Every processed pair, independently of compare(): the node's float32 scores are the offline ones.
    for m in recorded:
        s = m["header"]["stamp"]["sec"] * 1_000_000_000 + m["header"]["stamp"]["nanosec"]
        assert m["calibrated_score"] == float(np.float32(offline[s]["calibrated_score"]))
        assert m["is_calibrated"] == offline[s]["is_calibrated"]
    assert agreement["compared"] == len(recorded)
    assert len(agreement["not_processed"]) == FRAMES - len(recorded)
    # Scored alike: the real-time run's counts are the offline ones restricted to the processed pairs.
    rt = summary["realtime"]
    assert rt["pairs_scored"] == len(recorded)
    assert sum(c["flagged"] for c in rt["counts"].values()) == sum(not offline[
        m["header"]["stamp"]["sec"] * 1_000_000_000 + m["header"]["stamp"]["nanosec"]]["is_calibrated"]
        for m in recorded)
    print("offline:", json.dumps(summary["offline"]), "\nrealtime:", json.dumps(rt))
    if ckpt == SHIPPED:  # the shipped classifier sees a 3 deg / 10 cm move (measured: all 8 pairs right)
        assert summary["offline"]["accuracy"] >= 0.75, summary["offline"]
