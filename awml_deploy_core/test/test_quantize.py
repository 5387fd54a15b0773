"""INT8 Q/DQ quantization (issue 14): graphs read back from the files, calibration data, the accuracy guard.

Small on purpose (a few frames of the shipped checkpoint): the 200-frame accuracy run is tools/quantize_accuracy.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from awml_deploy_core.config import DEFAULT_CHECKPOINT, DataConfig, EvaluateConfig, QuantizeConfig
from awml_deploy_core.deploy import resolve_checkpoint
from awml_deploy_core.errors import ConfigError
from awml_deploy_core.evaluate import open_dataset, take_samples
from awml_deploy_core.export import quantize as qz
from awml_deploy_core.export import quantize_guard as qg
from awml_deploy_core.export.onnx_export import check_centerpoint_contract, export_centerpoint_onnx
from awml_deploy_core.models.checkpoint import load_checkpoint

EVAL = DataConfig(num_frames=3, seed=10_000)
Q = QuantizeConfig(enabled=True, method="minmax", calibration_frames=2, guard_frames=3, graphs=["encoder", "head"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    model, cfg = load_checkpoint(resolve_checkpoint(DEFAULT_CHECKPOINT))
    graphs = export_centerpoint_onnx(model, cfg, root / "fp32", opset=17)
    fp32 = {"encoder": graphs["encoder"].path, "head": graphs["head"].path}
    source = qz.calibration_source(EVAL, Q)
    frames = qz.calibration_samples(source, root / "data", cfg.class_names)
    evaluation = take_samples(open_dataset(EVAL, root / "data", cfg.class_names, progress=False), 3, progress=False)
    pipe = qz._fp32_pipeline(cfg, fp32["encoder"], fp32["head"])
    calib = qz.collect_calibration(pipe, frames[:Q.calibration_frames], source)
    pair = qz.quantize_centerpoint(fp32, root / "int8", cfg, Q, calib)
    return {"root": root, "cfg": cfg, "fp32": fp32, "frames": frames, "evaluation": evaluation, "pipe": pipe,
            "calib": calib, "pair": pair, "source": source}


# --------------------------------------------------------------------------------------------- graphs
def _consts(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("graph", ["encoder", "head"])
def test_qdq_graph_from_file(setup, graph):
    path = setup["pair"].paths[graph]
    assert path.name.endswith("_int8.onnx") and path.parent == setup["root"] / "int8"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    consts = _consts(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    qnodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qnodes
    for n in qnodes:  # every quantizer (activations and weights): INT8, zero point exactly 0
        zp = consts[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), n.name
        if n.op_type == "QuantizeLinear":
            assert consts[n.input[1]].size == 1, f"{n.name}: activation scale must be per tensor"
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul")]
    assert weighted
    for n in weighted:
        dq_w, dq_x = producer[n.input[1]], producer[n.input[0]]
        assert dq_w.op_type == "DequantizeLinear" and dq_x.op_type == "DequantizeLinear", n.name
        w, scale = consts[dq_w.input[0]], consts[dq_w.input[1]]
        assert w.dtype == np.int8
        axis = next(a.i for a in dq_w.attribute if a.name == "axis")
        out_axis = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}[n.op_type]
        assert axis == out_axis and scale.shape == (w.shape[out_axis],), n.name  # one scale per output channel
        if len(n.input) > 2:  # bias stays float (TensorRT rejects an int32 bias DequantizeLinear)
            assert n.input[2] in consts and consts[n.input[2]].dtype == np.float32
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["quantization_recipe_sha256"] == setup["pair"].recipe_hash
    assert meta["graph"] == {"encoder": "pts_voxel_encoder", "head": "pts_backbone_neck_head"}[graph]
    assert qz.check_qdq_graph(path) == []


def test_qdq_pair_keeps_the_contract(setup):
    assert check_centerpoint_contract(setup["pair"].paths["encoder"], setup["pair"].paths["head"], setup["cfg"]) == []


def test_check_qdq_graph_finds_an_asymmetric_quantizer(setup, tmp_path):
    model = onnx.load(str(setup["pair"].paths["head"]))
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    zp = next(i for i in model.graph.initializer if i.name == q.input[2])
    zp.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), zp.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    assert any("not 0" in p for p in qz.check_qdq_graph(bad))


def test_int8_close_to_fp32(setup):
    """INT8-aware tolerance on the graph outputs (the real gate is mAP, in the guard and the accuracy run)."""
    calib, pair = setup["calib"], setup["pair"]
    ref = qg._head_outputs(setup["cfg"], setup["fp32"], calib, 1)
    got = qg._head_outputs(setup["cfg"], pair.paths, calib, 1)
    assert 0 < qg.output_error(ref, got) < 0.5


# --------------------------------------------------------------------------------------------- calibration data
def test_calibration_tensors_are_the_pipelines_preprocessing(setup):
    calib, pipe = setup["calib"], setup["pipe"]
    frames = setup["frames"][:Q.calibration_frames]
    assert calib.tokens == [s.token for s in frames]
    for s, feats, spatial in zip(frames, calib.encoder_inputs, calib.head_inputs):
        pre = pipe.preprocess(s.points)  # recomputed, compared bit for bit
        assert np.array_equal(pre.input_features.numpy(), feats)
        expect = pipe.scatter(pipe.encode(pre.input_features), pre.coords).numpy()
        assert np.array_equal(expect, spatial)
    assert calib.head_inputs[0].shape == (1, setup["cfg"].pillar_channels, *reversed(setup["cfg"].grid_size))


def test_no_evaluation_frame_in_calibration(setup):
    evaluation = setup["evaluation"]
    eval_tokens = {s.token for s in evaluation}
    eval_points = {qz.frame_digest(s.points) for s in evaluation}
    assert not eval_tokens & set(setup["calib"].tokens)
    assert not eval_points & {qz.frame_digest(s.points) for s in setup["frames"]}
    assert setup["source"] == {"kind": "synthetic", "seed": 20_000, "frames_per_sequence": 1, "indices": [0, 5]}
    qz.check_disjoint(setup["frames"], evaluation)
    with pytest.raises(ConfigError, match="also an evaluation frame"):
        qz.check_disjoint(setup["frames"] + evaluation[:1], evaluation)
    with pytest.raises(ConfigError, match="calibration_seed"):
        qz.calibration_source(DataConfig(seed=20_000), Q)


def test_recipe_names_frames_and_changes_with_them(setup):
    calib, pair = setup["calib"], setup["pair"]
    r = pair.recipe
    assert r["calibration"]["tokens"] == calib.tokens and r["calibration"]["source"]["seed"] == 20_000
    assert r["calibration"]["fingerprint"] == calib.fingerprint() and len(pair.recipe_hash) == 64
    assert r["method"] == "minmax" and r["tool"] == "onnxruntime.quantization" and r["excluded"]["head"] == []
    other = qz.CalibrationSet(calib.tokens[:1], calib.encoder_inputs[:1], calib.head_inputs[:1],
                              calib.coords[:1], calib.source)
    assert other.fingerprint() != calib.fingerprint()
    assert qz.recipe_hash(qz.make_recipe(Q, other, {}, setup["fp32"])) != pair.recipe_hash
    assert qz.recipe_hash(qz.make_recipe(Q, calib, {"head": ["x"]}, setup["fp32"])) != pair.recipe_hash


# --------------------------------------------------------------------------------------------- guard
def test_guard_falls_back_under_a_tight_budget(setup):
    """A zero budget and a harsh calibration (ranges clipped at the 90.5th percentile): INT8 everywhere cannot fit,
    so layers must fall back (the encoder's first layer sees raw coordinates and suffers most)."""
    q = QuantizeConfig(**{**Q.model_dump(), "graphs": ["encoder"], "method": "percentile", "percentile": 90.5,
                          "max_metric_drop": 0.0, "max_fallback_layers": 2})
    guard_frames = setup["frames"][Q.calibration_frames:]
    out = setup["root"] / "guarded"
    result = qg.guard(setup["fp32"], out, setup["cfg"], q, setup["calib"], guard_frames,
                      EvaluateConfig(warmup=0), sensitivity_frames=1)
    assert result.initial_drop > q.max_metric_drop  # the premise: INT8 everywhere does not fit
    assert result.sensitivity and result.steps[1:]  # layers were ranked and at least one tried in float
    assert "\n" not in result.reason
    if result.ok:
        assert result.drop <= q.max_metric_drop and result.kept_float
        kept = result.pair.recipe["excluded"]["encoder"]
        assert kept == sorted(n for k in result.kept_float for n in k.nodes)
        summary = qz.qdq_summary(result.pair.paths["encoder"])
        assert set(summary["float_layers"]) & set(kept)
        assert all(k.reason.startswith("sensitivity rank") for k in result.kept_float)
    else:
        assert result.pair is None and "exceeds export.quantize.max_metric_drop" in result.reason
        assert all(f"encoder/{k.name}" in result.reason for k in result.kept_float)
