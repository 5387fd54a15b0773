"""`awml-deploy export config/yolox.yaml` end to end on a few frames: ONNX into the bundle, verification PyTorch vs
ONNX Runtime (outputs and detections after NMS), COCO evaluation, report with plots, tensorrt_yolox files."""

from __future__ import annotations

import json

import onnx

from awml_deploy_core.bundle import Bundle
from awml_deploy_core.cli import main as cli_main
from awml_deploy_core.export.yolox_onnx import check_yolox_contract
from awml_deploy_core.config import load_deploy_config


def test_export_job_on_yolox_config(tmp_path):
    cfg_path = tmp_path / "yolox.yaml"
    # the shipped config with the shipped checkpoint, at half resolution (the letterbox halves the 640x384 camera)
    text = open("config/yolox.yaml").read()
    text = text.replace("input_size: [384, 640]", "input_size: [192, 320]").replace("num_frames: 20", "num_frames: 3")
    text = text.replace("num_samples: 5", "num_samples: 2").replace("warmup: 3", "warmup: 0")
    cfg_path.write_text(text)
    work = tmp_path / "bundle"
    rc = cli_main(["export", str(cfg_path), "--work-dir", str(work)])
    assert rc == 0
    report = json.loads((work / "report.json").read_text())
    assert report["family"] == "yolox" and report["passed"]
    (v,) = report["verification"]
    assert v["passed"] and v["detection_count_mismatches"] == 0 and "detections.boxes" in v["summary"]
    ev = report["evaluation"]["onnxruntime"]
    assert ev["metrics"]["classes"] and set(ev["latency_ms"]) == {"preprocess", "inference", "postprocess", "total"}
    assert report["comparison"][0]["AP"] == report["comparison"][1]["AP"]  # same detections, same AP
    for plot in ("pr_curves.png", "examples.png", "latency.png"):
        assert (work / "plots" / plot).stat().st_size > 0
    bundle = Bundle.open(work)
    onnx_path = bundle.verify("yolox")
    assert onnx_path.name == "yolox_small.onnx"
    assert check_yolox_contract(onnx_path, load_deploy_config(cfg_path).model, opset=17) == []
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(meta["class_names"])[1] == "car" and meta["model"] == "yolox"
    assert "score_threshold: 0.35" in (work / "yolox_small.param.yaml").read_text()
    assert (work / "label.txt").read_text().splitlines()[:2] == ["UNKNOWN", "CAR"]
