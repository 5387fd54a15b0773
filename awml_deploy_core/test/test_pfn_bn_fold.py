"""The pillar encoder folds BatchNorm into its linear layer in eval mode: same outputs, same checkpoints."""

from __future__ import annotations

import torch

from awml_deploy_core.config import CenterPointModelConfig
from awml_deploy_core.models.centerpoint import PFNLayer, VoxelEncoderGraph, build_centerpoint, graph_shapes


def _model_with_real_statistics() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_centerpoint(CenterPointModelConfig())
    for m in model.modules():
        if isinstance(m, PFNLayer):  # non-trivial running statistics and affine parameters
            m.norm.running_mean.uniform_(-2.0, 2.0)
            m.norm.running_var.uniform_(0.05, 4.0)
            m.norm.weight.data.uniform_(0.5, 1.5)
            m.norm.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def _encode(model: torch.nn.Module, features: torch.Tensor, fold: bool) -> torch.Tensor:
    PFNLayer.fold_bn = fold
    try:
        with torch.inference_mode():
            return VoxelEncoderGraph(model)(features)
    finally:
        PFNLayer.fold_bn = True


def test_folded_encoder_matches_batchnorm_within_fp32_tolerance():
    model = _model_with_real_statistics()
    cfg = CenterPointModelConfig()
    features = torch.randn(graph_shapes(cfg, num_voxels=3000).input_features) * 10.0
    features[:, 20:] = 0.0  # padded point slots, as the pipeline gives them
    folded, reference = _encode(model, features, True), _encode(model, features, False)
    assert folded.shape == reference.shape
    torch.testing.assert_close(folded, reference, rtol=1e-5, atol=1e-4)
    assert not torch.equal(reference, torch.zeros_like(reference))


def test_folding_keeps_state_dict_and_training():
    model = _model_with_real_statistics()
    keys = set(build_centerpoint(CenterPointModelConfig()).state_dict())
    assert set(model.state_dict()) == keys  # checkpoints load unchanged
    layer = next(m for m in model.modules() if isinstance(m, PFNLayer))
    layer.train()
    x = torch.randn(50, 32, layer.linear.in_features)
    before = layer.norm.running_mean.clone()
    out = layer(x)
    assert not torch.equal(layer.norm.running_mean, before)  # training still updates the BatchNorm statistics
    out.sum().backward()
    assert layer.linear.weight.grad is not None and layer.norm.weight.grad is not None
