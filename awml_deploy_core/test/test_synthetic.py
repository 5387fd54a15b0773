"""Checks of the synthetic lidar generator against independent recomputations (no tautologies)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from awml_deploy_core.config import CENTERPOINT_CLASSES
from awml_deploy_core.data.lidar import Ground, LidarSpec
from awml_deploy_core.data.synthetic import (
    Frame,
    SceneSpec,
    generate_frame,
    generate_frames,
    generate_sequence,
    render_boxes,
)
from awml_deploy_core.errors import ConfigError
from awml_deploy_core.structures import Boxes3D

SPEC = LidarSpec()


# ----------------------------------------------------------------------- independent test helpers
def _local_xy(points: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points' coordinates in the box frame, via an explicit rotation matrix."""
    yaw = float(box[6])
    rot = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    local = (points[:, :2].astype(np.float64) - box[:2].astype(np.float64)) @ rot  # == rot.T @ p
    return local[:, 0], local[:, 1]


def _inside(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    lx, ly = _local_xy(points, box)
    z = points[:, 2].astype(np.float64)
    b = box.astype(np.float64)
    return (np.abs(lx) <= b[3] / 2) & (np.abs(ly) <= b[4] / 2) & (z >= b[2] - b[5] / 2) & (z <= b[2] + b[5] / 2)


def _segment_hits_box(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Does the segment from the origin to each point pass through the (solid) box?"""
    lx, ly = _local_xy(points, box)
    lz = points[:, 2].astype(np.float64) - box[2]
    ox, oy = _local_xy(np.zeros((1, 3)), box)
    o = np.array([ox[0], oy[0], -float(box[2])])
    d = np.stack([lx, ly, lz], 1) - o  # segment o -> p, parameter s in [0, 1]
    half = np.asarray(box[3:6], np.float64) / 2
    s_lo = np.zeros(len(d))
    s_hi = np.ones(len(d))
    for a in range(3):
        with np.errstate(divide="ignore", invalid="ignore"):
            s1 = (-half[a] - o[a]) / d[:, a]
            s2 = (half[a] - o[a]) / d[:, a]
        par = d[:, a] == 0
        s_lo = np.where(par, np.where(abs(o[a]) <= half[a], s_lo, 2.0), np.maximum(s_lo, np.minimum(s1, s2)))
        s_hi = np.where(par, s_hi, np.minimum(s_hi, np.maximum(s1, s2)))
    return s_lo <= s_hi


@pytest.fixture(scope="module")
def frame() -> Frame:
    return generate_frame(1234)


@pytest.fixture(scope="module")
def sequence() -> list[Frame]:
    return list(generate_sequence(77, 8, start_time=100.0))


# ------------------------------------------------------------------------------------------ tests
def test_determinism_same_seed_identical_other_seed_differs(frame):
    again = generate_frame(1234)
    for name in ("points", "ring", "time", "num_lidar_points", "instance_ids"):
        a, b = getattr(frame, name), getattr(again, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    for name in ("boxes", "labels", "velocities", "scores"):
        assert getattr(frame.gt, name).tobytes() == getattr(again.gt, name).tobytes(), name
    other = generate_frame(1235)
    assert len(other.points) != len(frame.points) or not np.array_equal(other.points, frame.points)
    assert not np.array_equal(other.gt.boxes[:3], frame.gt.boxes[:3])


def test_types_and_shapes(frame):
    n, m = len(frame.points), len(frame.gt)
    assert frame.points.shape == (n, 4) and frame.points.dtype == np.float32
    assert frame.ring.shape == (n,) and frame.ring.dtype == np.uint16
    assert frame.time.shape == (n,) and frame.time.dtype == np.float32
    assert frame.num_lidar_points.shape == (m,) and frame.num_lidar_points.dtype == np.int32
    assert frame.instance_ids.shape == (m,) and frame.instance_ids.dtype == np.int64
    assert len(set(frame.instance_ids.tolist())) == m
    assert frame.class_names == CENTERPOINT_CLASSES
    assert np.all(frame.gt.scores == 1.0)
    assert frame.gt.labels.min() >= 0 and frame.gt.labels.max() < len(frame.class_names)
    p5 = frame.points_with_time_lag()
    assert p5.shape == (n, 5) and p5.dtype == np.float32
    assert np.array_equal(p5[:, :4], frame.points) and np.all(p5[:, 4] == 0)


@pytest.mark.parametrize("seed", [0, 1234, 99])
def test_point_count_in_range(seed, frame):
    f = frame if seed == 1234 else generate_frame(seed)
    assert 100_000 <= len(f.points) <= 200_000, len(f.points)


def test_point_attributes_are_physical(frame):
    p = frame.points.astype(np.float64)
    r = np.linalg.norm(p[:, :3], axis=1)
    assert r.max() <= SPEC.max_range + 1e-3
    assert r.min() >= SPEC.min_range - 1e-3
    assert frame.ring.max() < SPEC.beams
    assert frame.time.min() >= 0.0 and frame.time.max() < SPEC.sweep_period
    assert p[:, 3].min() >= 0 and p[:, 3].max() <= 255
    # Noise acts along the ray, so every point keeps its beam's elevation ...
    elev = np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1]))
    beam_elev = np.radians(np.linspace(SPEC.fov_down_deg, SPEC.fov_up_deg, SPEC.beams))
    assert np.abs(elev - beam_elev[frame.ring]).max() < 1e-4
    # ... and the time follows the azimuth: the head sweeps counter-clockwise from -pi in one period.
    az = np.arctan2(p[:, 1], p[:, 0])
    expected = ((az + np.pi) / (2 * np.pi)) * SPEC.sweep_period
    assert np.abs(frame.time - expected).max() < SPEC.sweep_period / SPEC.num_columns * 1.01
    # Ground below the sensor sits near -sensor_height.
    near = np.hypot(p[:, 0], p[:, 1]) < 6
    assert abs(np.median(p[near, 2]) + SPEC.sensor_height) < 0.15


def test_num_lidar_points_matches_independent_recount(frame, sequence):
    for f in [frame, sequence[-1]]:
        recount = np.array([_inside(f.points, b).sum() for b in f.gt.boxes])
        assert np.array_equal(recount, f.num_lidar_points)
        assert recount.sum() > 1000  # the objects are actually seen


def test_gt_boxes_stand_on_ground_and_do_not_overlap(frame):
    p = frame.points.astype(np.float64)
    checked = 0
    for b in frame.gt.boxes.astype(np.float64):
        bottom = b[2] - b[5] / 2
        lx, ly = _local_xy(p, b)
        dist = np.hypot(np.maximum(np.abs(lx) - b[3] / 2, 0), np.maximum(np.abs(ly) - b[4] / 2, 0))
        ring = (dist > 0.3) & (dist < 2.0) & (p[:, 2] > bottom - 0.5) & (p[:, 2] < bottom + 0.25)
        if ring.sum() >= 15:
            assert abs(np.median(p[ring, 2]) - bottom) < 0.1, (b, np.median(p[ring, 2]))
            checked += 1
    assert checked >= len(frame.gt) // 3
    # No overlap in BEV: a dense grid over each footprint (edges included) lies outside all others.
    boxes = frame.gt.boxes.astype(np.float64)
    g = np.linspace(-0.5, 0.5, 15)
    gx, gy = np.meshgrid(g, g)
    for i, b in enumerate(boxes):
        c, s = math.cos(b[6]), math.sin(b[6])
        lx, ly = gx.ravel() * b[3], gy.ravel() * b[4]
        pts = np.stack([b[0] + c * lx - s * ly, b[1] + s * lx + c * ly, np.full(lx.shape, b[2])], 1)
        for j, o in enumerate(boxes):
            if i != j:
                ox, oy = _local_xy(pts, o)
                assert not np.any((np.abs(ox) < o[3] / 2) & (np.abs(oy) < o[4] / 2)), (i, j)


def test_objects_are_realistic_and_every_class_appears():
    frames = [generate_frame(s) for s in (5, 6, 7)]
    spec = SceneSpec()
    seen = np.zeros(len(CENTERPOINT_CLASSES), int)
    for f in frames:
        labels = f.gt.labels
        for k, name in enumerate(f.class_names):
            assert (labels == k).sum() <= spec.object_counts[name][1]
            seen[k] += int(((labels == k) & (f.num_lidar_points >= 5)).sum())
        dims = f.gt.boxes[:, 3:6]
        for k, (lo, hi) in enumerate([((3.5, 1.5, 1.3), (5.7, 2.2, 2.1)), ((6.4, 2.1, 2.5), (10.6, 2.7, 3.7)),
                                      ((10.4, 2.7, 2.9), (12.6, 3.1, 3.6)), ((1.4, 0.4, 0.9), (2.1, 0.8, 2.0)),
                                      ((0.35, 0.4, 1.3), (1.0, 0.95, 2.0))]):
            sel = dims[labels == k]
            assert np.all(sel >= lo) and np.all(sel <= hi), (f.class_names[k], sel)
        c = np.abs(f.gt.boxes[:, :2]).max(axis=1)
        assert c.max() <= spec.far_range + 1e-3
        assert np.mean(c <= spec.object_range + 1e-3) >= 0.7
    assert np.all(seen > 0), dict(zip(CENTERPOINT_CLASSES, seen))


def test_occlusion_by_object_is_real():
    near = [10.0, 0.3, -1.8 + 0.8, 4.5, 1.9, 1.6, 0.0]
    far = [18.0, 0.0, -1.8 + 0.8, 4.5, 1.9, 1.6, 0.2]
    alone = render_boxes(Boxes3D([far], None, [0], None))
    both = render_boxes(Boxes3D([near, far], None, [0, 0], None))
    assert alone.num_lidar_points[0] > 200
    assert both.num_lidar_points[1] < 0.5 * alone.num_lidar_points[0]
    # No point of the far car was seen through the near car's body (render_boxes makes each object a
    # solid 0.04 m inside its box); alone, many of its points lay behind that body.
    body = np.array(near) - [0, 0, 0.02, 0.08, 0.08, 0.04, 0]
    in_far = _inside(both.points, np.array(far, np.float32))
    assert in_far.sum() == both.num_lidar_points[1]
    assert not _segment_hits_box(both.points[in_far], body).any()
    alone_far = alone.points[_inside(alone.points, np.array(far, np.float32))]
    assert _segment_hits_box(alone_far, body).sum() > 0.5 * len(alone_far)
    # The near car's points are the same with or without the far car behind it.
    near_alone = render_boxes(Boxes3D([near], None, [0], None))
    assert near_alone.num_lidar_points[0] == both.num_lidar_points[0]


def test_wall_blocks_objects_behind_it():
    car = Boxes3D([[15.0, 0.0, -1.0, 4.5, 1.9, 1.6, 0.0]], None, [0], None)
    wall = Boxes3D([[8.0, 0.0, 0.0, 0.3, 12.0, 8.0, 0.0]], None, [0], None)
    seen = render_boxes(car)
    hidden = render_boxes(car, obstacles=wall)
    assert seen.num_lidar_points[0] > 100 and hidden.num_lidar_points[0] == 0
    ahead = hidden.points[(np.abs(np.arctan2(hidden.points[:, 1], hidden.points[:, 0])) < 0.5)]
    assert ahead[:, 0].max() < 8.2  # nothing straight ahead beyond the wall's far face


def test_sloped_ground_is_followed():
    ground = Ground(height=1.8, slope_x=0.02)
    f = render_boxes(Boxes3D(), ground=ground, lidar=LidarSpec(beams=32, azimuth_resolution_deg=0.5))
    p = f.points.astype(np.float64)
    assert np.abs(p[:, 2] - (-1.8 + 0.02 * p[:, 0])).max() < 0.12  # 0.02 m noise * up to ~5 sigma


def test_sequence_velocities_match_displacement(sequence):
    dt = SPEC.sweep_period
    ts = np.array([f.timestamp for f in sequence])
    assert np.allclose(np.diff(ts), dt) and ts[0] == 100.0
    ids = sequence[0].instance_ids
    moving = 0
    for a, b in zip(sequence[:-1], sequence[1:]):
        assert np.array_equal(a.instance_ids, ids) and np.array_equal(b.instance_ids, ids)
        assert np.array_equal(a.gt.labels, b.gt.labels)
        disp = (b.gt.boxes[:, :2].astype(np.float64) - a.gt.boxes[:, :2]) / dt
        mean_v = (a.gt.velocities.astype(np.float64) + b.gt.velocities) / 2
        assert np.abs(disp - mean_v).max() < 2e-3
        assert np.abs(disp - a.gt.velocities).max() < 0.1  # yaw rates are small
        speed = np.linalg.norm(a.gt.velocities, axis=1)
        moving = max(moving, int((speed > 0.4).sum()))
        # Sizes are constant; moving objects head where they go.
        assert np.allclose(a.gt.boxes[:, 3:6], b.gt.boxes[:, 3:6])
        go = speed > 0.4
        heading = np.stack([np.cos(a.gt.boxes[go, 6]), np.sin(a.gt.boxes[go, 6])], 1)
        assert np.all(np.sum(heading * a.gt.velocities[go], 1) > 0.99 * speed[go])
        # Parked objects do not move.
        assert np.all(np.abs(disp[speed == 0]) < 1e-4)
    assert moving >= 3
    speed = np.linalg.norm(sequence[0].gt.velocities, axis=1)
    limits = np.array([15.0, 12.0, 11.0, 7.0, 2.0])[sequence[0].gt.labels]
    assert np.all(speed <= limits + 1e-4)


def test_generate_frames_groups_and_seeds():
    lidar = LidarSpec(beams=16, azimuth_resolution_deg=1.0)
    frames = list(generate_frames(3, 5, frames_per_sequence=2, lidar=lidar))
    assert len(frames) == 5
    tokens = [f.scene_token for f in frames]
    assert tokens[0] == tokens[1] != tokens[2] == tokens[3] != tokens[4]
    assert [f.frame_index for f in frames] == [0, 1, 0, 1, 0]
    ts = [f.timestamp for f in frames]
    assert all(b > a for a, b in zip(ts, ts[1:]))
    assert set(frames[0].instance_ids).isdisjoint(frames[2].instance_ids)
    again = list(generate_frames(3, 5, frames_per_sequence=2, lidar=lidar))
    assert all(np.array_equal(a.points, b.points) for a, b in zip(frames, again))


def test_bad_arguments_raise_config_error():
    with pytest.raises(ConfigError):
        LidarSpec(beams=0)
    with pytest.raises(ConfigError):
        SceneSpec(class_names=("car", "tram"))
    with pytest.raises(ConfigError):
        generate_frame(-1)
    with pytest.raises(ConfigError):
        next(generate_sequence(0, 0))


def test_custom_scene_and_class_subset():
    scene = SceneSpec(class_names=("pedestrian", "car"), object_counts={"car": (2, 2), "pedestrian": (1, 1)}, clutter_density=0.0)
    f = generate_frame(8, lidar=LidarSpec(beams=32, azimuth_resolution_deg=0.4), scene=scene)
    assert f.class_names == ("pedestrian", "car")
    assert sorted(f.gt.labels.tolist()) == [0, 1, 1]


def test_timing_print():
    t0 = time.perf_counter()
    f = generate_frame(42)
    dt = time.perf_counter() - t0
    print(f"\n[timing] generate_frame: {dt * 1000:.0f} ms for {len(f.points)} points, {len(f.gt)} objects")
