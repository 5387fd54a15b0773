"""Real-time 2D replay over real DDS: bag_player (camera topic) -> yolox_node -> output_recorder, separate processes.

Acceptance (issue 11, replay): a generated drive with a camera is scored offline, then in real time at a slow rate,
and both agree on every frame processed in both: same TP/FP/FN per class, same number of detections, and the
node's Detections2D equal the offline pipeline's detections box for box (the offline run for the check uses the
node's post-processing thresholds, as the node does). The drive is 1 s (10 images) to keep the module short.
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
CLI = LIB / "replay_evaluation"
AWML = Path(sys.executable).parent / "awml-deploy"
SECONDS = 1.0
IMAGE = "/sensing/camera/camera0/image_raw"

pytestmark = pytest.mark.skipif(not (LIB / "yolox_node").is_file(),
                                reason="yolox_node is not installed in this workspace (written on branch wt/yoloxnode)")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rt2d")
    bag = root / "drive"
    subprocess.run([str(AWML), "make-bag", str(bag), "--seconds", str(SECONDS), "--seed", "10000", "--camera"],
                   check=True, capture_output=True, timeout=300)
    data = yaml.safe_load((ROOT / "config" / "yolox.yaml").read_text())
    data.update(work_dir=str(root / "work"), evaluate={"warmup": 1})
    cfg_path = root / "yolox.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    return {"root": root, "bag": bag, "cfg_path": cfg_path}


def _lines(path: Path) -> list[dict]:
    return [json.loads(t) for t in path.read_text().splitlines()]


@pytest.mark.ros
def test_camera_drive_offline_then_realtime_agree(setup, ros_env, tmp_path):
    from awml_deploy_core.config import load_deploy_config
    from awml_deploy_core.data.rosbag_camera import read_detections2d, read_images
    from awml_deploy_core.data.rosbag_io import BagReader
    from awml_deploy_core.loader import load_pipeline
    from awml_deploy_core.replay.offline import node_thresholds

    n = int(SECONDS * 10)
    # offline first (the evaluation thresholds): the drive is scored, AP plausible for the shipped model
    off = tmp_path / "offline"
    p = subprocess.run([str(AWML), "replay-eval", str(setup["bag"]), "--config", str(setup["cfg_path"]), "--out",
                        str(off)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "AP50" in p.stdout, p.stdout + p.stderr
    s_off = json.loads((off / "summary.json").read_text())
    assert s_off["counts"]["scored"] == n and s_off["ap50"] >= 0.85

    # real time at a slow rate (0.3: 333 ms per image; the node needs ~100-250 ms here), checked against an offline
    # run with the node's thresholds, which --check-offline makes when the folder holds none
    out, check = tmp_path / "rt", tmp_path / "offline_node"
    crit = tmp_path / "crit.yaml"
    crit.write_text(yaml.safe_dump({"min_map": 0.5, "max_dropped_percent": 100}))
    p = subprocess.run([str(CLI), str(setup["bag"]), "--config", str(setup["cfg_path"]), "--backend", "onnxruntime",
                        "--rate", "0.3", "--out", str(out), "--check-offline", str(check), "--criteria", str(crit)],
                       cwd=ROOT, env=ros_env, capture_output=True, text=True, timeout=400)
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    s = json.loads((out / "summary.json").read_text())
    rt = s["realtime"]
    assert s["mode"] == "realtime" and s["task"] == "detection2d" and s["image_topic"] == IMAGE, text
    assert rt["inputs_sent"] == n and rt["inputs_recorded"] == n and s["counts"]["frames"] == n
    assert rt["outputs"] == s["counts"]["scored"] >= n // 2, text  # a loaded machine may drop a few
    a = s["offline_agreement"]
    assert a["compared"] == s["counts"]["scored"] and a["mismatched"] == [] and a["identical"] == a["compared"]
    assert any(g["name"].startswith("identical to offline") and g["passed"] for g in s["gates"])
    assert "end_to_end" in s["latency_ms"] and s["ap50"] is not None

    # box for box: the node's Detections2D == the offline pipeline's with the node's thresholds
    cfg = node_thresholds(load_deploy_config(setup["cfg_path"]))
    pipeline = load_pipeline(cfg, "onnxruntime").pipeline
    with BagReader(setup["bag"]) as r:
        offline = {st: pipeline(img).detections for st, _, img in read_images(r, IMAGE)}
    with BagReader(out / "recording") as r:
        topic = next(t for t, v in r.topics.items() if v.msgtype == "awml_deploy_msgs/msg/Detections2D")
        recorded = dict(read_detections2d(r, topic, "detections"))
        assert {v.msgtype for v in r.topics.values()} == {"sensor_msgs/msg/Image", "awml_deploy_msgs/msg/Detections2D",
                                                           "awml_deploy_msgs/msg/InferenceStats"}
    total = 0
    for f in _lines(out / "frames.jsonl"):
        if f["status"] != "scored":
            continue
        a_, b_ = offline[f["stamp_ns"]], recorded[f["stamp_ns"]]
        assert len(a_) == len(b_)
        order_a, order_b = np.lexsort((a_.labels, -a_.scores)), np.lexsort((b_.labels, -b_.scores))
        np.testing.assert_array_equal(a_.boxes[order_a].astype(np.float32), b_.boxes[order_b])
        np.testing.assert_array_equal(a_.scores[order_a].astype(np.float32), b_.scores[order_b])
        np.testing.assert_array_equal(a_.labels[order_a], b_.labels[order_b])
        total += len(a_)
    assert total > 0
