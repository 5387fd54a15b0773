"""calibration_status_node over real DDS: a publisher process, three nodes and a recorder in separate interpreters.

One drive, three nodes on the same inputs:
- ``calib_active`` (every pair; extrinsic chained from /tf_static; odometry gating): every status equals the
  offline pipeline's exactly; the synchronizer pairs exactly the published triples and drops (and counts) the
  lone clouds; malformed cloud / image / camera info are counted by kind; fast odometry suppresses inference;
- ``calib_manual`` (std_srvs/Trigger from the publisher process; extrinsic from parameters): no pair yet -> a
  failure answer, then an answer carrying the offline scores, and one status message;
- ``calib_periodic`` (0.5 s): statuses at the period within 10%, each equal to the offline pipeline's.
Plus: a bad parameter stops the node with one line; the launch file and its documented command.

Model: a small fixed-seed untrained classifier (base_channels 8, 64x96 images): fast on 2 cores.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ros_helpers import start_proc, stop, wait_for_line

ROOT = Path(__file__).resolve().parent.parent
PROCS = ROOT / "test" / "procs"
EXE = ROOT / "install" / "awml_deploy_nodes" / "lib" / "awml_deploy_nodes" / "calibration_status_node"
PREFIX = "/test/calib"
ODOM = "/test/calib/odometry"
T0 = 1_700_000_000 * 1_000_000_000
PERIOD_NS = 100_000_000
sys.path.insert(0, str(PROCS))

import calib_cases  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    import torch

    from awml_deploy_core.config import CalibrationStatusModelConfig
    from awml_deploy_core.models.calibration_status import build_calibration_status
    from awml_deploy_core.models.checkpoint import save_checkpoint

    cfg = CalibrationStatusModelConfig(base_channels=8, example_size=[calib_cases.H, calib_cases.W])
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = build_calibration_status(cfg)
    torch.random.set_rng_state(gen_state)
    return save_checkpoint(model, cfg, tmp_path_factory.mktemp("calib") / "tiny.pth")


def start_node(name: str, params: dict, env: dict, tmp: Path, extra: list[str] = ()) -> tuple[subprocess.Popen, Path]:
    pfile = tmp / f"{name}.param.yaml"
    pfile.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    log = tmp / f"{name}.log"
    remaps = [a for t in ("pointcloud", "image", "camera_info") for a in ("-r", f"~/input/{t}:={PREFIX}/{t}")]
    proc = start_proc([str(EXE), "--ros-args", "-r", f"__node:={name}", "--params-file", str(pfile), *remaps,
                       "-r", f"~/input/odometry:={ODOM}", *extra], env, log)
    return proc, log


def read_jsonl(tmp: Path, topic: str) -> list[dict]:
    path = tmp / "rec" / (topic.strip("/").replace("/", "_") + ".jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def last_values(diags: list[dict], node: str, task: str) -> dict[str, str]:
    from awml_deploy_nodes.diagnostics import values_of

    found = [st for msg in diags for st in msg["status"] if st["name"] == f"/{node}: {task}"]
    assert found, f"no '/{node}: {task}' status on /diagnostics"
    return values_of(found[-1])


def stamp_ns(msg: dict) -> int:
    return msg["header"]["stamp"]["sec"] * 1_000_000_000 + msg["header"]["stamp"]["nanosec"]


class Offline:
    """The evaluation-side pipeline on the same arrays the publisher sends."""

    def __init__(self, ckpt: Path) -> None:
        from awml_deploy_core.loader import load_pipeline

        self.loaded = load_pipeline(str(ckpt), "pytorch", "cpu")

    def __call__(self, seed: int, T: np.ndarray):
        image, points = calib_cases.arrays(seed)
        return self.loaded.pipeline(image, points, calib_cases.K, T)


def assert_equal_status(msg: dict, want, what: str) -> None:
    assert msg["is_calibrated"] == want.is_calibrated, what
    assert msg["calibrated_score"] == float(np.float32(want.calibrated_score)), what
    assert msg["miscalibrated_score"] == float(np.float32(want.miscalibrated_score)), what


def test_node_modes_sync_gating_and_parity(tmp_path, ros_env, tiny_ckpt):
    T = calib_cases.t_cam_lidar()
    common = {"checkpoint": str(tiny_ckpt), "backend": "pytorch", "diagnostics_period_s": 0.5,
              "processing_time_budget_ms": 5000.0}
    nodes = {
        "calib_active": {**common, "mode": "active", "use_odometry": True},
        "calib_manual": {**common, "mode": "manual", "extrinsic": T.reshape(-1).tolist()},
        "calib_periodic": {**common, "mode": "periodic", "period_s": 0.5, "extrinsic": T.reshape(-1).tolist(),
                           "publish_preview": True},
    }
    # Phase 1: 25 triples at 10 Hz (slow ego); a lone cloud 40 ms after triple 5 (unpairable: the next image is
    # 63 ms away, beyond the 50 ms slop); a malformed cloud, image and camera info after triple 10; a lone cloud
    # after the last triple (it releases the last pair, then is dropped itself). Phase 3: fast ego, 2 triples;
    # then a triple that releases the last one and stays pending.
    phase1 = [(1 + k, T0 + k * PERIOD_NS) for k in range(25)]
    plan: list[dict] = [{"op": "wait_subs", "count": len(nodes)}, {"op": "tf"},
                        {"op": "trigger", "service": "/calib_manual/trigger"},
                        {"op": "odom", "speed": 1.0, "yaw_rate": 0.01}, {"op": "sleep", "s": 0.3}]
    for k, (seed, ns) in enumerate(phase1):
        plan.append({"op": "triple", "seed": seed, "ns": ns})
        if k == 5:
            plan.append({"op": "cloud_only", "seed": 99, "ns": ns + 40_000_000})
        if k == 10:
            plan += [{"op": op, "ns": ns + 60_000_000} for op in ("bad_cloud", "bad_image", "bad_info")]
        plan.append({"op": "sleep", "s": 0.1})
    last = phase1[-1][1]
    plan += [{"op": "cloud_only", "seed": 98, "ns": last + PERIOD_NS}, {"op": "sleep", "s": 0.5},
             {"op": "trigger", "service": "/calib_manual/trigger"},
             {"op": "odom", "speed": 5.0, "yaw_rate": 0.01}, {"op": "sleep", "s": 0.3}]
    phase3 = [(31, last + 10 * PERIOD_NS), (32, last + 11 * PERIOD_NS), (40, last + 12 * PERIOD_NS)]
    for seed, ns in phase3:
        plan += [{"op": "triple", "seed": seed, "ns": ns}, {"op": "sleep", "s": 0.1}]
    plan.append({"op": "sleep", "s": 1.5})
    (tmp_path / "plan.json").write_text(json.dumps(plan))

    topics = {f"/{n}/output/calibration_status": "awml_deploy_msgs/msg/CalibrationStatus" for n in nodes}
    topics["/diagnostics"] = "diagnostic_msgs/msg/DiagnosticArray"
    topics["/calib_active/debug/inference_stats"] = "awml_deploy_msgs/msg/InferenceStats"
    topics["/calib_periodic/debug/preview"] = "sensor_msgs/msg/Image"
    procs = []
    try:
        rec_args = ["record_topics.py", "--out-dir", str(tmp_path / "rec")]
        for topic, type_name in topics.items():
            rec_args += ["--topic", f"{topic}={type_name}"]
        rec_log = tmp_path / "recorder.log"
        procs.append(start_proc(rec_args, ros_env, rec_log))
        logs = {}
        for name, params in nodes.items():
            p, logs[name] = start_node(name, params, ros_env, tmp_path)
            procs.append(p)
        wait_for_line(rec_log, "ready")
        for name in nodes:
            wait_for_line(logs[name], "ready:", timeout=180)
        pub_log = tmp_path / "pub.log"
        pub = start_proc(["publish_calib.py", "--plan", str(tmp_path / "plan.json"), "--prefix", PREFIX,
                          "--odom-topic", ODOM], ros_env, pub_log)
        procs.append(pub)
        assert pub.wait(240) == 0, pub_log.read_text() + "".join(l.read_text() for l in logs.values())
        for i, name in enumerate(nodes):
            assert procs[1 + i].poll() is None, logs[name].read_text()
    finally:
        stop(*procs)

    offline = Offline(tiny_ckpt)
    seed_of = {ns + calib_cases.IMAGE_OFFSET_NS: seed for seed, ns in phase1 + phase3}
    diags = read_jsonl(tmp_path, "/diagnostics")

    # --- active: every phase-1 pair classified (or replaced by a newer one, counted), each exactly the offline one
    got = read_jsonl(tmp_path, "/calib_active/output/calibration_status")
    assert got, (tmp_path / "calib_active.log").read_text()
    for msg in got:
        s = stamp_ns(msg)
        assert s in seed_of and seed_of[s] <= 25, f"status for stamp {s}: not a phase-1 pair"
        assert_equal_status(msg, offline(seed_of[s], T), f"calib_active at {s}")
        assert msg["header"]["frame_id"] == calib_cases.CAMERA_FRAME
        assert (msg["camera_frame_id"], msg["lidar_frame_id"]) == (calib_cases.CAMERA_FRAME, calib_cases.LIDAR_FRAME)
    stats = {stamp_ns(m): m for m in read_jsonl(tmp_path, "/calib_active/debug/inference_stats")}
    assert set(stats) == {stamp_ns(m) for m in got}
    for s, st in stats.items():
        assert (st["backend"], st["precision"]) == ("pytorch", "fp32")
        assert st["input_size"] == 1500 and st["output_count"] == offline(seed_of[s], T).projected_points > 0
        assert st["total_ms"] >= st["preprocess_ms"] + st["inference_ms"] + st["postprocess_ms"] - 1e-6
        assert 0 < st["queue_ms"] < 60_000
    sync = last_values(diags, "calib_active", "synchronizer")
    inputs = last_values(diags, "calib_active", "input")
    # The synchronizer, as its unit tests predict: 25 + 2 pairs out (the very last triple waits for a later
    # message), both lone clouds dropped as unmatched, nothing else dropped.
    assert int(sync["pairs"]) == 27, sync
    assert (int(sync["sync_dropped.unmatched"]), int(sync["sync_dropped.pointcloud"])) == (2, 2), sync
    assert int(sync["sync_dropped.overflow"]) == 0 and int(sync["sync_dropped.out_of_order"]) == 0, sync
    assert [int(sync[f"sync_pending.{n}"]) for n in ("pointcloud", "image", "camera_info")] == [1, 1, 1], sync
    assert int(sync["gated"]) == 2, sync  # phase 3's two pairs: the ego was fast
    assert int(sync["classified"]) == len(got) and len(got) + int(inputs["dropped_inputs"]) == 25, (sync, inputs)
    assert len(got) >= 20, f"only {len(got)} of 25 pairs classified"
    assert (int(inputs["malformed.cloud.missing_field"]), int(inputs["malformed.image.unsupported_encoding"]),
            int(inputs["malformed.camera_info.bad_k"])) == (1, 1, 1), inputs
    assert int(inputs["internal_error"]) == 0, inputs
    status = last_values(diags, "calib_active", "calibration_status")
    assert float(status["projected_points"]) > 0 and "inference_ms" in status and "confidence" in status
    last_status = [st for msg in diags for st in msg["status"] if st["name"] == "/calib_active: calibration_status"][-1]
    level = last_status["level"][0] if isinstance(last_status["level"], list) else last_status["level"]
    assert level == (0 if status["is_calibrated"] == "true" else 2), (level, status)  # OK / ERROR with the verdict

    # --- manual: the first trigger had no pair; the second answered with a pair's offline result
    answers = [json.loads(l) for l in pub_log.read_text().splitlines() if l.startswith("{")]
    assert [a["success"] for a in answers] == [False, True], answers
    assert "no synchronized" in answers[0]["message"]
    manual = read_jsonl(tmp_path, "/calib_manual/output/calibration_status")
    assert len(manual) == 1, manual
    s = stamp_ns(manual[0])
    want = offline(seed_of[s], T)
    assert_equal_status(manual[0], want, "calib_manual")
    assert f"calibrated_score={want.calibrated_score:.6f}" in answers[1]["message"]
    assert f"stamp={s // 1_000_000_000}.{s % 1_000_000_000:09d}" in answers[1]["message"]

    # --- periodic: one status per period (within 10%), each the offline result of its pair
    periodic = read_jsonl(tmp_path, "/calib_periodic/output/calibration_status")
    for msg in periodic:
        assert_equal_status(msg, offline(seed_of[stamp_ns(msg)], T), "calib_periodic")
    # ... and, with publish_preview, the image as the model saw it with the projected depth drawn over it
    previews = {stamp_ns(m): m for m in read_jsonl(tmp_path, "/calib_periodic/debug/preview")}
    assert set(previews) == {stamp_ns(m) for m in periodic}
    for s, m in previews.items():
        image, _ = calib_cases.arrays(seed_of[s])
        drawn = np.asarray(m["data"], np.uint8).reshape(m["height"], m["width"], 3)
        assert (m["encoding"], drawn.shape) == ("bgr8", image.shape)
        changed = int((drawn != image).any(axis=2).sum())
        assert 0 < changed <= offline(seed_of[s], T).filled_pixels  # only pixels a lidar point landed on
    times = [m["_receive_time_ns"] / 1e9 for m in periodic if seed_of[stamp_ns(m)] <= 25]
    gaps = np.diff(times)
    assert len(gaps) >= 3, times
    assert abs(statistics.mean(gaps) - 0.5) <= 0.05 and abs(statistics.median(gaps) - 0.5) <= 0.05, gaps


def test_bad_parameter_stops_with_one_line(tmp_path, ros_env, tiny_ckpt):
    proc, log = start_node("calib_bad", {"checkpoint": str(tiny_ckpt), "mode": "sometimes"}, ros_env, tmp_path)
    assert proc.wait(120) == 2
    lines = [l for l in log.read_text().splitlines() if l.strip()]
    assert lines == ["calibration_status_node: error: parameter 'mode': must be one of periodic, manual, active "
                     "(got 'sometimes')"], lines


def test_validate_params_unit():
    from awml_deploy_nodes.calibration_status_params import PARAM_NAMES, validate
    from awml_deploy_nodes.node_params import ParamError

    p = validate({})
    assert p.mode == "periodic" and p.period_s == 5.0 and p.extrinsic is None and p.sync_slop_ns == 50_000_000
    assert (p.max_speed_mps, p.max_yaw_rate_rps) == (3.0, 0.1745)
    assert validate({"extrinsic": [1, 2, 3, 0, 0, 0]}).extrinsic[:3, 3].tolist() == [1, 2, 3]
    for bad, text in (({"extrinsic": [1, 2]}, "'extrinsic'"), ({"period_s": 0}, "'period_s'"),
                      ({"sync_queue_size": 0}, "'sync_queue_size'"), ({"sync_slop_s": -1}, "'sync_slop_s'"),
                      ({"miscalibrated_threshold": 2}, "'miscalibrated_threshold'"), ({"nope": 1}, "unknown")):
        with pytest.raises(ParamError, match=text):
            validate(bad)
    params = yaml.safe_load((ROOT / "config" / "calibration_status_node.param.yaml").read_text())
    file_params = params["/**"]["ros__parameters"]
    assert set(file_params) == set(PARAM_NAMES)  # every parameter documented in the file, none unknown
    validate(file_params)


# --------------------------------------------------------------------------------------------- launch
# The static checks of launch/calibration_status.launch.py are test_launch_files.py's (its NODES / LAUNCH_FILES
# tables name this node's parameter module, topics and launch arguments).
def test_launch_file_is_in_the_launch_table():
    from test_launch_files import LAUNCH_FILES, NODES, LaunchFile

    assert LAUNCH_FILES["calibration_status.launch.py"] == "onnxruntime"
    assert NODES["calibration_status_node"].params == "awml_deploy_nodes.calibration_status_params"
    assert LaunchFile("calibration_status.launch.py").command()[0].endswith("/calibration_status_node")


def test_node_uses_the_shared_plumbing():
    """No mailbox, worker loop, parameter declaration, loader call, stats message or main() of its own:
    node_runtime's (as for centerpoint_node and yolox_node)."""
    src = (ROOT / "awml_deploy_nodes" / "awml_deploy_nodes" / "calibration_status_node.py").read_text()
    for own in ("class _Mailbox", "threading.Thread(", "def _work(", "rclpy.spin(", "executor.spin(",
                "declare_read_only(", "def _on_lost(", "load_pipeline(", "InferenceStats(", "run_main(",
                "except Exception"):
        assert own not in src, f"calibration_status_node defines {own!r} itself; node_runtime has it"
    params_src = (ROOT / "awml_deploy_nodes" / "awml_deploy_nodes" / "calibration_status_params.py").read_text()
    for shared in ('ParamSpec("bundle_dir"', 'ParamSpec("backend"', "_DEVICE", "def _fail("):
        assert shared not in params_src, f"calibration_status_params defines {shared!r}; node_params has it"


def test_documented_command_starts_the_node(tmp_path, ros_env, tiny_ckpt):
    from test_launch_files import LaunchFile

    cmd = LaunchFile("calibration_status.launch.py").command()
    cmd += ["-p", f"checkpoint:={tiny_ckpt}", "-p", "backend:=pytorch"]  # the shipped checkpoint may not exist
    log = tmp_path / "node.log"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ros_env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for_line(log, "ready:", timeout=120)
        line = next(l for l in log.read_text().splitlines() if "ready:" in l)
        assert re.search(r"pytorch .*mode periodic; extrinsic from /tf_static", line), line
    finally:
        stop(proc)


def test_camera_info_helpers():
    from sensor_msgs.msg import CameraInfo

    from awml_deploy_nodes.calibration_status_node import camera_matrix, distortion

    info = calib_cases.camera_info(0)
    np.testing.assert_array_equal(camera_matrix(info), calib_cases.K)
    assert distortion(info) is None  # all-zero plumb_bob: nothing to undo
    info.d = [0.1, 0.0, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(distortion(info), [0.1, 0, 0, 0, 0])
    info.distortion_model = "equidistant"  # not undone here (fisheye): left as it is
    assert distortion(info) is None
    for k, kind in (([0.0] * 9, "bad_k"), ([float("nan")] + [0.0] * 8, "bad_k")):
        bad = calib_cases.camera_info(0)
        bad.k = k
        with pytest.raises(ValueError, match=kind):
            camera_matrix(bad)
    empty = CameraInfo()
    with pytest.raises(ValueError, match="zero_size"):
        camera_matrix(empty)


def test_gate_reason():
    from awml_deploy_nodes.calibration_status_node import gate_reason
    from awml_deploy_nodes.calibration_status_params import validate

    on = validate({"use_odometry": True})
    assert gate_reason(validate({}), None, 0.0) is None  # gating off
    assert gate_reason(on, None, 0.0) == "no odometry received"
    assert gate_reason(on, (10.0, 2.99, 0.17), 10.5) is None  # just under both limits (3 m/s, 0.1745 rad/s)
    assert "speed" in gate_reason(on, (10.0, 3.0, 0.0), 10.5)
    assert "yaw rate" in gate_reason(on, (10.0, 0.0, 0.1745), 10.5)
    assert "old" in gate_reason(on, (10.0, 0.0, 0.0), 11.5)  # older than odometry_timeout_s (1 s)
