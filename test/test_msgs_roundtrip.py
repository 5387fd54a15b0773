"""awml_deploy_msgs over real DDS between two separate interpreters: every field round-trips exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ros_helpers import start_proc, stop, wait_for_line

pytestmark = pytest.mark.ros


def _spec() -> dict:
    rng = np.random.default_rng(7)
    objects = []
    for i in range(6):
        yaw = float(rng.uniform(-math.pi, math.pi))
        objects.append({
            "label": i + 1,  # CAR .. BICYCLE
            # float32 fields: use values exactly representable in float32 so "exact" is well defined
            "score": float(np.float32(rng.uniform(0.1, 1.0))),
            "position": [float(v) for v in rng.uniform(-80, 80, 3)],
            "quat_zw": [math.sin(yaw / 2), math.cos(yaw / 2)],
            "dims": [float(v) for v in rng.uniform(0.5, 12, 3)],
            "velocity": [float(v) for v in rng.uniform(-20, 20, 2)],
            "has_velocity": bool(i % 2),
        })
    return {"frame_id": "base_link", "stamp": [1_700_000_123, 456_789_000], "objects": objects}


def test_detected_objects_round_trip(tmp_path, ros_env):
    spec = _spec()
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    echo_log, pub_log = tmp_path / "echo.log", tmp_path / "pub.log"
    out = tmp_path / "received.jsonl"
    echo = start_proc(["echo_topic.py", "--topic", "/test/objects", "--type", "awml_deploy_msgs/msg/DetectedObjects",
                       "--out", str(out), "--count", "1", "--timeout", "60"], ros_env, echo_log)
    pub = None
    try:
        wait_for_line(echo_log, "ready")
        pub = start_proc(["publish_detected_objects.py", "--spec", str(tmp_path / "spec.json"),
                          "--topic", "/test/objects"], ros_env, pub_log)
        assert echo.wait(90) == 0, echo_log.read_text() + pub_log.read_text()
    finally:
        stop(*(p for p in (echo, pub) if p is not None))

    got = json.loads(out.read_text().splitlines()[0])
    assert got["header"]["frame_id"] == spec["frame_id"]
    assert [got["header"]["stamp"]["sec"], got["header"]["stamp"]["nanosec"]] == spec["stamp"]
    assert len(got["objects"]) == len(spec["objects"])
    for o, s in zip(got["objects"], spec["objects"]):
        assert o["label"] == s["label"]
        assert o["score"] == s["score"]
        p = o["pose"]["position"]
        assert [p["x"], p["y"], p["z"]] == s["position"]
        q = o["pose"]["orientation"]
        assert [q["x"], q["y"], q["z"], q["w"]] == [0.0, 0.0, *s["quat_zw"]]
        assert [o["dimensions"][k] for k in "xyz"] == s["dims"]
        assert [o["velocity"]["x"], o["velocity"]["y"], o["velocity"]["z"]] == [*s["velocity"], 0.0]
        assert o["has_velocity"] is s["has_velocity"]


def test_label_constants_follow_autoware():
    from awml_deploy_msgs.msg import DetectedObject

    assert (DetectedObject.UNKNOWN, DetectedObject.CAR, DetectedObject.TRUCK, DetectedObject.BUS,
            DetectedObject.TRAILER, DetectedObject.MOTORCYCLE, DetectedObject.BICYCLE,
            DetectedObject.PEDESTRIAN) == (0, 1, 2, 3, 4, 5, 6, 7)
