"""Config validation: each bad config gives ONE line naming the field path, the bad value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from awml_deploy_core.config import DeployConfig, awml_base_model, load_deploy_config
from awml_deploy_core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_deploy_config(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(str(path)), message
    return message


def test_shipped_config_is_valid():
    cfg = load_deploy_config(ROOT / "config" / "centerpoint.yaml")
    assert cfg.model.grid_size == (256, 256)
    assert cfg == DeployConfig.model_validate(cfg.model_dump())


def test_awml_base_geometry():
    base = awml_base_model()
    assert base.grid_size == (1020, 1020)
    assert (base.max_points_per_voxel, base.encoder_in_features) == (32, 11)


def test_unknown_top_level_key(tmp_path):
    msg = _error(tmp_path, "modle: {}\n")
    assert "modle" in msg and "Extra inputs are not permitted" in msg


def test_unknown_nested_key(tmp_path):
    msg = _error(tmp_path, "export:\n  tensorrt:\n    precison: fp16\n")
    assert "export.tensorrt.precison" in msg


def test_wrong_type(tmp_path):
    msg = _error(tmp_path, "data:\n  num_frames: ten\n")
    assert "data.num_frames" in msg and "'ten'" in msg and "integer" in msg


def test_out_of_range(tmp_path):
    msg = _error(tmp_path, "export:\n  opset: 9\n")
    assert "export.opset" in msg and "9" in msg and "13" in msg


def test_bad_choice(tmp_path):
    msg = _error(tmp_path, "export:\n  mode: tensorrt\n")
    assert "export.mode" in msg and "'onnx'" in msg and "'tensorrt'" in msg


def test_dla_with_fp32_precision(tmp_path):
    # DLA runs FP16 and INT8 only: an FP32/TF32 engine on a DLA core is a contradiction.
    msg = _error(tmp_path, "export:\n  mode: trt\n  tensorrt:\n    precision: fp32_tf32\n    dla_core: 0\n")
    assert "export.tensorrt" in msg and "DLA" in msg and "fp32_tf32" in msg


def test_trt_without_onnx_source_takes_the_bundle(tmp_path):
    path = tmp_path / "trt.yaml"
    path.write_text("export:\n  mode: trt\n")
    assert load_deploy_config(path).export.onnx_source is None  # engines are built from the bundle's ONNX


def test_tensorrt_backend_without_engines(tmp_path):
    msg = _error(tmp_path, "evaluate:\n  backends: [pytorch, tensorrt]\n")
    assert "tensorrt" in msg and "export.mode" in msg


def test_unknown_backend(tmp_path):
    msg = _error(tmp_path, "evaluate:\n  backends: [pytorch, openvino]\n")
    assert "evaluate.backends.1" in msg and "openvino" in msg


def test_voxel_size_not_dividing_range(tmp_path):
    msg = _error(tmp_path, "model:\n  voxel_size: [0.3, 0.32, 8.0]\n")
    assert "model" in msg and "voxel_size[0]=0.3" in msg


def test_class_thresholds_wrong_length(tmp_path):
    msg = _error(tmp_path, "model:\n  class_score_thresholds: [0.1, 0.2]\n")
    assert "class_score_thresholds" in msg and "5" in msg


def test_info_source_without_path(tmp_path):
    msg = _error(tmp_path, "data:\n  source: info\n")
    assert "data" in msg and "info_path" in msg


def test_negative_tolerance(tmp_path):
    msg = _error(tmp_path, "verify:\n  tolerances:\n    fp32: {atol: -1.0, rtol: 0.001}\n")
    assert "verify.tolerances.fp32.atol" in msg and "-1.0" in msg


def test_bad_device(tmp_path):
    msg = _error(tmp_path, "device: gpu\n")
    assert "device" in msg and "'gpu'" in msg


def test_profile_order(tmp_path):
    msg = _error(tmp_path, "export:\n  tensorrt:\n    num_voxels_min: 50000\n")
    assert "num_voxels_min" in msg and "50000" in msg


def test_neck_strides_inconsistent(tmp_path):
    msg = _error(tmp_path, "model:\n  neck_upsample_strides: [1, 2, 2]\n")
    assert "neck_upsample_strides[2]" in msg and "out_size_factor" in msg


def test_yaml_syntax_error(tmp_path):
    msg = _error(tmp_path, "model: [unclosed\n")
    assert "not valid YAML" in msg and "line" in msg


def test_top_level_not_a_mapping(tmp_path):
    msg = _error(tmp_path, "- a\n- b\n")
    assert "mapping" in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_deploy_config(tmp_path / "nope.yaml")


def test_overrides_are_validated(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("{}\n")
    assert load_deploy_config(path, {"export.mode": "none"}).export.mode == "none"
    with pytest.raises(ConfigError, match="device"):
        load_deploy_config(path, {"device": "tpu"})
