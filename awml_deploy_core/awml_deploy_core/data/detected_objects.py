"""Boxes3D <-> ``awml_deploy_msgs/DetectedObjects`` fields: one yaw formula, one label mapping, for every path.

The ROS node (rclpy messages), the bag code (``rosbags`` messages) and the replay (either, or their dicts) all
convert here; this module has no ROS import and reads messages duck-typed (attributes, or keys of a dict made by
``awml_deploy_nodes.msg_dict.message_to_dict``). Each side only builds its own message objects from
:func:`object_fields`.

Conventions: position = box centre; dimensions x, y, z = length, width, height; orientation = the quaternion of
yaw about +z, ``(0, 0, sin(yaw / 2), cos(yaw / 2))`` (:func:`yaw_to_quaternion`); it is read back as
``2 atan2(z, w)`` (:func:`yaw_from_quaternion`; x and y are ignored, the message defines them 0); velocity x, y
with z = 0 and ``has_velocity``; label = Autoware label of the class (:mod:`awml_deploy_core.labels`).

Round trip Boxes3D -> message -> Boxes3D: positions, sizes, velocities and scores (float32) come back bit for
bit; labels too when no two class names share an Autoware label; a float32 yaw in
``(-float32(pi), float32(pi)]`` comes back bit for bit, the ends included, and any other yaw comes back as the
same angle wrapped into that range (``-float32(pi)`` itself becomes the float32 just below ``float32(pi)``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..labels import class_index_by_label, labels_to_autoware
from ..structures import Boxes3D

# float32(pi) is 1.7e-7 above pi. Wrapping to (upper - 2 pi, upper] with this upper bound makes the float32
# range (-float32(pi), float32(pi)]: every float32 yaw of that range survives a round trip exactly.
PI_FLOAT32 = float(np.float32(np.pi))


def wrap_angle(a: Any, upper: float = math.pi) -> np.ndarray:
    """Wrap radians (float64) to (upper - 2 pi, upper]; the default is (-pi, pi]. Values in range stay bit-exact."""
    a = np.asarray(a, dtype=np.float64)
    lower = upper - 2.0 * np.pi
    wrapped = upper - np.mod(upper - a, 2.0 * np.pi)
    wrapped = np.where(wrapped <= lower, wrapped + 2.0 * np.pi, wrapped)  # mod may round up to 2 pi
    return np.where((a > upper) | (a <= lower), wrapped, a)


def yaw_to_quaternion(yaw: Any) -> tuple[np.ndarray, np.ndarray]:
    """(z, w) of the rotation by ``yaw`` about +z, float64: ``sin(yaw / 2), cos(yaw / 2)`` (x = y = 0)."""
    half = 0.5 * np.asarray(yaw, dtype=np.float64)
    return np.sin(half), np.cos(half)


def yaw_from_quaternion(z: Any, w: Any, upper: float = math.pi) -> np.ndarray:
    """Yaw of pure z-rotations: 2 * atan2(z, w), wrapped to (upper - 2 pi, upper]. Roll and pitch are ignored.

    The inverse of :func:`yaw_to_quaternion` (q and -q give the same yaw)."""
    return wrap_angle(2.0 * np.arctan2(np.asarray(z, np.float64), np.asarray(w, np.float64)), upper)


# label, score, x, y, z, length, width, height, quaternion z, quaternion w, velocity x, velocity y
ObjectFields = tuple[int, float, float, float, float, float, float, float, float, float, float, float]


def object_fields(boxes: Boxes3D, class_names: Sequence[str], with_velocity: bool) -> list[ObjectFields]:
    """The values of one DetectedObject per box, as Python numbers (message setters take them unconverted).

    Labels outside ``class_names`` -> UNKNOWN; velocities are 0 when ``with_velocity`` is false."""
    n = len(boxes)
    b = boxes.boxes.astype(np.float64)
    cols = np.empty((n, 12), dtype=np.float64)
    cols[:, 0] = labels_to_autoware(boxes.labels, class_names)
    cols[:, 1] = boxes.scores.astype(np.float64)
    cols[:, 2:8] = b[:, :6]
    cols[:, 8], cols[:, 9] = yaw_to_quaternion(b[:, 6])
    cols[:, 10:] = boxes.velocities if with_velocity else 0.0
    return [(int(row[0]), *row[1:]) for row in cols.tolist()]  # type: ignore[misc]


def detected_objects_to_boxes(msg: Any, class_names: Sequence[str], unmapped_label: int | None = None) -> Boxes3D:
    """awml_deploy_msgs/DetectedObjects -> Boxes3D: the inverse of :func:`object_fields` (see the module doc).

    ``msg``: an rclpy message, a ``rosbags`` message, or a dict of one. Labels go back by name: an Autoware
    label becomes the first index of ``class_names`` with that label. Objects whose label no class maps to
    (e.g. UNKNOWN when no class is unknown to Autoware) are dropped, or kept with ``unmapped_label`` (e.g. -1)
    when it is given; dropping is the default because -1 used as a Python index silently picks the last class.
    Yaw: :func:`yaw_from_quaternion` wrapped to (-float32(pi), float32(pi)] (:data:`PI_FLOAT32`). Velocity is
    (0, 0) where ``has_velocity`` is false.
    """
    get = operator.getitem if isinstance(msg, Mapping) else getattr
    reverse = class_index_by_label(class_names)
    rows, labels, scores = [], [], []
    for o in get(msg, "objects"):
        idx = reverse.get(int(get(o, "label")), unmapped_label)
        if idx is None:
            continue
        pose = get(o, "pose")
        p, q, d, v = get(pose, "position"), get(pose, "orientation"), get(o, "dimensions"), get(o, "velocity")
        hv = bool(get(o, "has_velocity"))
        rows.append((get(p, "x"), get(p, "y"), get(p, "z"), get(d, "x"), get(d, "y"), get(d, "z"),
                     get(q, "z"), get(q, "w"), get(v, "x") if hv else 0.0, get(v, "y") if hv else 0.0))
        labels.append(idx)
        scores.append(get(o, "score"))
    if not rows:
        return Boxes3D()
    a = np.array(rows, dtype=np.float64)
    boxes = np.empty((len(a), 7), dtype=np.float64)
    boxes[:, :6] = a[:, :6]
    boxes[:, 6] = yaw_from_quaternion(a[:, 6], a[:, 7], upper=PI_FLOAT32)
    return Boxes3D(boxes=boxes, scores=np.array(scores, np.float32), labels=np.array(labels, np.int64),
                   velocities=a[:, 8:])


__all__ = ["ObjectFields", "PI_FLOAT32", "detected_objects_to_boxes", "object_fields", "wrap_angle",
           "yaw_from_quaternion", "yaw_to_quaternion"]
