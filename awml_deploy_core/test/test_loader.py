"""The one loader and the runners' lifecycle: the same detections from any source, release on close(), one-line
input errors, and the node holding no loading logic of its own."""

from __future__ import annotations

import gc
import re
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from awml_deploy_core.backends.onnxruntime_backend import OrtGraphRunner
from awml_deploy_core.config import DeployConfig
from awml_deploy_core.data.synthetic import generate_frame
from awml_deploy_core.errors import ConfigError, RunnerError
from awml_deploy_core.loader import load_pipeline
from awml_deploy_core.models.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """One deploy config, reachable as a config, as a bundle (the ONNX cache folder is one) and as a checkpoint
    that stores the same model config."""
    tmp = tmp_path_factory.mktemp("loader")
    cfg = DeployConfig()
    model, _ = load_checkpoint(DEFAULT_CHECKPOINT, cfg.model)
    ckpt = save_checkpoint(model, cfg.model, tmp / "model.pth")
    cfg = cfg.model_copy(update={"checkpoint": str(ckpt), "work_dir": str(tmp / "work")})
    cfg.export.simplify = False  # (speed only: the same graphs either way)
    cache = tmp / "onnx_cache"
    with load_pipeline(cfg, "onnxruntime", onnx_cache_dir=cache) as lp:
        bundle_dir = Path(lp.artifacts["onnx"]["encoder"]).parent
    frames = [generate_frame(10_000 + i).points[::4] for i in range(5)]  # a quarter of each cloud: fast on CPU
    return cfg, ckpt, bundle_dir, cache, frames


def _detections(loaded, frames):
    with loaded:
        return [loaded.pipeline(p).detections for p in frames]


@pytest.mark.parametrize("backend", ["onnxruntime", "pytorch"])
def test_same_detections_from_bundle_config_and_checkpoint(sources, backend):
    cfg, ckpt, bundle_dir, cache, frames = sources
    results = {
        "config": _detections(load_pipeline(cfg, backend, onnx_cache_dir=cache), frames),
        "bundle": _detections(load_pipeline(bundle_dir, backend), frames),
        "checkpoint": _detections(load_pipeline(str(ckpt), backend, onnx_cache_dir=cache), frames),
    }
    ref = results["config"]
    assert sum(len(d) for d in ref) > 0
    for name, dets in results.items():
        for a, b in zip(ref, dets):
            np.testing.assert_array_equal(a.boxes, b.boxes, err_msg=name)
            np.testing.assert_array_equal(a.scores, b.scores, err_msg=name)
            np.testing.assert_array_equal(a.labels, b.labels, err_msg=name)


def test_bundle_source_records_where_things_came_from(sources):
    _, ckpt, bundle_dir, _, _ = sources
    with load_pipeline(bundle_dir, "pytorch") as lp:
        assert lp.source == f"bundle {bundle_dir}" and lp.provenance()["path"] == str(ckpt)
    with load_pipeline(bundle_dir, "onnxruntime") as lp:
        assert set(lp.provenance()["onnx"]) == {"encoder", "head"} and lp.precision == "fp32"


def test_folder_without_manifest_and_unknown_backend_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="holds no manifest.json"):
        load_pipeline(tmp_path, "onnxruntime")
    with pytest.raises(ConfigError, match="unknown backend 'tflite'"):
        load_pipeline(None, "tflite")
    with pytest.raises(ConfigError, match="only post-processing keys"):
        load_pipeline(None, "pytorch", model_overrides={"voxel_size": [0.2, 0.2, 8.0]})


# --------------------------------------------------------------------------------------------- runners
@pytest.fixture(scope="module")
def encoder_onnx(sources):
    return Path(sources[2]) / "pts_voxel_encoder_centerpoint_small.onnx"


def test_close_releases_the_onnxruntime_session_and_refuses_to_run(encoder_onnx):
    runner = OrtGraphRunner(encoder_onnx, "ort:encoder")
    x = {"input_features": torch.zeros(4, 32, 11)}
    assert runner(x)["pillar_features"].shape == (4, 32)
    session = weakref.ref(runner.session)
    with runner:
        pass  # the context manager closes
    gc.collect()
    assert runner.closed and session() is None, "the InferenceSession must be gone after close()"
    with pytest.raises(RunnerError, match=r"^ort:encoder: the runner is closed"):
        runner(x)
    runner.close()  # idempotent


def test_pipeline_close_closes_every_graph(sources):
    with load_pipeline(sources[2], "onnxruntime") as lp:
        runners = lp.pipeline.runners
    assert runners.closed
    with pytest.raises(RunnerError, match="closed"):
        lp.pipeline(sources[4][0])


@pytest.mark.parametrize("tensor, expected", [
    (torch.zeros(4, 32, 11, dtype=torch.float64),
     "ort:encoder: input 'input_features' has dtype float64, expected float32[?, 32, 11] (given float64[4, 32, 11])"),
    (torch.zeros(4, 20, 11),
     "ort:encoder: input 'input_features' has shape [4, 20, 11], expected float32[?, 32, 11] (given float32[4, 20, 11])"),
    (torch.zeros(32, 11),
     "ort:encoder: input 'input_features' has shape [32, 11], expected float32[?, 32, 11] (given float32[32, 11])"),
])
def test_wrong_input_is_one_line_naming_input_expected_and_given(encoder_onnx, tensor, expected):
    with OrtGraphRunner(encoder_onnx, "ort:encoder") as runner:
        with pytest.raises(RunnerError) as e:
            runner({"input_features": tensor})
    assert str(e.value) == expected and "\n" not in str(e.value)


def test_missing_input_names_what_the_graph_takes(encoder_onnx):
    with OrtGraphRunner(encoder_onnx, "ort:encoder") as runner, pytest.raises(RunnerError) as e:
        runner({"features": torch.zeros(4, 32, 11)})
    assert "input 'input_features' is missing" in str(e.value) and "['features']" in str(e.value)


# --------------------------------------------------------------------------------------------- the node is glue
def test_node_holds_no_export_hashing_or_backend_choice():
    src = (ROOT / "awml_deploy_nodes" / "awml_deploy_nodes" / "centerpoint_node.py").read_text()
    for forbidden in ("sha256", "export_", "onnx_file_names", "Bundle", "OrtGraphRunner", "TrtGraphRunner",
                      "TorchGraphRunner", "load_checkpoint", "resolve_checkpoint"):
        assert forbidden not in src, forbidden
    assert not re.search(r"backend\s*==\s*['\"]", src), "backend choice belongs to the loader"
    body = src[src.index("def load_model("):]
    body = body[: body.index("\n\n\n")]
    assert len(body.splitlines()) <= 30, "the node's model-building step stays a call of the loader"
