"""centerpoint_node over real DDS: publisher, node(s) and recorder in separate interpreters.

- exactness: per stamp, the published detections equal the offline CenterPointPipeline's (pytorch and
  onnxruntime), message for message;
- malformed input: 11 malformed kinds and 4 unusual-but-valid clouds; the node stays up, counts each on
  /diagnostics and still answers the next good cloud exactly;
- overload (slow): 5x the node's throughput for 30 s: bounded memory and latency, drops on /diagnostics;
- start-up: a bad parameter stops the node with one line and a non-zero exit.

Model: the shipped checkpoint when it exists (exactness test), else, and for the other tests, a small
fixed-seed untrained CenterPoint (fast on 2 cores; its scores sit near 0.101, so score_threshold 0.1008 keeps
a few dozen boxes per frame).
"""

from __future__ import annotations

import importlib.util
import json
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
EXE = ROOT / "install" / "awml_deploy_nodes" / "lib" / "awml_deploy_nodes" / "centerpoint_node"
SHIPPED = ROOT / "awml_deploy_core" / "awml_deploy_core" / "checkpoints" / "centerpoint_small.pth"
INPUT = "/test/pointcloud"
SMALL_THRESHOLD = 0.1008
sys.path.insert(0, str(PROCS))

import cloud_cases  # noqa: E402

pytestmark = pytest.mark.ros


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    from awml_deploy_nodes.bench_node import small_checkpoint

    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pth")


@pytest.fixture(scope="module")
def small_bundle(small_ckpt, tmp_path_factory) -> Path:
    """A real export bundle (awml-deploy export's job, verification and evaluation off)."""
    from awml_deploy_core.config import DeployConfig
    from awml_deploy_core.deploy import run_deploy
    from awml_deploy_nodes.bench_node import small_model_config

    work = tmp_path_factory.mktemp("bundle")
    cfg = DeployConfig.model_validate({"model": small_model_config().model_dump(), "checkpoint": str(small_ckpt),
                                       "work_dir": str(work), "data": {"num_frames": 1},
                                       "verify": {"enabled": False}, "evaluate": {"enabled": False}})
    assert run_deploy(cfg, progress=False) == 0
    return work


def start_node(name: str, params: dict, env: dict, tmp: Path) -> tuple[subprocess.Popen, Path]:
    pfile = tmp / f"{name}.param.yaml"
    pfile.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    log = tmp / f"{name}.log"
    proc = start_proc([str(EXE), "--ros-args", "-r", f"__node:={name}", "--params-file", str(pfile),
                       "-r", f"~/input/pointcloud:={INPUT}"], env, log)
    return proc, log


def start_recorder(topics: dict[str, str], env: dict, tmp: Path) -> tuple[subprocess.Popen, Path]:
    log = tmp / "recorder.log"
    args = ["record_topics.py", "--out-dir", str(tmp / "rec")]
    for topic, type_name in topics.items():
        args += ["--topic", f"{topic}={type_name}"]
    return start_proc(args, env, log), log


def read_jsonl(tmp: Path, topic: str) -> list[dict]:
    path = tmp / "rec" / (topic.strip("/").replace("/", "_") + ".jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def by_stamp(msgs: list[dict]) -> dict[tuple[int, int], dict]:
    out: dict[tuple[int, int], dict] = {}
    for m in msgs:
        out.setdefault((m["header"]["stamp"]["sec"], m["header"]["stamp"]["nanosec"]), m)
    return out


def input_status(diags: list[dict], node: str) -> dict[str, str]:
    from awml_deploy_nodes.diagnostics import values_of

    for msg in reversed(diags):
        for st in msg["status"]:
            if st["name"] == f"{node}: input":
                return values_of(st)
    raise AssertionError(f"no '{node}: input' status on /diagnostics")


def statuses(diags: list[dict], node: str, task: str) -> list[dict]:
    return [st for msg in diags for st in msg["status"] if st["name"] == f"{node}: {task}"]


def expected_objects(pipeline, msg, class_names, with_velocity: bool, frame_id: str | None = None) -> dict:
    """What the node must publish for `msg`: the offline pipeline's boxes, converted the same way."""
    from std_msgs.msg import Header

    from awml_deploy_nodes.conversions import boxes_to_detected_objects, pointcloud2_to_xyzit
    from awml_deploy_nodes.msg_dict import message_to_dict

    points, _ = pointcloud2_to_xyzit(msg)
    dets = pipeline(points).detections
    header = Header(stamp=msg.header.stamp, frame_id=frame_id or msg.header.frame_id)
    return message_to_dict(boxes_to_detected_objects(dets, class_names, header, with_velocity))


def offline_pipelines(ckpt: Path, threshold: float | None, onnx_dir: Path | None):
    """The evaluation-side pipelines, built from core helpers only (independently of the node's code)."""
    from awml_deploy_core.backends.base import RunnerSet
    from awml_deploy_core.backends.onnxruntime_backend import OrtGraphRunner
    from awml_deploy_core.loader import torch_runners
    from awml_deploy_core.bundle import Bundle
    from awml_deploy_core.models.checkpoint import load_checkpoint
    from awml_deploy_core.pipelines.centerpoint.pipeline import CenterPointPipeline

    model, cfg = load_checkpoint(ckpt)
    if threshold is not None:
        cfg = cfg.model_copy(update={"score_threshold": threshold, "class_score_thresholds": None})
    out = {"pytorch": CenterPointPipeline(cfg, torch_runners(model, cfg, "cpu"), "cpu")}
    if onnx_dir is not None:
        b = Bundle.open(onnx_dir)
        ort = RunnerSet({k: OrtGraphRunner(b.verify(k), f"ort:{k}") for k in ("encoder", "head")}, "onnxruntime")
        out["onnxruntime"] = CenterPointPipeline(cfg, ort, "cpu")
    return out, cfg


# --------------------------------------------------------------------------------------------- exactness
def test_detections_equal_offline_pipeline(tmp_path, ros_env, small_ckpt):
    shipped = SHIPPED.is_file()
    ckpt = SHIPPED if shipped else small_ckpt
    threshold = None if shipped else SMALL_THRESHOLD
    common = {"checkpoint": str(ckpt), "processing_time_budget_ms": 5000.0}
    if threshold is not None:
        common["score_threshold"] = threshold
    cache = tmp_path / "onnx_cache"
    nodes = {
        "cp_torch": {**common, "backend": "pytorch"},
        # onnxruntime from the checkpoint alone: exported on the fly into the cache; frame_id override
        "cp_ort": {**common, "backend": "onnxruntime", "onnx_cache_dir": str(cache), "frame_id": "base_link"},
    }
    topics = {f"/{n}/output/objects": "awml_deploy_msgs/msg/DetectedObjects" for n in nodes}
    topics.update({f"/{n}/debug/inference_stats": "awml_deploy_msgs/msg/InferenceStats" for n in nodes})
    topics["/diagnostics"] = "diagnostic_msgs/msg/DiagnosticArray"
    plan = [{"case": "plain", "seed": 100 + i, "stamp": [1_700_000_000 + i, 1000 * i], "wait": "output"}
            for i in range(3)]
    (tmp_path / "plan.json").write_text(json.dumps(plan))

    procs = []
    try:
        rec, rec_log = start_recorder(topics, ros_env, tmp_path)
        procs.append(rec)
        logs = {}
        for name, params in nodes.items():
            p, logs[name] = start_node(name, params, ros_env, tmp_path)
            procs.append(p)
        wait_for_line(rec_log, "ready")
        for name in nodes:
            wait_for_line(logs[name], "ready:", timeout=180)
        pub_log = tmp_path / "pub.log"
        pub = start_proc(["publish_clouds.py", "--topic", INPUT, "--plan", str(tmp_path / "plan.json"),
                          "--objects-topics", ",".join(f"/{n}/output/objects" for n in nodes)], ros_env, pub_log)
        procs.append(pub)
        assert pub.wait(240) == 0, pub_log.read_text() + "".join(l.read_text() for l in logs.values())
        time.sleep(1.5)  # one more diagnostics period
        for name in nodes:
            assert procs[1 + list(nodes).index(name)].poll() is None, logs[name].read_text()
    finally:
        stop(*procs)

    onnx_dirs = [p.parent for p in cache.glob("*/manifest.json")]
    assert len(onnx_dirs) == 1, f"expected one on-the-fly ONNX export in {cache}: {onnx_dirs}"
    pipelines, cfg = offline_pipelines(ckpt, threshold, onnx_dirs[0])
    names = list(cfg.class_names)
    boxes_seen = 0
    for name, backend in (("cp_torch", "pytorch"), ("cp_ort", "onnxruntime")):
        got = by_stamp(read_jsonl(tmp_path, f"/{name}/output/objects"))
        stats = by_stamp(read_jsonl(tmp_path, f"/{name}/debug/inference_stats"))
        frame_id = nodes[name].get("frame_id")
        for item in plan:
            stamp = tuple(item["stamp"])
            msg = cloud_cases.build(item["case"], item["seed"], stamp)
            want = expected_objects(pipelines[backend], msg, names, cfg.with_velocity, frame_id)
            assert stamp in got, f"{name}: no output for stamp {stamp}"
            have = {k: v for k, v in got[stamp].items() if k != "_receive_time_ns"}
            assert have["header"] == want["header"]
            assert have["objects"] == want["objects"], f"{name} ({backend}) differs from offline at {stamp}"
            boxes_seen += len(want["objects"])
            s = stats[stamp]
            assert (s["backend"], s["precision"]) == (backend, "fp32")
            assert s["input_size"] == msg.width * msg.height and s["output_count"] == len(want["objects"])
            assert s["total_ms"] >= s["preprocess_ms"] + s["inference_ms"] + s["postprocess_ms"] - 1e-6
            assert 0 < s["queue_ms"] < 60_000  # callback -> worker: measured, never the message default 0
        diags = read_jsonl(tmp_path, "/diagnostics")
        values = input_status(diags, f"/{name}")
        assert int(values["received"]) >= len(plan) and int(values["internal_error"]) == 0
        inference = statuses(diags, f"/{name}", "inference")
        assert inference and any(int(dict((kv["key"], kv["value"]) for kv in st["values"])["frames_processed"])
                                 >= len(plan) for st in inference)
    assert boxes_seen > 0, "no detections at all: the comparison would be vacuous"


# --------------------------------------------------------------------------------------------- malformed input
def test_malformed_clouds_are_counted_and_node_keeps_answering(tmp_path, ros_env, small_bundle, small_ckpt):
    name = "cp_bad"
    params = {"bundle_dir": str(small_bundle), "backend": "onnxruntime", "score_threshold": SMALL_THRESHOLD,
              "processing_time_budget_ms": 5000.0, "diagnostics_period_s": 0.5,
              "max_points": cloud_cases.NODE_MAX_POINTS}
    cases = [c for c in cloud_cases.CASES if c != "plain"]
    plan = [{"case": "plain", "seed": 200, "wait": "output"}]
    for c in cases:
        spec = cloud_cases.CASES[c]
        plan.append({"case": c, "seed": 201, "wait": "output" if spec.expect == "output" else f"diag:{spec.diag}"})
    plan.append({"case": "plain", "seed": 202, "wait": "output"})
    for i, item in enumerate(plan):
        item["stamp"] = [1_700_001_000 + i, 0]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    topics = {f"/{name}/output/objects": "awml_deploy_msgs/msg/DetectedObjects",
              "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray"}
    procs = []
    try:
        rec, rec_log = start_recorder(topics, ros_env, tmp_path)
        node, node_log = start_node(name, params, ros_env, tmp_path)
        procs += [rec, node]
        wait_for_line(rec_log, "ready")
        wait_for_line(node_log, "ready:", timeout=120)
        pub_log = tmp_path / "pub.log"
        pub = start_proc(["publish_clouds.py", "--topic", INPUT, "--plan", str(tmp_path / "plan.json"),
                          "--objects-topics", f"/{name}/output/objects", "--diag-node", f"/{name}"], ros_env, pub_log)
        procs.append(pub)
        assert pub.wait(240) == 0, pub_log.read_text() + node_log.read_text()
        time.sleep(2.5)  # the counters of the last clouds reach /diagnostics
        assert node.poll() is None, "the node died:\n" + node_log.read_text()
    finally:
        stop(*procs)

    values = input_status(read_jsonl(tmp_path, "/diagnostics"), f"/{name}")
    kinds = set()
    for c in cases:
        spec = cloud_cases.CASES[c]
        tries = sum(1 for line in pub_log.read_text().splitlines() if line.startswith(f"published {c} "))
        assert 1 <= int(values[spec.diag]) <= tries, f"{spec.diag}: {values[spec.diag]} ({c} published {tries}x)"
        if spec.expect == "malformed":
            kinds.add(spec.diag)
    assert len(kinds) >= 10
    assert int(values["malformed_total"]) >= len(kinds)
    assert int(values["internal_error"]) == 0
    assert int(values["non_finite_points_dropped"]) > 0
    warnings = [l for l in node_log.read_text().splitlines() if "malformed PointCloud2" in l]
    assert 1 <= len(warnings) < len(kinds), "malformed warnings must be throttled"

    # Every cloud that was valid got an exact answer, the good cloud after all the bad ones included.
    pipelines, cfg = offline_pipelines(small_ckpt, SMALL_THRESHOLD, small_bundle)
    got = by_stamp(read_jsonl(tmp_path, f"/{name}/output/objects"))
    for item in plan:
        if cloud_cases.CASES[item["case"]].expect != "output":
            assert tuple(item["stamp"]) not in got
            continue
        msg = cloud_cases.build(item["case"], item["seed"], tuple(item["stamp"]))
        want = expected_objects(pipelines["onnxruntime"], msg, list(cfg.class_names), cfg.with_velocity)
        have = got[tuple(item["stamp"])]
        assert have["objects"] == want["objects"], item["case"]
        if item["case"] == "empty":
            assert have["objects"] == []
    # A big-endian cloud is read correctly: the same detections as its little-endian twin.
    plain_points = cloud_cases.synthetic_points(201)
    from awml_deploy_nodes.conversions import pointcloud2_to_xyzit

    le, _ = pointcloud2_to_xyzit(cloud_cases.plain(plain_points))
    be, _ = pointcloud2_to_xyzit(cloud_cases.big_endian(plain_points))
    assert np.array_equal(le, be)


# --------------------------------------------------------------------------------------------- overload
def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_overload_keeps_memory_and_latency_bounded(tmp_path, ros_env, small_bundle):
    name = "cp_load"
    params = {"bundle_dir": str(small_bundle), "backend": "onnxruntime", "score_threshold": SMALL_THRESHOLD,
              "processing_time_budget_ms": 10.0}  # below any frame time here: WARN on /diagnostics
    topics = {f"/{name}/output/objects": "awml_deploy_msgs/msg/DetectedObjects",
              f"/{name}/debug/inference_stats": "awml_deploy_msgs/msg/InferenceStats",
              "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray"}
    seeds = [300, 301, 302]
    calib = [{"case": "plain", "seed": s, "stamp": [1_700_002_000 + i, 0], "wait": "output"}
             for i, s in enumerate(seeds * 2)]
    (tmp_path / "calib.json").write_text(json.dumps(calib))
    procs = []
    rss: list[tuple[float, int]] = []
    try:
        rec, rec_log = start_recorder(topics, ros_env, tmp_path)
        node, node_log = start_node(name, params, ros_env, tmp_path)
        procs += [rec, node]
        wait_for_line(rec_log, "ready")
        wait_for_line(node_log, "ready:", timeout=120)
        # 1. throughput, paced (also the warm-up)
        clog = tmp_path / "calib.log"
        cal = start_proc(["publish_clouds.py", "--topic", INPUT, "--plan", str(tmp_path / "calib.json"),
                          "--objects-topics", f"/{name}/output/objects"], ros_env, clog)
        procs.append(cal)
        assert cal.wait(180) == 0, clog.read_text() + node_log.read_text()
        frame_ms = statistics.median(s["total_ms"] for s in read_jsonl(tmp_path, f"/{name}/debug/inference_stats"))
        rate = 5.0 * 1000.0 / frame_ms
        # 2. five times that for 30 s
        duration = 30.0
        flog = tmp_path / "flood.log"
        flood = start_proc(["publish_clouds.py", "--topic", INPUT, "--rate", f"{rate:.3f}", "--duration",
                            str(duration), "--seeds", ",".join(map(str, seeds)), "--out", str(tmp_path / "sent.jsonl")],
                           ros_env, flog)
        procs.append(flood)
        wait_for_line(flog, "publishing", timeout=60)
        t0 = time.monotonic()
        while flood.poll() is None and time.monotonic() - t0 < duration + 30:
            rss.append((time.monotonic() - t0, _rss_kib(node.pid)))
            time.sleep(0.5)
        assert flood.wait(30) == 0, flog.read_text()
        time.sleep(2.0 * frame_ms / 1000.0 + 1.5)  # the last frame is out, one more diagnostics period
        assert node.poll() is None, "the node died:\n" + node_log.read_text()
    finally:
        stop(*procs)

    sent = [json.loads(l) for l in (tmp_path / "sent.jsonl").read_text().splitlines()]
    out = [m for m in read_jsonl(tmp_path, f"/{name}/output/objects")
           if m["header"]["stamp"]["sec"] > 1_700_100_000]  # the flood's stamps are wall-clock times
    stamps = [m["header"]["stamp"]["sec"] * 10**9 + m["header"]["stamp"]["nanosec"] for m in out]
    latency_ms = sorted((m["_receive_time_ns"] - s) / 1e6 for m, s in zip(out, stamps))
    p99 = latency_ms[min(len(latency_ms) - 1, int(0.99 * len(latency_ms)))]
    # The node's own per-frame time while flooded (it shares 2 cores with the flooding publisher).
    flood_ms = statistics.median(s["total_ms"] for s in read_jsonl(tmp_path, f"/{name}/debug/inference_stats")
                                 if s["header"]["stamp"]["sec"] > 1_700_100_000)
    base = [kib for t, kib in rss if t >= 5.0][0]
    end = rss[-1][1]
    values = input_status(read_jsonl(tmp_path, "/diagnostics"), f"/{name}")
    inference = statuses(read_jsonl(tmp_path, "/diagnostics"), f"/{name}", "inference")
    summary = (f"frame {frame_ms:.0f} ms (flooded: {flood_ms:.0f} ms), rate {rate:.1f} Hz, sent {len(sent)}, processed {len(out)}, "
               f"latency p50 {latency_ms[len(latency_ms) // 2]:.0f} / p99 {p99:.0f} / max {latency_ms[-1]:.0f} ms, "
               f"RSS {base / 1024:.0f} -> {end / 1024:.0f} MiB (max {max(k for _, k in rss) / 1024:.0f}), "
               f"diagnostics received {values['received']} dropped {values['dropped_inputs']} "
               f"input_gaps {values['input_gaps']} lost {values['transport_lost']}")
    print(summary)
    (tmp_path / "summary.txt").write_text(summary)

    assert stamps == sorted(stamps), "frames must come out in order"
    assert len(out) >= 0.5 * duration * 1000.0 / flood_ms, summary  # busy all along, not stalled
    assert len(out) < 0.6 * len(sent), summary  # most clouds were skipped: the node kept up with the newest
    assert end < 1.10 * base, summary
    assert p99 < 3.0 * flood_ms + 200.0, summary  # newest cloud wins: about 2 frame times, never a backlog
    assert int(values["dropped_inputs"]) >= 0.3 * len(sent), summary
    assert int(values["received"]) + int(values["transport_lost"]) <= len(sent) + len(calib) + 5
    if values["input_gaps"] != "n/a":  # every cloud sent is accounted for: received or seen missing
        assert int(values["received"]) + int(values["input_gaps"]) >= len(sent) + len(calib) - 2, summary
    assert int(values["internal_error"]) == 0
    assert any(st["level"] == [1] for st in inference), "over-budget frames must raise WARN"
    assert any(st["level"] == [1] for st in statuses(read_jsonl(tmp_path, "/diagnostics"), f"/{name}", "input"))


# --------------------------------------------------------------------------------------------- start-up
@pytest.mark.parametrize("params, rc, text", [
    ({"backend": "tflite"}, 2, "parameter 'backend': must be one of pytorch, onnxruntime, onnxruntime_int8, tensorrt (got 'tflite')"),
    ({"score_threshold": 1.5}, 2, "parameter 'score_threshold'"),
    ({"scor_threshold": 0.3}, 2, "unknown parameter(s) ['scor_threshold']"),
    ({"checkpoint": "/nonexistent/model.pth"}, 3, "parameter 'checkpoint': /nonexistent/model.pth: checkpoint not found"),
    ({"backend": "tensorrt", "bundle_dir": "/tmp"}, 3, "tensorrt"),
    ({"publish_autoware_objects": True}, 2, "autoware_perception_msgs is not importable"),
])
def test_bad_parameter_stops_with_one_line(tmp_path, ros_env, params, rc, text):
    if params.get("backend") == "tensorrt":
        if importlib.util.find_spec("tensorrt") is not None:
            pytest.skip("tensorrt is importable here: the node would look for engines instead")
        params = {**params, "bundle_dir": str(tmp_path)}
        (tmp_path / "manifest.json").write_text(json.dumps({"schema": 1, "artifacts": {}, "config": {}}))
    if params.get("publish_autoware_objects") and importlib.util.find_spec("autoware_perception_msgs"):
        pytest.skip("autoware_perception_msgs is importable here")
    if params.get("backend") == "tensorrt":  # the same line as every other entry point, from the same place
        from awml_deploy_core.backends.tensorrt_backend import import_tensorrt
        from awml_deploy_core.errors import BackendUnavailableError

        with pytest.raises(BackendUnavailableError) as e:
            import_tensorrt()
        text = str(e.value)
    proc, log = start_node("cp_fail", params, ros_env, tmp_path)
    assert proc.wait(60) == rc, log.read_text()
    lines = [l for l in log.read_text().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("centerpoint_node: error: ") and text in lines[0], lines


def test_validate_params_unit():
    from awml_deploy_nodes.node_params import DEFAULTS, ParamError, validate

    p = validate({})
    assert p.backend == "onnxruntime" and p.score_threshold is None and p.max_points == 2_000_000
    assert validate({"processing_time_budget_ms": 100}).processing_time_budget_ms == 100.0  # int for a double
    assert validate({"score_threshold": 0.3}).score_threshold == 0.3
    for bad in ({"device": "gpu"}, {"max_points": 0}, {"class_names": []}, {"class_names": ["car", "car"]},
                {"diagnostics_period_s": 0.0}, {"precision": "fp8"}, {"publish_autoware_objects": "yes"},
                {"bundle_dir": "a", "config": "b"}, {"backend": "tensorrt", "device": "cpu"}):
        with pytest.raises(ParamError) as e:
            validate(bad)
        assert "\n" not in str(e.value) and str(e.value).startswith("parameter")
    assert set(DEFAULTS) >= {"bundle_dir", "backend", "device", "score_threshold", "class_names", "frame_id",
                             "processing_time_budget_ms", "max_points"}


def test_mailbox_keeps_newest_and_counts_replaced():
    import threading

    from awml_deploy_nodes.centerpoint_node import _Mailbox

    box = _Mailbox()
    assert box.put("a") is False
    assert box.put("b") is True  # "a" was never taken: dropped
    assert box.take() == "b"
    got = []
    t = threading.Thread(target=lambda: got.append(box.take()))
    t.start()
    box.put("c")
    t.join(5)
    assert got == ["c"]
    box.close()
    assert box.take() is None


def test_mailbox_keeps_the_newest_items_receive_time():
    """InferenceStats.queue_ms counts from the time the callback gives (else from the put)."""
    import time

    from awml_deploy_nodes.node_runtime import Mailbox

    box = Mailbox()
    box.put("a", received=1.5)
    box.put("b", received=2.5)  # replaces "a": its time goes with it
    assert box.take_timed() == ("b", 2.5)
    before = time.perf_counter()
    box.put("c")
    item, received = box.take_timed()
    assert item == "c" and before <= received <= time.perf_counter()
    box.close()
    assert box.take_timed() == (None, 0.0)


def test_mailbox_hands_over_to_an_idle_worker_and_never_waits_for_a_busy_one():
    import threading
    import time

    from awml_deploy_nodes.node_runtime import Mailbox

    box = Mailbox()
    busy = threading.Event()
    release = threading.Event()
    taken = []

    def worker():
        while (item := box.take()) is not None:
            taken.append(item)
            if item == "slow":
                busy.set()
                release.wait(10)

    t = threading.Thread(target=worker, daemon=True)
    t.start()

    def wait_idle():
        deadline = time.monotonic() + 10
        while not box._idle and time.monotonic() < deadline:
            time.sleep(0.001)
        assert box._idle

    wait_idle()
    assert box.put("a") is False
    assert box._item is None and taken == ["a"]  # the idle worker had it before put returned
    wait_idle()
    box.put("slow")
    assert busy.wait(10)
    assert box.put("b") is False and box._item == "b"  # busy worker: put returned at once, "b" waits
    assert box.put("c") is True  # and "b" was dropped for the newer "c"
    release.set()
    wait_idle()
    assert taken == ["a", "slow", "c"]
    box.close()
    t.join(5)
    assert not t.is_alive()


def test_node_health_report():
    from types import SimpleNamespace

    from diagnostic_msgs.msg import DiagnosticStatus
    from builtin_interfaces.msg import Time

    from awml_deploy_nodes.conversions import MALFORMED_KINDS
    from awml_deploy_nodes.diagnostics import NodeHealth, values_of

    h = NodeHealth("/cp", 100.0, MALFORMED_KINDS, info={"backend": "pytorch"})
    h.sequence_gaps_known = True
    h.on_received(False)
    h.on_received(True)
    h.on_input_gap(3)
    assert h.on_malformed("truncated_data") == 1
    h.on_accepted(big_endian=True, organized=False, empty=False, non_finite=5)
    stats = SimpleNamespace(points_truncated=7, pillars_truncated=2, pillars_dropped=0, points_in_dropped_pillars=0)
    h.on_processed(150.0, 180.0, stats)
    inference, inputs = h.report(Time(sec=1)).status
    assert inference.level == DiagnosticStatus.WARN and "over budget" in inference.message
    v = values_of(inference)
    assert v["frames_over_budget"] == "1" and v["backend"] == "pytorch"
    # truncated points and dropped pillars are separate counts; truncation alone is no warning
    assert (v["points_truncated"], v["pillars_truncated"], v["frames_with_points_truncated"]) == ("7", "2", "1")
    assert (v["pillars_dropped"], v["points_in_dropped_pillars"], v["frames_with_pillars_dropped"]) == ("0", "0", "0")
    v = values_of(inputs)
    assert inputs.level == DiagnosticStatus.WARN
    assert (v["received"], v["dropped_inputs"], v["input_gaps"], v["malformed.truncated_data"]) == ("2", "1", "3", "1")
    assert (v["accepted.big_endian"], v["accepted.with_non_finite"], v["non_finite_points_dropped"]) == ("1", "1", "5")
    # a quiet period: OK again, cumulative counters kept
    inference, inputs = h.report(Time(sec=2)).status
    assert inference.level == inputs.level == DiagnosticStatus.OK and values_of(inputs)["dropped_inputs"] == "1"
    h.on_processed(50.0, 60.0, SimpleNamespace(points_truncated=3, pillars_truncated=1, pillars_dropped=4,
                                               points_in_dropped_pillars=9))
    inference = h.report(Time(sec=2, nanosec=5)).status[0]
    v = values_of(inference)
    assert inference.level == DiagnosticStatus.WARN and "4 pillars dropped beyond max_voxels" in inference.message
    assert (v["pillars_dropped"], v["points_in_dropped_pillars"], v["frames_with_pillars_dropped"]) == ("4", "9", "1")
    assert (v["points_truncated"], v["frames_with_points_truncated"]) == ("10", "2")
    h.on_internal_error()
    assert h.report(Time(sec=3)).status[1].level == DiagnosticStatus.ERROR


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # lark (under rosidl) imports sre_parse
def test_in_process_parameters_and_internal_errors(small_ckpt):
    """In-process: every parameter carries its description and is read-only; a frame that raises inside the node
    is counted as internal_error and the worker goes on with the next cloud."""
    import rclpy
    from rclpy.parameter import Parameter

    from awml_deploy_nodes.centerpoint_node import CenterPointNode
    from awml_deploy_nodes.node_params import PARAMS

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = CenterPointNode("cp_describe", context=context, parameter_overrides=[
            Parameter("checkpoint", value=str(small_ckpt)), Parameter("backend", value="pytorch")])
        try:
            for spec in PARAMS:
                d = node.describe_parameter(spec.name)
                assert d.description == spec.description and d.read_only
            assert node.get_parameter("backend").value == "pytorch"
            result = node.set_parameters([Parameter("score_threshold", value=0.5)])[0]
            assert not result.successful

            # A frame that fails inside the node (here: the backend raises) is counted, and the next one works.
            real = node.pipeline
            calls = []

            def failing(points):
                calls.append(len(points))
                if len(calls) == 1:
                    raise RuntimeError("simulated backend failure")
                return real(points)

            node.pipeline = failing
            cloud = cloud_cases.build("plain", 500, (1_700_004_000, 0))
            for i in range(2):
                node._mailbox.put(cloud)
                deadline = time.monotonic() + 60
                while sum(node.health.snapshot()[k] for k in ("internal_errors", "processed")) < i + 1:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            snap = node.health.snapshot()
            assert snap["internal_errors"] == 1 and snap["processed"] == 1 and node._worker.is_alive()
        finally:
            node.close()
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_benchmark_runs(tmp_path, ros_env):
    """The overhead benchmark, tiny (the numbers in the report come from a full run)."""
    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, "-m", "awml_deploy_nodes.bench_node", "--sizes", "20000", "--frames", "3",
                          "--warmup", "1", "--model", "small", "--json", str(out)], env=ros_env,
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "overhead" in res.stdout
    (r,) = json.loads(out.read_text())["results"]
    assert r["points"] == 20000 and r["frames"] == 3
    assert 0 < r["overhead"]["median_ms"] < r["latency"]["median_ms"]
    # the probe process received the clouds sent to it (best effort: most of them), after their stamps
    assert 1 <= r["transport"]["frames"] <= 3 and r["transport"]["median_ms"] > 0
    assert r["node"]["median_ms"] == r["to_publish"]["median_ms"] - r["transport"]["median_ms"]
