"""Boxes3D -> a serialized ``awml_deploy_msgs/DetectedObjects`` in one numpy pass (no per-object Python).

Why: building the message object by object costs about 12 us per box in Python attribute setters, and rclpy
then converts every object again into C before serialising. ``Publisher.publish`` also takes the serialized
bytes (rclpy's ``publish_raw``, Humble and newer), so the node writes the CDR stream itself: the same bytes
``rclpy.serialization.serialize_message`` gives for the message :func:`conversions.boxes_to_detected_objects`
builds (a test checks this byte for byte).

The layout is plain CDR (little endian, encapsulation CDR_LE), alignment counted from the end of the 4-byte
encapsulation header. DetectedObject = uint8 label, float32 score, Pose (7 float64), Vector3 dimensions,
Vector3 velocity, bool has_velocity. Objects are not all the same size: the first starts 4-aligned (after the
sequence length), so its float64s start 4 or 8 bytes after the score; every later object starts one byte past
an 8-aligned position (the bool ends the previous one) and is 112 bytes long. If the message definition changes,
the byte-for-byte test fails.
"""

from __future__ import annotations

import functools
import struct
from typing import Any, Sequence

import numpy as np

from awml_deploy_core.labels import labels_to_autoware
from awml_deploy_core.structures import Boxes3D

ENCAPSULATION_CDR_LE = b"\x00\x01\x00\x00"
_FLOATS = 13  # pose 7 (position xyz, orientation xyzw), dimensions 3, velocity 3


@functools.lru_cache(maxsize=8)
def _object_dtype(phase: int) -> np.dtype:
    """Record of one DetectedObject whose label byte sits at stream offset = phase (mod 8)."""
    score = (phase + 1 + 3) // 4 * 4  # align 4 after the label
    floats = (score + 4 + 7) // 8 * 8  # align 8 after the score
    size = floats + 8 * _FLOATS + 1
    return np.dtype({"names": ["label", "score", "floats", "has_velocity"],
                     "formats": ["u1", "<f4", ("<f8", (_FLOATS,)), "u1"],
                     "offsets": [0, score - phase, floats - phase, floats - phase + 8 * _FLOATS],
                     "itemsize": size - phase})


_LATER = _object_dtype(1)  # every object after the first: 112 bytes
assert _LATER.itemsize == 112


def _header_bytes(header: Any) -> bytes:
    frame = header.frame_id.encode("utf-8") + b"\x00"
    return struct.pack("<iII", header.stamp.sec, header.stamp.nanosec, len(frame)) + frame


def detected_objects_cdr(boxes: Boxes3D, labels: np.ndarray, header: Any, with_velocity: bool) -> bytes:
    """The serialized DetectedObjects of ``boxes`` with Autoware ``labels`` (uint8, one per box), ready to publish.

    Same conventions as :func:`awml_deploy_nodes.conversions.boxes_to_detected_objects` (quaternion of yaw about
    +z; dimensions length, width, height; velocity and has_velocity only with ``with_velocity``).
    """
    n = len(boxes)
    body = bytearray(_header_bytes(header))
    body += b"\x00" * (-len(body) % 4)  # the sequence length is 4-aligned
    body += struct.pack("<I", n)
    if n == 0:
        return ENCAPSULATION_CDR_LE + bytes(body)
    first = _object_dtype(len(body) % 8)
    buf = bytearray(first.itemsize + (n - 1) * _LATER.itemsize)  # zeroed: the padding bytes stay 0
    b = np.asarray(boxes.boxes, dtype=np.float64)
    floats = np.zeros((n, _FLOATS), dtype=np.float64)
    floats[:, :3] = b[:, :3]
    half = 0.5 * b[:, 6]
    floats[:, 5] = np.sin(half)
    floats[:, 6] = np.cos(half)
    floats[:, 7:10] = b[:, 3:6]
    if with_velocity:
        floats[:, 10:12] = np.asarray(boxes.velocities, dtype=np.float64)
    scores = np.asarray(boxes.scores).astype(np.float32)
    views = [np.frombuffer(buf, first, count=1)]
    if n > 1:
        views.append(np.frombuffer(buf, _LATER, count=n - 1, offset=first.itemsize))
    start = 0
    for view in views:
        stop = start + len(view)
        view["label"] = labels[start:stop]
        view["score"] = scores[start:stop]
        view["floats"] = floats[start:stop]
        view["has_velocity"] = 1 if with_velocity else 0
        start = stop
    body += buf
    return ENCAPSULATION_CDR_LE + bytes(body)


def boxes_to_detected_objects_cdr(boxes: Boxes3D, class_names: Sequence[str], header: Any,
                                  with_velocity: bool) -> bytes:
    """Boxes3D -> serialized awml_deploy_msgs/DetectedObjects (labels outside class_names -> UNKNOWN)."""
    return detected_objects_cdr(boxes, labels_to_autoware(boxes.labels, class_names), header, with_velocity)
