"""The exported pair against the Autoware contract, read from the ONNX files alone."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from awml_deploy_core.config import CenterPointModelConfig
from awml_deploy_core.export.onnx_export import check_centerpoint_contract, export_centerpoint_onnx
from awml_deploy_core.models.centerpoint import build_centerpoint

CFG = CenterPointModelConfig()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("onnx")
    graphs = export_centerpoint_onnx(build_centerpoint(CFG), CFG, out, opset=17)
    return graphs["encoder"].path, graphs["head"].path


def _io(path):
    m = onnx.load(str(path))
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    return m, [(i.name, dims(i)) for i in m.graph.input], [(o.name, dims(o)) for o in m.graph.output]


def test_file_names(exported):
    enc, head = exported
    assert enc.name == "pts_voxel_encoder_centerpoint_small.onnx"
    assert head.name == "pts_backbone_neck_head_centerpoint_small.onnx"


def test_encoder_io(exported):
    m, ins, outs = _io(exported[0])
    assert [n for n, _ in ins] == ["input_features"]
    (_, d_in), (_, d_out) = ins[0], outs[0]
    assert len(d_in) == 3 and isinstance(d_in[0], str), "num_voxels must be a dynamic (named) axis"
    assert d_in[1:] == [CFG.max_points_per_voxel, CFG.encoder_in_features] == [32, 11]
    assert [n for n, _ in outs] == ["pillar_features"]
    assert len(d_out) == 2 and d_out[0] == d_in[0] and d_out[1] == 32
    assert max(op.version for op in m.opset_import if op.domain in ("", "ai.onnx")) == 17


def test_head_io_order(exported):
    m, ins, outs = _io(exported[1])
    gx, gy = CFG.grid_size
    assert ins == [("spatial_features", [1, 32, gy, gx])]
    # Autoware binds output buffers by position: the order is part of the contract.
    assert [n for n, _ in outs] == ["heatmap", "reg", "height", "dim", "rot", "vel"]
    h, w = gy // CFG.out_size_factor, gx // CFG.out_size_factor
    assert [d for _, d in outs] == [[1, 5, h, w], [1, 2, h, w], [1, 1, h, w], [1, 3, h, w], [1, 2, h, w],
                                    [1, 2, h, w]]
    assert all(len(d) == 4 for _, d in outs)


def test_metadata(exported):
    for path in exported:
        m = onnx.load(str(path))
        meta = {p.key: p.value for p in m.metadata_props}
        assert meta["producer"] == "awml_deploy" and m.producer_name == "awml_deploy"
        assert json.loads(meta["class_names"]) == list(CFG.class_names)
        assert CenterPointModelConfig.model_validate_json(meta["model_config"]) == CFG


def test_checker_accepts_and_flags_a_reordered_head(exported, tmp_path):
    enc, head = exported
    assert check_centerpoint_contract(enc, head, CFG) == []
    m = onnx.load(str(head))
    outs = list(m.graph.output)
    outs[0], outs[1] = outs[1], outs[0]
    del m.graph.output[:]
    m.graph.output.extend(outs)
    bad = tmp_path / "swapped.onnx"
    onnx.save(m, str(bad))
    problems = check_centerpoint_contract(enc, bad, CFG)
    assert len(problems) == 1 and "this order" in problems[0]


def test_checker_flags_a_static_encoder(exported, tmp_path):
    enc, head = exported
    m = onnx.load(str(enc))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1000  # pins num_voxels
    bad = tmp_path / "static.onnx"
    onnx.save(m, str(bad))
    assert any("dynamic first axis" in p for p in check_centerpoint_contract(bad, head, CFG))
