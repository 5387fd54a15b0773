"""centerpoint_node under garbage, over real DDS (node and publisher in separate processes).

- a malformed cloud arriving right after a good one is refused in the subscription callback: it is counted by
  kind and never takes the good cloud's place, so every good cloud is answered;
- >= 1,000 fuzzed messages interleaved with good clouds: the node survives, no frame fails inside it, every
  cloud it took is answered, and the counts on /diagnostics add up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ros_helpers import start_proc, stop, wait_for_line

ROOT = Path(__file__).resolve().parent.parent
EXE = ROOT / "install" / "awml_deploy_nodes" / "lib" / "awml_deploy_nodes" / "centerpoint_node"
INPUT = "/test/pointcloud"
sys.path.insert(0, str(ROOT / "test" / "procs"))

import cloud_cases  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    from awml_deploy_nodes.bench_node import small_checkpoint

    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pth")


def _run(tmp: Path, env: dict, ckpt: Path, name: str, publisher_args: list[str]) -> dict:
    pfile = tmp / "node.yaml"
    pfile.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "backend": "pytorch", "checkpoint": str(ckpt), "score_threshold": 0.1008, "diagnostics_period_s": 0.5,
        "processing_time_budget_ms": 10_000.0, "max_points": 30000}}}))
    node_log = tmp / "node.log"
    node = start_proc([str(EXE), "--ros-args", "-r", f"__node:={name}", "--params-file", str(pfile),
                       "-r", f"~/input/pointcloud:={INPUT}"], env, node_log)
    try:
        wait_for_line(node_log, "ready:", 180)
        out = tmp / "result.json"
        pub = subprocess.run([sys.executable, str(ROOT / "test" / "procs" / "publish_mixed.py"), "--topic", INPUT,
                              "--node", f"/{name}", "--out", str(out), *publisher_args], env=env,
                             capture_output=True, text=True, timeout=600)
        assert pub.returncode == 0, pub.stdout + pub.stderr + node_log.read_text()[-3000:]
        assert node.poll() is None, node_log.read_text()[-3000:]
        return json.loads(out.read_text())
    finally:
        stop(node)


def test_malformed_right_after_good_never_displaces_it(tmp_path, ros_env, small_ckpt):
    kinds = [k for k, c in cloud_cases.CASES.items() if c.expect == "malformed"]
    r = _run(tmp_path, ros_env, small_ckpt, "cp_burst",
             ["--mode", "kinds", "--good", "12", "--bad-per-good", str(len(kinds)), "--rate", "2"])
    answered = {tuple(s) for s in r["answered"]}
    missing = [tuple(s) for s in r["good"] if tuple(s) not in answered]
    v = r["input"]
    assert not missing, json.dumps({"missing": missing, "answered": r["answered"], "input": v})
    assert all(s[0] >= 1000 for s in answered), "a malformed cloud was answered"
    for kind, n in r["bad_sent"].items():  # every malformed cloud counted under its kind
        assert int(v[cloud_cases.CASES[kind].diag]) == n, (kind, n, v)
    assert int(v["malformed_total"]) == sum(r["bad_sent"].values())
    assert int(v["dropped_inputs"]) == 0 and int(v["internal_error"]) == 0, v


def test_fuzzed_clouds_interleaved_with_good_ones(tmp_path, ros_env, small_ckpt):
    r = _run(tmp_path, ros_env, small_ckpt, "cp_fuzz",
             ["--mode", "fuzz", "--good", "50", "--bad-per-good", "21", "--rate", "2", "--seed", "3"])
    v = r["input"]
    assert r["bad_sent"]["fuzz"] >= 1000
    assert int(v["internal_error"]) == 0, v
    received, processed = int(v["received"]), int(v["frames_processed"])
    # Every cloud the node took was answered; the rest were malformed or replaced in the mailbox.
    assert r["answers"] == processed, (r["answers"], v)
    assert received == processed + int(v["dropped_inputs"]) + int(v["malformed_total"]), v
    assert int(v["malformed_total"]) >= 500, v  # the fuzzer mostly makes malformed clouds
    answered = {tuple(s) for s in r["answered"]}
    assert tuple(r["good"][-1]) in answered  # alive and answering at the end
