"""ROS image messages <-> numpy BGR arrays, for the camera (YOLOX) node; plain functions, no node.

Why a module of its own: ``cv_bridge`` (ROS 2) is not installable here, and the node must survive any message a
driver or a fuzzer sends. Same policy as the point cloud side (:mod:`awml_deploy_nodes.conversions`):

- ``sensor_msgs/Image``: :func:`check_image_header` does every structural check in O(1) (no pixel is read), for the
  subscription callback; :func:`image_to_bgr` then gives an (H, W, 3) uint8 BGR read-only array. Supported
  encodings are ``bgr8``, ``rgb8`` and ``mono8``. bgr8 is a zero-copy view of ``msg.data`` (C-contiguous unless
  rows are padded; then the row stride skips the padding, and OpenCV takes such a view as fast as a packed one).
  rgb8 and mono8 cost one ``cv2.cvtColor`` copy (about 2 ms and 1 ms at 1920x1080 on the 2-core dev machine).
  Not a zero-copy view with a reversed (stride -1) or broadcast (stride 0) channel axis: every OpenCV call on such
  a view, and ``np.ascontiguousarray``, then makes a slow element-wise copy (about 20-30 ms at 1080p, measured).
- ``sensor_msgs/CompressedImage``: :func:`compressed_to_bgr` decodes JPEG or PNG with ``cv2.imdecode``. The
  ``format`` string decides which codec is allowed and the data must start with that codec's signature, so no
  other decoder of OpenCV is ever reached from a message. EXIF orientation is ignored (the pixels stay in the
  camera's own geometry, matching its intrinsics).
- A bad message raises :class:`MalformedImageError` whose ``kind`` (one of :data:`MALFORMED_IMAGE_KINDS`) is a
  short, stable diagnostics counter name. Header checks run in this order, the first failure wins:
  unsupported_encoding, bad_endianness_field, zero_size, too_large, bad_step, empty_data, data_size_mismatch.
- ``data`` must hold exactly ``step * height`` bytes (REP/sensor_msgs: "actual matrix data, size is step * rows").

Writing: :func:`bgr_to_image_msg` / :func:`bgr_to_compressed_msg` build messages from arrays (tests, replay). The
data goes in as an ``array.array('B')``: assigning ``bytes`` or a numpy array makes some ROS distributions'
generated setter check every byte in Python (see conversions.py).
"""

from __future__ import annotations

import array
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

__all__ = [
    "DEFAULT_MAX_COMPRESSED_BYTES",
    "DEFAULT_MAX_PIXELS",
    "ENCODINGS",
    "ImageInfo",
    "MALFORMED_IMAGE_KINDS",
    "MalformedImageError",
    "bgr_to_compressed_msg",
    "bgr_to_image_msg",
    "check_compressed_header",
    "check_image_header",
    "compressed_to_bgr",
    "image_to_bgr",
]

DEFAULT_MAX_PIXELS = 7680 * 4320  # 8K UHD; a 4K camera (8.3 Mpx) fits 4 times
DEFAULT_MAX_COMPRESSED_BYTES = 64 * 1024 * 1024
ENCODINGS = {"bgr8": 3, "rgb8": 3, "mono8": 1}  # encoding -> bytes per pixel

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

MALFORMED_IMAGE_KINDS = (
    "unsupported_encoding",  # Image.encoding not one of ENCODINGS (case-sensitive, as ROS spells them)
    "bad_endianness_field",  # is_bigendian not 0 or 1 (irrelevant for 8-bit data, but a corrupt header)
    "zero_size",  # width or height is 0: nothing to detect on
    "too_large",  # width * height > max_pixels (also a decoded compressed image), or compressed data too big
    "bad_step",  # step < width * bytes per pixel
    "empty_data",  # data holds no byte although the header describes pixels (Image or CompressedImage)
    "data_size_mismatch",  # len(data) != step * height
    "compressed_unsupported_format",  # CompressedImage.format names neither jpeg/jpg nor png
    "compressed_format_mismatch",  # data does not start with the JPEG/PNG signature the format names
    "compressed_decode_failed",  # OpenCV could not decode the data
)


class MalformedImageError(ValueError):
    """An Image/CompressedImage that can't be trusted. ``kind`` is one of :data:`MALFORMED_IMAGE_KINDS`."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"malformed image ({kind}): {detail}")
        self.kind = kind
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with both arguments
        return (type(self), (self.kind, self.detail))


@dataclass
class ImageInfo:
    """What a conversion saw; meant for diagnostics and InferenceStats."""

    height: int = 0
    width: int = 0
    encoding: str = ""  # Image.encoding, or "jpeg"/"png" for a CompressedImage
    step: int = 0  # Image.step (0 for compressed)
    row_padding: int = 0  # bytes at the end of each row beyond width * bytes per pixel (skipped)
    compressed_bytes: int = 0  # len(data) of a CompressedImage (0 for raw)
    contiguous: bool = False  # the returned array is C-contiguous (else it is a strided/broadcast view)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _buffer(data: Any) -> Any:
    # rclpy gives array.array('B'); bytes/bytearray/memoryview/ndarray (rosbags, tests) also expose a buffer.
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    return data


def check_image_header(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Every structural check of :func:`image_to_bgr` in O(1), reading no pixel: for the subscription callback.

    Raises :class:`MalformedImageError`.
    """
    encoding = msg.encoding
    channels = ENCODINGS.get(encoding)
    if channels is None:
        raise MalformedImageError(
            "unsupported_encoding",
            f"encoding {encoding!r}; supported are {sorted(ENCODINGS)} (publish bgr8/rgb8/mono8)",
        )
    if int(msg.is_bigendian) not in (0, 1):
        raise MalformedImageError("bad_endianness_field", f"is_bigendian is {msg.is_bigendian}; it must be 0 or 1")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise MalformedImageError("zero_size", f"image is {width}x{height} pixels")
    if height * width > max_pixels:
        raise MalformedImageError(
            "too_large", f"{width}x{height} = {width * height} pixels exceed max_pixels {max_pixels}"
        )
    row = width * channels
    if step < row:
        raise MalformedImageError("bad_step", f"step {step} < width {width} x {channels} B/pixel ({encoding}) = {row}")
    size = len(msg.data)
    if size == 0:
        raise MalformedImageError(
            "empty_data", f"data is empty; a {width}x{height} {encoding} image needs {step * height} B"
        )
    if size != step * height:
        raise MalformedImageError(
            "data_size_mismatch", f"data holds {size} B; step {step} x height {height} needs exactly {step * height} B"
        )
    return ImageInfo(height=height, width=width, encoding=encoding, step=step, row_padding=step - row)


def image_to_bgr(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """(H, W, 3) uint8 BGR zero-copy read-only view of a bgr8/rgb8/mono8 Image, and its :class:`ImageInfo`.

    The view keeps ``msg.data`` alive. Raises :class:`MalformedImageError`.
    """
    info = check_image_header(msg, max_pixels)
    h, w, step = info.height, info.width, info.step
    buf = _buffer(msg.data)
    if info.encoding == "mono8":
        gray = np.ndarray((h, w), np.uint8, buffer=buf, strides=(step, 1))
        out = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    else:
        # Rows may be padded: the row stride skips the padding, which is never read.
        out = np.ndarray((h, w, 3), np.uint8, buffer=buf, strides=(step, 3, 1))
        if info.encoding == "rgb8":
            out = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
    out.flags.writeable = False  # possibly a view into the message: never let a caller edit it by accident
    info.contiguous = bool(out.flags.c_contiguous)
    return out, info


def _codec(fmt: str) -> str | None:
    # image_transport writes e.g. "jpeg", "png", "bgr8; jpeg compressed bgr8", "rgb8; compressed png".
    f = fmt.lower()
    if "jpeg" in f or "jpg" in f:
        return "jpeg"
    if "png" in f:
        return "png"
    return None


def check_compressed_header(
    msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_COMPRESSED_BYTES
) -> ImageInfo:
    """The checks of :func:`compressed_to_bgr` possible before decoding (O(1)): format, size, signature.

    A PNG's size is read from its IHDR chunk here; a JPEG's only after decoding. Raises :class:`MalformedImageError`.
    """
    codec = _codec(msg.format)
    if codec is None:
        raise MalformedImageError(
            "compressed_unsupported_format", f"format {msg.format!r} names neither jpeg nor png (use image_transport's)"
        )
    size = len(msg.data)
    if size == 0:
        raise MalformedImageError("empty_data", f"CompressedImage ({msg.format!r}) has no data")
    if size > max_bytes:
        raise MalformedImageError("too_large", f"compressed data of {size} B exceeds max_bytes {max_bytes}")
    head = bytes(memoryview(_buffer(msg.data)).cast("B")[:24])
    magic = _JPEG_MAGIC if codec == "jpeg" else _PNG_MAGIC
    if not head.startswith(magic):
        raise MalformedImageError(
            "compressed_format_mismatch",
            f"format {msg.format!r} but the data starts with {head[:8].hex()}, not {magic.hex()}",
        )
    info = ImageInfo(encoding=codec, compressed_bytes=size)
    if codec == "png" and len(head) >= 24 and head[12:16] == b"IHDR":
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        _check_decoded_size(width, height, max_pixels)
    return info


def _check_decoded_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MalformedImageError(
            "too_large",
            f"compressed image of {width}x{height} = {width * height} pixels exceeds max_pixels {max_pixels}",
        )


def compressed_to_bgr(
    msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_COMPRESSED_BYTES
) -> tuple[np.ndarray, ImageInfo]:
    """(H, W, 3) uint8 BGR (C-contiguous, writable: decoding copies anyway) of a JPEG/PNG CompressedImage.

    Grey and 16-bit PNGs become 8-bit BGR, alpha is dropped. Raises :class:`MalformedImageError`.
    """
    info = check_compressed_header(msg, max_pixels, max_bytes)
    raw = np.frombuffer(_buffer(msg.data), dtype=np.uint8)
    try:
        out = cv2.imdecode(raw, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as e:  # some corrupt streams raise instead of returning None
        raise MalformedImageError("compressed_decode_failed", f"OpenCV failed on {info.encoding} data: {e}") from e
    if out is None or out.ndim != 3 or out.shape[2] != 3 or out.size == 0:
        raise MalformedImageError(
            "compressed_decode_failed", f"OpenCV could not decode {info.compressed_bytes} B of {info.encoding} data"
        )
    info.height, info.width = int(out.shape[0]), int(out.shape[1])
    _check_decoded_size(info.width, info.height, max_pixels)
    info.contiguous = bool(out.flags.c_contiguous)
    return out, info


def _bytes_array(arr: np.ndarray) -> array.array:
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    return data


def bgr_to_image_msg(img: np.ndarray, header: Any, encoding: str = "bgr8") -> Image:
    """A packed (step = width * bytes per pixel) Image of ``img``: (H, W, 3) BGR for bgr8/rgb8, (H, W) for mono8.

    For rgb8 the channels are reversed on the way in, so :func:`image_to_bgr` gives ``img`` back.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"bgr_to_image_msg: img must be uint8, got {img.dtype}; convert it first")
    if encoding not in ENCODINGS:
        raise ValueError(f"bgr_to_image_msg: encoding {encoding!r} not in {sorted(ENCODINGS)}")
    if encoding == "mono8":
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim != 2:
            raise ValueError(f"bgr_to_image_msg: mono8 needs an (H, W) array, got shape {img.shape}")
    elif img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"bgr_to_image_msg: {encoding} needs an (H, W, 3) BGR array, got shape {img.shape}")
    elif encoding == "rgb8":
        img = img[:, :, ::-1]
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(img.shape[1]) * ENCODINGS[encoding]
    msg.data = _bytes_array(img)
    return msg


def bgr_to_compressed_msg(img: np.ndarray, header: Any, fmt: str = "jpeg", quality: int = 95) -> CompressedImage:
    """A CompressedImage of the (H, W, 3) uint8 BGR ``img``; ``fmt`` "jpeg" (``quality`` 0..100) or "png"."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"bgr_to_compressed_msg: img must be (H, W, 3) uint8 BGR, got {img.shape} {img.dtype}")
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"bgr_to_compressed_msg: fmt must be 'jpeg' or 'png', got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, enc = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", img, params)
    if not ok:
        raise ValueError(f"bgr_to_compressed_msg: OpenCV could not encode a {img.shape} image as {fmt}")
    msg = CompressedImage()
    msg.header = header
    msg.format = fmt
    msg.data = _bytes_array(enc)
    return msg
