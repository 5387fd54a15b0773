"""Camera image messages for yolox_node tests: good encodings and malformed kinds, built from arrays.

``build(case, image, stamp)`` -> (sensor_msgs/Image or CompressedImage, expected kind). Good cases give the kind
"output"; malformed ones the MalformedImageError kind the node must count (``malformed.<kind>`` on /diagnostics).
Used by the publisher process and by the test (which rebuilds the same messages to compute what the offline
pipeline sees: ``seen_image``).
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

RAW_GOOD = ("bgr8", "rgb8", "mono8", "padded")
COMPRESSED_GOOD = ("png", "jpeg")
RAW_BAD = {  # case -> counted kind
    "unsupported_encoding": "unsupported_encoding",
    "bad_endianness_field": "bad_endianness_field",
    "zero_size": "zero_size",
    "too_large": "too_large",
    "bad_step": "bad_step",
    "empty_data": "empty_data",
    "data_size_mismatch": "data_size_mismatch",
}
COMPRESSED_BAD = {
    "compressed_unsupported_format": "compressed_unsupported_format",
    "compressed_format_mismatch": "compressed_format_mismatch",
    "compressed_decode_failed": "compressed_decode_failed",
    "compressed_empty": "empty_data",
    "compressed_too_large": "too_large",
}
JPEG_QUALITY = 90


def is_compressed(case: str) -> bool:
    return case in COMPRESSED_GOOD or case in COMPRESSED_BAD


def _bytes(buf: np.ndarray | bytes) -> array.array:
    out = array.array("B")
    out.frombytes(bytes(buf) if not isinstance(buf, np.ndarray) else np.ascontiguousarray(buf).tobytes())
    return out


def _raw(img: np.ndarray, header: Header, encoding: str, pad: int = 0) -> Image:
    ch = 1 if img.ndim == 2 else 3
    h, w = img.shape[:2]
    rows = img.reshape(h, w * ch)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 7, np.uint8)], axis=1)
    return Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=w * ch + pad,
                 data=_bytes(rows))


def _encoded(img: np.ndarray, fmt: str) -> bytes:
    ext, params = (".png", []) if fmt == "png" else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    ok, buf = cv2.imencode(ext, img, params)
    assert ok
    return buf.tobytes()


def build(case: str, image: np.ndarray, stamp: tuple[int, int], frame_id: str = "camera") -> tuple[object, str]:
    """The message of ``case`` made from the (H, W, 3) uint8 BGR ``image``, and what the node must do with it."""
    header = Header(stamp=Time(sec=int(stamp[0]), nanosec=int(stamp[1])), frame_id=frame_id)
    img = np.ascontiguousarray(image)
    if case == "bgr8":
        return _raw(img, header, "bgr8"), "output"
    if case == "rgb8":
        return _raw(img[:, :, ::-1], header, "rgb8"), "output"
    if case == "mono8":
        return _raw(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), header, "mono8"), "output"
    if case == "padded":
        return _raw(img, header, "bgr8", pad=5), "output"
    if case in COMPRESSED_GOOD:
        return CompressedImage(header=header, format=case, data=_bytes(_encoded(img, case))), "output"
    if case in RAW_BAD:
        msg = _raw(img, header, "bgr8")
        if case == "unsupported_encoding":
            msg.encoding = "16UC1"
        elif case == "bad_endianness_field":
            msg.is_bigendian = 2
        elif case == "zero_size":
            msg.width = 0
        elif case == "too_large":
            msg.width = msg.height = 100_000
        elif case == "bad_step":
            msg.step = msg.width * 3 - 1
        elif case == "empty_data":
            msg.data = array.array("B")
        elif case == "data_size_mismatch":
            msg.data = _bytes(np.frombuffer(bytes(msg.data), np.uint8)[: -msg.step])
        return msg, RAW_BAD[case]
    if case in COMPRESSED_BAD:
        png = _encoded(img, "png")
        fmt, data = "jpeg", _encoded(img, "jpeg")
        if case == "compressed_unsupported_format":
            fmt = "tiff"
        elif case == "compressed_format_mismatch":
            data = png  # says jpeg, holds a PNG
        elif case == "compressed_decode_failed":
            data = data[:3] + bytes(range(256)) * 4  # the JPEG signature, then garbage
        elif case == "compressed_empty":
            data = b""
        elif case == "compressed_too_large":  # a PNG whose IHDR claims 100000 x 100000 pixels
            fmt = "png"
            data = png[:16] + (100_000).to_bytes(4, "big") * 2 + png[24:]
        return CompressedImage(header=header, format=fmt, data=_bytes(data)), COMPRESSED_BAD[case]
    raise KeyError(case)


def seen_image(msg: object) -> np.ndarray:
    """The BGR image a correct node feeds the pipeline for a good message, computed without the node's code."""
    if isinstance(msg, CompressedImage):
        return cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8).copy(), cv2.IMREAD_COLOR)
    h, w, step = msg.height, msg.width, msg.step
    rows = np.frombuffer(bytearray(msg.data), np.uint8).reshape(h, step)  # writable: a copy of the bytes
    if msg.encoding == "mono8":
        return np.repeat(rows[:, :w, None], 3, axis=2)
    px = rows[:, : w * 3].reshape(h, w, 3)
    return np.array(px[:, :, ::-1] if msg.encoding == "rgb8" else px, order="C")
