"""Synthetic street scenes seen by a spinning lidar, with exact ground truth.

No real dataset can be downloaded here, so the project renders its own. Everything is seeded with
explicit ``np.random.Generator`` (PCG64) instances: the same seed gives bit-identical frames.

A scene is a street in the lidar frame (sensor at the origin, ground at about ``z = -sensor_height``):
a gently sloped, slightly undulating ground with painted lane markings; a main road with 1-3 lanes each
way, sometimes a parking strip and a cross road with zebra crossings; sidewalks; building blocks with
gaps (open lots, sometimes behind a low wall); poles; trees (trunk plus a porous canopy made of many
small boxes) and bushes. Objects of five classes (car, truck, bus, bicycle, pedestrian) are made of a
few boxes each (body, cabin, wheels; cab and cargo; rider on a bicycle; legs, torso and head) that lie
``SceneSpec.annotation_margin`` inside the ground-truth box, so the GT box encloses the object's points
the way an annotator's box does. Objects are placed by rejection sampling in BEV so that they overlap
neither each other nor clutter in any frame of the sequence, and stand on the ground (box bottom = ground
height under the box centre).

Sequences: the ego vehicle stands still (so the static world is ray-cast once per sequence); objects
move with constant speed and yaw rate. Positions follow the trapezoid rule
``c[k+1] = c[k] + dt * (v[k] + v[k+1]) / 2``, so the GT velocities agree with the displacement between
frames. Frames come every ``LidarSpec.sweep_period`` seconds (10 Hz by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..config import CENTERPOINT_CLASSES
from ..errors import ConfigError
from ..structures import Boxes3D
from .lidar import Ground, LidarSpec, Primitives, cast_primitives

KNOWN_CLASSES = CENTERPOINT_CLASSES
_GROUND = -2  # source id of a ground return


@dataclass
class Frame:
    """One lidar sweep with its ground truth. Points are in the lidar frame."""

    points: np.ndarray  # (N, 4) float32: x, y, z, intensity (0..255)
    ring: np.ndarray  # (N,) uint16 beam index, 0 = lowest beam
    time: np.ndarray  # (N,) float32 seconds after `timestamp` at which the point was measured
    timestamp: float  # seconds, start of the sweep
    gt: Boxes3D  # scores all 1.0, labels index into class_names
    num_lidar_points: np.ndarray  # (M,) int32 points inside each GT box
    instance_ids: np.ndarray  # (M,) int64, stable across a sequence
    class_names: tuple[str, ...]
    scene_token: str = ""  # same for all frames of a sequence
    frame_index: int = 0  # index within the sequence

    def points_with_time_lag(self) -> np.ndarray:
        """(N, 5) float32 x, y, z, intensity, time_lag; time_lag is 0 for a single sweep (nuScenes/T4)."""
        out = np.zeros((len(self.points), 5), np.float32)
        out[:, :4] = self.points
        return out


@dataclass
class SceneSpec:
    """Knobs of the scene generator. Counts are inclusive (min, max) ranges per frame."""

    class_names: tuple[str, ...] = CENTERPOINT_CLASSES
    object_counts: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {
            "car": (6, 14),
            "truck": (1, 3),
            "bus": (0, 2),
            "bicycle": (2, 5),
            "pedestrian": (3, 8),
        }
    )
    object_range: float = 40.0  # most object centres have |x|, |y| <= this (metres)
    far_fraction: float = 0.1  # share of objects allowed out to far_range
    far_range: float = 60.0
    clutter_density: float = 1.0  # scales poles, trees, bushes, walls; 0 = buildings only
    buildings: bool = True
    max_slope: float = 0.02  # ground slope (rise over run) drawn from +-max_slope per axis
    ground_roughness: float = 0.03  # amplitude of the ground undulation, metres
    cross_road_probability: float = 0.5
    annotation_margin: float = 0.04  # object surfaces lie this far inside the GT box (metres)
    placement_tries: int = 40  # rejection-sampling attempts per object

    def __post_init__(self) -> None:
        unknown = [c for c in self.class_names if c not in KNOWN_CLASSES]
        if unknown or not self.class_names:
            raise ConfigError(f"SceneSpec.class_names: {unknown or 'empty'} not renderable; known: {KNOWN_CLASSES}")
        for name, rng in self.object_counts.items():
            if name not in KNOWN_CLASSES:
                raise ConfigError(f"SceneSpec.object_counts: unknown class {name!r}; known: {KNOWN_CLASSES}")
            if len(rng) != 2 or not 0 <= rng[0] <= rng[1]:
                raise ConfigError(f"SceneSpec.object_counts[{name!r}] = {rng}: need (min, max) with 0 <= min <= max")
        if not 0 < self.object_range <= self.far_range:
            raise ConfigError("SceneSpec: need 0 < object_range <= far_range")
        if not 0 <= self.annotation_margin < 0.2:
            raise ConfigError("SceneSpec.annotation_margin must be in [0, 0.2)")


# ------------------------------------------------------------------------------------------ helpers
def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _tnorm(rng: np.random.Generator, mean: float, std: float, lo: float, hi: float) -> float:
    return float(np.clip(rng.normal(mean, std), lo, hi))


def _wrap(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def rects_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """BEV overlap of oriented rectangles ``[cx, cy, half_length, half_width, yaw]`` (broadcasting, SAT)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    dx, dy = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    ca, sa, cb, sb = np.cos(a[..., 4]), np.sin(a[..., 4]), np.cos(b[..., 4]), np.sin(b[..., 4])
    separated = np.zeros(np.broadcast(dx, cb).shape, bool)
    for nx, ny in ((ca, sa), (-sa, ca), (cb, sb), (-sb, cb)):
        ra = a[..., 2] * np.abs(ca * nx + sa * ny) + a[..., 3] * np.abs(-sa * nx + ca * ny)
        rb = b[..., 2] * np.abs(cb * nx + sb * ny) + b[..., 3] * np.abs(-sb * nx + cb * ny)
        separated |= np.abs(dx * nx + dy * ny) > ra + rb
    return ~separated


def count_points_in_boxes(xyz: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Number of points inside each box ``[x, y, z, l, w, h, yaw]`` (z = centre; faces inclusive)."""
    xyz = np.asarray(xyz, np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    counts = np.zeros(len(boxes), np.int32)
    if len(xyz) == 0 or len(boxes) == 0:
        return counts
    order = np.argsort(xyz[:, 0], kind="stable")
    xs = xyz[order, 0]
    for i, (x, y, z, l, w, h, yaw) in enumerate(boxes):
        r = 0.5 * math.hypot(l, w)
        lo, hi = np.searchsorted(xs, x - r, "left"), np.searchsorted(xs, x + r, "right")
        p = xyz[order[lo:hi]]
        dx, dy = p[:, 0] - x, p[:, 1] - y
        c, s = math.cos(yaw), math.sin(yaw)
        inside = (
            (np.abs(c * dx + s * dy) <= l / 2)
            & (np.abs(-s * dx + c * dy) <= w / 2)
            & (np.abs(p[:, 2] - z) <= h / 2)
        )
        counts[i] = int(inside.sum())
    return counts


# ------------------------------------------------------------------------------------ object models
def _sample_size(cls: str, rng: np.random.Generator) -> tuple[float, float, float, bool]:
    """(length, width, height, has_rider)."""
    if cls == "car":
        l, w = _tnorm(rng, 4.6, 0.35, 3.6, 5.6), _tnorm(rng, 1.85, 0.1, 1.6, 2.1)
        return l, w, _tnorm(rng, 1.6, 0.15, 1.35, 2.0), False
    if cls == "truck":
        return float(rng.uniform(6.5, 10.5)), _tnorm(rng, 2.45, 0.1, 2.2, 2.6), float(rng.uniform(2.6, 3.6)), False
    if cls == "bus":
        l, w = float(rng.uniform(10.5, 12.5)), _tnorm(rng, 2.9, 0.06, 2.75, 3.05)
        return l, w, _tnorm(rng, 3.2, 0.1, 3.0, 3.5), False
    if cls == "bicycle":
        rider = bool(rng.random() < 0.7)
        h = _tnorm(rng, 1.7, 0.08, 1.5, 1.9) if rider else _tnorm(rng, 1.1, 0.05, 1.0, 1.2)
        return _tnorm(rng, 1.75, 0.1, 1.5, 2.0), _tnorm(rng, 0.6, 0.06, 0.45, 0.75), h, rider
    if cls == "pedestrian":
        l, w = _tnorm(rng, 0.65, 0.1, 0.4, 0.95), _tnorm(rng, 0.65, 0.08, 0.45, 0.9)
        return l, w, _tnorm(rng, 1.72, 0.1, 1.4, 1.95), False
    raise ConfigError(f"unknown class {cls!r}")


def _parts(cls: str, l: float, w: float, h: float, rider: bool, m: float, rng: np.random.Generator) -> np.ndarray:
    """Boxes making up one object: rows ``[x0, x1, y0, y1, z0, z1, reflectivity]`` in the object frame
    (x along the heading, z up from the box bottom), all within the GT box shrunk by margin ``m``."""
    L, W, top = l / 2 - m, w / 2 - m, h - m
    if cls == "car":
        paint, glass = rng.uniform(15, 140), rng.uniform(8, 25)
        belt = rng.uniform(0.55, 0.65) * h
        ax = L - rng.uniform(0.7, 0.95)
        cab0, cab1 = -L + rng.uniform(0.18, 0.26) * l, L - rng.uniform(0.26, 0.34) * l
        rows = [
            (-L, L, -W, W, 0.25, belt, paint),
            (cab0, cab1, -(W - 0.08), W - 0.08, belt, top, glass),
            (ax - 0.33, ax + 0.33, -W, W, 0.0, 0.3, 10.0),
            (-ax - 0.33, -ax + 0.33, -W, W, 0.0, 0.3, 10.0),
        ]
    elif cls == "truck":
        cab_len = rng.uniform(1.8, 2.4)
        cab_top = max(2.2, rng.uniform(0.75, 1.0) * h - m)
        rows = [
            (-L + 0.3, L - 0.2, -(W - 0.05), W - 0.05, 0.0, 1.0, 12.0),
            (L - cab_len, L, -W, W, 0.5, min(cab_top, top), rng.uniform(20, 140)),
            (-L, L - cab_len - 0.15, -W, W, 0.9, top, rng.uniform(40, 160)),
        ]
    elif cls == "bus":
        paint = rng.uniform(40, 140)
        rows = [
            (-L + 0.5, L - 0.5, -(W - 0.05), W - 0.05, 0.0, 0.4, 10.0),
            (-L, L, -W, W, 0.3, 0.55 * h, paint),
            (-L + 0.2, L, -(W - 0.03), W - 0.03, 0.55 * h, 0.85 * h, rng.uniform(8, 25)),
            (-L, L, -W, W, 0.85 * h, top, paint),
        ]
    elif cls == "bicycle":
        hb = 1.05 if rider else top
        metal = rng.uniform(40, 110)
        rows = [
            (-L, L, -0.06, 0.06, 0.0, 0.85 * hb, metal),
            (L - 0.45, L - 0.25, -W, W, 0.85 * hb, hb, metal),
        ]
        if rider:
            cloth = rng.uniform(10, 70)
            rows += [
                (-0.3, 0.15, -min(0.16, W), min(0.16, W), 0.3, 0.95, cloth),
                (-0.4, 0.0, -min(0.23, W), min(0.23, W), 0.95, h - 0.3, cloth),
                (-0.33, -0.08, -0.1, 0.1, h - 0.28, top, 30.0),
            ]
    elif cls == "pedestrian":
        cloth = rng.uniform(10, 70)
        rows = [
            (-0.7 * L, 0.7 * L, -0.55 * W, 0.55 * W, 0.0, 0.47 * h, rng.uniform(10, 60)),
            (-0.55 * L, 0.55 * L, -W, W, 0.47 * h, 0.83 * h, cloth),
            (-min(0.11, L), min(0.11, L), -min(0.1, W), min(0.1, W), 0.85 * h, top, 30.0),
        ]
    else:  # pragma: no cover - guarded by SceneSpec
        raise ConfigError(f"unknown class {cls!r}")
    return np.array(rows, np.float64)


def _solid_parts(l: float, w: float, h: float, m: float, refl: float = 60.0) -> np.ndarray:
    return np.array([[-(l / 2 - m), l / 2 - m, -(w / 2 - m), w / 2 - m, 0.0, h - m, refl]])


def _object_primitives(
    parts: list[np.ndarray], centers: np.ndarray, bottoms: np.ndarray, yaws: np.ndarray
) -> Primitives:
    """Place each object's parts at its pose (one pose per object)."""
    if not parts:
        return Primitives.empty()
    n = np.array([len(p) for p in parts])
    owner = np.repeat(np.arange(len(parts)), n)
    P = np.concatenate(parts)
    pc = np.stack([(P[:, 0] + P[:, 1]) / 2, (P[:, 2] + P[:, 3]) / 2, (P[:, 4] + P[:, 5]) / 2], 1)
    half = np.stack([(P[:, 1] - P[:, 0]) / 2, (P[:, 3] - P[:, 2]) / 2, (P[:, 5] - P[:, 4]) / 2], 1)
    c, s = np.cos(yaws[owner]), np.sin(yaws[owner])
    world = np.stack(
        [
            centers[owner, 0] + c * pc[:, 0] - s * pc[:, 1],
            centers[owner, 1] + s * pc[:, 0] + c * pc[:, 1],
            bottoms[owner] + pc[:, 2],
        ],
        1,
    )
    return Primitives(world, half, yaws[owner].astype(np.float64), P[:, 6].copy(), owner.astype(np.int64))


# ------------------------------------------------------------------------------------- scene layout
@dataclass
class _Road:
    alpha: float  # road direction in the lidar frame
    u_ego: float  # lateral position of the sensor in road coordinates
    lane_w: float
    n_lanes: int  # per direction
    strip: float  # parking strip width (0 = none)
    sidewalk: float
    cross_s: float | None  # along-road position of the cross road
    cross_half: float
    lots: list[tuple[int, float, float]] = field(default_factory=list)  # (side, s_lo, s_hi) open lots

    @property
    def half_width(self) -> float:
        return self.n_lanes * self.lane_w + self.strip

    def to_world(self, s, u):
        ca, sa = math.cos(self.alpha), math.sin(self.alpha)
        uu = np.asarray(u) - self.u_ego
        s = np.asarray(s)
        return ca * s - sa * uu, sa * s + ca * uu

    def to_road(self, x, y):
        ca, sa = math.cos(self.alpha), math.sin(self.alpha)
        x, y = np.asarray(x), np.asarray(y)
        return ca * x + sa * y, -sa * x + ca * y + self.u_ego

    def in_cross(self, s, margin: float = 0.0):
        if self.cross_s is None:
            return np.zeros(np.shape(s), bool)
        return np.abs(np.asarray(s) - self.cross_s) < self.cross_half + margin

    def ground_reflectivity(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        s, u = self.to_road(x, y)
        au = np.abs(u)
        W = self.half_width
        road = (au < W) | self.in_cross(s)
        refl = np.where(road, 16.0, np.where(au < W + self.sidewalk, 45.0, 30.0))
        paint = np.zeros(np.shape(s), bool)
        lw = 0.075
        paint |= np.abs(au - self.n_lanes * self.lane_w) < lw  # edge lines
        paint |= np.abs(u) < lw  # centre line
        for k in range(1, self.n_lanes):  # dashed lane lines
            paint |= (np.abs(au - k * self.lane_w) < lw) & (np.mod(s, 9.0) < 3.0)
        if self.cross_s is not None:
            paint &= ~self.in_cross(s)
            for sign in (-1.0, 1.0):  # zebra crossings on both sides of the junction
                zc = self.cross_s + sign * (self.cross_half + 2.0)
                paint |= (np.abs(s - zc) < 1.5) & (au < W) & (np.mod(u, 1.0) < 0.5)
        return np.where(paint & (au < W + 0.2), 160.0, refl)


@dataclass
class _Clutter:
    prims: Primitives
    footprints: np.ndarray  # (K, 5) [cx, cy, half_l, half_w, yaw]
    z_bottom: np.ndarray  # (K,) the footprint blocks objects taller than this (above the ground)


def _make_road(rng: np.random.Generator, spec: SceneSpec) -> _Road:
    n_lanes = int(rng.integers(1, 4))
    lane_w = float(rng.uniform(3.0, 3.6))
    strip = float(rng.choice([0.0, 2.4], p=[0.6, 0.4]))
    ego_lane = int(rng.integers(0, n_lanes))
    u_ego = float(rng.choice([-1.0, 1.0])) * (ego_lane + 0.5) * lane_w
    alpha = float(rng.normal(0.0, 0.08)) if rng.random() < 0.75 else float(rng.uniform(-math.pi, math.pi))
    cross = rng.random() < spec.cross_road_probability
    return _Road(
        alpha=alpha,
        u_ego=u_ego,
        lane_w=lane_w,
        n_lanes=n_lanes,
        strip=strip,
        sidewalk=float(rng.uniform(2.5, 4.5)),
        cross_s=float(rng.uniform(-30, 30)) if cross else None,
        cross_half=float(rng.uniform(4.0, 7.5)),
    )


def _blob(rng: np.random.Generator, center: np.ndarray, radii: np.ndarray, n: int, size=(0.2, 0.45)) -> tuple:
    """A porous blob: n small cubes with centres uniform in an ellipsoid."""
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    r = rng.random(n) ** (1 / 3)
    c = center + v * r[:, None] * radii
    half = np.repeat(rng.uniform(*size, n)[:, None] / 2, 3, axis=1)
    return c, half, rng.uniform(0, np.pi / 2, n)


def _make_clutter(rng: np.random.Generator, spec: SceneSpec, road: _Road, ground: Ground) -> _Clutter:
    W, sw = road.half_width, road.sidewalk
    S = spec.far_range + 15.0
    cen, hal, yaw, refl = [], [], [], []
    fps, zb = [], []

    def add_box(s, u, hl, hw, z0, z1, yaw_road, r, footprint=True, fp_z=0.0):
        x, y = road.to_world(s, u)
        g = float(ground.z(x, y))
        cen.append([float(x), float(y), g + (z0 + z1) / 2])
        hal.append([hl, hw, (z1 - z0) / 2])
        yaw.append(road.alpha + yaw_road)
        refl.append(r)
        if footprint:
            fps.append([float(x), float(y), hl, hw, road.alpha + yaw_road])
            zb.append(fp_z)

    blobs_c, blobs_h, blobs_y, blobs_r = [], [], [], []

    def add_blob(s, u, z_center, radii, n, r, fp_z):
        x, y = road.to_world(s, u)
        g = float(ground.z(x, y))
        c, h, yw = _blob(rng, np.array([float(x), float(y), g + z_center]), np.asarray(radii), n)
        blobs_c.append(c)
        blobs_h.append(h)
        blobs_y.append(yw)
        blobs_r.append(r * rng.uniform(0.8, 1.2, n))
        fps.append([float(x), float(y), radii[0] + 0.35, radii[1] + 0.35, 0.0])
        zb.append(fp_z)

    density = spec.clutter_density
    for side in (-1, 1):
        # Buildings along the road, with gaps (open lots) and no building across the cross road.
        s = -S
        while s < S:
            length = float(rng.uniform(8, 30))
            s0, s1 = s, s + length
            s = s1 + float(rng.uniform(0.0, 3.0))
            if road.cross_s is not None and (
                road.in_cross(s0, sw + 1) or road.in_cross(s1, sw + 1) or s0 < road.cross_s < s1
            ):
                continue
            if not spec.buildings or rng.random() < 0.3:
                road.lots.append((side, s0, s1))
                if rng.random() < 0.5 * density:  # low wall or fence at the back of the sidewalk
                    wall_h = float(rng.uniform(1.0, 2.2))
                    wall_r = float(rng.uniform(30, 90))
                    add_box((s0 + s1) / 2, side * (W + sw + 0.15), (s1 - s0) / 2 - 1.0, 0.12, 0.0, wall_h, 0.0, wall_r)
                continue
            depth = float(rng.uniform(8, 20))
            setback = float(rng.uniform(0.0, 2.0))
            height, r = float(rng.uniform(4, 18)), float(rng.uniform(30, 90))
            u = side * (W + sw + setback + depth / 2)
            add_box((s0 + s1) / 2, u, (s1 - s0) / 2, depth / 2, 0.0, height, 0.0, r)
        # Poles near the curb.
        s = -S + float(rng.uniform(0, 20))
        while s < S:
            if not road.in_cross(s, sw + 1) and rng.random() < density:
                height, r = float(rng.uniform(4, 9)), float(rng.uniform(60, 110))
                add_box(s, side * (W + 0.5), 0.13, 0.13, 0.0, height, 0.0, r)
            s += float(rng.uniform(15, 30))
        # Trees on the sidewalk: trunk plus a porous canopy.
        s = -S + float(rng.uniform(0, 25))
        while s < S:
            if not road.in_cross(s, sw + 3) and rng.random() < 0.6 * density:
                u = side * (W + sw * 0.6)
                trunk = float(rng.uniform(1.8, 3.0))
                turn, r = float(rng.uniform(0, 1)), float(rng.uniform(20, 45))
                add_box(s, u, 0.15, 0.15, 0.0, trunk + 0.5, turn, r)
                rc = float(rng.uniform(1.2, 2.4))
                add_blob(s, u, trunk + rc, (rc, rc, rc * 0.8), int(28 * rc), float(rng.uniform(20, 50)), trunk)
            s += float(rng.uniform(12, 28))
    # Bushes in the lots.
    for side, s0, s1 in road.lots:
        if rng.random() < 0.6 * density:
            rb = float(rng.uniform(0.5, 1.4))
            s = float(rng.uniform(s0 + 1, max(s0 + 1.01, s1 - 1)))
            u = side * (W + sw + float(rng.uniform(2, 14)))
            add_blob(s, u, rb * 0.6, (rb, rb, rb * 0.6), int(20 * rb), float(rng.uniform(20, 45)), 0.0)
    boxes = Primitives(
        np.array(cen, np.float64).reshape(-1, 3),
        np.array(hal, np.float64).reshape(-1, 3),
        np.array(yaw, np.float64),
        np.array(refl, np.float64),
        np.full(len(yaw), -1, np.int64),
    )
    blobs = Primitives.empty()
    if blobs_c:
        n = sum(len(b) for b in blobs_y)
        blobs = Primitives(
            np.concatenate(blobs_c),
            np.concatenate(blobs_h),
            np.concatenate(blobs_y),
            np.concatenate(blobs_r),
            np.full(n, -1, np.int64),
        )
    prims = Primitives.concatenate([boxes, blobs])
    return _Clutter(prims, np.array(fps, np.float64).reshape(-1, 5), np.array(zb, np.float64))


def _make_ground(rng: np.random.Generator, spec: SceneSpec, lidar: LidarSpec) -> Ground:
    k = 3
    amp = spec.ground_roughness * rng.dirichlet(np.ones(k))
    wl = rng.uniform(12.0, 40.0, k)
    ang = rng.uniform(0, 2 * np.pi, k)
    return Ground(
        height=lidar.sensor_height,
        slope_x=float(rng.uniform(-spec.max_slope, spec.max_slope)),
        slope_y=float(rng.uniform(-spec.max_slope, spec.max_slope)),
        amplitudes=tuple(float(a) for a in amp),
        wavevectors=tuple(
            (float(2 * np.pi / w * np.cos(a)), float(2 * np.pi / w * np.sin(a))) for w, a in zip(wl, ang)
        ),
        phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, k)),
    )


# -------------------------------------------------------------------------------- object placement
@dataclass
class _Object:
    cls: str
    size: tuple[float, float, float]
    parts: np.ndarray
    centers: np.ndarray  # (F, 2)
    yaws: np.ndarray  # (F,)
    velocities: np.ndarray  # (F, 2)


_ZONES = {
    "car": (("lane", 0.5), ("cross", 0.15), ("parked", 0.25), ("lot", 0.1)),
    "truck": (("lane", 0.6), ("cross", 0.1), ("parked", 0.3)),
    "bus": (("lane", 0.7), ("cross", 0.1), ("parked", 0.2)),
    "bicycle": (("bike", 0.55), ("sidewalk", 0.3), ("lot", 0.15)),
    "pedestrian": (("sidewalk", 0.65), ("crossing", 0.2), ("lot", 0.15)),
}
_MAX_SPEED = {"car": 15.0, "truck": 12.0, "bus": 11.0, "bicycle": 7.0, "pedestrian": 2.0}


def _sample_pose(
    rng: np.random.Generator, cls: str, road: _Road, R: float, size: tuple[float, float, float]
) -> tuple[float, float, float, float, float]:
    """(s, u, heading in road frame, speed, yaw rate)."""
    zones = [
        z
        for z in _ZONES[cls]
        if not (z[0] == "cross" and road.cross_s is None) and not (z[0] == "lot" and not road.lots)
    ]
    p = np.array([z[1] for z in zones])
    zone = zones[int(rng.choice(len(zones), p=p / p.sum()))][0]
    W, sw, lw = road.half_width, road.sidewalk, road.lane_w
    side = float(rng.choice([-1.0, 1.0]))
    along = 0.0 if side < 0 else math.pi  # traffic keeps to one side per direction
    s = float(rng.uniform(-R, R))
    speed, yaw_rate = 0.0, 0.0
    vmax = _MAX_SPEED[cls]
    if zone in ("lane", "cross"):
        k = int(rng.integers(0, road.n_lanes))
        off = side * (k + 0.5) * lw + float(rng.normal(0, 0.15))
        heading = along + float(rng.normal(0, 0.02))
        if rng.random() < 0.7:
            speed = float(rng.uniform(2.0, vmax))
            yaw_rate = float(rng.normal(0, 0.02))
        if zone == "lane":
            u = off
        else:  # on the cross road: swap the roles of s and u
            s, u = road.cross_s + off, float(rng.uniform(-R, R))
            heading += math.pi / 2
    elif zone == "parked":
        u = side * (W - road.strip / 2) if road.strip else side * (W - size[1] / 2 - 0.3)
        heading = float(rng.choice([0.0, math.pi])) + float(rng.normal(0, 0.03))
    elif zone == "bike":
        u = side * (W - 0.7)
        heading = along + float(rng.normal(0, 0.05))
        if rng.random() < 0.8:
            speed = float(rng.uniform(2.0, vmax))
            yaw_rate = float(rng.normal(0, 0.03))
    elif zone == "sidewalk":
        u = side * (W + float(rng.uniform(0.5, sw - 0.5)))
        if rng.random() < (0.6 if cls == "pedestrian" else 0.4):
            heading = float(rng.choice([0.0, math.pi])) + float(rng.normal(0, 0.15))
            speed = float(rng.uniform(0.5 if cls == "pedestrian" else 1.0, min(vmax, 4.0)))
            yaw_rate = float(rng.normal(0, 0.1))
        else:
            if cls == "pedestrian":
                heading = float(rng.uniform(-math.pi, math.pi))
            else:
                heading = float(rng.choice([0.0, math.pi]))
    elif zone == "crossing":
        if road.cross_s is not None:
            s = road.cross_s + float(rng.choice([-1.0, 1.0])) * (road.cross_half + 2.0) + float(rng.uniform(-1, 1))
        u = float(rng.uniform(-W, W))
        heading = side * math.pi / 2 + float(rng.normal(0, 0.1))
        speed = float(rng.uniform(0.8, 1.8))
    else:  # lot
        lot = road.lots[int(rng.integers(0, len(road.lots)))]
        s = float(rng.uniform(lot[1], lot[2]))
        u = lot[0] * (W + sw + float(rng.uniform(1.5, 16.0)))
        heading = float(rng.uniform(-math.pi, math.pi))
        if rng.random() < (0.5 if cls == "pedestrian" else 0.15):
            speed = float(rng.uniform(0.5, min(vmax, 4.0)))
            yaw_rate = float(rng.normal(0, 0.15))
    return s, u, heading, speed, yaw_rate


def _trajectory(x0: float, y0: float, yaw0: float, speed: float, yaw_rate: float, n: int, dt: float):
    yaws = yaw0 + yaw_rate * dt * np.arange(n)
    vel = speed * np.stack([np.cos(yaws), np.sin(yaws)], 1)
    centers = np.zeros((n, 2))
    centers[0] = x0, y0
    if n > 1:
        centers[1:] = centers[0] + np.cumsum(dt * (vel[:-1] + vel[1:]) / 2, axis=0)
    return centers, _wrap(yaws), vel


def _place_objects(
    rng: np.random.Generator, spec: SceneSpec, road: _Road, clutter: _Clutter, n_frames: int, dt: float
) -> list[_Object]:
    ego = np.array([0.0, 0.0, 3.0, 1.4, 0.0])  # keep clear of the ego vehicle under the sensor
    objects: list[_Object] = []
    rects: list[np.ndarray] = []  # (F, 5) per placed object, inflated
    order = [c for c in ("bus", "truck", "car", "bicycle", "pedestrian") if c in spec.class_names]
    for cls in order:
        lo, hi = spec.object_counts.get(cls, (0, 0))
        for _ in range(int(rng.integers(lo, hi + 1))):
            l, w, h, rider = _sample_size(cls, rng)
            R = spec.far_range if rng.random() < spec.far_fraction else spec.object_range
            pad = 0.15
            for _try in range(spec.placement_tries):
                s, u, heading, speed, yaw_rate = _sample_pose(rng, cls, road, R, (l, w, h))
                x0, y0 = road.to_world(s, u)
                x0, y0 = float(x0), float(y0)
                if max(abs(x0), abs(y0)) > R:
                    continue
                centers, yaws, vel = _trajectory(x0, y0, road.alpha + heading, speed, yaw_rate, n_frames, dt)
                halves = np.tile([l / 2 + pad, w / 2 + pad], (n_frames, 1))
                rect = np.concatenate([centers, halves, yaws[:, None]], 1)
                if rects_overlap(rect, ego).any():
                    continue
                blocking = clutter.z_bottom < h
                if blocking.any() and rects_overlap(rect[:, None, :], clutter.footprints[blocking][None, :, :]).any():
                    continue
                if rects and rects_overlap(np.stack(rects), rect[None]).any():
                    continue
                parts = _parts(cls, l, w, h, rider, spec.annotation_margin, rng)
                objects.append(_Object(cls, (l, w, h), parts, centers, yaws, vel))
                rects.append(rect)
                break
    return objects


# ------------------------------------------------------------------------------------------ render
@dataclass
class _Static:
    t: np.ndarray
    src: np.ndarray  # primitive index, _GROUND, or -1
    cos: np.ndarray
    refl: np.ndarray


def _cast_static(lidar: LidarSpec, dirs: np.ndarray, ground: Ground | None, prims: Primitives, ground_refl) -> _Static:
    t, src, cos = cast_primitives(lidar, dirs, prims)
    refl = np.zeros(len(dirs))
    hit = src >= 0
    refl[hit] = prims.reflectivity[src[hit]]
    if ground is not None:
        tg, cg = ground.intersect(dirs, lidar.max_range)
        g = tg < t
        t = np.where(g, tg, t)
        src = np.where(g, _GROUND, src)
        cos = np.where(g, cg, cos)
        p = dirs[g] * tg[g, None]
        refl[g] = ground_refl(p[:, 0], p[:, 1]) if ground_refl is not None else 30.0
    return _Static(t, src, cos, refl)


def _render(
    lidar: LidarSpec,
    dirs: np.ndarray,
    static: _Static,
    obj_prims: Primitives,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge object hits into the static hits, add noise and dropout; returns points (N,4), ring, time."""
    t_o, p_o, cos_o = cast_primitives(lidar, dirs, obj_prims)
    use_o = t_o < static.t
    t = np.where(use_o, t_o, static.t)
    cos = np.where(use_o, cos_o, static.cos)
    refl = static.refl.copy()
    refl[use_o] = obj_prims.reflectivity[p_o[use_o]]
    n = len(dirs)
    noise = rng.standard_normal(n)
    drop = rng.random(n)
    inoise = rng.standard_normal(n)
    r = t + lidar.range_noise_std * noise
    keep = np.isfinite(t) & (drop >= lidar.dropout) & (r >= lidar.min_range) & (r <= lidar.max_range)
    idx = np.nonzero(keep)[0]
    r = r[idx]
    xyz = dirs[idx] * r[:, None]
    inten = refl[idx] * (0.35 + 0.65 * cos[idx]) * (1.0 - 0.4 * r / lidar.max_range) * (1.0 + 0.08 * inoise[idx])
    pts = np.empty((len(idx), 4), np.float32)
    pts[:, :3] = xyz
    pts[:, 3] = np.clip(inten, 0.0, 255.0)
    ring = (idx % lidar.beams).astype(np.uint16)
    col = idx // lidar.beams
    tm = (col * (lidar.sweep_period / lidar.num_columns)).astype(np.float32)
    tm = np.minimum(tm, np.float32(np.nextafter(np.float32(lidar.sweep_period), np.float32(0))))
    return pts, ring, tm


def _make_frame(pts, ring, tm, timestamp, boxes, labels, vel, ids, class_names, scene_token, k) -> Frame:
    gt = Boxes3D(boxes.astype(np.float32), np.ones(len(boxes), np.float32), labels, vel.astype(np.float32))
    counts = count_points_in_boxes(pts[:, :3], gt.boxes)
    return Frame(pts, ring, tm, float(timestamp), gt, counts, ids.astype(np.int64), tuple(class_names), scene_token, k)


@dataclass
class SceneLayout:
    """Everything a sequence's frames are rendered from (lidar here, the camera in ``camera.py``).

    Built by :func:`build_layout` with exactly the random draws ``generate_sequence`` makes, so other
    sensors can render the same world without changing the lidar output.
    """

    seed: int
    num_frames: int
    lidar: LidarSpec
    scene: SceneSpec
    road: _Road
    ground: Ground
    clutter: _Clutter
    objects: list[_Object]
    labels: np.ndarray  # (M,) int64 index into scene.class_names
    instance_ids: np.ndarray  # (M,) int64, stable across the sequence
    token: str

    def object_state(self, k: int) -> tuple[Primitives, np.ndarray, np.ndarray]:
        """Frame ``k``: (object primitives with owner = object index, boxes (M,7) [x,y,z,l,w,h,yaw], vel (M,2))."""
        objects = self.objects
        if objects:
            centers = np.stack([o.centers[k] for o in objects])
            yaws = np.array([o.yaws[k] for o in objects])
            vel = np.stack([o.velocities[k] for o in objects])
            sizes = np.array([o.size for o in objects])
        else:
            centers, yaws, vel, sizes = np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2)), np.zeros((0, 3))
        bottoms = self.ground.z(centers[:, 0], centers[:, 1])
        prims = _object_primitives([o.parts for o in objects], centers, bottoms, yaws)
        boxes = np.concatenate([centers, (bottoms + sizes[:, 2] / 2)[:, None], sizes, yaws[:, None]], 1)
        return prims, boxes, vel


def build_layout(
    seed: int, num_frames: int, lidar: LidarSpec | None = None, scene: SceneSpec | None = None
) -> SceneLayout:
    """The world of ``generate_sequence(seed, num_frames, lidar, scene)``: road, ground, clutter, objects."""
    seed = _check_seed(seed)
    if num_frames < 1:
        raise ConfigError(f"num_frames must be >= 1, got {num_frames}")
    lidar = lidar or LidarSpec()
    scene = scene or SceneSpec()
    rng = _rng(seed, 0)
    road = _make_road(rng, scene)
    ground = _make_ground(rng, scene, lidar)
    clutter = _make_clutter(rng, scene, road, ground)
    objects = _place_objects(rng, scene, road, clutter, num_frames, lidar.sweep_period)
    labels = np.array([scene.class_names.index(o.cls) for o in objects], np.int64)
    ids = (seed % (1 << 46)) * (1 << 16) + np.arange(len(objects), dtype=np.int64)
    token = f"synthetic-{seed:016x}"
    return SceneLayout(seed, num_frames, lidar, scene, road, ground, clutter, objects, labels, ids, token)


def generate_sequence(
    seed: int,
    num_frames: int,
    lidar: LidarSpec | None = None,
    scene: SceneSpec | None = None,
    start_time: float = 0.0,
) -> Iterator[Frame]:
    """A sequence of ``num_frames`` sweeps of one scene, 1 / sweep_period Hz, ego standing still.

    ``instance_ids`` are stable across the sequence; the static world is ray-cast once.
    """
    layout = build_layout(seed, num_frames, lidar, scene)
    lidar, scene, seed = layout.lidar, layout.scene, layout.seed
    dt = lidar.sweep_period
    dirs = lidar.ray_directions()
    static = _cast_static(lidar, dirs, layout.ground, layout.clutter.prims, layout.road.ground_reflectivity)
    for k in range(num_frames):
        prims, boxes, vel = layout.object_state(k)
        pts, ring, tm = _render(lidar, dirs, static, prims, _rng(seed, 1, k))
        yield _make_frame(
            pts, ring, tm, start_time + k * dt, boxes, layout.labels, vel, layout.instance_ids,
            scene.class_names, layout.token, k,
        )


def generate_frame(seed: int, lidar: LidarSpec | None = None, scene: SceneSpec | None = None) -> Frame:
    """One sweep of one random scene (the first frame of ``generate_sequence(seed, 1)``)."""
    return next(generate_sequence(seed, 1, lidar, scene))


def sequence_seed(seed: int, index: int) -> int:
    """Seed of the ``index``-th scene of ``generate_frames(seed, ...)``."""
    state = np.random.SeedSequence([_check_seed(seed), 0x5EED, int(index)]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def generate_frames(seed: int, num_frames: int, frames_per_sequence: int = 1, **kw) -> Iterator[Frame]:
    """``num_frames`` frames from independent scenes of ``frames_per_sequence`` frames each.

    Scene ``i`` uses ``sequence_seed(seed, i)``; keyword arguments go to :func:`generate_sequence`
    (``lidar``, ``scene``, ``start_time``). Sequence ``i`` starts at
    ``start_time + i * (frames_per_sequence * sweep_period + 1.0)`` so timestamps increase.
    """
    if frames_per_sequence < 1:
        raise ConfigError(f"frames_per_sequence must be >= 1, got {frames_per_sequence}")
    start = float(kw.pop("start_time", 0.0))
    period = (kw.get("lidar") or LidarSpec()).sweep_period
    done, i = 0, 0
    while done < num_frames:
        n = min(frames_per_sequence, num_frames - done)
        t0 = start + i * (frames_per_sequence * period + 1.0)
        yield from generate_sequence(sequence_seed(seed, i), n, start_time=t0, **kw)
        done += n
        i += 1


def render_boxes(
    gt: Boxes3D,
    class_names: tuple[str, ...] = CENTERPOINT_CLASSES,
    lidar: LidarSpec | None = None,
    seed: int = 0,
    obstacles: Boxes3D | None = None,
    ground: Ground | None = None,
    timestamp: float = 0.0,
    margin: float = 0.04,
) -> Frame:
    """Render given boxes as solid objects (each ``margin`` inside its box) plus optional ``obstacles``
    (rendered as given, not part of the GT) over ``ground`` (flat at -sensor_height by default).

    For controlled experiments and tests; :func:`generate_frame` is the realistic scene.
    """
    lidar = lidar or LidarSpec()
    ground = ground or Ground(height=lidar.sensor_height)
    dirs = lidar.ray_directions()
    clutter = Primitives.empty()
    if obstacles is not None and len(obstacles):
        b = obstacles.boxes.astype(np.float64)
        n = len(b)
        clutter = Primitives(b[:, :3].copy(), b[:, 3:6] / 2, b[:, 6].copy(), np.full(n, 60.0), np.full(n, -1, np.int64))
    static = _cast_static(lidar, dirs, ground, clutter, None)
    b = gt.boxes.astype(np.float64)
    parts = [_solid_parts(l, w, h, margin) for l, w, h in b[:, 3:6]]
    prims = _object_primitives(parts, b[:, :2], b[:, 2] - b[:, 5] / 2, b[:, 6])
    pts, ring, tm = _render(lidar, dirs, static, prims, _rng(_check_seed(seed), 2))
    ids = np.arange(len(b), dtype=np.int64)
    return _make_frame(pts, ring, tm, timestamp, b, gt.labels, gt.velocities, ids, class_names, "rendered", 0)

