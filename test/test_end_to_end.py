"""The main job, as `make demo` runs it: shipped checkpoint -> ONNX -> verify -> evaluate, both backends.

Also the acceptance lines of the export issue: PyTorch vs ONNX Runtime within atol 1e-4 / rtol 1e-3 on every
head output, identical detection counts per frame, and mAP equal to 3 decimals.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AWML = Path(sys.executable).parent / "awml-deploy"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    res = subprocess.run([str(AWML), "export", str(ROOT / "config" / "centerpoint.yaml"), "--work-dir", str(work)],
                         capture_output=True, text=True, timeout=600, cwd=work)
    return work, res


def test_demo_exits_0_and_prints_the_table(demo_run):
    work, res = demo_run
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for text in ("pytorch", "onnxruntime", "mAP@2m", "report:"):
        assert text in res.stdout
    assert (work / "report.md").exists() and (work / "manifest.json").exists()


def test_pytorch_and_onnxruntime_agree(demo_run):
    work, _ = demo_run
    report = json.loads((work / "report.json").read_text())
    (scenario,) = report["verification"]
    assert (scenario["reference"], scenario["candidate"]) == ("pytorch", "onnxruntime")
    assert (scenario["atol"], scenario["rtol"]) == (1e-4, 1e-3)
    assert scenario["passed"]
    assert set(scenario["summary"]) == {"pillar_features", "heatmap", "reg", "height", "dim", "rot", "vel"}
    assert all(v["out_of_tolerance"] == 0 for v in scenario["summary"].values())
    ev = report["evaluation"]
    assert ev["pytorch"]["detections_per_frame"] == ev["onnxruntime"]["detections_per_frame"]
    assert sum(ev["pytorch"]["detections_per_frame"]) > 0
    maps = [ev[b]["metrics"]["map_by_threshold"]["2.0"] for b in ("pytorch", "onnxruntime")]
    assert round(maps[0], 3) == round(maps[1], 3)
    assert maps[0] > 0.5, "the shipped checkpoint should detect the synthetic objects"
    assert report["passed"] and all(g["passed"] for g in report["gates"])


def test_manifest_vouches_for_artifacts(demo_run):
    from awml_deploy_core.bundle import Bundle

    work, _ = demo_run
    bundle = Bundle.open(work)
    for name in ("encoder", "head"):
        assert bundle.verify(name).name.endswith("_centerpoint_small.onnx")
    m = bundle.manifest
    assert m["versions"]["onnxruntime"] and m["checkpoint"]["sha256"] and m["dataset"]["frames"] == 20
