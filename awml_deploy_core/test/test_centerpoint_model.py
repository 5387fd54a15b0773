"""CenterPoint module names (mmdet3d/AWML), export-graph shapes and names, and the pipeline around them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from awml_deploy_core.backends.base import GraphRunner, RunnerSet
from awml_deploy_core.loader import torch_runners
from awml_deploy_core.config import CenterPointModelConfig, awml_base_model
from awml_deploy_core.models.centerpoint import (
    HEAD_OUTPUT_NAMES,
    BackboneNeckHeadGraph,
    VoxelEncoderGraph,
    build_centerpoint,
    from_autoware_head_outputs,
    graph_shapes,
    scatter_pillars,
    to_autoware_head_outputs,
)
from awml_deploy_core.pipelines.centerpoint import CenterPointPipeline


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    cfg = CenterPointModelConfig()
    return cfg, build_centerpoint(cfg).eval()


def test_parameter_names_follow_mmdet3d(small):
    cfg, model = small
    sd = model.state_dict()
    expected = {
        "pts_voxel_encoder.pfn_layers.0.linear.weight": (16, 11),
        "pts_voxel_encoder.pfn_layers.0.norm.running_var": (16,),
        "pts_voxel_encoder.pfn_layers.1.linear.weight": (32, 32),
        "pts_backbone.blocks.0.0.weight": (32, 32, 3, 3),
        "pts_backbone.blocks.0.1.weight": (32,),
        "pts_backbone.blocks.2.15.weight": (128, 128, 3, 3),
        "pts_neck.deblocks.0.0.weight": (64, 32, 1, 1),  # stride 1: 1x1 Conv2d (use_conv_for_no_stride)
        "pts_neck.deblocks.2.0.weight": (128, 64, 4, 4),  # ConvTranspose2d (in, out, k, k)
        "pts_neck.deblocks.2.1.num_batches_tracked": (),
        "pts_bbox_head.shared_conv.conv.weight": (64, 192, 3, 3),
        "pts_bbox_head.shared_conv.bn.weight": (64,),
        "pts_bbox_head.task_heads.0.heatmap.0.conv.weight": (64, 64, 1, 1),
        "pts_bbox_head.task_heads.0.heatmap.0.bn.running_mean": (64,),
        "pts_bbox_head.task_heads.0.heatmap.1.weight": (5, 64, 1, 1),
        "pts_bbox_head.task_heads.0.heatmap.1.bias": (5,),
        "pts_bbox_head.task_heads.0.dim.1.weight": (3, 64, 1, 1),
        "pts_bbox_head.task_heads.0.vel.1.bias": (2,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.endswith(".bias") for k in sd if ".linear." in k or "shared_conv.conv" in k)
    assert torch.allclose(sd["pts_bbox_head.task_heads.0.heatmap.1.bias"], torch.tensor(-2.19))
    size_mb = sum(v.numel() * v.element_size() for v in sd.values()) / 1e6
    assert size_mb < 10


def test_small_graphs_shapes_and_names(small):
    cfg, model = small
    shapes = graph_shapes(cfg, num_voxels=7)
    enc, head = VoxelEncoderGraph(model).eval(), BackboneNeckHeadGraph(model).eval()
    assert enc.input_names == ("input_features",) and enc.output_names == ("pillar_features",)
    assert head.input_names == ("spatial_features",) and head.output_names == HEAD_OUTPUT_NAMES
    with torch.inference_mode():
        pf = enc(torch.randn(*shapes.input_features))
        outs = head(torch.randn(*shapes.spatial_features))
    assert tuple(pf.shape) == shapes.pillar_features == (7, 32)
    assert len(outs) == 6
    for name, out in zip(HEAD_OUTPUT_NAMES, outs):
        assert tuple(out.shape) == shapes.head_outputs[name]
    assert shapes.head_outputs["heatmap"] == (1, 5, 128, 128)


def test_base_geometry_shapes_without_compute():
    cfg = awml_base_model()
    with torch.device("meta"):
        model = build_centerpoint(cfg)
        shapes = graph_shapes(cfg)
        pf = VoxelEncoderGraph(model)(torch.empty(*shapes.input_features))
        outs = BackboneNeckHeadGraph(model)(torch.empty(*shapes.spatial_features))
    assert shapes.input_features == (64000, 32, 11)
    assert shapes.spatial_features == (1, 32, 1020, 1020)
    assert tuple(pf.shape) == (64000, 32)
    for name, out in zip(HEAD_OUTPUT_NAMES, outs):
        assert tuple(out.shape) == shapes.head_outputs[name] == (1, out.shape[1], 510, 510)
    sd = model.state_dict()
    assert tuple(sd["pts_neck.deblocks.0.0.weight"].shape) == (128, 64, 2, 2)  # stride 0.5: strided conv
    assert tuple(sd["pts_neck.deblocks.1.0.weight"].shape) == (128, 128, 1, 1)
    assert tuple(sd["pts_bbox_head.shared_conv.conv.weight"].shape) == (64, 384, 3, 3)


def test_autoware_output_convention(small):
    cfg, model = small
    x = torch.randn(1, 32, 256, 256)
    with torch.inference_mode():
        raw = model.forward_head(x)
        aw = dict(zip(HEAD_OUTPUT_NAMES, BackboneNeckHeadGraph(model)(x)))
    assert torch.equal(aw["dim"][:, 0], raw["dim"][:, 1]) and torch.equal(aw["dim"][:, 1], raw["dim"][:, 0])
    # Autoware: yaw_ros = -atan2(rot0, rot1) - pi/2 must equal the model's atan2(sin, cos)
    yaw_model = torch.atan2(raw["rot"][:, 0], raw["rot"][:, 1])
    yaw_aw = -torch.atan2(aw["rot"][:, 0], aw["rot"][:, 1]) - math.pi / 2
    diff = torch.remainder(yaw_aw - yaw_model + math.pi, 2 * math.pi) - math.pi
    assert diff.abs().max() < 1e-4
    back = from_autoware_head_outputs(aw)
    for k in raw:
        assert torch.equal(back[k], raw[k])
    no_vel = {k: v for k, v in raw.items() if k != "vel"}
    assert to_autoware_head_outputs(no_vel)[5].abs().sum() == 0


def test_batched_training_forward_matches_single_samples(small):
    cfg, model = small
    torch.manual_seed(1)
    feats = torch.randn(6, cfg.max_points_per_voxel, 11)
    coords = torch.tensor([[0, 3, 4], [0, 100, 7], [1, 3, 4], [1, 50, 60], [1, 255, 255], [0, 0, 0]])
    with torch.inference_mode():
        both = model(feats, coords, batch_size=2)
        one = model(feats[coords[:, 0] == 1], coords[coords[:, 0] == 1][:, 1:], batch_size=1)
    assert torch.allclose(both["heatmap"][1:2], one["heatmap"], atol=1e-5)


def _cloud(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [rng.uniform(-45, 45, (n, 2)), rng.uniform(-2.5, 1.0, n), rng.uniform(0, 255, n), np.zeros(n)]
    ).astype(np.float32)


def test_pipeline_runs_and_is_deterministic(small):
    cfg, model = small
    runners = torch_runners(model, cfg, "cpu")
    assert isinstance(runners["encoder"], GraphRunner) and isinstance(runners, RunnerSet)
    pipe = CenterPointPipeline(cfg, runners)
    pts = _cloud(20000)
    a, b = pipe(pts, return_raw=True), pipe(torch.from_numpy(pts))
    assert set(a.timings_ms) == {"preprocess", "encoder", "scatter", "head", "postprocess", "total"}
    assert a.raw is not None and set(a.raw) == {"pillar_features", *HEAD_OUTPUT_NAMES}
    assert a.raw["pillar_features"].shape == (a.stats.num_voxels, 32)
    assert len(a.detections) <= cfg.nms.post_max_size
    np.testing.assert_array_equal(a.detections.boxes, b.detections.boxes)
    np.testing.assert_array_equal(a.detections.scores, b.detections.scores)
    # staged calls compose to the same result
    pre = pipe.preprocess(pts)
    dets = pipe.postprocess(pipe.head(pipe.scatter(pipe.encode(pre.input_features), pre.coords)))
    np.testing.assert_array_equal(dets.boxes, a.detections.boxes)


def test_pipeline_empty_cloud_and_bad_input(small):
    cfg, model = small
    pipe = CenterPointPipeline(cfg, torch_runners(model, cfg, "cpu"))
    out = pipe(np.zeros((0, 5), np.float32))
    assert len(out.detections) == 0 and out.stats.num_voxels == 0
    out = pipe(np.full((10, 4), 1000.0, np.float32))  # all out of range
    assert len(out.detections) == 0 and out.stats.out_of_range == 10
    with pytest.raises(ValueError, match="shape"):
        pipe(np.zeros((10, 3), np.float32))


def test_scatter_spare_cell_drops_padding_rows():
    """Rows whose cell is (grid_y, 0) (padding of a fixed-size pillar batch) land in the spare cell, cut off."""
    feats = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    coords = torch.tensor([[0, 1], [2, 0], [3, 0], [3, 0]])  # grid 2 x 3: rows 2, 3 are padding
    out = scatter_pillars(feats, coords, grid_x=2, grid_y=3, spare_cell=True)
    ref = scatter_pillars(feats[:2], coords[:2], grid_x=2, grid_y=3)
    assert out.shape == (1, 3, 3, 2) and torch.equal(out, ref)
    assert out[0, :, 0, 1].tolist() == [0.0, 1.0, 2.0] and out[0, :, 2, 0].tolist() == [3.0, 4.0, 5.0]
