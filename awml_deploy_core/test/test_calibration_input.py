"""The calibration-status input builder against an independent per-point z-buffer loop, and the perturbation
generator's labels, band and seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from awml_deploy_core.config import CalibrationStatusModelConfig, MiscalibrationConfig
from awml_deploy_core.data.calibration_pairs import (AMBIGUOUS, CALIBRATED, MISCALIBRATED, extrinsic_error,
                                                     label_of, pair_perturbation, perturb_extrinsic)
from awml_deploy_core.errors import DatasetError
from awml_deploy_core.pipelines.calibration.input_builder import BuilderSpec, build_input, build_input_ex


def reference(image, points, K, T, spec):
    """Per point, plain Python: project, keep in range and in the image, nearest z wins (first index on ties)."""
    H, W = image.shape[:2]
    depth = np.zeros((H, W))
    inten = np.zeros((H, W))
    best = np.full((H, W), np.inf)
    count = 0
    for x, y, z, i in points[:, :4].astype(np.float64):
        pc = T[:3, :3] @ np.array([x, y, z]) + T[:3, 3]
        if not (spec.min_depth < pc[2] <= spec.max_depth):
            continue
        u = K[0, 0] * pc[0] / pc[2] + K[0, 1] * pc[1] / pc[2] + K[0, 2]
        v = K[1, 1] * pc[1] / pc[2] + K[1, 2]
        c, r = math.floor(u + 0.5), math.floor(v + 0.5)
        if not (0 <= c < W and 0 <= r < H):
            continue
        count += 1
        if pc[2] < best[r, c]:
            best[r, c] = pc[2]
            depth[r, c] = pc[2] / spec.depth_divisor
            inten[r, c] = i / spec.intensity_divisor
    rgb = (image[..., ::-1].astype(np.float64) - spec.image_mean) / spec.image_std
    return np.concatenate([rgb.transpose(2, 0, 1), depth[None], inten[None]]).astype(np.float32), count


def test_builder_matches_per_point_reference() -> None:
    rng = np.random.default_rng(0)
    H, W = 12, 16
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    n = 400
    pts = np.concatenate([rng.uniform([-3, -2, -1], [3, 2, 140], (n, 3)), rng.uniform(0, 255, (n, 1))], 1)
    pts[:40, :3] = pts[40:80, :3]  # exact duplicates: same z on one pixel, the lower index must win
    pts[:40, 3] = 7.0
    pts = pts.astype(np.float32)
    a = math.radians(3.0)
    T = np.eye(4)
    T[:3, :3] = [[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]]
    T[:3, 3] = [0.1, -0.2, 0.3]
    K = np.array([[9.0, 0.2, 7.5], [0, 8.0, 5.5], [0, 0, 1]])
    spec = BuilderSpec(min_depth=0.5, max_depth=128.0)
    built = build_input_ex(image, pts, K, T, spec)
    ref, count = reference(image, pts, K, T, spec)
    assert built.tensor.shape == (5, H, W) and built.tensor.dtype == np.float32
    assert built.projected_points == count > 50
    np.testing.assert_allclose(built.tensor, ref, rtol=0, atol=1e-6)
    assert built.filled_pixels == int((ref[3] > 0).sum())
    # the copies 0..39 (intensity 7) tie with 40..79 on z and come first: they win where they are nearest
    assert (built.tensor[4] == np.float32(7.0 / 255)).sum() > 0


def test_builder_is_deterministic_and_respects_max_depth() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    pts = np.array([[0, 0, 127.9, 10], [0, 0, 128.5, 20], [0, 0, 50, 30]], np.float32)
    K = np.array([[10.0, 0, 14.5], [0, 10.0, 9.5], [0, 0, 1]])
    cfg = CalibrationStatusModelConfig()
    a = build_input(image, pts, K, np.eye(4), cfg)
    b = build_input(image, pts, K, np.eye(4), cfg)
    assert np.array_equal(a, b)
    built = build_input_ex(image, pts, K, np.eye(4), cfg)
    assert built.projected_points == 2  # 128.5 m is beyond max_depth 128
    assert a[3, 10, 15] == pytest.approx(50 / 128) and a[4, 10, 15] == pytest.approx(30 / 255)


def test_builder_rejects_malformed_inputs() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    pts = np.zeros((3, 4), np.float32)
    cfg = BuilderSpec()
    with pytest.raises(DatasetError, match="image"):
        build_input(np.zeros((4, 4), np.uint8), pts, np.eye(3), np.eye(4), cfg)
    with pytest.raises(DatasetError, match="points"):
        build_input(img, np.zeros((3, 3), np.float32), np.eye(3), np.eye(4), cfg)
    with pytest.raises(DatasetError, match="T_cam_lidar"):
        build_input(img, pts, np.eye(3), np.eye(3), cfg)


def test_labels_and_band() -> None:
    cfg = MiscalibrationConfig()
    assert label_of(1.01, 0.0, cfg) == MISCALIBRATED
    assert label_of(0.0, 0.051, cfg) == MISCALIBRATED
    assert label_of(0.49, 0.024, cfg) == CALIBRATED
    assert label_of(0.6, 0.0, cfg) == AMBIGUOUS
    assert label_of(0.1, 0.03, cfg) == AMBIGUOUS
    assert label_of(1.0, 0.05, cfg) == AMBIGUOUS  # "above" is strict


def test_perturbation_is_exact_and_seeded() -> None:
    T = np.eye(4)
    T[:3, 3] = [0.0, 0.3, 0.0]
    P = perturb_extrinsic(T, 2.5, 0.07, seed=11)
    rot, trans = extrinsic_error(T, P)
    assert rot == pytest.approx(2.5, abs=1e-9) and trans == pytest.approx(0.07, abs=1e-12)
    assert np.array_equal(P, perturb_extrinsic(T, 2.5, 0.07, seed=11))
    assert not np.allclose(P, perturb_extrinsic(T, 2.5, 0.07, seed=12))


def test_pair_perturbations_follow_the_config() -> None:
    cfg = MiscalibrationConfig()
    draws = [pair_perturbation(5, j, cfg) for j in range(3000)]
    assert draws[17] == pair_perturbation(5, 17, cfg)  # one pair reproducible on its own
    assert draws[17] != pair_perturbation(6, 17, cfg)
    labels = [d.label for d in draws]
    assert all(d.label == label_of(d.rotation_deg, d.translation_m, cfg) for d in draws)
    assert all(d.rotation_deg <= cfg.max_rotation_deg and d.translation_m <= cfg.max_translation_m for d in draws)
    share_cal = labels.count(CALIBRATED) / len(labels)
    assert 0.45 < share_cal < 0.58  # half the draws are calibrated ones, plus a few small miscalibration draws
    assert 0 < labels.count(AMBIGUOUS) < 150
    train = [pair_perturbation(5, j, cfg, exclude_ambiguous=True) for j in range(500)]
    assert AMBIGUOUS not in {d.label for d in train}
