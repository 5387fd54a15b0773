"""Voxelization and encoder features on hand-built clouds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from awml_deploy_core.config import CenterPointModelConfig
from awml_deploy_core.pipelines.centerpoint.features import encoder_features
from awml_deploy_core.pipelines.centerpoint.voxelize import as_points, voxelize


def tiny_cfg(**kw) -> CenterPointModelConfig:
    """16 x 16 pillars of 0.5 m over +-4 m (all sizes exact in binary floating point)."""
    base = dict(
        point_cloud_range=[-4.0, -4.0, -2.0, 4.0, 4.0, 2.0],
        voxel_size=[0.5, 0.5, 4.0],
        max_points_per_voxel=3,
        max_voxels=4,
    )
    base.update(kw)
    return CenterPointModelConfig(**base)


def cloud(*xyz: tuple[float, float, float]) -> np.ndarray:
    pts = np.zeros((len(xyz), 5), np.float32)
    if len(xyz):
        pts[:, :3] = np.asarray(xyz, np.float32)
        pts[:, 3] = np.arange(len(xyz)) * 10  # intensity tags the input index
        pts[:, 4] = 0.05
    return pts


def reference_voxelize(pts: np.ndarray, cfg: CenterPointModelConfig):
    """Plain-Python statement of the rules."""
    r, (vx, vy, _), (gx, gy) = cfg.point_cloud_range, cfg.voxel_size, cfg.grid_size
    order, members = [], {}
    for i, p in enumerate(pts.astype(np.float32)):
        x, y, z = p[:3]
        if not np.all(np.isfinite(p[:3])):
            continue
        if not (r[0] <= x < r[3] and r[1] <= y < r[4] and r[2] <= z < r[5]):
            continue
        ix = min(max(int(np.floor((x - np.float32(r[0])) / np.float32(vx))), 0), gx - 1)
        iy = min(max(int(np.floor((y - np.float32(r[1])) / np.float32(vy))), 0), gy - 1)
        if (iy, ix) not in members:
            order.append((iy, ix))
            members[(iy, ix)] = []
        members[(iy, ix)].append(i)
    order = order[: cfg.max_voxels]
    return order, [members[c][: cfg.max_points_per_voxel] for c in order], [len(members[c]) for c in order]


def test_boundaries_go_to_the_upper_pillar():
    cfg = tiny_cfg()
    pts = cloud((-3.5, -4.0, 0.0), (-3.5000002, -3.5, 0.0), (3.9999998, 3.5, 0.0))
    v = voxelize(pts, cfg)
    assert v.coords.tolist() == [[0, 1], [1, 0], [15, 15]]  # (y, x): floor() puts x = -3.5 in cell 1
    assert v.num_points.tolist() == [1, 1, 1]


def test_range_is_half_open_and_counted():
    cfg = tiny_cfg()
    pts = cloud((4.0, 0.0, 0.0), (0.0, -4.0001, 0.0), (0.0, 0.0, 2.0), (0.0, 0.0, -2.0), (1.0, 1.0, 1.0))
    v = voxelize(pts, cfg)
    s = v.stats
    assert (s.points_in, s.out_of_range, s.nan_dropped, s.num_voxels) == (5, 3, 0, 2)
    assert s.points_used == 2


def test_nan_and_inf_points_are_dropped_and_counted():
    cfg = tiny_cfg()
    pts = cloud((np.nan, 0.0, 0.0), (0.0, np.inf, 0.0), (0.0, 0.0, -np.inf), (0.1, 0.1, 0.1), (1.1, 0.1, 0.1),
                (50.0, 0.0, 0.0))
    pts[4, 3] = np.nan  # a NaN intensity drops its point too (it would poison the pillar's features)
    pts[5, 3] = np.inf  # out of range AND non-finite: counted once, as non-finite
    v = voxelize(pts, cfg)
    assert (v.stats.nan_dropped, v.stats.out_of_range, v.stats.num_voxels) == (5, 0, 1)
    assert np.isfinite(v.points.numpy()).all() and v.stats.points_used == 1


def test_overflow_per_pillar_keeps_the_first_points_in_input_order():
    cfg = tiny_cfg()
    pts = cloud(*[(0.1 + 0.01 * i, 0.1, 0.0) for i in range(5)])
    v = voxelize(pts, cfg)
    assert v.num_points.tolist() == [3]
    assert v.points[0, :, 3].tolist() == [0.0, 10.0, 20.0]
    assert (v.stats.points_truncated, v.stats.pillars_dropped, v.stats.points_in_dropped_pillars) == (2, 0, 0)
    assert v.stats.pillars_truncated == 1


def test_pillars_beyond_max_voxels_are_dropped_in_first_appearance_order():
    cfg = tiny_cfg()
    xs = [3.1, -3.9, 0.2, 1.1, -1.6, 2.6]  # six different pillars, in this order of appearance
    pts = cloud(*[(x, 0.0, 0.0) for x in xs], (2.6, 0.1, 0.0), (3.2, 0.0, 0.0))
    v = voxelize(pts, cfg)
    assert v.coords[:, 1].tolist() == [14, 0, 8, 10]
    assert v.num_points.tolist() == [2, 1, 1, 1]  # the last point joins the first pillar
    s = v.stats
    assert (s.num_voxels, s.pillars_dropped, s.points_in_dropped_pillars, s.points_truncated) == (4, 2, 3, 0)
    assert s.pillars_truncated == 0  # dropping whole pillars is not truncation


def test_empty_cloud():
    cfg = tiny_cfg()
    v = voxelize(np.zeros((0, 4), np.float32), cfg)
    assert v.points.shape == (0, 3, 5) and v.coords.shape == (0, 2) and v.num_points.shape == (0,)
    assert v.stats.num_voxels == 0 and v.stats.points_in == 0
    assert encoder_features(v, cfg).shape == (0, 3, 11)


@pytest.mark.parametrize("shape", [(10, 3), (10,), (2, 3, 4)])
def test_bad_shapes_raise_value_error(shape):
    with pytest.raises(ValueError, match=r"\(N, >=4\)"):
        voxelize(np.zeros(shape, np.float32), tiny_cfg())


def test_four_columns_get_zero_time_lag():
    t = as_points(np.ones((3, 4), np.float32))
    assert t.shape == (3, 5) and t[:, 4].abs().sum() == 0


def test_matches_the_reference_and_is_deterministic():
    cfg = tiny_cfg(max_points_per_voxel=4, max_voxels=40)
    rng = np.random.default_rng(3)
    pts = np.concatenate([rng.uniform(-4.5, 4.5, (3000, 2)), rng.uniform(-2.5, 2.5, (3000, 1)), rng.uniform(0, 255, (3000, 2))], 1)
    pts = pts.astype(np.float32)
    pts[::97, 0] = np.nan
    v1, v2 = voxelize(pts, cfg), voxelize(torch.from_numpy(pts), cfg)
    assert torch.equal(v1.points, v2.points) and torch.equal(v1.coords, v2.coords) and v1.stats == v2.stats
    order, members, sizes = reference_voxelize(pts, cfg)
    assert [tuple(c) for c in v1.coords.tolist()] == order
    for k, idx in enumerate(members):
        n = len(idx)
        assert v1.num_points[k] == n
        np.testing.assert_array_equal(v1.points[k, :n].numpy(), pts[idx])
        assert v1.points[k, n:].abs().sum() == 0
    s = v1.stats
    assert s.points_in == s.nan_dropped + s.out_of_range + s.points_truncated + s.points_in_dropped_pillars + s.points_used
    assert s.pillars_dropped > 0 and s.points_truncated > 0
    assert s.pillars_truncated == sum(n > cfg.max_points_per_voxel for n in sizes) > 0
    assert s.points_truncated == sum(max(n - cfg.max_points_per_voxel, 0) for n in sizes)


def test_encoder_features_by_hand_for_two_pillars():
    cfg = tiny_cfg(max_points_per_voxel=3)
    # pillar A (x cell 9, y cell 8): two points; pillar B (x cell 2, y cell 12): one point
    pts = cloud((0.6, 0.2, -1.0), (0.8, 0.4, 0.0), (-2.9, 2.1, 1.5))
    pts[:, 3] = [100.0, 50.0, 7.0]
    pts[:, 4] = [0.0, 0.1, 0.2]
    v = voxelize(pts, cfg)
    assert v.coords.tolist() == [[8, 9], [12, 2]]
    f = encoder_features(v, cfg).numpy()
    assert f.shape == (2, 3, 11)
    # centres: x = 0.25 + 9 * 0.5 - 4 = 0.75, y = 0.25 + 8 * 0.5 - 4 = 0.25, z = 2 - 2 = 0
    mean = np.array([0.7, 0.3, -0.5])
    exp_a0 = [0.6, 0.2, -1.0, 100.0, 0.0, 0.6 - mean[0], 0.2 - mean[1], -1.0 - mean[2], 0.6 - 0.75, 0.2 - 0.25, -1.0]
    exp_a1 = [0.8, 0.4, 0.0, 50.0, 0.1, 0.8 - mean[0], 0.4 - mean[1], 0.0 - mean[2], 0.8 - 0.75, 0.4 - 0.25, 0.0]
    exp_b0 = [-2.9, 2.1, 1.5, 7.0, 0.2, 0.0, 0.0, 0.0, -2.9 - (-2.75), 2.1 - 2.25, 1.5]
    np.testing.assert_allclose(f[0, 0], exp_a0, atol=1e-6)
    np.testing.assert_allclose(f[0, 1], exp_a1, atol=1e-6)
    np.testing.assert_allclose(f[1, 0], exp_b0, atol=1e-6)
    assert np.all(f[0, 2] == 0) and np.all(f[1, 1:] == 0)
    # 10 features: no intensity; 9: no z centre offset either (Autoware's layouts)
    f10 = encoder_features(v, tiny_cfg(max_points_per_voxel=3, encoder_in_features=10)).numpy()
    np.testing.assert_allclose(f10[0, 0], [exp_a0[i] for i in (0, 1, 2, 4, 5, 6, 7, 8, 9, 10)], atol=1e-6)
    f9 = encoder_features(v, tiny_cfg(max_points_per_voxel=3, encoder_in_features=9)).numpy()
    np.testing.assert_allclose(f9[0, 1], [exp_a1[i] for i in (0, 1, 2, 4, 5, 6, 7, 8, 9)], atol=1e-6)
