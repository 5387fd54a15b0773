"""A pinhole camera that renders the synthetic lidar world, with exact 2D ground truth.

The camera sees the scene of :func:`synthetic.build_layout` at the lidar frame's timestamp: the same
ground (with its road, sidewalk and lane markings), buildings, walls, poles, trees, bushes and objects.

Conventions
-----------
* Extrinsic ``T_cam_lidar`` (4x4): ``p_cam = R @ p_lidar + t``; camera axes x right, y down, z forward.
* Intrinsics ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in OpenCV's convention: pixel ``(i, j)`` has its
  centre at ``u = i, v = j``. :func:`project_points` returns such coordinates.
* 2D boxes (``xyxy``, COCO ``[x, y, w, h]``) use pixel-edge coordinates: pixel ``i`` spans ``[i, i + 1)``,
  so a box is ``projected extent + 0.5`` and the image spans ``[0, W] x [0, H]``.

Rendering
---------
Rasterised, not ray-traced: every primitive is a cuboid; its front faces are clipped at the near plane,
projected and filled with OpenCV (``fillConvexPoly``), and each filled pixel gets its exact depth from
the face plane, so a per-pixel z-buffer resolves occlusion between any faces. The ground is a height
field ray-intersected per pixel (Newton's method, as the lidar does); it is a background layer that never
hides a cuboid (objects stand on it; the slope under a box is at most a few centimetres).

Objects are drawn as their ground-truth cuboid, not as the lidar's parts: the acceptance test says the
projected 3D box must match the rendered extent within 1 px, and the parts lie a margin inside the box
and leave air (above a car's bonnet, around a pedestrian's legs) whose silhouette is not the box's.
The parts still give the look: each face pixel takes the colour of the outermost part behind it (body
paint, cabin glass, tyres, cargo box, clothes, skin), and pixels no part covers get a dark "shadowed
interior" tone of the object's colour. So the windows sit where the lidar sees glass.

Appearance varies per scene (sun direction, exposure, sky, asphalt and verge colours, fog), per
instance (paint, clothes, skin, building facade; stable over a sequence) and per frame (sensor noise).
Lighting is Lambert shading of each face by the sun plus ambient light; vignetting and Gaussian noise
model the sensor. Random draws use their own keys of the scene seed, so the lidar output is untouched,
and everything is bit-reproducible.

Ground truth per object: the 2D box is the projected 3D box (near-clipped convex hull) clipped to the
image; ``truncation`` = share of that hull's area outside the image; ``occlusion`` = 1 - visible pixels /
pixels the object covers when drawn alone. Heavily occluded or tiny objects are kept with ``ignore``.
Objects whose hull misses the image are not annotated (the camera does not see them).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Iterator

import cv2
import numpy as np

from ..errors import ConfigError
from ..labels import t4_2d_index
from .lidar import Ground, LidarSpec
from .synthetic import SceneLayout, SceneSpec, _rng, build_layout, sequence_seed

#: Ignore rules for 2D ground truth (kept, flagged): occlusion above, box height or area below.
IGNORE_OCCLUSION = 0.8
MIN_BOX_HEIGHT = 4.0
MIN_BOX_AREA = 16.0

# Random-stream keys (the lidar uses 0, (1, k) and 2 under the same seed).
_KEY_LOOK, _KEY_NOISE = 7, 8


# ------------------------------------------------------------------------------------- the camera
def camera_extrinsic(
    position: tuple[float, float, float] = (0.0, 0.0, -0.3), yaw_deg: float = 0.0, pitch_deg: float = 0.0
) -> np.ndarray:
    """4x4 ``T_cam_lidar`` of a camera at ``position`` (lidar frame) looking along azimuth ``yaw_deg``
    (0 = lidar +x, counter-clockwise), tilted down by ``pitch_deg``; no roll."""
    ps, pp = math.radians(yaw_deg), math.radians(pitch_deg)
    fwd = np.array([math.cos(ps) * math.cos(pp), math.sin(ps) * math.cos(pp), -math.sin(pp)])
    right = np.array([math.sin(ps), -math.cos(ps), 0.0])
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ np.asarray(position, np.float64)
    return T


def _default_extrinsic() -> tuple[float, ...]:
    return tuple(float(v) for v in camera_extrinsic().ravel())


@dataclass(frozen=True)
class CameraSpec:
    """Pinhole camera: image size, intrinsics (OpenCV convention), lidar->camera extrinsic (row-major 4x4).

    The default is the small model's camera: 640x384, 90 degrees horizontal field of view, looking along
    the lidar's +x, level, 1.5 m above the ground (0.3 m below the lidar, which sits at 1.8 m). The T4
    model's 960x960 input is a letterbox of this image, the model's concern, not the camera's.
    """

    width: int = 640
    height: int = 384
    fx: float = 320.0
    fy: float = 320.0
    cx: float = 319.5
    cy: float = 191.5
    extrinsic: tuple[float, ...] = field(default_factory=_default_extrinsic)
    near: float = 0.1  # metres; faces are clipped here
    max_depth: float = 150.0  # metres; beyond is sky/fog
    noise_std: float = 2.5  # sensor noise, digital numbers (0..255), Gaussian per pixel and channel

    def __post_init__(self) -> None:
        problems = []
        if not (8 <= self.width <= 8192 and 8 <= self.height <= 8192):
            problems.append(f"size {self.width}x{self.height} (8..8192)")
        if not (self.fx > 0 and self.fy > 0 and math.isfinite(self.cx) and math.isfinite(self.cy)):
            problems.append(f"fx={self.fx}, fy={self.fy}, cx={self.cx}, cy={self.cy}")
        T = np.asarray(self.extrinsic, np.float64)
        if T.size != 16 or not np.all(np.isfinite(T)):
            problems.append("extrinsic must be 16 finite numbers (row-major 4x4)")
        else:
            T = T.reshape(4, 4)
            R = T[:3, :3]
            if not np.allclose(T[3], [0, 0, 0, 1]) or not np.allclose(R @ R.T, np.eye(3), atol=1e-6):
                problems.append("extrinsic is not a rigid transform (orthonormal R, last row 0 0 0 1)")
            elif np.linalg.det(R) < 0:
                problems.append("extrinsic rotation is a reflection (det < 0)")
        if not 0 < self.near < self.max_depth:
            problems.append(f"near={self.near}, max_depth={self.max_depth} (0 < near < max_depth)")
        if self.noise_std < 0:
            problems.append(f"noise_std={self.noise_std} (>= 0)")
        if problems:
            raise ConfigError("CameraSpec: bad " + "; ".join(problems))

    @staticmethod
    def forward(
        width: int = 640,
        height: int = 384,
        hfov_deg: float = 90.0,
        position: tuple[float, float, float] = (0.0, 0.0, -0.3),
        yaw_deg: float = 0.0,
        pitch_deg: float = 0.0,
        **kw,
    ) -> "CameraSpec":
        """A camera with square pixels, the principal point at the image centre and the given mounting."""
        f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
        T = camera_extrinsic(position, yaw_deg, pitch_deg)
        return CameraSpec(width, height, f, f, (width - 1) / 2, (height - 1) / 2, tuple(T.ravel().tolist()), **kw)

    def with_extrinsic(self, T_cam_lidar: np.ndarray) -> "CameraSpec":
        """The same camera with another mounting (e.g. a perturbed calibration)."""
        return replace(self, extrinsic=tuple(float(v) for v in np.asarray(T_cam_lidar, np.float64).ravel()))

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def T_cam_lidar(self) -> np.ndarray:
        return np.asarray(self.extrinsic, np.float64).reshape(4, 4)

    @property
    def position(self) -> np.ndarray:
        """Camera centre in the lidar frame."""
        T = self.T_cam_lidar
        return -T[:3, :3].T @ T[:3, 3]


def project_points(points_xyz: np.ndarray, camera: CameraSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project lidar-frame points into the image.

    Returns ``uv`` (N, 2) float64 pixel coordinates in OpenCV's convention (pixel centres at integers;
    NaN where the point is not in front of the near plane), ``depth`` (N,) camera z in metres, and
    ``valid`` (N,) bool: in front of the near plane and inside ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``.
    No lens distortion. Used by the renderer and meant for calibration checks (perturb the extrinsic with
    :meth:`CameraSpec.with_extrinsic`, project the lidar points, compare with the image).
    """
    p = np.asarray(points_xyz, np.float64).reshape(-1, 3)
    T = camera.T_cam_lidar
    pc = p @ T[:3, :3].T + T[:3, 3]
    depth = pc[:, 2]
    front = depth > camera.near
    uv = np.full((len(p), 2), np.nan)
    uv[front, 0] = camera.fx * pc[front, 0] / depth[front] + camera.cx
    uv[front, 1] = camera.fy * pc[front, 1] / depth[front] + camera.cy
    with np.errstate(invalid="ignore"):
        valid = (
            front
            & (uv[:, 0] >= -0.5)
            & (uv[:, 0] < camera.width - 0.5)
            & (uv[:, 1] >= -0.5)
            & (uv[:, 1] < camera.height - 0.5)
        )
    return uv, depth, valid


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(M, 8, 3) corners of boxes ``[x, y, z, l, w, h, yaw]`` (z = centre), lidar frame."""
    b = np.asarray(boxes, np.float64).reshape(-1, 7)
    return _cuboid_corners(b[:, :3], b[:, 3:6] / 2, b[:, 6])


# -------------------------------------------------------------------------------------- results
@dataclass
class CameraObject:
    """One object the camera sees, with its 2D ground truth."""

    index: int  # object index in the scene layout (= lidar GT row)
    instance_id: int
    class_name: str
    label: int  # T4 2D class index
    box: np.ndarray  # (4,) float32 xyxy, pixel-edge coordinates, clipped to the image
    truncation: float
    occlusion: float
    visible_pixels: int
    alone_pixels: int
    ignore: bool
    depth: float  # camera z of the box centre, metres
    box3d: np.ndarray  # (7,) lidar frame [x, y, z, l, w, h, yaw]


@dataclass
class CameraFrame:
    """One rendered image with its ground truth; ``instance`` holds object indices (-1 = none)."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    instance: np.ndarray  # (H, W) int32
    depth: np.ndarray  # (H, W) float32 camera z, inf where sky
    objects: list[CameraObject]
    timestamp: float
    scene_token: str
    frame_index: int
    camera: CameraSpec

    @property
    def boxes(self) -> np.ndarray:
        return np.array([o.box for o in self.objects], np.float32).reshape(-1, 4)

    @property
    def labels(self) -> np.ndarray:
        return np.array([o.label for o in self.objects], np.int64)

    @property
    def ignore(self) -> np.ndarray:
        return np.array([o.ignore for o in self.objects], bool)


# ------------------------------------------------------------------------------------ geometry
_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)


def _corner(sx: int, sy: int, sz: int) -> int:
    return (sx > 0) * 4 + (sy > 0) * 2 + (sz > 0)


# Faces: (axis, sign, 4 corner indices in cyclic order).
_FACES: list[tuple[int, int, tuple[int, ...]]] = []
for _axis in range(3):
    for _sign in (-1, 1):
        _b, _c = [a for a in range(3) if a != _axis]
        _cyc = []
        for sb, sc in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            s = [0, 0, 0]
            s[_axis], s[_b], s[_c] = _sign, sb, sc
            _cyc.append(_corner(*s))
        _FACES.append((_axis, _sign, tuple(_cyc)))
_FACE_IDX = np.array([f[2] for f in _FACES])


def _axes(yaws: np.ndarray) -> np.ndarray:
    """(K, 3, 3) box axes (rows: along x, along y, up) in the lidar frame."""
    c, s = np.cos(yaws), np.sin(yaws)
    z, o = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, s, z], -1), np.stack([-s, c, z], -1), np.stack([z, z, o], -1)], 1)


def _cuboid_corners(centers: np.ndarray, halves: np.ndarray, yaws: np.ndarray) -> np.ndarray:
    ax = _axes(yaws)
    local = _SIGNS[None, :, :] * halves[:, None, :]  # (K, 8, 3)
    return centers[:, None, :] + np.einsum("kna,kad->knd", local, ax)


def _clip_near(poly: np.ndarray, near: float) -> np.ndarray:
    """Clip a convex polygon (n, 3) in camera coordinates to z >= near (Sutherland-Hodgman)."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out).reshape(-1, 3)


def _project_cam(pc: np.ndarray, cam: CameraSpec) -> np.ndarray:
    return np.stack([cam.fx * pc[:, 0] / pc[:, 2] + cam.cx, cam.fy * pc[:, 1] / pc[:, 2] + cam.cy], 1)


# -------------------------------------------------------------------------------------- the look
_CAR_PAINT = np.array(
    [
        (232, 232, 232), (30, 30, 32), (175, 175, 170), (40, 40, 180), (150, 80, 30), (105, 105, 105),
        (50, 90, 40), (40, 190, 225), (30, 60, 120), (200, 200, 210),
    ],
    np.float64,
)
_SKIN = np.array([(170, 190, 230), (120, 150, 200), (80, 105, 150), (50, 70, 105)], np.float64)
_GLASS = np.array([70, 52, 40], np.float64)
_TYRE = np.array([25, 25, 27], np.float64)

# Kinds of cuboids.
_BUILDING, _WALL, _POLE, _TRUNK, _FOLIAGE = 0, 1, 2, 3, 4
_OBJECT_KIND = {"car": 10, "truck": 11, "bus": 12, "bicycle": 13, "pedestrian": 14}


def _clutter_kinds(halves: np.ndarray) -> np.ndarray:
    """Kind of each clutter primitive from its shape (the layout records sizes, not kinds):
    foliage cubes are small equal-sided cubes, poles/trunks thin and square, walls 0.12 m thick."""
    hx, hy, hz = halves[:, 0], halves[:, 1], halves[:, 2]
    kind = np.full(len(halves), _BUILDING)
    kind[np.isclose(hy, 0.12) | np.isclose(hx, 0.12)] = _WALL
    thin = np.isclose(hx, hy) & (hx < 0.2)
    kind[thin & np.isclose(hx, 0.13)] = _POLE
    kind[thin & np.isclose(hx, 0.15)] = _TRUNK
    kind[np.isclose(hx, hy) & np.isclose(hx, hz) & (hx < 0.25)] = _FOLIAGE
    return kind


@dataclass
class _Look:
    sun: np.ndarray  # unit vector towards the sun, lidar frame
    ambient: float
    diffuse: float
    exposure: float
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    fog_distance: float
    asphalt: np.ndarray
    sidewalk: np.ndarray
    verge: np.ndarray
    paint: np.ndarray
    tile: np.ndarray  # (128, 128) ground texture, zero mean
    clutter_colour: np.ndarray  # (K, 3)
    clutter_alt: np.ndarray  # (K, 3) windows / secondary colour
    object_colours: np.ndarray  # (M, 4, 3): main, secondary, tertiary, skin


def _make_look(layout: SceneLayout, kinds: np.ndarray) -> _Look:
    rng = _rng(layout.seed, _KEY_LOOK)
    az, el = rng.uniform(-math.pi, math.pi), rng.uniform(0.3, 1.2)
    sun = np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
    overcast = rng.uniform(0, 1)
    ambient = 0.5 + 0.25 * overcast
    diffuse = 0.55 - 0.35 * overcast
    exposure = rng.uniform(0.85, 1.15)
    sky_top = (1 - overcast) * np.array([215, 150, 95]) + overcast * np.array([175, 172, 170])
    sky_hor = (1 - overcast) * np.array([240, 222, 205]) + overcast * np.array([205, 205, 205])
    fog = rng.uniform(120, 400)
    asphalt = rng.uniform(60, 100) + rng.uniform(-6, 6, 3)
    sidewalk = rng.uniform(135, 185) + rng.uniform(-8, 8, 3)
    verge = [np.array([60, 125, 85]), np.array([70, 110, 135]), np.array([85, 140, 110])][int(rng.integers(0, 3))]
    verge = verge + rng.uniform(-15, 15, 3)
    paint = np.array([225, 230, 232]) * rng.uniform(0.85, 1.0)
    tile = rng.standard_normal((128, 128)).astype(np.float32)
    tile = cv2.GaussianBlur(tile, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
    tile = tile / max(float(tile.std()), 1e-6)
    K = len(kinds)
    base = rng.uniform(60, 215, (K, 3))
    grey = rng.uniform(0.6, 1.0, (K, 1)) * base.mean(1, keepdims=True)
    base = 0.5 * base + 0.5 * grey  # facades are muted
    alt = np.tile(np.array([[80.0, 62, 50]]), (K, 1)) * rng.uniform(0.7, 1.3, (K, 1))
    colour = base.copy()
    colour[kinds == _POLE] = 0.0 + rng.uniform(110, 150, (int((kinds == _POLE).sum()), 1))
    colour[kinds == _TRUNK] = np.array([40, 60, 85]) * rng.uniform(0.8, 1.2, (int((kinds == _TRUNK).sum()), 1))
    nf = int((kinds == _FOLIAGE).sum())
    colour[kinds == _FOLIAGE] = np.array([45, 120, 60]) * rng.uniform(0.6, 1.3, (nf, 1)) + rng.uniform(-12, 12, (nf, 3))
    M = len(layout.objects)
    obj = np.zeros((M, 4, 3))
    for j, o in enumerate(layout.objects):
        palette = _CAR_PAINT[int(rng.integers(0, len(_CAR_PAINT)))] * rng.uniform(0.85, 1.1) + rng.uniform(-10, 10, 3)
        if o.cls in ("car", "truck", "bus"):
            second = _CAR_PAINT[int(rng.integers(0, len(_CAR_PAINT)))] * rng.uniform(0.85, 1.1)
            third = rng.uniform(30, 60, 3)
        else:
            palette = rng.uniform(20, 230, 3)  # shirt / frame
            second = rng.uniform(20, 120, 3) * np.array([1.2, 0.9, 0.8])  # trousers
            third = rng.uniform(40, 200, 3)  # bicycle metal
        skin = _SKIN[int(rng.integers(0, len(_SKIN)))] + rng.uniform(-10, 10, 3)
        obj[j] = palette, second, third, skin
    return _Look(
        sun, ambient, diffuse, exposure, sky_top, sky_hor, fog, asphalt, sidewalk, verge, paint, tile,
        np.clip(colour, 0, 255), alt, np.clip(obj, 0, 255),
    )


def _part_colours(cls: str, n_parts: int, c: np.ndarray) -> np.ndarray:
    """(P, 3) albedo of each lidar part of an object (rows of ``synthetic._parts``) from its colours."""
    main, second, third, skin = c
    if cls == "car":
        cols = [main, _GLASS, _TYRE, _TYRE]
    elif cls == "truck":
        cols = [_TYRE * 1.6, main, second]
    elif cls == "bus":
        cols = [_TYRE * 1.6, main, _GLASS, main]
    elif cls == "bicycle":
        cols = [third, third, second, main, skin]
    else:  # pedestrian
        cols = [second, main, skin]
    return np.array(cols[:n_parts], np.float64)


def _object_albedo(cls: str, parts: np.ndarray, pcol: np.ndarray, c: np.ndarray, axis: int, sign: int,
                   loc: np.ndarray) -> np.ndarray:
    """Albedo of face pixels at object-frame points ``loc`` (x forward, y left, z up from the bottom)."""
    air = 0.42 * c[0] if cls in ("car", "truck", "bus") else 0.5 * c[1] + 0.2 * np.array([60, 60, 60])
    out = np.tile(air, (len(loc), 1))
    keep = [a for a in range(3) if a != axis]
    lo, hi = (parts[:, [0, 2, 4]], parts[:, [1, 3, 5]])
    outward = hi[:, axis] if sign > 0 else -lo[:, axis]
    for p in np.argsort(outward, kind="stable"):
        inside = np.ones(len(loc), bool)
        for a in keep:
            inside &= (loc[:, a] >= lo[p, a] - 0.05) & (loc[:, a] <= hi[p, a] + 0.05)
        out[inside] = pcol[p]
    if cls == "car" and axis == 0:  # head lights at the front, tail lights at the back
        body = parts[0]
        belt = body[5]
        lamp = (np.abs(loc[:, 1]) > body[3] - 0.38) & (loc[:, 2] > belt - 0.22) & (loc[:, 2] < belt - 0.07)
        out[lamp] = (215, 240, 250) if sign > 0 else (40, 40, 200)
    if cls == "truck" and axis == 1:  # ribs on the cargo box
        rib = (np.mod(loc[:, 0], 0.9) < 0.06) & (loc[:, 2] > 1.0) & (loc[:, 0] < parts[2][1])
        out[rib] *= 0.7
    if cls == "bus" and axis == 1:  # window pillars
        h = parts[2]
        pillar = (np.mod(loc[:, 0], 1.4) < 0.12) & (loc[:, 2] > h[4]) & (loc[:, 2] < h[5])
        out[pillar] = c[0]
    return out


def _clutter_albedo(kind: int, colour: np.ndarray, alt: np.ndarray, axis: int, half: np.ndarray,
                    loc: np.ndarray) -> np.ndarray:
    out = np.tile(colour, (len(loc), 1))
    z = loc[:, 2]
    if kind == _BUILDING and axis != 2:
        a = loc[:, 1 - axis] + half[1 - axis]  # along the facade, from its edge
        H = 2 * half[2]
        win = (z > 1.0) & (np.mod(z, 3.0) > 1.0) & (np.mod(z, 3.0) < 2.2) & (z < H - 0.6)
        win &= (np.mod(a, 2.5) > 0.6) & (np.mod(a, 2.5) < 1.8) & (a > 0.8) & (a < 2 * half[1 - axis] - 0.8)
        out[win] = alt
    elif kind == _BUILDING:
        out *= 0.8
    elif kind == _WALL:
        out[np.mod(z, 0.3) < 0.035] *= 0.75
    return out


# ---------------------------------------------------------------------------------------- render
def _sample_tile(tile: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping lookup of ``tile[a, b]`` at float coordinates (world-fixed texture)."""
    n = len(a)
    cols = 1024
    rows = max(1, -(-n // cols))
    ma = np.zeros(rows * cols, np.float32)
    mb = np.zeros(rows * cols, np.float32)
    ma[:n] = np.mod(a, tile.shape[0])
    mb[:n] = np.mod(b, tile.shape[1])
    out = cv2.remap(tile, mb.reshape(rows, cols), ma.reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_WRAP)
    return out.ravel()[:n]


@functools.lru_cache(maxsize=4)
def _camera_rays(cam: CameraSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per camera (cached): pixel rays in the lidar frame with camera z = 1 (so the ray parameter is the
    depth), the sky gradient weight per pixel, and the vignetting gain."""
    H, W = cam.height, cam.width
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays_c = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], -1).reshape(-1, 3)
    d = rays_c @ cam.T_cam_lidar[:3, :3]
    sky_k = np.clip(d[:, 2] / np.linalg.norm(d, axis=1) * 3.0, 0, 1)[:, None].astype(np.float32)
    yy, xx = np.meshgrid((np.arange(H) - (H - 1) / 2) / (H / 2), (np.arange(W) - (W - 1) / 2) / (W / 2), indexing="ij")
    vig = (1.0 - 0.09 * (xx**2 + yy**2)).astype(np.float32)
    for a in (d, sky_k, vig):
        a.setflags(write=False)
    return d, sky_k, vig


def _shadow_mask(cam: CameraSpec, look: _Look, ground: Ground, corners: np.ndarray) -> np.ndarray:
    """(H*W,) bool: pixels whose ground point lies in the sun shadow of one of the cuboids ``corners``.

    Each cuboid's shadow is the convex hull of its corners pushed along the sun onto the plane of its
    bottom, drawn at ground height; only the ground layer is darkened (cuboids are not self-shadowed).
    """
    H, W = cam.height, cam.width
    mask = np.zeros((H, W), np.uint8)
    T = cam.T_cam_lidar
    sun = look.sun
    for c in corners:
        zb = c[:, 2].min()
        flat = c[:, :2] - sun[:2] * ((c[:, 2] - zb) / sun[2])[:, None]
        hull = cv2.convexHull(flat.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        if len(hull) < 3:
            continue
        p = np.concatenate([hull, ground.z(hull[:, 0], hull[:, 1])[:, None]], 1)
        pc = _clip_near(p @ T[:3, :3].T + T[:3, 3], cam.near)
        if len(pc) < 3:
            continue
        uv = _project_cam(pc, cam)
        if uv[:, 0].max() < -0.5 or uv[:, 0].min() > W - 0.5 or uv[:, 1].max() < -0.5 or uv[:, 1].min() > H - 0.5:
            continue
        pts = np.clip(np.round(uv * 16), -(1 << 26), 1 << 26).astype(np.int32)
        cv2.fillConvexPoly(mask, pts, 1, lineType=cv2.LINE_8, shift=4)
    return mask.ravel().astype(bool)


def _ground_layer(
    layout: SceneLayout, cam: CameraSpec, look: _Look, shadow: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Colour (H, W, 3) and depth (H, W) of ground and sky (depth inf for sky)."""
    H, W = cam.height, cam.width
    C = cam.position
    d, sky_k, _ = _camera_rays(cam)
    g: Ground = layout.ground
    denom = d[:, 2] - g.slope_x * d[:, 0] - g.slope_y * d[:, 1]
    num = -g.height + g.slope_x * C[0] + g.slope_y * C[1] - C[2]
    hit = denom < -1e-6
    t = np.full(len(d), np.inf)
    t[hit] = num / denom[hit]
    hit &= (t > cam.near) & (t < cam.max_depth * 1.5)
    idx = np.nonzero(hit)[0]
    th = t[idx]
    dh = d[idx]
    for _ in range(2):  # Newton on C_z + t d_z = ground.z(C_xy + t d_xy); the undulation is a few cm
        x, y = C[0] + th * dh[:, 0], C[1] + th * dh[:, 1]
        und, gx, gy = g._undulation_and_grad(x, y)
        f = C[2] + th * dh[:, 2] - (-g.height + g.slope_x * x + g.slope_y * y + und)
        fp = denom[idx] - gx * dh[:, 0] - gy * dh[:, 1]
        th = th - f / np.where(np.abs(fp) > 1e-9, fp, -1e-9)
    good = np.isfinite(th) & (th > cam.near) & (th < cam.max_depth)
    idx, th, dh = idx[good], th[good], dh[good]
    depth = np.full(len(d), np.inf)
    depth[idx] = th
    # Sky: gradient with elevation.
    colour = (look.sky_horizon + sky_k * (look.sky_top - look.sky_horizon)).astype(np.float32)
    # Ground albedo from the lidar's reflectivity classes, plus a world-fixed texture.
    x, y = C[0] + th * dh[:, 0], C[1] + th * dh[:, 1]
    refl = layout.road.ground_reflectivity(x, y)
    alb = np.tile(look.verge, (len(idx), 1))
    alb[refl == 16.0] = look.asphalt
    alb[refl == 45.0] = look.sidewalk
    alb[refl == 160.0] = look.paint
    tex = _sample_tile(look.tile, x * 6.0, y * 6.0)
    alb = alb * (1.0 + 0.08 * tex[:, None])
    lit = look.ambient + look.diffuse * max(look.sun[2], 0.0)
    shade = np.where(shadow[idx], look.ambient, lit)[:, None]
    col = alb * shade
    fog = np.exp(-th / look.fog_distance)[:, None]
    colour[idx] = col * fog + look.sky_horizon * (1 - fog)
    return colour.reshape(H, W, 3), depth.reshape(H, W)


def render_frame(layout: SceneLayout, k: int, camera: CameraSpec | None = None, timestamp: float = 0.0) -> CameraFrame:
    """Render frame ``k`` of ``layout`` (the scene of lidar frame ``k``) with its 2D ground truth."""
    cam = camera or CameraSpec()
    if not 0 <= k < layout.num_frames:
        raise ConfigError(f"frame {k} outside the layout's 0..{layout.num_frames - 1}")
    H, W = cam.height, cam.width
    T = cam.T_cam_lidar
    R, tr = T[:3, :3], T[:3, 3]
    clutter = layout.clutter.prims
    _, boxes, _ = layout.object_state(k)
    M = len(boxes)
    kinds_c = _clutter_kinds(clutter.halves)
    look = _make_look(layout, kinds_c)

    # All cuboids: clutter then objects (an object's faces are consecutive, for its "alone" count).
    centers = np.concatenate([clutter.centers, boxes[:, :3]])
    halves = np.concatenate([clutter.halves, boxes[:, 3:6] / 2])
    yaws = np.concatenate([clutter.yaws, boxes[:, 6]])
    owner = np.concatenate([np.full(len(clutter), -1), np.arange(M)])
    Kc = len(clutter)
    corners = _cuboid_corners(centers, halves, yaws)  # (K, 8, 3)
    casts = np.concatenate([kinds_c != _FOLIAGE, np.ones(M, bool)])  # foliage cubes: too many, too small
    shadow = _shadow_mask(cam, look, layout.ground, corners[casts])
    colour, ground_depth = _ground_layer(layout, cam, look, shadow)
    cc = corners @ R.T + tr
    zc = cc[..., 2]
    keep = (zc.max(1) > cam.near) & (zc.min(1) < cam.max_depth)
    with np.errstate(divide="ignore", invalid="ignore"):
        zpos = np.where(zc > cam.near, zc, np.nan)
        u = cam.fx * cc[..., 0] / zpos + cam.cx
        v = cam.fy * cc[..., 1] / zpos + cam.cy
    allfront = (zc > cam.near).all(1)
    off = allfront & (
        (np.nanmax(np.where(allfront[:, None], u, 0), 1) < -0.5)
        | (np.nanmin(np.where(allfront[:, None], u, 0), 1) > W - 0.5)
        | (np.nanmax(np.where(allfront[:, None], v, 0), 1) < -0.5)
        | (np.nanmin(np.where(allfront[:, None], v, 0), 1) > H - 0.5)
    )
    keep &= ~off
    axes = _axes(yaws)  # (K, 3, 3)
    normals = np.concatenate([[-axes[:, a], axes[:, a]] for a in range(3)])  # (6, K, 3) in _FACES order
    normals = np.transpose(normals, (1, 0, 2))  # (K, 6, 3)
    fcent = cc[:, _FACE_IDX].mean(2)  # (K, 6, 3) camera frame
    ncam = normals @ R.T
    visible = np.einsum("kfd,kfd->kf", fcent, ncam) < 0
    shade = look.ambient + look.diffuse * np.clip(normals @ look.sun, 0, None)  # (K, 6)

    zbuf = np.full((H, W), np.inf)
    inst = np.full((H, W), -1, np.int32)
    stamp = np.full((H, W), -1, np.int32)
    alone = np.zeros(M, np.int64)
    inv_axes = axes  # world->local: local = axes @ (p - centre)
    C = cam.position
    for i in np.nonzero(keep)[0]:
        j = int(owner[i])
        if j >= 0:
            obj = layout.objects[j]
            pcol = _part_colours(obj.cls, len(obj.parts), look.object_colours[j])
        for f in range(6):
            if not visible[i, f]:
                continue
            axis, sign, _ = _FACES[f]
            poly = cc[i, _FACE_IDX[f]]
            if not (poly[:, 2] >= cam.near).all():
                poly = _clip_near(poly, cam.near)
                if len(poly) < 3:
                    continue
            uv = _project_cam(poly, cam)
            x0, y0 = max(int(math.floor(uv[:, 0].min())), 0), max(int(math.floor(uv[:, 1].min())), 0)
            x1, y1 = min(int(math.ceil(uv[:, 0].max())), W - 1), min(int(math.ceil(uv[:, 1].max())), H - 1)
            if x1 < x0 or y1 < y0:
                continue
            mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
            pts = np.round((uv - [x0, y0]) * 16).astype(np.int64)
            if np.abs(pts).max() > (1 << 26):  # keep OpenCV's fixed point in range; face is nearly edge-on
                pts = np.clip(pts, -(1 << 26), 1 << 26)
            cv2.fillConvexPoly(mask, pts.astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
            ys, xs = np.nonzero(mask)
            if len(ys) == 0:
                continue
            py, px = ys + y0, xs + x0
            n = ncam[i, f]
            dplane = float(n @ fcent[i, f])
            rx, ry = (px - cam.cx) / cam.fx, (py - cam.cy) / cam.fy
            den = n[0] * rx + n[1] * ry + n[2]
            with np.errstate(divide="ignore", invalid="ignore"):
                z = dplane / den
            z = np.where(np.isfinite(z) & (z > cam.near), z, cam.near)
            if j >= 0:
                new = stamp[py, px] != j
                alone[j] += int(new.sum())
                stamp[py, px] = j
            closer = z < zbuf[py, px]
            if not closer.any():
                continue
            py, px, z = py[closer], px[closer], z[closer]
            pl = np.stack([rx[closer] * z, ry[closer] * z, z], 1) @ R + C  # lidar frame points (R^T p_cam + C)
            loc = np.einsum("nd,ad->na", pl - centers[i], inv_axes[i])
            loc[:, 2] += halves[i, 2]  # z from the bottom
            if j >= 0:
                alb = _object_albedo(obj.cls, obj.parts, pcol, look.object_colours[j], axis, sign, loc)
            else:
                alb = _clutter_albedo(int(kinds_c[i]), look.clutter_colour[i], look.clutter_alt[i], axis,
                                      halves[i], loc)
            fog = np.exp(-z / look.fog_distance)[:, None]
            colour[py, px] = alb * shade[i, f] * fog + look.sky_horizon * (1 - fog)
            zbuf[py, px] = z
            inst[py, px] = j
    # Sensor: exposure, vignetting, noise.
    rng = _rng(layout.seed, _KEY_NOISE, k)
    vig = _camera_rays(cam)[2]
    noise = rng.standard_normal((H, W, 3), dtype=np.float32)
    img = colour * (np.float32(look.exposure) * vig)[..., None] + np.float32(cam.noise_std) * noise
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    depth = np.minimum(zbuf, ground_depth).astype(np.float32)
    objects = _annotate(layout, boxes, cc[Kc:], inst, alone, cam)
    return CameraFrame(image, inst, depth, objects, float(timestamp), layout.token, int(k), cam)


def _annotate(layout: SceneLayout, boxes: np.ndarray, cc: np.ndarray, inst: np.ndarray, alone: np.ndarray,
              cam: CameraSpec) -> list[CameraObject]:
    H, W = cam.height, cam.width
    visible = np.bincount(inst[inst >= 0].ravel(), minlength=len(boxes))
    rect = np.array([[-0.5, -0.5], [W - 0.5, -0.5], [W - 0.5, H - 0.5], [-0.5, H - 0.5]], np.float32)
    out = []
    T = cam.T_cam_lidar
    for j in range(len(boxes)):
        pts = []
        for _, _, idx in _FACES:
            poly = _clip_near(cc[j, list(idx)], cam.near)
            if len(poly) >= 3:
                pts.append(_project_cam(poly, cam))
        if not pts:
            continue
        hull = cv2.convexHull(np.concatenate(pts).astype(np.float32))
        full = float(cv2.contourArea(hull))
        if full <= 0:
            continue
        inside, poly = cv2.intersectConvexConvex(hull, rect)
        if inside <= 0 or poly is None:
            continue
        poly = poly.reshape(-1, 2)
        x0, y0 = np.clip(poly.min(0) + 0.5, 0, [W, H])
        x1, y1 = np.clip(poly.max(0) + 0.5, 0, [W, H])
        box = np.array([x0, y0, x1, y1], np.float32)
        trunc = float(np.clip(1.0 - inside / full, 0.0, 1.0))
        occ = float(1.0 - visible[j] / alone[j]) if alone[j] > 0 else 1.0
        bw, bh = float(x1 - x0), float(y1 - y0)
        ignore = bool(occ > IGNORE_OCCLUSION or bh < MIN_BOX_HEIGHT or bw * bh < MIN_BOX_AREA or visible[j] == 0)
        obj = layout.objects[j]
        depth = float((T[:3, :3] @ boxes[j, :3] + T[:3, 3])[2])
        out.append(
            CameraObject(
                j, int(layout.instance_ids[j]), obj.cls, t4_2d_index(obj.cls), box, trunc, max(occ, 0.0),
                int(visible[j]), int(alone[j]), ignore, depth, boxes[j].astype(np.float32),
            )
        )
    return out


# ------------------------------------------------------------------------------------ sequences
def generate_camera_sequence(
    seed: int,
    num_frames: int,
    camera: CameraSpec | None = None,
    lidar: LidarSpec | None = None,
    scene: SceneSpec | None = None,
    start_time: float = 0.0,
) -> Iterator[CameraFrame]:
    """Camera images of ``generate_sequence(seed, num_frames, lidar, scene, start_time)``, frame by frame."""
    layout = build_layout(seed, num_frames, lidar, scene)
    dt = layout.lidar.sweep_period
    for k in range(num_frames):
        yield render_frame(layout, k, camera, start_time + k * dt)


def generate_camera_frame(seed: int, camera: CameraSpec | None = None, **kw) -> CameraFrame:
    """The image of ``generate_frame(seed)``'s scene."""
    return next(generate_camera_sequence(seed, 1, camera, **kw))


def generate_camera_frames(
    seed: int, num_frames: int, frames_per_sequence: int = 1, camera: CameraSpec | None = None, **kw
) -> Iterator[CameraFrame]:
    """Images of ``generate_frames(seed, num_frames, frames_per_sequence, **kw)``: same scenes, same timestamps."""
    if frames_per_sequence < 1:
        raise ConfigError(f"frames_per_sequence must be >= 1, got {frames_per_sequence}")
    start = float(kw.pop("start_time", 0.0))
    period = (kw.get("lidar") or LidarSpec()).sweep_period
    done, i = 0, 0
    while done < num_frames:
        n = min(frames_per_sequence, num_frames - done)
        t0 = start + i * (frames_per_sequence * period + 1.0)
        yield from generate_camera_sequence(sequence_seed(seed, i), n, camera, start_time=t0, **kw)
        done += n
        i += 1
