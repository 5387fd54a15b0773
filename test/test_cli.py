"""The user-facing commands, run as a user would run them (separate processes, installed executables)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
ROS_EXPORT = ROOT / "install" / "awml_deploy_core" / "lib" / "awml_deploy_core" / "export"


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, env=dict(os.environ))


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("export:\n  mode: tensorrt\n")
    return path


@pytest.mark.parametrize("argv0", [[str(VENV_BIN / "awml-deploy"), "export"], [str(ROS_EXPORT)]],
                         ids=["awml-deploy export", "ros2 run awml_deploy_core export"])
def test_bad_config_exits_2_with_one_line(argv0, bad_config, tmp_path):
    assert Path(argv0[0]).exists(), f"{argv0[0]} is not installed; run `make setup`"
    res = run([*argv0, str(bad_config)], tmp_path)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "export.mode" in lines[0] and "tensorrt" in lines[0], res.stderr


def test_debug_log_level_shows_traceback(bad_config, tmp_path):
    res = run([str(VENV_BIN / "awml-deploy"), "export", str(bad_config), "--log-level", "DEBUG"], tmp_path)
    assert res.returncode == 2
    assert "Traceback" in res.stderr


def test_usage_errors_exit_2(tmp_path):
    for argv in ([], ["frobnicate"], ["export"], ["export", "x.yaml", "--mode", "fast"]):
        res = run([str(VENV_BIN / "awml-deploy"), *argv], tmp_path)
        assert res.returncode == 2, (argv, res.stderr)
        assert "Traceback" not in res.stderr
    res = run([str(VENV_BIN / "awml-deploy"), "export", str(tmp_path / "missing.yaml")], tmp_path)
    assert res.returncode == 2 and "config file not found" in res.stderr


def test_help_lists_verbs(tmp_path):
    res = run([str(VENV_BIN / "awml-deploy"), "--help"], tmp_path)
    assert res.returncode == 0
    for verb in ("export", "train", "bench"):
        assert verb in res.stdout
    res = run([str(ROS_EXPORT), "--help"], tmp_path)
    assert res.returncode == 0 and "--work-dir" in res.stdout and "--device" in res.stdout


def test_train_tiny_run_writes_a_loadable_checkpoint(tmp_path):
    """`awml-deploy train` end to end on the CPU, tiny (the shipped model was trained with the same command)."""
    out = tmp_path / "m.pth"
    res = run([str(VENV_BIN / "awml-deploy"), "train", "--out", str(out), "--frames", "4", "--epochs", "1",
               "--batch-size", "2", "--eval-frames", "2", "--workers", "1", "--device", "cpu",
               "--bn-recalib-batches", "1"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    from awml_deploy_core.models.checkpoint import load_checkpoint

    model, cfg = load_checkpoint(out)
    assert cfg.name == "centerpoint_small" and (tmp_path / "m.json").exists()


def test_bench_prints_a_table(tmp_path):
    res = run([str(VENV_BIN / "awml-deploy"), "bench", "--only", "metrics", "--repeats", "1"], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3D metrics, 1,000 frames x 50 objects" in res.stdout and " ms" in res.stdout


def test_replay_parsers_share_arguments():
    """awml-deploy replay-eval and replay_evaluation take the shared replay flags with the same defaults."""
    from awml_deploy_core.cli import build_parser
    from awml_deploy_core.replay.scoring import DEFAULT_TOLERANCE_MS
    from awml_deploy_nodes.replay_evaluation import build_parser as realtime_parser

    offline = build_parser().parse_args(["replay-eval", "B", "--config", "c.yaml"])
    realtime = realtime_parser().parse_args(["B", "--config", "c.yaml"])
    shared = ["bag", "config", "backend", "gt_topic", "gt_info", "lidar_topic", "tolerance_ms", "criteria", "out",
              "work_dir", "device", "checkpoint"]
    assert {k: getattr(offline, k) for k in shared} == {k: getattr(realtime, k) for k in shared}
    assert offline.tolerance_ms == DEFAULT_TOLERANCE_MS and offline.backend == "onnxruntime"
    assert realtime.rate == 1.0 and realtime.grace_s == 3.0
