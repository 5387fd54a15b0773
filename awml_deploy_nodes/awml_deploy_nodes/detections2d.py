"""2D boxes (numpy) <-> ``awml_deploy_msgs/Detections2D``, as a message or as its serialized CDR bytes.

Why two paths: building the message costs Python attribute setters per box, and rclpy converts every object again
before serialising; ``Publisher.publish`` also takes serialized bytes, so the node can write the CDR stream itself
(:func:`detections2d_cdr`, one numpy pass). A test checks that the bytes decode to the message
:func:`detections2d_to_msg` builds.

CDR layout (little endian, after the 4-byte encapsulation header; alignment counted from its end): Header (int32
sec, uint32 nanosec, uint32 length + frame_id + NUL), padding to 4, uint32 count, then ``count`` records of
Detection2D = uint8 label, 3 padding bytes, float32 score, x_min, y_min, x_max, y_max. Every record is 24 bytes
and starts 4-aligned, so the whole sequence is one numpy structured array.

Values: boxes are float32 pixel coordinates xyxy, scores float32, labels uint8 (0..255, else ValueError: the
message cannot carry them). No clipping or sorting happens here; :func:`msg_to_detections2d` is the exact inverse
for float32 input (float64 input is rounded to float32 once, as the message stores it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from awml_deploy_msgs.msg import Detection2D, Detections2D

__all__ = ["DETECTION2D_RECORD", "detections2d_cdr", "detections2d_to_msg", "msg_to_detections2d"]

ENCAPSULATION_CDR_LE = b"\x00\x01\x00\x00"
DETECTION2D_RECORD = np.dtype(
    {"names": ["label", "score", "box"], "formats": ["u1", "<f4", ("<f4", (4,))], "offsets": [0, 4, 8], "itemsize": 24}
)


def _checked(boxes_xyxy: Any, scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes_xyxy, dtype=np.float32)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    sc = np.asarray(scores, dtype=np.float32).reshape(-1)
    lab = np.asarray(labels).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"detections2d: boxes_xyxy must be (N, 4), got shape {boxes.shape}")
    n = boxes.shape[0]
    if sc.shape[0] != n or lab.shape[0] != n:
        raise ValueError(f"detections2d: {n} boxes but {sc.shape[0]} scores and {lab.shape[0]} labels")
    if n and (lab.dtype.kind not in "iu" or int(lab.min()) < 0 or int(lab.max()) > 255):
        raise ValueError(
            f"detections2d: labels must be integers in 0..255 (Detection2D.label is uint8), got {lab.dtype} "
            f"in [{lab.min()}, {lab.max()}]"
        )
    return boxes, sc, lab.astype(np.uint8)


def detections2d_to_msg(boxes_xyxy: Any, scores: Any, labels: Any, header: Any) -> Detections2D:
    """(N, 4) xyxy boxes, (N,) scores, (N,) labels -> Detections2D, in box order. Raises ValueError on bad shapes."""
    boxes, sc, lab = _checked(boxes_xyxy, scores, labels)
    dets = []
    # One tolist() per array, then keyword construction: the cheapest way through the generated setters.
    for label, score, (x0, y0, x1, y1) in zip(lab.tolist(), sc.tolist(), boxes.tolist()):
        dets.append(Detection2D(label=label, score=score, x_min=x0, y_min=y0, x_max=x1, y_max=y1))
    msg = Detections2D()
    msg.header = header
    msg.detections = dets
    return msg


def msg_to_detections2d(msg: Detections2D) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`detections2d_to_msg`: boxes (N, 4) float32, scores (N,) float32, labels (N,) int64."""
    dets = msg.detections
    n = len(dets)
    boxes = np.array([(d.x_min, d.y_min, d.x_max, d.y_max) for d in dets], dtype=np.float32).reshape(n, 4)
    scores = np.array([d.score for d in dets], dtype=np.float32).reshape(n)
    labels = np.array([d.label for d in dets], dtype=np.int64).reshape(n)
    return boxes, scores, labels


def _header_bytes(header: Any) -> bytes:
    frame = header.frame_id.encode("utf-8") + b"\x00"
    sec = np.array([header.stamp.sec], "<i4").tobytes()
    return sec + np.array([header.stamp.nanosec, len(frame)], "<u4").tobytes() + frame


def detections2d_cdr(boxes_xyxy: Any, scores: Any, labels: Any, header: Any) -> bytes:
    """The serialized Detections2D :func:`detections2d_to_msg` would build, ready for ``Publisher.publish``."""
    boxes, sc, lab = _checked(boxes_xyxy, scores, labels)
    body = bytearray(_header_bytes(header))
    body += b"\x00" * (-len(body) % 4)
    body += np.array([len(lab)], "<u4").tobytes()
    rec = np.zeros(len(lab), DETECTION2D_RECORD)
    rec["label"] = lab
    rec["score"] = sc
    rec["box"] = boxes
    return ENCAPSULATION_CDR_LE + bytes(body) + rec.tobytes()
