"""Camera drives in rosbags and the 2D replay (offline), through real bags (``rosbags``) and the real pipeline.

- make-bag --cameras: images decode to the rendered frames bit for bit, CameraInfo carries the intrinsics, the 2D
  ground truth (ignore regions included) round-trips through the topic and the sidecar alike, stamps = lidar stamps;
- the 2D replay of the bag gives exactly the COCO metrics of the same pipeline on the directly rendered frames
  (an independent path: no bag, no replay code), honours ignore regions per frame, and has the 3D replay's
  features: summary, criteria (exit 0/1), replay-compare, the node's thresholds, the fleet's aggregation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from awml_deploy_core.data.rosbag_camera import (GT_IGNORE_SCORE, GT_SCORE, camera_info_topic, gt2d_topic,
                                                 image_message, image_to_bgr, image_topic, read_detections2d,
                                                 read_images)
from awml_deploy_core.data.rosbag_io import BagReader, read_clouds, typestore, write_synthetic_bag

ROOT = Path(__file__).resolve().parents[2]
SEED, SECONDS, CAMERAS = 10_000, 1.0, 2
AWML = Path(sys.executable).parent / "awml-deploy"


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    root = tmp_path_factory.mktemp("cam")
    bag = write_synthetic_bag(root / "drive", SECONDS, SEED, progress=False, cameras=CAMERAS)
    return {"root": root, "bag": bag}


@pytest.fixture(scope="module")
def rendered():
    """Each camera's frames rendered directly (no bag), with the camera make-bag documents for it."""
    from awml_deploy_core.data.camera import CameraSpec, generate_camera_sequence
    from awml_deploy_core.data.rosbag_io import SYNTHETIC_START_S

    specs = [CameraSpec(), CameraSpec.forward(yaw_deg=180.0)]  # camera i of N looks along azimuth 360 i / N
    return {f"camera{i}": (s, list(generate_camera_sequence(SEED, int(SECONDS * 10), s, start_time=SYNTHETIC_START_S)))
            for i, s in enumerate(specs)}


@pytest.fixture(scope="module")
def cfg(drive):
    from awml_deploy_core.config import load_deploy_config

    path = drive["root"] / "yolox.yaml"
    data = yaml.safe_load((ROOT / "config" / "yolox.yaml").read_text())
    data.update(work_dir=str(drive["root"] / "work"), evaluate={"warmup": 1})
    path.write_text(yaml.safe_dump(data))
    return load_deploy_config(path)


@pytest.fixture(scope="module")
def offline(drive, cfg):
    from awml_deploy_core.replay.offline import replay_evaluate

    return replay_evaluate(drive["bag"].path, cfg, "onnxruntime", out_dir=drive["root"] / "off", progress=False)


def _lines(path: Path) -> list[dict]:
    return [json.loads(t) for t in path.read_text().splitlines()]


# --------------------------------------------------------------------------------------------- the bag
def test_make_bag_camera_round_trip(drive, rendered):
    bag = drive["bag"]
    assert bag.cameras == ("camera0", "camera1") and bag.camera_info_path.is_file()
    with BagReader(bag.path) as r:
        cloud_stamps = [s for s, _, _ in read_clouds(r, bag.lidar_topic)]
        for name, (spec, frames) in rendered.items():
            images = list(read_images(r, image_topic(name)))
            assert [s for s, _, _ in images] == cloud_stamps  # one image per cloud, the same instant
            for (_, log_ns, img), cf in zip(images, frames):
                assert img.dtype == np.uint8 and np.array_equal(img, cf.image)  # bit-exact
                assert np.any(img != images[0][2]) or cf is frames[0]  # the scene moves: frames differ
            topic = camera_info_topic(name)
            infos = [r.deserialize(raw, "sensor_msgs/msg/CameraInfo", topic, i)
                     for i, (_, raw) in enumerate(r.messages(topic))]
            assert len(infos) == len(frames)
            for info, s in zip(infos, cloud_stamps):
                assert info.header.stamp.sec * 10**9 + info.header.stamp.nanosec == s
                assert info.header.frame_id == f"{name}/camera_optical_link"
                assert (info.width, info.height) == (spec.width, spec.height)
                np.testing.assert_array_equal(info.k.reshape(3, 3), spec.K)
                np.testing.assert_array_equal(info.p.reshape(3, 4)[:, :3], spec.K)
                assert not info.p.reshape(3, 4)[:, 3].any() and not info.d.any()
                assert info.distortion_model == "plumb_bob"
            gts = read_detections2d(r, gt2d_topic(name))
            assert [s for s, _ in gts] == cloud_stamps
            n_ignored = 0
            for (_, g), cf in zip(gts, frames):
                np.testing.assert_array_equal(g.boxes, cf.boxes)
                np.testing.assert_array_equal(g.labels, cf.labels)
                np.testing.assert_array_equal(g.scores == GT_IGNORE_SCORE, cf.ignore)
                assert set(g.scores.tolist()) <= {GT_SCORE, GT_IGNORE_SCORE}
                n_ignored += int(cf.ignore.sum())
            assert n_ignored > 0  # the drive holds ignore regions, so the check above has teeth
    side = json.loads(bag.camera_info_path.read_text())
    assert side["metainfo"]["cameras"] == ["camera0", "camera1"]
    for e, s, cf in zip(side["data_list"], cloud_stamps, rendered["camera0"][1]):
        assert e["timestamp_ns"] == s
        inst = e["cam_instances"]["camera0"]
        assert [d["ignore_flag"] for d in inst] == cf.ignore.tolist()
        np.testing.assert_array_equal(np.array([d["bbox"] for d in inst], np.float32).reshape(-1, 4), cf.boxes)
        np.testing.assert_array_equal(np.array(e["images"]["camera0"]["cam2img"]), rendered["camera0"][0].K)


def test_image_decoding():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = typestore().deserialize_cdr(typestore().serialize_cdr(image_message(img, 1, "f"), "sensor_msgs/msg/Image"),
                                      "sensor_msgs/msg/Image")
    assert msg.encoding == "bgr8" and msg.step == 21 and np.array_equal(image_to_bgr(msg), img)
    T = typestore().types["sensor_msgs/msg/Image"]
    padded = np.zeros((5, 24), np.uint8)
    padded[:, :21] = img[:, :, ::-1].reshape(5, 21)
    rgb = T(header=msg.header, height=5, width=7, encoding="rgb8", is_bigendian=0, step=24, data=padded.reshape(-1))
    assert np.array_equal(image_to_bgr(rgb), img)
    mono = T(header=msg.header, height=5, width=7, encoding="mono8", is_bigendian=0, step=7,
             data=img[:, :, 1].reshape(-1).copy())
    assert np.array_equal(image_to_bgr(mono), np.repeat(img[:, :, 1:2], 3, axis=2))
    for bad, text in ((dict(encoding="yuv422"), "encoding"), (dict(step=20), "step"),
                      (dict(data=img.reshape(-1)[:100]), "bytes"), (dict(height=0), "empty")):
        kw = dict(header=msg.header, height=5, width=7, encoding="bgr8", is_bigendian=0, step=21,
                  data=img.reshape(-1)) | bad
        with pytest.raises(ValueError, match=text):
            image_to_bgr(T(**kw))


def test_frame_matching_rules():
    """TP by IoU >= 0.5 in score order, FP, FN, and a detection on an ignore region counting neither way."""
    from awml_deploy_core.data.rosbag_camera import Boxes2D
    from awml_deploy_core.metrics.detection2d import GroundTruth2D
    from awml_deploy_core.replay.camera2d import match_frame_2d

    gt = GroundTruth2D(np.array([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60]], np.float32),
                       np.array([1, 1, 1]), np.array([False, False, True]), 100, 100)
    dets = Boxes2D(np.array([[0, 0, 10, 10], [1, 0, 11, 10], [51, 51, 59, 59], [80, 80, 90, 90], [20, 0, 30, 10]],
                            np.float32), np.array([1, 1, 1, 1, 6]), np.array([0.9, 0.95, 0.8, 0.5, 0.9], np.float32))
    tp, fp, fn = match_frame_2d(dets, gt, 8, 0.35)
    # car: the 0.95 box takes gt 0 (IoU 0.82), the 0.9 duplicate is FP, the box inside the ignore region is
    # neither, the far box is FP; gt 1 (car) is missed; the pedestrian box on it is an FP of its own class
    assert (tp[1], fp[1], fn[1]) == (1, 2, 1) and (tp[6], fp[6], fn[6]) == (0, 1, 0)
    tp, fp, fn = match_frame_2d(dets, gt, 8, 0.85)  # below the score threshold: not counted
    assert (tp[1], fp[1], fn[1], fp[6]) == (1, 1, 1, 1)


# --------------------------------------------------------------------------------------------- offline replay
def test_offline_2d_replay_equals_direct_evaluation(drive, rendered, cfg, offline):
    from awml_deploy_core.loader import load_pipeline
    from awml_deploy_core.metrics.detection2d import GroundTruth2D, evaluate_coco

    s = offline.summary
    assert offline.exit_code == 0 and s["task"] == "detection2d" and s["image_topic"] == image_topic("camera0")
    assert "lidar_topic" not in s and s["counts"]["scored"] == int(SECONDS * 10)
    # independent path: the same pipeline on the directly rendered frames, scored by pycocotools
    pipeline = load_pipeline(cfg, "onnxruntime").pipeline
    frames = rendered["camera0"][1]
    dets = [pipeline(cf.image).detections for cf in frames]
    gts = [GroundTruth2D(cf.boxes, cf.labels, cf.ignore, cf.image.shape[0], cf.image.shape[1]) for cf in frames]
    ref = evaluate_coco(gts, dets, cfg.model.class_names)
    assert s["metrics"]["stats"] == pytest.approx(ref.stats, abs=0, rel=0)
    assert s["ap50"] == ref.stats["ap50"] and s["ap"] == ref.stats["map"]
    assert s["ap50"] >= 0.85 and s["ap50_per_class"]["car"] >= 0.7  # the shipped model on a held-out drive
    assert s["ground_truth"]["ignore_regions"] == sum(int(cf.ignore.sum()) for cf in frames) > 0
    lines = _lines(offline.out_dir / "frames.jsonl")
    for line, cf, d in zip(lines, frames, dets):
        assert line["num_detections"] == len(d) and line["num_gt_ignored"] == int(cf.ignore.sum())
        assert line["num_gt"] == int((~cf.ignore).sum()) == sum(line["tp"].values()) + sum(line["fn"].values())
        assert line["width"] == 640 and line["height"] == 384
    assert (offline.out_dir / "report.md").read_text().count("2D detection") == 1
    assert (offline.out_dir / "plots" / "ap_bars.png").is_file()


def test_sidecar_ground_truth_scores_the_same(drive, cfg, offline, tmp_path):
    from awml_deploy_core.replay.offline import replay_evaluate

    side = replay_evaluate(drive["bag"].path, cfg, "onnxruntime", gt_info=drive["bag"].camera_info_path,
                           out_dir=tmp_path / "side", progress=False)
    keys = ("tp", "fp", "fn", "num_gt", "num_gt_ignored", "num_detections")
    assert [{k: f[k] for k in keys} for f in _lines(side.out_dir / "frames.jsonl")] == \
           [{k: f[k] for k in keys} for f in _lines(offline.out_dir / "frames.jsonl")]
    assert side.summary["metrics"]["stats"] == offline.summary["metrics"]["stats"]


def test_criteria_compare_and_node_thresholds(drive, cfg, offline, tmp_path):
    from awml_deploy_core.errors import ArtifactError, ConfigError
    from awml_deploy_core.replay.criteria import ReplayCriteria, load_criteria
    from awml_deploy_core.replay.offline import node_thresholds, replay_evaluate
    from awml_deploy_core.replay.report import compare_runs

    bag = drive["bag"].path
    crit = load_criteria(ROOT / "config" / "replay_criteria_2d.yaml")
    ok = replay_evaluate(bag, cfg, "onnxruntime", criteria=crit, out_dir=tmp_path / "ok", progress=False)
    assert ok.exit_code == 0 and ok.summary["passed"] and "AP car (AP50) >= 0.7" in [g["name"] for g in
                                                                                  ok.summary["gates"]]
    high = ReplayCriteria(min_ap={"car": 0.999}, ap_metric="ap")
    bad = replay_evaluate(bag, cfg, "onnxruntime", criteria=high, out_dir=tmp_path / "bad", progress=False)
    assert bad.exit_code == 1 and [g["passed"] for g in bad.summary["gates"]] == [True, False]
    with pytest.raises(ConfigError, match="ap_threshold_m is a 3D criterion"):
        replay_evaluate(bag, cfg, criteria=ReplayCriteria(ap_threshold_m=2.0, min_map=0.5), progress=False)
    # the node's thresholds: fewer detections, all at or above the node's score threshold, same ground truth
    node = replay_evaluate(bag, node_thresholds(cfg), "onnxruntime", out_dir=tmp_path / "node", progress=False)
    a, b = _lines(offline.out_dir / "frames.jsonl"), _lines(node.out_dir / "frames.jsonl")
    assert all(y["num_detections"] <= x["num_detections"] for x, y in zip(a, b))
    assert sum(y["num_detections"] for y in b) < sum(x["num_detections"] for x in a)
    assert all(y["num_detections"] == y["num_detections_at_threshold"] for y in b)
    # replay-compare: a run against itself is no regression; a drop beyond the allowed one is a regression
    code, res = compare_runs(offline.out_dir, offline.out_dir, tmp_path / "cmp0")
    assert code == 0 and res["rows"][0][:3] == ["AP50", f"{offline.summary['ap50']:.4f}"] * 1 + [
        f"{offline.summary['ap50']:.4f}"] and (tmp_path / "cmp0" / "compare.md").is_file()
    worse = tmp_path / "worse"
    worse.mkdir()
    (worse / "summary.json").write_text(json.dumps({**offline.summary, "ap50": offline.summary["ap50"] - 0.05}))
    code, res = compare_runs(offline.out_dir, worse, tmp_path / "cmp1")
    assert code == 1 and res["gates"][1]["name"] == "AP50 drop <= 0.01" and not res["gates"][1]["passed"]
    three_d = tmp_path / "3d"
    three_d.mkdir()
    (three_d / "summary.json").write_text(json.dumps({**offline.summary, "task": "detection3d"}))
    with pytest.raises(ArtifactError, match="compare runs of one kind"):
        compare_runs(offline.out_dir, three_d, tmp_path / "cmp2")


def test_cli_replay_eval_and_fleet_on_camera_bag(drive, cfg, offline, tmp_path):
    """The command line picks the camera topic for a 2D config; the fleet aggregates 2D evidence the same way."""
    from awml_deploy_core.replay.fleet import FleetSettings, fleet_evaluate

    cfg_path = drive["root"] / "yolox.yaml"
    r = subprocess.run([str(AWML), "replay-eval", str(drive["bag"].path), "--config", str(cfg_path), "--out",
                        str(tmp_path / "cli"), "--max-frames", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "AP50" in r.stdout, r.stderr
    r = subprocess.run([str(AWML), "replay-eval", str(drive["bag"].path), "--config", str(cfg_path), "--lidar-topic",
                        "/x"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "give --image-topic" in r.stderr
    fleet = fleet_evaluate([drive["bag"].path], cfg, FleetSettings(lidar_topic=image_topic("camera1")),
                           out_dir=tmp_path / "fleet", progress=False)
    assert fleet.exit_code == 0 and fleet.summary["task"] == "detection2d"
    single = json.loads((tmp_path / "fleet" / "summary.json").read_text())
    assert single["image_topic"] == image_topic("camera1") and single["counts"]["scored"] == int(SECONDS * 10)
    assert single["fleet"]["headline"] == "AP50"  # the per-bag table names the 2D headline, not mAP@2m
    report = (tmp_path / "fleet" / "report.md").read_text()
    assert "AP50 (this bag)" in report and "mAP@2m" not in report
