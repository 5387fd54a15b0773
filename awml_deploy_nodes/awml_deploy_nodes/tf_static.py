"""Static transforms (``/tf_static``-style) -> the camera-lidar extrinsic; pure Python + numpy, no ROS import.

Why not tf2_ros: it is not installable here (nor is ``tf2_msgs``). The calibration node needs one thing from TF:
the fixed transform from the lidar frame to the camera frame, looked up through the static tree a vehicle
publishes (usually ``base_link -> sensor_kit_base_link -> {lidar, camera}``). This module keeps that tree and
chains it.

Conventions (tf2's): a ``TransformStamped`` with ``header.frame_id = P`` and ``child_frame_id = C`` is the pose of C
in P, i.e. the matrix ``T_P_C`` taking points from C to P (``p_P = T_P_C @ p_C``). :meth:`StaticTransforms.lookup`
``(target, source)`` returns ``T_target_source``. The calibration input builder wants ``T_cam_lidar``:
``lookup(camera_frame, lidar_frame)``.

Messages are read by attribute (a ROS ``tf2_msgs/TFMessage``, a list of ``geometry_msgs/TransformStamped``) or by
key (the dict form of a recorded message); a transform that cannot be trusted raises
:class:`MalformedTransformError` with a ``kind`` from :data:`MALFORMED_TF_KINDS`, which the node counts.

Extrinsics given as a parameter (:func:`extrinsic_from_values`): 16 numbers (a row-major 4x4), 6 (x y z roll pitch
yaw, radians, ROS's fixed-axis convention R = Rz(yaw) Ry(pitch) Rx(roll)) or 7 (x y z qx qy qz qw).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Sequence

import numpy as np

__all__ = [
    "MALFORMED_TF_KINDS",
    "MalformedTransformError",
    "StaticTransforms",
    "extrinsic_from_values",
    "quaternion_to_matrix",
    "rpy_to_matrix",
    "transform_matrix",
]

MALFORMED_TF_KINDS = (
    "missing_frame",  # header.frame_id or child_frame_id empty
    "self_parent",  # frame_id == child_frame_id
    "non_finite",  # NaN or inf in translation or rotation
    "bad_quaternion",  # quaternion norm far from 1 (more than QUAT_NORM_TOLERANCE) or zero
)
QUAT_NORM_TOLERANCE = 1e-3  # tf2 rejects quaternions not normalised to about this; ROS tools write ~1e-9


class MalformedTransformError(ValueError):
    """A transform that cannot be trusted. ``kind`` is one of :data:`MALFORMED_TF_KINDS`."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"malformed transform ({kind}): {detail}")
        self.kind = kind
        self.detail = detail


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation of the unit quaternion (x, y, z, w) (Hamilton convention, as geometry_msgs)."""
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not math.isfinite(n) or abs(n - 1.0) > QUAT_NORM_TOLERANCE:
        raise MalformedTransformError("bad_quaternion", f"quaternion ({x}, {y}, {z}, {w}) has norm {n}, not 1")
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ], dtype=np.float64)


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """3x3 rotation R = Rz(yaw) Ry(pitch) Rx(roll) (fixed axes x, y, z: ROS's RPY)."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ], dtype=np.float64)


def transform_matrix(translation: Sequence[float], rotation: np.ndarray) -> np.ndarray:
    """4x4 homogeneous matrix of a 3x3 rotation and a translation."""
    t = np.eye(4, dtype=np.float64)
    t[:3, :3] = rotation
    t[:3, 3] = np.asarray(translation, dtype=np.float64)
    return t


def invert(t: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (R^T, -R^T t): exact for rotations, no general matrix inverse."""
    out = np.eye(4, dtype=np.float64)
    r = t[:3, :3]
    out[:3, :3] = r.T
    out[:3, 3] = -r.T @ t[:3, 3]
    return out


def extrinsic_from_values(values: Sequence[float], name: str = "extrinsic") -> np.ndarray:
    """4x4 from 16 (row-major), 6 (x y z roll pitch yaw) or 7 (x y z qx qy qz qw) numbers; ValueError otherwise."""
    v = [float(x) for x in values]
    if not all(math.isfinite(x) for x in v):
        raise ValueError(f"{name}: every value must be finite (got {v})")
    if len(v) == 16:
        t = np.asarray(v, dtype=np.float64).reshape(4, 4)
        r = t[:3, :3]
        if not np.allclose(t[3], [0, 0, 0, 1]) or not np.allclose(r @ r.T, np.eye(3), atol=1e-6) \
                or np.linalg.det(r) <= 0:
            raise ValueError(f"{name}: 16 values must be a rigid transform (rotation block orthonormal, det +1, "
                             f"last row 0 0 0 1)")
        return t
    if len(v) == 6:
        return transform_matrix(v[:3], rpy_to_matrix(*v[3:]))
    if len(v) == 7:
        try:
            return transform_matrix(v[:3], quaternion_to_matrix(*v[3:]))
        except MalformedTransformError as e:
            raise ValueError(f"{name}: {e.detail}") from None
    raise ValueError(f"{name}: needs 16 (4x4 row-major), 6 (x y z roll pitch yaw) or 7 (x y z qx qy qz qw) "
                     f"numbers, got {len(v)}")


def _get(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def parse_transform(ts: Any) -> tuple[str, str, np.ndarray]:
    """(parent, child, T_parent_child) of one TransformStamped (message or dict); MalformedTransformError."""
    parent = str(_get(_get(ts, "header"), "frame_id")).strip().lstrip("/")
    child = str(_get(ts, "child_frame_id")).strip().lstrip("/")
    if not parent or not child:
        raise MalformedTransformError("missing_frame", f"frame_id {parent!r}, child_frame_id {child!r}")
    if parent == child:
        raise MalformedTransformError("self_parent", f"frame {parent!r} is its own parent")
    tf = _get(ts, "transform")
    tr, rot = _get(tf, "translation"), _get(tf, "rotation")
    t = [float(_get(tr, k)) for k in ("x", "y", "z")]
    q = [float(_get(rot, k)) for k in ("x", "y", "z", "w")]
    if not all(math.isfinite(x) for x in t + q):
        raise MalformedTransformError("non_finite", f"{parent} -> {child}: translation {t}, rotation {q}")
    return parent, child, transform_matrix(t, quaternion_to_matrix(*q))


def transforms_of(msg: Any) -> list[Any]:
    """The TransformStamped list of a TFMessage (``.transforms``), or the message itself when it is one transform."""
    if isinstance(msg, (list, tuple)):
        return list(msg)
    if (isinstance(msg, dict) and "transforms" in msg) or hasattr(msg, "transforms"):
        return list(_get(msg, "transforms"))
    return [msg]


class StaticTransforms:
    """A static transform tree; a newer transform of the same child replaces the older one (as tf2 does)."""

    def __init__(self) -> None:
        self._parent_of: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, T_parent_child)

    def __len__(self) -> int:
        return len(self._parent_of)

    def add(self, parent: str, child: str, t_parent_child: np.ndarray) -> None:
        self._parent_of[child] = (parent, np.asarray(t_parent_child, dtype=np.float64))

    def add_message(self, msg: Any) -> list[MalformedTransformError]:
        """Add every good transform of a TFMessage / TransformStamped; returns the errors of the bad ones."""
        errors = []
        for ts in transforms_of(msg):
            try:
                self.add(*parse_transform(ts))
            except MalformedTransformError as e:
                errors.append(e)
        return errors

    def frames(self) -> set[str]:
        return set(self._parent_of) | {p for p, _ in self._parent_of.values()}

    def _edges(self) -> dict[str, list[tuple[str, np.ndarray]]]:
        """frame -> [(neighbour, T_neighbour_frame)], both directions of every transform."""
        edges: dict[str, list[tuple[str, np.ndarray]]] = {}
        for child, (parent, t) in self._parent_of.items():
            edges.setdefault(child, []).append((parent, t))  # child -> parent: T_parent_child
            edges.setdefault(parent, []).append((child, invert(t)))  # parent -> child: T_child_parent
        return edges

    def lookup(self, target: str, source: str) -> np.ndarray | None:
        """T_target_source (points of ``source`` into ``target``) through the tree; None when not connected."""
        target, source = target.strip().lstrip("/"), source.strip().lstrip("/")
        if target == source:
            return np.eye(4)
        edges = self._edges()
        if source not in edges or target not in edges:
            return None
        # Breadth-first from source, carrying T_frame_source; a tree has one path, a graph with cycles the shortest.
        seen = {source: np.eye(4)}
        todo: deque[str] = deque([source])
        while todo:
            frame = todo.popleft()
            for nxt, t_nxt_frame in edges[frame]:
                if nxt not in seen:
                    seen[nxt] = t_nxt_frame @ seen[frame]
                    if nxt == target:
                        return seen[nxt]
                    todo.append(nxt)
        return None

    def describe(self) -> str:
        return ", ".join(f"{p}->{c}" for c, (p, _) in sorted(self._parent_of.items())) or "(none)"
