"""Decoding (Autoware conventions), circle NMS, exact rotated BEV IoU and its NMS."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from awml_deploy_core.config import CenterPointModelConfig
from awml_deploy_core.models.centerpoint import to_autoware_head_outputs
from awml_deploy_core.pipelines.centerpoint.decode import decode
from awml_deploy_core.pipelines.centerpoint.nms import (
    bev_corners,
    bev_iou_nms,
    circle_nms,
    nms,
    polygon_intersection_area,
    rotated_iou_bev,
)
from awml_deploy_core.structures import Boxes3D
from awml_deploy_core.training.targets import TargetConfig, build_targets


def tiny_cfg(**kw) -> CenterPointModelConfig:
    base = dict(point_cloud_range=[-4.0, -4.0, -2.0, 4.0, 4.0, 2.0], voxel_size=[0.5, 0.5, 4.0])
    base.update(kw)
    return CenterPointModelConfig(**base)  # 16 x 16 pillars, 8 x 8 output cells of 1 m


def empty_outputs(cfg: CenterPointModelConfig) -> dict[str, torch.Tensor]:
    gx, gy = cfg.grid_size
    h, w = gy // cfg.out_size_factor, gx // cfg.out_size_factor
    ch = {"heatmap": len(cfg.class_names), "reg": 2, "height": 1, "dim": 3, "rot": 2, "vel": 2}
    out = {k: torch.zeros(1, c, h, w) for k, c in ch.items()}
    out["heatmap"][:] = -20.0
    out["rot"][:, 1] = 1.0
    return out


def test_one_peak_decodes_to_the_exact_box():
    cfg = tiny_cfg()
    out = empty_outputs(cfg)
    yi, xi, yaw = 6, 5, 0.3
    out["heatmap"][0, 2, yi, xi] = 2.0
    out["reg"][0, :, yi, xi] = torch.tensor([0.25, 0.5])
    out["height"][0, 0, yi, xi] = -0.7
    out["dim"][0, :, yi, xi] = torch.tensor([math.log(2.0), math.log(4.5), math.log(1.5)])  # w, l, h
    out["rot"][0, :, yi, xi] = torch.tensor([-math.cos(yaw), -math.sin(yaw)])  # Autoware: yaw_ros = -atan2 - pi/2
    out["vel"][0, :, yi, xi] = torch.tensor([1.0, -2.0])
    d = decode(out, cfg)
    assert len(d) == 1 and d.labels[0] == 2
    assert d.scores[0] == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-6)
    # x = voxel * out_size_factor * (xi + reg) + min = 1.0 * 5.25 - 4
    np.testing.assert_allclose(d.boxes[0], [1.25, 2.5, -0.7, 4.5, 2.0, 1.5, yaw], atol=1e-5)
    np.testing.assert_allclose(d.velocities[0], [1.0, -2.0], atol=1e-6)


def test_class_thresholds_and_range_filter():
    cfg = tiny_cfg(class_score_thresholds=[0.9, 0.1, 0.1, 0.1, 0.1])
    out = empty_outputs(cfg)
    out["heatmap"][0, 0, 1, 1] = 1.0  # car at 0.73 < 0.9: dropped
    out["heatmap"][0, 1, 2, 2] = 1.0  # truck at 0.73: kept
    out["heatmap"][0, 3, 7, 7] = 1.0
    out["reg"][0, 0, 7, 7] = 1.5  # x = 8.5 - 4 = 4.5 > 4: outside the range, dropped
    d = decode(out, cfg)
    assert d.labels.tolist() == [1]


def test_targets_round_trip_through_the_autoware_outputs():
    """GT -> training targets -> (mmdet3d raw -> Autoware graph outputs) -> decode -> NMS gives the GT back."""
    cfg = tiny_cfg(score_threshold=0.5)
    gt = np.array(
        [
            [1.3, -2.2, -1.1, 4.2, 1.8, 1.5, 0.4],
            [-2.6, 2.9, -0.9, 0.6, 0.5, 1.7, -2.9],
            [3.1, 3.3, -0.5, 10.0, 2.5, 3.0, math.pi / 2],
        ],
        np.float32,
    )
    labels = np.array([0, 4, 2])
    vel = np.array([[2.0, 0.5], [0.0, -1.0], [-3.0, 0.0]], np.float32)
    t = build_targets(gt, labels, vel, cfg, TargetConfig())
    h, w = t["heatmap"].shape[1:]
    raw = {
        "heatmap": torch.from_numpy(np.where(t["heatmap"] == 1, 10.0, -10.0)).float()[None],
        "reg": torch.zeros(1, 2, h, w),
        "height": torch.zeros(1, 1, h, w),
        "dim": torch.zeros(1, 3, h, w),
        "rot": torch.zeros(1, 2, h, w),
        "vel": torch.zeros(1, 2, h, w),
    }
    flat = {k: v.view(1, v.shape[1], -1) for k, v in raw.items()}
    n = int(t["mask"].sum())
    for j in range(n):
        i, a = int(t["ind"][j]), t["anno_box"][j]
        for name, sl in (("reg", slice(0, 2)), ("height", slice(2, 3)), ("dim", slice(3, 6)), ("rot", slice(6, 8)), ("vel", slice(8, 10))):
            flat[name][0, :, i] = torch.from_numpy(a[sl])
    names = ("heatmap", "reg", "height", "dim", "rot", "vel")
    d = nms(decode(dict(zip(names, to_autoware_head_outputs(raw))), cfg), cfg)
    order = np.argsort(d.boxes[:, 0])
    ref = np.argsort(gt[:, 0])
    np.testing.assert_allclose(d.boxes[order, :6], gt[ref, :6], atol=1e-5)
    dyaw = (d.boxes[order, 6] - gt[ref, 6] + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(dyaw, 0, atol=1e-5)
    assert d.labels[order].tolist() == labels[ref].tolist()
    np.testing.assert_allclose(d.velocities[order], vel[ref], atol=1e-6)


# ----------------------------------------------------------------------------------------- circle
def test_circle_nms_per_class_and_strict_radius():
    xy = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.4], [1.0, 0.0], [0.2, 0.2]])
    labels = np.array([0, 0, 1, 0, 1])
    radii = np.array([1.0, 0.3])
    keep = circle_nms(xy, labels, radii)
    # box1 within 1 m of box0 (same class): gone; box3 exactly 1 m away: kept (strict <);
    # box2 is another class; box4 is 0.283 m from box2 (< 0.3): gone
    assert keep.tolist() == [True, False, True, True, False]


def test_nms_orders_by_score_and_caps_post_max_size():
    cfg = tiny_cfg()
    cfg.nms.post_max_size = 2
    boxes = np.zeros((4, 7), np.float32)
    boxes[:, 0] = [0.0, 0.1, 9.0, -9.0]  # car radius 4 m: box 1 suppresses box 0
    boxes[:, 3:6] = 1.0
    dets = Boxes3D(boxes, np.array([0.3, 0.9, 0.5, 0.4]), np.zeros(4, np.int64), None)
    out = nms(dets, cfg)
    assert out.scores.tolist() == pytest.approx([0.9, 0.5])


# ------------------------------------------------------------------------------------- rotated IoU
def _mc_iou(a: np.ndarray, b: np.ndarray, n: int = 400_000, seed: int = 0) -> float:
    """Monte-Carlo IoU of two BEV boxes [x, y, l, w, yaw]."""
    rng = np.random.default_rng(seed)
    ca, cb = bev_corners(a[None])[0], bev_corners(b[None])[0]
    pts = np.concatenate([ca, cb])
    lo, hi = pts.min(0), pts.max(0)
    p = rng.uniform(lo, hi, (n, 2))

    def inside(c):
        e = np.roll(c, -1, 0) - c
        rel = p[:, None, :] - c[None]
        return ((e[None, :, 0] * rel[..., 1] - e[None, :, 1] * rel[..., 0]) >= 0).all(1)

    ia, ib = inside(ca), inside(cb)
    return float((ia & ib).sum() / max((ia | ib).sum(), 1))


def _b7(x, y, l, w, yaw):
    return np.array([x, y, 0.0, l, w, 1.0, yaw])


def test_rotated_iou_hand_cases():
    sq = _b7(0, 0, 1, 1, 0)
    cases = [
        (sq, sq, 1.0),
        (sq, _b7(0.5, 0, 1, 1, 0), 0.5 / 1.5),
        (sq, _b7(0, 0, 1, 1, math.pi / 4), (2 * (math.sqrt(2) - 1)) / (2 - 2 * (math.sqrt(2) - 1))),
        (sq, _b7(3, 0, 1, 1, 0.3), 0.0),
        (_b7(0, 0, 4, 2, 0), _b7(0, 0, 4, 2, math.pi), 1.0),
        (_b7(0, 0, 4, 2, 0), _b7(0, 0, 4, 2, math.pi / 2), 4.0 / 12.0),
        (sq, _b7(1.0, 0, 1, 1, 0), 0.0),  # touching edges
    ]
    for a, b, expected in cases:
        assert rotated_iou_bev(a[None], b[None])[0, 0] == pytest.approx(expected, abs=1e-9)


def test_rotated_iou_against_monte_carlo():
    rng = np.random.default_rng(1)
    a = np.column_stack([rng.uniform(-1, 1, 12), rng.uniform(-1, 1, 12), np.zeros(12), rng.uniform(0.5, 4, 12), rng.uniform(0.3, 2, 12), np.ones(12), rng.uniform(-np.pi, np.pi, 12)])
    b = np.column_stack([rng.uniform(-1, 1, 12), rng.uniform(-1, 1, 12), np.zeros(12), rng.uniform(0.5, 4, 12), rng.uniform(0.3, 2, 12), np.ones(12), rng.uniform(-np.pi, np.pi, 12)])
    iou = rotated_iou_bev(a, b)
    for i in range(12):
        mc = _mc_iou(a[i, [0, 1, 3, 4, 6]], b[i, [0, 1, 3, 4, 6]], seed=i)
        assert iou[i, i] == pytest.approx(mc, abs=0.01)
    assert np.allclose(iou, rotated_iou_bev(b, a).T)


def test_polygon_area_of_a_box_with_itself_is_its_area():
    c = bev_corners(np.array([[1.0, 2.0, 3.0, 1.5, 0.7]]))
    assert polygon_intersection_area(c, c)[0] == pytest.approx(4.5)


def test_bev_iou_nms():
    boxes = np.stack(
        [_b7(0, 0, 4, 2, 0), _b7(0.2, 0, 4, 2, 0.05), _b7(0, 0, 4, 2, math.pi / 2), _b7(10, 0, 4, 2, 0), _b7(0.1, 0, 4, 2, 0)]
    )
    labels = np.array([0, 0, 0, 0, 1])
    keep = bev_iou_nms(boxes, labels, 0.5)
    # box1 overlaps box0 (IoU ~0.87): gone; box2 crosses box0 at IoU 1/3: kept; box4 is another class
    assert keep.tolist() == [True, False, True, True, True]
    cfg = tiny_cfg()
    cfg.nms.kind = "bev_iou"
    cfg.nms.iou_threshold = 0.5
    out = nms(Boxes3D(boxes, np.array([0.9, 0.8, 0.7, 0.6, 0.5]), labels, None), cfg)
    assert len(out) == 4
