"""The soak command: refuses to run without the local-only DDS environment; a short run reports its numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("drop, value", [("ROS_AUTOMATIC_DISCOVERY_RANGE", None),
                                         ("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET"),
                                         ("FASTDDS_DEFAULT_PROFILES_FILE", None),
                                         ("FASTDDS_DEFAULT_PROFILES_FILE", __file__)])
def test_soak_refuses_without_local_dds(ros_env, drop, value):
    env = dict(ros_env)
    env.pop(drop)
    if value is not None:
        env[drop] = value
    res = subprocess.run([sys.executable, "-m", "awml_deploy_nodes.soak", "--minutes", "1"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("soak: error: "), lines
    assert drop in lines[0] or "profile" in lines[0], lines


def test_soak_short_run(ros_env, tmp_path):
    out = tmp_path / "soak.json"
    res = subprocess.run([sys.executable, "-m", "awml_deploy_nodes.soak", "--minutes", "0.3", "--rate", "2",
                          "--points", "20000", "--backend", "pytorch", "--warmup-s", "5", "--json", str(out)],
                         env=ros_env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rss" in res.stdout and "latency" in res.stdout and "drops" in res.stdout
    r = json.loads(out.read_text())
    assert r["node_alive"] and r["sent"] >= 20 and r["answered"] >= 10
    assert r["node"]["internal_error"] == "0"
    assert r["rss_mib"]["start"] > 0 and "slope_mib_per_min" in r["rss_mib"]
