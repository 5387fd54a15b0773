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

from awml_deploy_core.labels import AUTOWARE_UNKNOWN, autoware_labels
from awml_deploy_core.structures import Boxes3D

ENCAPSULATION_CDR_LE = b"\x00\x01\x00\x00"
_FLOATS = 13  # pose 7 (position xyz, orientation xyzw), dimensions 3, velocity 3


# Every object after the first starts one byte past an 8-aligned position: label at 0, score at 3, the float64s
# at 7, has_velocity at 111; 112 bytes. All n objects are written in this layout in one structured array, and the
# first one's bytes are moved to its own offsets (``_first_layout``) by a few bytes operations.
_RECORD = np.dtype({"names": ["label", "score", "floats", "has_velocity"],
                    "formats": ["u1", "<f4", ("<f8", (_FLOATS,)), "u1"],
                    "offsets": [0, 3, 7, 111], "itemsize": 112})


@functools.lru_cache(maxsize=8)
def _first_layout(phase: int) -> tuple[int, int]:
    """Padding after the label and after the score of an object whose label byte sits at offset = phase (mod 8)."""
    score = (phase + 1 + 3) // 4 * 4  # align 4 after the label
    floats = (score + 4 + 7) // 8 * 8  # align 8 after the score
    return score - phase - 1, floats - score - 4


@functools.lru_cache(maxsize=32)
def _label_table(class_names: tuple[str, ...]) -> np.ndarray:
    """Class index -> Autoware label, with UNKNOWN appended (where out-of-range indices are sent)."""
    return np.append(autoware_labels(class_names), np.uint8(AUTOWARE_UNKNOWN))


def _header_bytes(header: Any) -> bytes:
    frame = header.frame_id.encode("utf-8") + b"\x00"
    return struct.pack("<iII", header.stamp.sec, header.stamp.nanosec, len(frame)) + frame


def detected_objects_cdr(boxes: Boxes3D, labels: np.ndarray, header: Any, with_velocity: bool) -> bytes:
    """The serialized DetectedObjects of ``boxes`` with Autoware ``labels`` (uint8, one per box), ready to publish.

    Same conventions as :func:`awml_deploy_nodes.conversions.boxes_to_detected_objects` (quaternion of yaw about
    +z; dimensions length, width, height; velocity and has_velocity only with ``with_velocity``). Few numpy calls
    (each costs microseconds right after an inference, the caches cold), none per object.
    """
    n = len(boxes)
    head = _header_bytes(header)
    head += b"\x00" * (-len(head) % 4) + struct.pack("<I", n)  # the sequence length is 4-aligned
    if n == 0:
        return ENCAPSULATION_CDR_LE + head
    b = np.asarray(boxes.boxes)
    rec = np.zeros(n, _RECORD)  # zeroed: the padding bytes and the zero floats stay 0
    rec["label"] = labels
    rec["score"] = boxes.scores
    floats = rec["floats"]  # (n, 13) float64 view: position, orientation xyzw, dimensions, velocity
    floats[:, 0:3] = b[:, 0:3]
    floats[:, 7:10] = b[:, 3:6]  # length, width, height
    half = b[:, 6].astype(np.float64) * 0.5  # quaternion (0, 0, sin(yaw / 2), cos(yaw / 2))
    np.sin(half, out=floats[:, 5])
    np.cos(half, out=floats[:, 6])
    if with_velocity:
        floats[:, 10:12] = boxes.velocities
        rec["has_velocity"] = 1
    data = rec.tobytes()
    pad_label, pad_score = _first_layout(len(head) % 8)
    first = (data[0:1] + b"\x00" * pad_label + data[3:7] + b"\x00" * pad_score + data[7:112])
    return ENCAPSULATION_CDR_LE + head + first + data[112:]


def boxes_to_detected_objects_cdr(boxes: Boxes3D, class_names: Sequence[str], header: Any,
                                  with_velocity: bool) -> bytes:
    """Boxes3D -> serialized awml_deploy_msgs/DetectedObjects (labels outside class_names -> UNKNOWN)."""
    lut = _label_table(tuple(class_names))
    # any index outside the classes -> -1 or len: both the table's last entry, UNKNOWN (np.clip costs 4x this)
    autoware = lut[np.minimum(np.maximum(boxes.labels, -1), len(lut) - 1)]
    return detected_objects_cdr(boxes, autoware, header, with_velocity)
