"""The calibration-status family: registration, the shipped checkpoint, the ONNX contract read from the file
(dynamic height and width), PyTorch vs ONNX Runtime parity on real pairs, scikit-learn metrics, and
`awml-deploy export config/calibration_status.yaml` end to end on a few pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from awml_deploy_core.cli import main as cli_main
from awml_deploy_core.config import CalibrationStatusModelConfig, DeployConfig, MiscalibrationConfig, load_deploy_config
from awml_deploy_core.data.calibration_pairs import perturb_extrinsic, render_scene_pairs
from awml_deploy_core.data.synthetic import sequence_seed
from awml_deploy_core.export.calibration_onnx import check_calibration_contract, export_calibration_onnx
from awml_deploy_core.export.onnx_export import _to_onnx
from awml_deploy_core.families import FAMILIES, get_family
from awml_deploy_core.loader import load_pipeline, resolve_checkpoint, torch_runners
from awml_deploy_core.metrics.classification import binary_metrics
from awml_deploy_core.models.calibration_status import build_calibration_status, load_calibration_checkpoint, mmpretrain_names
from awml_deploy_core.pipelines.calibration.input_builder import build_input

CKPT = "package://awml_deploy_core/checkpoints/calibration_status_small.pth"


@pytest.fixture(scope="module")
def model_and_cfg():
    return load_calibration_checkpoint(resolve_checkpoint(CKPT))


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, model_and_cfg):
    model, cfg = model_and_cfg
    out = tmp_path_factory.mktemp("calib_onnx")
    return export_calibration_onnx(model, cfg, out)["calibration_status"].path


@pytest.fixture(scope="module")
def pair():
    """One held-out instant (seed 10000, scene 0): image, points, K, true extrinsic."""
    return render_scene_pairs(sequence_seed(10_000, 0), 1)[0]


def test_family_is_registered_and_config_validates() -> None:
    assert "calibration_status" in FAMILIES
    fam = get_family("calibration_status")
    cfg = load_deploy_config("config/calibration_status.yaml")
    assert cfg.family == "calibration_status" and isinstance(cfg.model, CalibrationStatusModelConfig)
    assert fam.onnx_file_names(cfg.model) == {"calibration_status": "calibration_status_small.onnx"}
    assert fam.tensorrt.profiles(cfg, "calibration_status") == {
        "input": {"min": [1, 5, 1080, 1920], "opt": [1, 5, 1860, 2880], "max": [1, 5, 2160, 3840]}}
    with pytest.raises(Exception, match="class_names"):
        CalibrationStatusModelConfig(class_names=["calibrated", "miscalibrated"])
    with pytest.raises(Exception, match="max_rotation_deg"):
        MiscalibrationConfig(max_rotation_deg=0.5)


def test_shipped_checkpoint(model_and_cfg) -> None:
    path = resolve_checkpoint(CKPT)
    assert path.stat().st_size < 20e6
    prov = json.loads(path.with_suffix(".json").read_text())
    held = prov["held_out"]["metrics"]
    assert prov["eval_seed"] == 10_000 and prov["seed"] < 10_000 and held["count"] >= 400
    assert held["accuracy"] >= 0.90 and held["false_alarm_rate"] <= 0.05 and prov["held_out"]["large_error_recall"] >= 0.95
    model, cfg = model_and_cfg
    keys = list(model.state_dict())
    assert keys[0] == "backbone.conv1.weight" and keys[-1] == "head.fc.bias"
    assert model.backbone.conv1.weight.shape[1] == 5
    # torchvision's names load too
    tv = {k.removeprefix("backbone.").replace("head.fc", "fc"): v for k, v in model.state_dict().items()}
    assert mmpretrain_names(tv).keys() == model.state_dict().keys()


def test_onnx_contract_from_the_file(onnx_file) -> None:
    assert check_calibration_contract(onnx_file, opset=17) == []
    m = onnx.load(str(onnx_file))
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 5 and all(isinstance(d, str) and d for d in (dims[0], dims[2], dims[3]))
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["class_names"] == "miscalibrated,calibrated" and meta["output_convention"] == "logits"
    # a graph with a static height and width breaks the contract
    static = _to_onnx(build_calibration_status(CalibrationStatusModelConfig(base_channels=4)).eval(),
                      torch.zeros(1, 5, 64, 64), ("input",), ("output",), {"input": {0: "batch"}}, 17)
    path = onnx_file.parent / "static.onnx"
    onnx.save(static, str(path))
    problems = check_calibration_contract(path)
    assert problems and "dynamic" in problems[0]


def test_dynamic_shapes_and_parity_with_pytorch(onnx_file, model_and_cfg) -> None:
    import onnxruntime as ort

    model, _ = model_and_cfg
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in ((1, 5, 96, 160), (2, 5, 130, 226)):
        x = rng.standard_normal(shape).astype(np.float32)
        (got,) = sess.run(["output"], {"input": x})
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        assert got.shape == (shape[0], 2)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_pipelines_agree_on_real_pairs(onnx_file, model_and_cfg, pair) -> None:
    """The same pair through the PyTorch and the ONNX Runtime pipeline: logits within fp32 tolerance, same class;
    a 3 degree error is called miscalibrated and the true extrinsic calibrated."""
    model, cfg = model_and_cfg
    fam = get_family("calibration_status")
    from awml_deploy_core.loader import ort_runners

    torch_pipe = fam.make_pipeline(cfg, torch_runners(model, cfg, "cpu", "calibration_status"), "cpu")
    dcfg = DeployConfig(family="calibration_status", model=cfg)
    ort_pipe = fam.make_pipeline(cfg, ort_runners(fam, dcfg, {"calibration_status": onnx_file},
                                                  ["CPUExecutionProvider"]), "cpu")
    bad = perturb_extrinsic(pair.T_true, 3.0, 0.0, seed=1)
    for T, calibrated in ((pair.T_true, True), (bad, False)):
        a = torch_pipe(pair.image, pair.points, pair.K, T)
        b = ort_pipe(pair.image, pair.points, pair.K, T)
        np.testing.assert_allclose(b.logits, a.logits, atol=1e-4, rtol=1e-3)
        assert a.is_calibrated == b.is_calibrated == calibrated
        assert a.calibrated_score + a.miscalibrated_score == pytest.approx(1.0)
        assert a.projected_points > 10_000 and set(a.timings_ms) == {"input_build", "inference", "postprocess",
                                                                      "total"}
    built = build_input(pair.image, pair.points, pair.K, pair.T_true, cfg)
    assert built.shape == (5, *pair.image.shape[:2])


def test_binary_metrics_by_hand() -> None:
    truth = [True, True, True, False, False]
    pred = [True, False, True, True, False]
    score = [0.9, 0.4, 0.8, 0.6, 0.1]
    m = binary_metrics(truth, pred, score)
    assert m.accuracy == pytest.approx(3 / 5) and m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3) and m.false_alarm_rate == pytest.approx(1 / 2)
    assert m.confusion == [[2, 1], [1, 1]]
    # AUC: positive/negative score pairs ranked right: (0.9,0.6) (0.9,0.1) (0.4,0.1) (0.8,0.6) (0.8,0.1) of 6
    assert m.roc_auc == pytest.approx(5 / 6)


def test_loader_finds_the_family_from_the_checkpoint(tmp_path) -> None:
    with load_pipeline(CKPT, "pytorch", "cpu") as lp:
        assert lp.family.name == "calibration_status"
        out = lp.pipeline(*lp.family.warm_up_input(lp.cfg.model))
        assert 0.0 <= out.calibrated_score <= 1.0 and out.projected_points > 0


def test_export_job_end_to_end(tmp_path) -> None:
    text = Path("config/calibration_status.yaml").read_text()
    text = text.replace("num_frames: 40 ", "num_frames: 4 ").replace("num_samples: 5", "num_samples: 2")
    text = text.replace("warmup: 3", "warmup: 0")
    cfg_path = tmp_path / "calibration_status.yaml"
    cfg_path.write_text(text)
    work = tmp_path / "bundle"
    assert cli_main(["export", str(cfg_path), "--work-dir", str(work)]) == 0
    report = json.loads((work / "report.json").read_text())
    assert report["family"] == "calibration_status" and report["passed"]
    (v,) = report["verification"]
    assert v["passed"] and {"output", "decision.is_calibrated", "decision.scores"} <= set(v["summary"])
    ev = report["evaluation"]["onnxruntime"]
    assert set(ev["latency_ms"]) == {"input_build", "inference", "postprocess", "total"}
    assert ev["metrics"]["count"] + ev["ambiguous"]["pairs"] == 4
    assert report["comparison"][0]["accuracy"] == report["comparison"][1]["accuracy"]
    assert (work / "plots" / "accuracy_vs_error.png").stat().st_size > 0
    md = (work / "report.md").read_text()
    assert "confusion matrix" in md and "Accuracy against the perturbation magnitude" in md


def test_train_command_tiny_on_cpu(tmp_path) -> None:
    """`awml-deploy train --family calibration_status` end to end, tiny (the shipped model: the same command), in its
    own process as users run it. On the CPU the trainer keeps the contiguous layout: a channels_last convolution
    backward corrupted the heap here (torch 2.13 CPU; "malloc(): unaligned tcache chunk", intermittent)."""
    import subprocess
    import sys

    out = tmp_path / "c.pth"
    res = subprocess.run([str(Path(sys.executable).parent / "awml-deploy"), "train", "--family", "calibration_status",
                          "--out", str(out), "--scenes", "1", "--frames-per-scene", "1", "--steps", "2", "--batch",
                          "2", "--warmup-steps", "1", "--workers", "1", "--device", "cpu", "--eval-pairs", "4",
                          "--base-channels", "8"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    model, cfg = load_calibration_checkpoint(out)
    assert cfg.base_channels == 8
    prov = json.loads(out.with_suffix(".json").read_text())
    assert prov["steps"] == 2 and prov["eval_seed"] == 10_000 and prov["held_out"]["metrics"]["count"] >= 1


def test_int8_calibration_batches_come_from_the_input_builder(model_and_cfg, pair) -> None:
    """TensorRT INT8 calibration feeds the profile's opt [H, W]: the pair's image resized, K scaled, then THE
    builder."""
    import dataclasses

    from awml_deploy_core.data.calibration_pairs import CalibrationSample
    from awml_deploy_core.pipelines.calibration.input_builder import BuilderSpec, resized

    model, cfg = model_and_cfg
    cfg = cfg.model_copy(update={"trt_min_hw": [64, 96], "trt_opt_hw": [96, 160]})
    dcfg = DeployConfig(family="calibration_status", model=cfg)
    fam = get_family("calibration_status")
    shape = fam.tensorrt.calibration_shape(dcfg, "calibration_status")
    assert shape == [1, 5, 96, 160]
    pipe = fam.make_pipeline(cfg, torch_runners(model, cfg, "cpu", "calibration_status"), "cpu")
    s = CalibrationSample(pair.image, pair.points, pair.K, pair.T_true, pair.T_true, 0.0, 0.0, "calibrated", "t")
    (batch,) = list(fam.tensorrt.calibration_batches([s, s], pipe, 1, shape, ("calibration_status",)))
    assert batch["input"].shape == (1, 5, 96, 160)
    image, K = resized(pair.image, pair.K, (96, 160))
    assert K[0, 0] == pytest.approx(pair.K[0, 0] / 4) and K[0, 2] == pytest.approx((pair.K[0, 2] + 0.5) / 4 - 0.5)
    want = build_input(image, pair.points, K, pair.T_true, dataclasses.replace(BuilderSpec.of(cfg), input_size=None))
    np.testing.assert_array_equal(batch["input"][0], want)
