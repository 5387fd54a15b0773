"""The Triton kernels against the torch code they replace, run in Triton's interpreter on CPU tensors.

Not collected by itself: ``test_triton_kernels.py`` runs this file under ``TRITON_INTERPRET=1`` in a fresh process
(the variable must be set before the kernels are defined). Every comparison is bit for bit. On a GPU the compiled
kernels are held to the same results by ``test_gpu_paths.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from awml_deploy_core.pipelines.centerpoint import features_triton, voxelize_triton
from awml_deploy_core.pipelines.centerpoint.features import encoder_features_from
from awml_deploy_core.pipelines.centerpoint.voxelize import voxelize_padded

from test_gpu_paths import messy_cloud, padded_cloud, signed_zero_cloud, tiny_model_cfg

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" or features_triton.triton is None,
                                reason="run by test_triton_kernels.py, under TRITON_INTERPRET=1")


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t.long()


@pytest.mark.parametrize("n, pad, max_voxels, slots", [
    (6000, 1000, 300, 8),  # pillars dropped beyond max_voxels
    (6000, 1000, 5000, 8),  # all kept
    (20000, 3000, 800, 32),  # truncated pillars, AWML base's 32 slots
    (3000, 0, 4000, 20),  # no padding rows
    (0, 7, 500, 8),  # padding only
    (1, 0, 10, 8),
])
def test_voxelize_kernels_equal_the_torch_code(monkeypatch, n, pad, max_voxels, slots):
    cfg = tiny_model_cfg().model_copy(update={"max_voxels": max_voxels, "max_points_per_voxel": slots})
    pts = messy_cloud(n, seed=n % 7) if n else np.zeros((0, 5), np.float32)
    buf, n_real = padded_cloud(pts, pad)
    ref = voxelize_padded(buf, n_real, cfg)
    monkeypatch.setattr(voxelize_triton, "available", lambda _buf: True)
    got = voxelize_padded(buf, n_real, cfg)
    for name, a, b in zip(("slots", "num_points", "coords", "counters"), ref, got):
        assert a.shape == b.shape, name
        assert torch.equal(_bits(a), _bits(b)), name


def test_voxelize_kernels_on_an_all_out_of_range_cloud(monkeypatch):
    cfg = tiny_model_cfg()
    pts = messy_cloud(500, seed=2)
    pts[:, 0] = 1e9
    buf, n_real = padded_cloud(pts, 100)
    ref = voxelize_padded(buf, n_real, cfg)
    monkeypatch.setattr(voxelize_triton, "available", lambda _buf: True)
    got = voxelize_padded(buf, n_real, cfg)
    assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(ref, got))
    assert got[3].tolist()[0] == 0


@pytest.mark.parametrize("n_feat, slots", [(9, 3), (10, 8), (11, 20), (11, 32)])
def test_features_kernels_equal_the_batched_matmul(monkeypatch, n_feat, slots):
    """Signed zeros included (signed_zero_cloud: points at exactly -0.0, a pillar where x - mean is exactly 0)."""
    cfg = tiny_model_cfg().model_copy(update={"encoder_in_features": n_feat, "max_points_per_voxel": slots,
                                              "max_voxels": 3000})
    pts = signed_zero_cloud(8000)
    buf, n_real = padded_cloud(pts, 0)
    slots_t, num, coords, _ = voxelize_padded(buf, n_real, cfg)
    ref = encoder_features_from(slots_t, num, coords, cfg)
    monkeypatch.setattr(features_triton, "available", lambda _slots: True)
    got = encoder_features_from(slots_t, num, coords, cfg)
    assert torch.equal(_bits(ref), _bits(got))
