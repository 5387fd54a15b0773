"""Start-up of the package's nodes cannot be crashed or fooled: every failure is ONE line on stderr and exit 2.

Each case starts the real executable (real rclpy, its own process and ROS domain) and fails before any model is
loaded, so these are quick. "Unreadable" params files: the tests run as root, where chmod 000 does not block
reads, so a directory given as the params file and a file of invalid YAML stand for it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "install" / "awml_deploy_nodes" / "lib" / "awml_deploy_nodes"
SHIPPED_PARAMS = ROOT / "config" / "centerpoint_node.param.yaml"

pytestmark = pytest.mark.ros


def run_node(exe: str, ros_args: list[str], env: dict) -> tuple[int, list[str]]:
    res = subprocess.run([str(BIN / exe), "--ros-args", *ros_args], env=env, capture_output=True, text=True,
                         timeout=120)
    lines = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
    return res.returncode, lines


def assert_one_line(rc: int, lines: list[str], exe: str, *texts: str) -> None:
    assert rc == 2, (rc, lines)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{exe}: error: "), lines
    assert "Traceback" not in lines[0]
    for text in texts:
        assert text in lines[0], lines


def test_missing_params_file(ros_env, tmp_path):
    missing = tmp_path / "nope.param.yaml"
    rc, lines = run_node("centerpoint_node", ["--params-file", str(missing)], ros_env)
    assert_one_line(rc, lines, "centerpoint_node", f"--params-file {missing}", "no such file")


def test_params_file_that_is_a_directory(ros_env, tmp_path):
    rc, lines = run_node("centerpoint_node", ["--params-file", str(tmp_path)], ros_env)
    assert_one_line(rc, lines, "centerpoint_node", f"--params-file {tmp_path}", "not a file")


def test_params_file_with_invalid_yaml(ros_env, tmp_path):
    bad = tmp_path / "bad.param.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    backend: [onnxruntime\n")
    for exe in ("centerpoint_node", "bag_player", "output_recorder"):
        rc, lines = run_node(exe, ["--params-file", str(bad)], ros_env)
        assert_one_line(rc, lines, exe, f"--params-file {bad}", "invalid YAML")


@pytest.mark.parametrize("override, name", [("max_points:=lots", "max_points"),
                                            ("diagnostics_period_s:=oops", "diagnostics_period_s")])
def test_wrongly_typed_p_with_the_shipped_params_file(ros_env, override, name):
    """rcl alone would keep the params file's value and start with it; the node refuses the -p by name."""
    rc, lines = run_node("centerpoint_node", ["--params-file", str(SHIPPED_PARAMS), "-p", override], ros_env)
    assert_one_line(rc, lines, "centerpoint_node", f"parameter '{name}'", repr(override.split(":=")[1]))


def test_wrongly_typed_value_in_a_params_file(ros_env, tmp_path):
    pfile = tmp_path / "p.yaml"
    pfile.write_text("/**:\n  ros__parameters:\n    max_points: lots\n")
    rc, lines = run_node("centerpoint_node", ["--params-file", str(pfile)], ros_env)
    assert_one_line(rc, lines, "centerpoint_node", "parameter 'max_points'", "'lots'")


def test_wrongly_typed_p_for_player_and_recorder(ros_env, tmp_path):
    pfile = tmp_path / "player.yaml"
    pfile.write_text(f"/**:\n  ros__parameters:\n    bag: {tmp_path}\n    rate: 1.0\n")
    rc, lines = run_node("bag_player", ["--params-file", str(pfile), "-p", "rate:=fast"], ros_env)
    assert_one_line(rc, lines, "bag_player", "parameter 'rate'", "'fast'")
    rc, lines = run_node("bag_player", ["-p", f"bag:={tmp_path}", "-p", "rate:=fast"], ros_env)
    assert_one_line(rc, lines, "bag_player", "parameter 'rate'", "'fast'")
    rc, lines = run_node("output_recorder", ["-p", f"output_bag:={tmp_path / 'rec'}", "-p", "progress_period_s:=often"],
                          ros_env)
    assert_one_line(rc, lines, "output_recorder", "parameter 'progress_period_s'", "'often'")


@pytest.mark.parametrize("ros_args, text", [(["--bogus"], "unknown ROS argument(s) ['--bogus']"),
                                            (["-r"], "-r"), (["-p", "max_points"], "-p")])
def test_bad_ros_argument(ros_env, ros_args, text):
    for exe in ("centerpoint_node", "bag_player", "output_recorder"):
        rc, lines = run_node(exe, ros_args, ros_env)
        assert_one_line(rc, lines, exe, text)


def test_cli_overrides_parse_like_rcl():
    from awml_deploy_nodes.startup import cli_overrides, ros_arguments

    argv = ["prog", "x", "--ros-args", "-p", "a:=1", "--param", "b:=[c, d]", "-p", "n:x:=3", "-p", "d:=2024-01-01",
            "-r", "e:=f", "--", "-p", "g:=1"]
    assert ros_arguments(argv)[:2] == ["-p", "a:=1"]
    assert cli_overrides(argv) == {"a": 1, "b": ["c", "d"], "d": "2024-01-01"}
