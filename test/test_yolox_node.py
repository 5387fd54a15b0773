"""yolox_node over real DDS: publisher, node(s) and recorder in separate interpreters.

One DDS session (module fixture) serves the first two checks:

- parity: the Detections2D the node publishes equal, bit for bit, what the offline YOLOXPipeline (load_pipeline,
  same backend, the node's thresholds read from the model config) returns for the image the node received, for one
  camera (raw Image: bgr8, rgb8, padded rows, mono8) and for two cameras batched (CompressedImage: PNG, JPEG);
- bad input: 10 malformed kinds (7 of Image, 5 of CompressedImage, 2 shared) each counted under its kind on
  /diagnostics, the node answering a good image afterwards, no internal error;
- start-up: bad parameters are one line and exit 2, a missing artifact exit 3 (startup.run_main, as centerpoint);
- the node is glue: no backend choice, its model step a call of the loader.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ros_helpers import start_proc, stop, wait_for_line
from test_centerpoint_node import by_stamp, read_jsonl, start_recorder

ROOT = Path(__file__).resolve().parent.parent
EXE = ROOT / "install" / "awml_deploy_nodes" / "lib" / "awml_deploy_nodes" / "yolox_node"
SRC = ROOT / "awml_deploy_nodes" / "awml_deploy_nodes"
SHIPPED = "package://awml_deploy_core/checkpoints/yolox_small.pth"
# The shipped model config's node thresholds (Autoware tensorrt_yolox's), checked against the config below.
NODE_SCORE, NODE_NMS = 0.35, 0.7
sys.path.insert(0, str(ROOT / "test" / "procs"))

import image_cases  # noqa: E402

pytestmark = pytest.mark.ros


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three small rendered camera images (320 x 192), saved for the publisher process."""
    from awml_deploy_core.data.camera import CameraSpec, generate_camera_frame

    cam = CameraSpec.forward(320, 192)
    path = tmp_path_factory.mktemp("images") / "images.npz"
    np.savez(path, images=np.stack([generate_camera_frame(seed, cam).image for seed in (1, 2, 3)]))
    return path


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """The evaluation-side pipeline on ONNX Runtime with the node's thresholds; its ONNX export fills the cache the
    nodes then reuse (so they start without exporting)."""
    from awml_deploy_core.loader import load_pipeline, resolve_source

    cache = tmp_path_factory.mktemp("onnx_cache")
    loaded = load_pipeline(SHIPPED, "onnxruntime", onnx_cache_dir=cache,
                           model_overrides={"score_threshold": NODE_SCORE, "nms_iou": NODE_NMS})
    model = resolve_source(SHIPPED).cfg.model  # the stored config, without overrides
    assert (model.node_score_threshold, model.node_nms_iou) == (NODE_SCORE, NODE_NMS)
    yield loaded, cache
    loaded.close()


def start_node(name: str, params: dict, env: dict, tmp: Path, remaps: list[str] = ()) -> tuple[subprocess.Popen, Path]:
    pfile = tmp / f"{name}.param.yaml"
    pfile.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    log = tmp / f"{name}.log"
    args = [str(EXE), "--ros-args", "-r", f"__node:={name}", "--params-file", str(pfile)]
    for r in remaps:
        args += ["-r", r]
    return start_proc(args, env, log), log


def run_plan(tmp: Path, env: dict, images: Path, plan: list[dict], nodes: dict[str, dict],
             record: dict[str, str] | None = None) -> dict:
    """Start the nodes (and a recorder), publish the plan, stop everything; the publisher's result."""
    (tmp / "plan.json").write_text(json.dumps(plan))
    procs, logs = [], {}
    try:
        if record:
            rec, rec_log = start_recorder(record, env, tmp)
            procs.append(rec)
            wait_for_line(rec_log, "ready")
        for name, params in nodes.items():
            p, logs[name] = start_node(name, params, env, tmp)
            procs.append(p)
        for name in nodes:
            wait_for_line(logs[name], "ready:", timeout=180)
        pub_log, out = tmp / "pub.log", tmp / "result.json"
        pub = start_proc(["publish_images.py", "--plan", str(tmp / "plan.json"), "--images", str(images),
                          "--out", str(out)], env, pub_log)
        rc = pub.wait(240)
        all_logs = pub_log.read_text() + "".join(f"\n--- {n}\n" + l.read_text()[-3000:] for n, l in logs.items())
        assert rc == 0, all_logs
        for p in procs[1 if record else 0:]:
            assert p.poll() is None, all_logs  # every node still alive
        return {**json.loads(out.read_text()), "logs": all_logs}
    finally:
        stop(*procs)


def detections_dict(dets, stamp: tuple[int, int], frame_id: str) -> dict:
    """The Detections2D (as recorded) the node must publish for these offline detections."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from awml_deploy_nodes.detections2d import detections2d_to_msg
    from awml_deploy_nodes.msg_dict import message_to_dict

    header = Header(stamp=Time(sec=stamp[0], nanosec=stamp[1]), frame_id=frame_id)
    return message_to_dict(detections2d_to_msg(dets.boxes, dets.scores, dets.labels, header))


# --------------------------------------------------------------------------------------------- one DDS session
CAMS = ("front", "rear")
ONE, MULTI = "yx_one", "yx_multi"
ONE_OUT = f"/{ONE}/output/detections"
MULTI_OUT = [f"/{MULTI}/output/{c}/detections" for c in CAMS]


def _plan() -> list[dict]:
    """Good images for parity, then every malformed kind (each followed by nothing: the wait is its count on
    /diagnostics), then good images again. yx_one: one raw camera; yx_multi: two compressed cameras, batched."""
    plan: list[dict] = []

    def one(case: str, image: int, kind: str = "output") -> None:
        wait = {"wait": "output", "topics": [ONE_OUT]} if kind == "output" else \
            {"wait": f"diag:malformed.{kind}", "diag_node": f"/{ONE}"}
        plan.append({"stamp": [1_700_000_000 + len(plan), 1000], **wait,
                     "msgs": [{"topic": f"/{ONE}/input/image", "case": case, "image": image}]})

    def multi(cases: tuple[str, str], image: int, kind: str = "output") -> None:
        # camera k shows image (image + k) % 3; a malformed one goes to the front camera
        wait = {"wait": "output", "topics": MULTI_OUT} if kind == "output" else \
            {"wait": f"diag:malformed.{kind}", "diag_node": f"/{MULTI}"}
        plan.append({"stamp": [1_700_000_000 + len(plan), 5000], **wait,
                     "msgs": [{"topic": f"/{MULTI}/input/{c}/image/compressed", "case": case, "image": (image + k) % 3}
                              for k, (c, case) in enumerate(zip(CAMS, cases)) if case]})

    for i, case in enumerate(image_cases.RAW_GOOD):
        one(case, i % 3)
    for i, case in enumerate(("png", "jpeg", "png")):
        multi((case, case), i)
    for case, kind in image_cases.RAW_BAD.items():
        one(case, 0, kind)
    for case, kind in image_cases.COMPRESSED_BAD.items():
        # a decode failure shows in the worker, which sees only complete sets: give it a good partner
        multi((case, "png" if kind == "compressed_decode_failed" else ""), 1, kind)
    one("bgr8", 1)  # still answering
    multi(("jpeg", "png"), 2)
    return plan


@pytest.fixture(scope="module")
def session(tmp_path_factory, images, offline, ros_env_factory) -> dict:
    """Both nodes, the publisher and a recorder over DDS once, for the parity and the bad-input checks."""
    ros_env = ros_env_factory()  # a domain of this module's own (conftest's ros_env is per test)
    tmp = tmp_path_factory.mktemp("session")
    _, cache = offline
    common = {"backend": "onnxruntime", "onnx_cache_dir": str(cache), "processing_time_budget_ms": 5000.0,
              "diagnostics_period_s": 0.5}
    nodes = {ONE: common, MULTI: {**common, "camera_names": list(CAMS), "compressed": True}}
    plan = _plan()
    record = {t: "awml_deploy_msgs/msg/Detections2D" for t in [ONE_OUT, *MULTI_OUT]}
    record.update({f"/{n}/debug/inference_stats": "awml_deploy_msgs/msg/InferenceStats" for n in nodes})
    result = run_plan(tmp, ros_env, images, plan, nodes, record)
    return {**result, "plan": plan, "tmp": tmp}


def test_detections_equal_offline_pipeline(session, images, offline):
    loaded, _ = offline
    tmp, arrays = session["tmp"], np.load(images)["images"]
    boxes_seen = checked = 0
    for item in session["plan"]:
        if item["wait"] != "output":
            continue
        stamp = tuple(item["stamp"])
        msgs = [image_cases.build(m["case"], arrays[m["image"]], stamp)[0] for m in item["msgs"]]
        out = loaded.pipeline([image_cases.seen_image(m) for m in msgs])  # the node's batch: one image, or the set
        for topic, dets in zip(item["topics"], out.batch):
            got = by_stamp(read_jsonl(tmp, topic))
            assert stamp in got, f"{topic}: no detections for stamp {stamp}\n{session['logs']}"
            have = {k: v for k, v in got[stamp].items() if k != "_receive_time_ns"}
            assert have == detections_dict(dets, stamp, "camera"), f"{topic} differs from offline at {stamp}"
            boxes_seen += len(dets)
            checked += 1
    assert checked == len(image_cases.RAW_GOOD) + 1 + 2 * 4, checked
    assert boxes_seen >= 10, "too few detections: the comparison would be nearly vacuous"
    stats = by_stamp(read_jsonl(tmp, f"/{ONE}/debug/inference_stats"))
    s = stats[tuple(session["plan"][0]["stamp"])]
    assert (s["backend"], s["precision"], s["input_size"]) == ("onnxruntime", "fp32", 320 * 192)
    assert s["total_ms"] >= s["preprocess_ms"] + s["inference_ms"] + s["postprocess_ms"] - 1e-6
    assert 0 < s["queue_ms"] < 60_000
    one, multi = session["diag"][f"/{ONE}"], session["diag"][f"/{MULTI}"]
    assert all(int(one[f"accepted.{k}"]) >= 1 for k in ("rgb8", "mono8", "padded_rows")), one
    assert int(multi["accepted.png"]) >= 4 and int(multi["accepted.jpeg"]) >= 2, multi


def test_malformed_images_are_counted_by_kind_and_node_keeps_answering(session):
    plan, tries = session["plan"], session["tries"]
    sent: dict[tuple[str, str], int] = {}
    for item, n in zip(plan, tries):
        if item["wait"].startswith("diag:"):
            key = (item["diag_node"], item["wait"][len("diag:"):])
            sent[key] = sent.get(key, 0) + n
    assert len({k for _, k in sent}) >= 10, sent
    assert plan[-1]["wait"] == plan[-2]["wait"] == "output" and len(tries) == len(plan)  # both answered at the end
    for node in (f"/{ONE}", f"/{MULTI}"):
        v = session["diag"][node]
        for (n, key), count in sent.items():
            if n == node:
                assert int(v[key]) == count, (node, key, count, v)
        assert int(v["malformed_total"]) == sum(c for (n, _), c in sent.items() if n == node), v
        assert int(v["internal_error"]) == 0 and int(v["dropped_inputs"]) == 0, v
    # the decode failure's good partner was still detected and published
    partner = next(i for i in plan if i["wait"] == "diag:malformed.compressed_decode_failed")
    assert tuple(partner["stamp"]) in by_stamp(read_jsonl(session["tmp"], MULTI_OUT[1]))


# --------------------------------------------------------------------------------------------- start-up
START_UP_FAILURES = [
    ({"camera_names": ["front", "front"]}, 2, "parameter 'camera_names': has duplicates"),
    ({"score_treshold": 0.3}, 2, "unknown parameter(s) ['score_treshold']"),
    ({"checkpoint": "/nonexistent/yolox.pth"}, 3, "parameter 'checkpoint': /nonexistent/yolox.pth: checkpoint not found"),
    ({"backend": "pytorch", "checkpoint": "package://awml_deploy_core/checkpoints/centerpoint_small.pth"}, 2,
     "parameter 'checkpoint': checkpoint"),
]


def test_bad_parameter_stops_with_one_line(tmp_path, ros_env):
    """Every failure at once (separate processes): one line on stderr, exit 2 (configuration) or 3 (artifact)."""
    procs = []
    for i, (params, _, _) in enumerate(START_UP_FAILURES):
        (tmp_path / str(i)).mkdir()
        procs.append(start_node(f"yx_fail{i}", params, ros_env, tmp_path / str(i)))
    for (proc, log), (_, rc, text) in zip(procs, START_UP_FAILURES):
        assert proc.wait(120) == rc, log.read_text()
        lines = [l for l in log.read_text().splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("yolox_node: error: ") and text in lines[0], lines
    assert "holds a centerpoint model; this node runs yolox models" in procs[-1][1].read_text()


def test_validate_params_unit():
    from awml_deploy_nodes.node_params import ParamError
    from awml_deploy_nodes.node_params import PARAM_NAMES as CP_NAMES
    from awml_deploy_nodes.yolox_params import PARAM_NAMES, node_model_overrides, validate

    p = validate({})
    assert p.backend == "onnxruntime" and p.score_threshold is None and p.camera_names == () and not p.compressed
    assert validate({"camera_names": None}).camera_names == ()  # an empty YAML list reaches the node as unset
    assert validate({"camera_names": ["a", "b_2"], "sync_window_ms": 0}).camera_names == ("a", "b_2")
    shared = {"bundle_dir", "config", "checkpoint", "onnx_cache_dir", "backend", "device", "precision",
              "score_threshold", "processing_time_budget_ms", "diagnostics_period_s", "publish_autoware_objects"}
    assert shared <= set(PARAM_NAMES) and shared <= set(CP_NAMES)
    for bad in ({"camera_names": "front"}, {"camera_names": [""]}, {"sync_window_ms": float("nan")},
                {"device": "gpu"}, {"bundle_dir": "a", "config": "b"}, {"score_threshold": 2.0}):
        with pytest.raises(ParamError) as e:
            validate(bad)
        assert "\n" not in str(e.value) and str(e.value).startswith("parameter")

    class Cfg:
        node_score_threshold, node_nms_iou = 0.35, 0.7

    assert node_model_overrides(Cfg, None) == {"score_threshold": 0.35, "nms_iou": 0.7}
    assert node_model_overrides(Cfg, 0.5) == {"score_threshold": 0.5, "nms_iou": 0.7}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # lark (under rosidl) imports sre_parse
def test_in_process_parameters_and_internal_errors(offline, images):
    """In-process: every parameter carries its description and is read-only; a frame that raises inside the node
    is counted as internal_error and the worker goes on with the next image."""
    import rclpy
    from rclpy.parameter import Parameter

    from awml_deploy_nodes.yolox_node import YoloxNode
    from awml_deploy_nodes.yolox_params import PARAMS

    _, cache = offline
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = YoloxNode("yx_describe", context=context, parameter_overrides=[
            Parameter("onnx_cache_dir", value=str(cache)), Parameter("score_threshold", value=0.5),
            Parameter("publish_autoware_objects", value=True)])
        try:
            if importlib.util.find_spec("tier4_perception_msgs") is None:  # one warning, and the node runs on
                assert node._tier4_pubs == [] and len(node._det_pubs) == 1
            for spec in PARAMS:
                d = node.describe_parameter(spec.name)
                assert d.description == spec.description and d.read_only
            assert not node.set_parameters([Parameter("score_threshold", value=0.2)])[0].successful
            assert node.pipeline.cfg.score_threshold == 0.5 and node.pipeline.cfg.nms_iou == NODE_NMS

            real, calls = node.pipeline, []

            def failing(imgs):
                calls.append(len(imgs))
                if len(calls) == 1:
                    raise RuntimeError("simulated backend failure")
                return real(imgs)

            node.pipeline = failing
            msg, _ = image_cases.build("bgr8", np.load(images)["images"][0], (1_700_004_000, 0))
            for i in range(2):
                node._mailbox.put((msg,))
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


# --------------------------------------------------------------------------------------------- the node is glue
@pytest.mark.parametrize("module", ["yolox_node.py", "node_runtime.py"])
def test_node_holds_no_export_hashing_or_backend_choice(module):
    """The rules test_loader.py sets for centerpoint_node hold for the camera node and the shared runtime."""
    src = (SRC / module).read_text()
    for forbidden in ("sha256", "export_", "onnx_file_names", "Bundle", "OrtGraphRunner", "TrtGraphRunner",
                      "TorchGraphRunner", "load_checkpoint", "resolve_checkpoint"):
        assert forbidden not in src, forbidden
    assert not re.search(r"backend\s*==\s*['\"]", src), "backend choice belongs to the loader"
    body = src[src.index("def load_model("):]
    body = body[: body.index("\n\n\n")]
    assert len(body.splitlines()) <= 30, "the node's model-building step stays a call of the loader"


def test_nodes_share_the_plumbing():
    """One Mailbox, one worker loop, one main(): neither node defines its own."""
    for module in ("yolox_node.py", "centerpoint_node.py"):
        src = (SRC / module).read_text()
        for own in ("class _Mailbox", "threading.Thread(", "def _work(", "rclpy.spin(", "declare_read_only(",
                    "def _on_lost(", "load_pipeline("):
            assert own not in src, f"{module} defines {own!r} itself; node_runtime has it"
