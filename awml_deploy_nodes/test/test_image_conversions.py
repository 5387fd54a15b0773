"""image_conversions.py (Image/CompressedImage -> BGR) and detections2d.py (boxes <-> Detections2D). No nodes.

References are independent of the code under test: messages are written byte by byte from known arrays, colour
conversions come from OpenCV's cvtColor, serialized bytes are decoded by rclpy.
"""

from __future__ import annotations

import array
import pickle

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from awml_deploy_msgs.msg import Detections2D
from awml_deploy_nodes.detections2d import detections2d_cdr, detections2d_to_msg, msg_to_detections2d
from awml_deploy_nodes.image_conversions import (
    MALFORMED_IMAGE_KINDS,
    MalformedImageError,
    bgr_to_compressed_msg,
    bgr_to_image_msg,
    check_compressed_header,
    check_image_header,
    compressed_to_bgr,
    image_to_bgr,
)

CHANNELS = {"bgr8": 3, "rgb8": 3, "mono8": 1}
HEADER = Header(frame_id="camera_front", stamp=Time(sec=1_700_000_000, nanosec=5))


def raw_image(pixels: np.ndarray, encoding: str, pad: int = 0, fill: int = 0xAB) -> Image:
    """An Image whose rows are ``pixels`` (H, W, C) written as they are, each followed by ``pad`` bytes of ``fill``."""
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1)
    step = row.shape[1] + pad
    buf = np.full((h, step), fill, np.uint8)
    buf[:, : row.shape[1]] = row
    msg = Image(header=HEADER, height=h, width=w, encoding=encoding, is_bigendian=0, step=step)
    data = array.array("B")
    data.frombytes(buf.tobytes())
    msg.data = data
    return msg


def random_pixels(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


# ----------------------------------------------------------------------------------- raw images: valid


def test_tiny_rgb8_by_hand():
    # One row, two pixels: pure red then pure blue, in RGB byte order.
    msg = Image(height=1, width=2, encoding="rgb8", step=6)
    msg.data = array.array("B", [255, 0, 0, 0, 0, 255])
    out, info = image_to_bgr(msg)
    assert out.tolist() == [[[0, 0, 255], [255, 0, 0]]]  # BGR: red is (0, 0, 255)
    assert (info.height, info.width, info.encoding, info.row_padding) == (1, 2, "rgb8", 0)


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "mono8"])
def test_valid_encodings_give_bgr(encoding, pad):
    h, w = 7, 11
    pixels = random_pixels(h, w, CHANNELS[encoding], seed=pad)
    msg = raw_image(pixels, encoding, pad=pad)
    out, info = image_to_bgr(msg)
    reference = {
        "bgr8": lambda p: p,
        "rgb8": lambda p: cv2.cvtColor(p, cv2.COLOR_RGB2BGR),
        "mono8": lambda p: cv2.cvtColor(p[:, :, 0], cv2.COLOR_GRAY2BGR),
    }[encoding](pixels)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, reference)
    assert info.row_padding == pad and info.step == w * CHANNELS[encoding] + pad
    assert not out.flags.writeable
    # bgr8 is a view of the message (padding bytes are never read: they would show as 0xAB); the others one copy.
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8)) == (encoding == "bgr8")
    assert info.contiguous == (encoding != "bgr8" or pad == 0) == out.flags.c_contiguous
    np.testing.assert_array_equal(cv2.resize(out, (w * 2, h * 2), interpolation=cv2.INTER_NEAREST)[::2, ::2], reference)


def test_bgr8_is_zero_copy_and_contiguous():
    pixels = random_pixels(480, 640, 3)
    msg = raw_image(pixels, "bgr8")
    out, info = image_to_bgr(msg)
    assert info.contiguous and out.flags.c_contiguous
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    assert out.__array_interface__["data"][0] == msg.data.buffer_info()[0]  # the very first byte of msg.data
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "mono8"])
def test_bgr_to_image_msg_round_trip(encoding):
    bgr = random_pixels(5, 9, 3, seed=3)
    img = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if encoding == "mono8" else bgr
    msg = bgr_to_image_msg(img, HEADER, encoding)
    assert isinstance(msg.data, array.array) and msg.step == 9 * CHANNELS[encoding]
    assert msg.header.frame_id == "camera_front" and msg.encoding == encoding
    out, _ = image_to_bgr(msg)
    expected = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if encoding == "mono8" else bgr
    np.testing.assert_array_equal(out, expected)
    if encoding == "rgb8":  # the bytes really are RGB
        np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(5, 9, 3), bgr[:, :, ::-1])


def test_bgr_to_image_msg_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        bgr_to_image_msg(np.zeros((2, 2, 3), np.float32), HEADER)
    with pytest.raises(ValueError, match="H, W, 3"):
        bgr_to_image_msg(np.zeros((2, 2), np.uint8), HEADER, "bgr8")
    with pytest.raises(ValueError, match="encoding"):
        bgr_to_image_msg(np.zeros((2, 2, 3), np.uint8), HEADER, "bgra8")


# ------------------------------------------------------------------------------- raw images: malformed


def _good() -> Image:
    return raw_image(random_pixels(4, 6, 3), "bgr8")


def _with(**changes) -> Image:
    msg = _good()
    for k, v in changes.items():
        setattr(msg, k, v)
    return msg


RAW_CASES = {
    "unsupported_encoding": [_with(encoding="bgra8"), _with(encoding="BGR8"), _with(encoding="16UC1"),
                             _with(encoding="")],
    "bad_endianness_field": [_with(is_bigendian=2), _with(is_bigendian=255)],
    "zero_size": [_with(width=0), _with(height=0), Image(encoding="mono8")],
    "too_large": [_with(width=100_000, height=100_000)],
    "bad_step": [_with(step=17), _with(step=0)],
    "empty_data": [_with(data=array.array("B"))],
    "data_size_mismatch": [_with(data=array.array("B", bytes(71))), _with(data=array.array("B", bytes(73))),
                           _with(step=19)],
}


@pytest.mark.parametrize("kind,msg", [(k, m) for k, ms in RAW_CASES.items() for m in ms])
def test_malformed_raw_image_kinds(kind, msg):
    assert kind in MALFORMED_IMAGE_KINDS
    for fn in (image_to_bgr, check_image_header):
        with pytest.raises(MalformedImageError) as e:
            fn(msg)
        assert e.value.kind == kind, str(e.value)
        assert kind in str(e.value)


def test_max_pixels_is_inclusive():
    msg = raw_image(random_pixels(4, 6, 1), "mono8")
    assert image_to_bgr(msg, max_pixels=24)[0].shape == (4, 6, 3)
    with pytest.raises(MalformedImageError, match="too_large"):
        image_to_bgr(msg, max_pixels=23)


def test_error_pickles_with_kind():
    e = pickle.loads(pickle.dumps(MalformedImageError("bad_step", "step 1 < 3")))
    assert e.kind == "bad_step" and e.detail == "step 1 < 3" and "bad_step" in str(e)


# ------------------------------------------------------------------------------- raw images: property

ENCODING_CHOICES = ["bgr8", "rgb8", "mono8", "bgr8", "rgb8", "mono8", "bgra8", "16UC1", "", "yuv422"]


@st.composite
def images(draw) -> Image:
    """Plausible headers (often exactly right) with one thing sometimes off, and random bytes."""
    msg = Image()
    msg.encoding = draw(st.sampled_from(ENCODING_CHOICES))
    msg.height = draw(st.integers(0, 7))
    msg.width = draw(st.integers(0, 9))
    ch = CHANNELS.get(msg.encoding, draw(st.integers(1, 4)))
    msg.step = max(msg.width * ch + draw(st.sampled_from([0, 0, 0, 1, 3, -1, -3])), 0)
    msg.is_bigendian = draw(st.sampled_from([0, 0, 1, 2, 255]))
    size = max(msg.step * msg.height + draw(st.sampled_from([0, 0, 0, 0, 1, -1, -7])), 0)
    seed = draw(st.integers(0, 2**32 - 1))
    data = array.array("B")
    data.frombytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    msg.data = data
    return msg


MAX_PIXELS_FUZZ = 50


def _reference_bgr(msg: Image) -> np.ndarray:
    """Pixel by pixel from the raw bytes (slow and obvious)."""
    raw = bytes(msg.data)
    ch = CHANNELS[msg.encoding]
    out = np.zeros((msg.height, msg.width, 3), np.uint8)
    for r in range(msg.height):
        for c in range(msg.width):
            px = list(raw[r * msg.step + c * ch: r * msg.step + (c + 1) * ch])
            out[r, c] = {"bgr8": px, "rgb8": px[::-1], "mono8": px * 3}[msg.encoding]
    return out


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images())
def test_any_image_gives_bgr_or_a_known_kind(msg):
    try:
        out, info = image_to_bgr(msg, MAX_PIXELS_FUZZ)
    except MalformedImageError as e:
        assert e.kind in MALFORMED_IMAGE_KINDS
        with pytest.raises(MalformedImageError) as again:
            check_image_header(msg, MAX_PIXELS_FUZZ)
        assert again.value.kind == e.kind
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    assert out.shape == (msg.height, msg.width, 3) and 0 < msg.height * msg.width <= MAX_PIXELS_FUZZ
    np.testing.assert_array_equal(out, _reference_bgr(msg))
    assert info.as_dict()["encoding"] == msg.encoding


def test_image_fuzzer_reaches_valid_and_every_header_kind():
    from hypothesis import find

    def outcome(m: Image) -> str:
        try:
            image_to_bgr(m, MAX_PIXELS_FUZZ)
        except MalformedImageError as e:
            return e.kind
        return "ok"

    for target in ("ok", "unsupported_encoding", "bad_endianness_field", "zero_size", "too_large", "bad_step",
                   "empty_data", "data_size_mismatch"):
        find(images(), lambda m, t=target: outcome(m) == t,
             settings=settings(max_examples=5000, phases=[Phase.generate], database=None))  # no shrinking: faster


# ---------------------------------------------------------------------------------- compressed images


def smooth_bgr(h: int = 48, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], axis=-1).astype(np.uint8)


def compressed(data: bytes, fmt: str) -> CompressedImage:
    msg = CompressedImage(header=HEADER, format=fmt)
    buf = array.array("B")
    buf.frombytes(data)
    msg.data = buf
    return msg


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "bgr8; jpeg compressed bgr8", "JPEG"])
def test_jpeg_round_trip_within_tolerance(fmt):
    img = smooth_bgr()
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    out, info = compressed_to_bgr(compressed(enc.tobytes(), fmt))
    assert out.shape == img.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    diff = np.abs(out.astype(int) - img.astype(int))
    assert diff.mean() < 2.0 and diff.max() <= 16
    assert (info.encoding, info.height, info.width, info.compressed_bytes) == ("jpeg", 48, 64, len(enc))


@pytest.mark.parametrize("fmt", ["png", "rgb8; compressed png", "bgr8; png compressed bgr8"])
def test_png_round_trip_is_exact(fmt):
    img = random_pixels(33, 17, 3, seed=9)
    out, info = compressed_to_bgr(bgr_to_compressed_msg(img, HEADER, "png") if fmt == "png" else
                                  compressed(cv2.imencode(".png", img)[1].tobytes(), fmt))
    np.testing.assert_array_equal(out, img)
    assert info.encoding == "png"


def test_bgr_to_compressed_msg_jpeg():
    img = smooth_bgr()
    msg = bgr_to_compressed_msg(img, HEADER, "jpeg", quality=90)
    assert msg.format == "jpeg" and bytes(msg.data[:3]) == b"\xff\xd8\xff"
    out, _ = compressed_to_bgr(msg)
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 3.0


def test_grey_and_16bit_png_become_bgr8():
    grey = random_pixels(6, 5, 1, seed=1)[:, :, 0]
    out, _ = compressed_to_bgr(compressed(cv2.imencode(".png", grey)[1].tobytes(), "png"))
    np.testing.assert_array_equal(out, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    deep = (random_pixels(6, 5, 3, seed=2).astype(np.uint16) << 8) | 0x7F
    out, _ = compressed_to_bgr(compressed(cv2.imencode(".png", deep)[1].tobytes(), "png"))
    np.testing.assert_array_equal(out, (deep >> 8).astype(np.uint8))


def _jpeg() -> bytes:
    return cv2.imencode(".jpg", smooth_bgr())[1].tobytes()


def _png(h: int = 4, w: int = 4) -> bytes:
    return cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))[1].tobytes()


COMPRESSED_CASES = {
    "compressed_unsupported_format": [compressed(_png(), "tiff"), compressed(_png(), ""),
                                      compressed(_png(), "bgr8; compressedDepth")],
    "empty_data": [compressed(b"", "jpeg"), compressed(b"", "png")],
    "compressed_format_mismatch": [compressed(_png(), "jpeg"), compressed(_jpeg(), "png"),
                                   compressed(b"GIF89a" + bytes(40), "png"), compressed(b"\xff", "jpeg")],
    "compressed_decode_failed": [compressed(b"\xff\xd8\xff" + bytes(200), "jpeg"),
                                 compressed(_png()[:30], "png"),
                                 compressed(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "png")],
    "too_large": [compressed(_png(300, 300), "png")],  # PNG: refused from IHDR, before decoding
}


@pytest.mark.parametrize("kind,msg", [(k, m) for k, ms in COMPRESSED_CASES.items() for m in ms])
def test_malformed_compressed_kinds(kind, msg):
    assert kind in MALFORMED_IMAGE_KINDS
    with pytest.raises(MalformedImageError) as e:
        compressed_to_bgr(msg, max_pixels=10_000)
    assert e.value.kind == kind, str(e.value)


def test_compressed_size_limits():
    with pytest.raises(MalformedImageError, match="too_large"):  # JPEG: only known after decoding
        compressed_to_bgr(compressed(_jpeg(), "jpeg"), max_pixels=48 * 64 - 1)
    assert compressed_to_bgr(compressed(_jpeg(), "jpeg"), max_pixels=48 * 64)[0].shape == (48, 64, 3)
    with pytest.raises(MalformedImageError, match="too_large"):
        check_compressed_header(compressed(_jpeg(), "jpeg"), max_bytes=100)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["jpeg", "png"]), st.integers(0, 2**32 - 1), st.integers(0, 400), st.booleans())
def test_corrupted_compressed_gives_bgr_or_a_known_kind(fmt, seed, cut, flip):
    """Valid streams truncated and bit-flipped: a BGR image or a known kind, never anything else."""
    rng = np.random.default_rng(seed)
    data = bytearray(cv2.imencode(".jpg" if fmt == "jpeg" else ".png", random_pixels(16, 24, 3, seed % 97))[1])
    if flip and len(data) > 8:
        for pos in rng.integers(0, len(data), 4):
            data[pos] ^= 1 << int(rng.integers(0, 8))
    data = data[: max(len(data) - cut, 0)]
    try:
        out, info = compressed_to_bgr(compressed(bytes(data), fmt), max_pixels=10_000)
    except MalformedImageError as e:
        assert e.kind in MALFORMED_IMAGE_KINDS
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] * out.shape[1] <= 10_000 and (info.height, info.width) == out.shape[:2]


# ---------------------------------------------------------------------------------------- Detections2D


def random_detections(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-10, 1900, (n, 2)).astype(np.float32)
    wh = rng.uniform(0.5, 300, (n, 2)).astype(np.float32)
    return np.concatenate([xy, xy + wh], axis=1), rng.uniform(0, 1, n).astype(np.float32), rng.integers(0, 256, n)


def test_detections2d_fields():
    boxes = np.array([[1.5, 2.25, 30.0, 40.75]], np.float32)
    msg = detections2d_to_msg(boxes, [0.5], [7], HEADER)
    d = msg.detections[0]
    assert (d.label, d.score, d.x_min, d.y_min, d.x_max, d.y_max) == (7, 0.5, 1.5, 2.25, 30.0, 40.75)
    assert msg.header == HEADER


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.integers(0, 2**32 - 1))
def test_detections2d_round_trip_is_exact(n, seed):
    boxes, scores, labels = random_detections(n, seed)
    msg = detections2d_to_msg(boxes, scores, labels, HEADER)
    b, s, lab = msg_to_detections2d(msg)
    assert b.dtype == np.float32 and s.dtype == np.float32 and b.shape == (n, 4) and s.shape == (n,)
    np.testing.assert_array_equal(b, boxes)
    np.testing.assert_array_equal(s, scores)
    np.testing.assert_array_equal(lab, labels)
    # Through DDS bytes too.
    b2, s2, lab2 = msg_to_detections2d(deserialize_message(serialize_message(msg), Detections2D))
    np.testing.assert_array_equal(b2, boxes)
    np.testing.assert_array_equal(s2, scores)
    np.testing.assert_array_equal(lab2, labels)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 100])
@pytest.mark.parametrize("frame_id", ["", "c", "cam", "cam0", "camera_front", "abcdefg"])
def test_detections2d_cdr_is_the_message(n, frame_id):
    boxes, scores, labels = random_detections(n, n)
    header = Header(frame_id=frame_id, stamp=Time(sec=-3 if n == 2 else 1_700_000_000 + n, nanosec=999_999_999))
    reference = detections2d_to_msg(boxes, scores, labels, header)
    data = detections2d_cdr(boxes, scores, labels, header)
    assert len(data) == len(serialize_message(reference))
    assert deserialize_message(data, Detections2D) == reference


def test_detections2d_rejects_what_the_message_cannot_carry():
    boxes, scores, labels = random_detections(3, 0)
    for fn in (detections2d_to_msg, detections2d_cdr):
        with pytest.raises(ValueError, match="0..255"):
            fn(boxes, scores, np.array([1, 256, 2]), HEADER)
        with pytest.raises(ValueError, match="0..255"):
            fn(boxes, scores, np.array([1, -1, 2]), HEADER)
        with pytest.raises(ValueError, match="0..255"):
            fn(boxes, scores, np.array([1.0, 2.0, 3.0]), HEADER)
        with pytest.raises(ValueError, match=r"\(N, 4\)"):
            fn(boxes[:, :3], scores, labels, HEADER)
        with pytest.raises(ValueError, match="3 boxes but 2 scores"):
            fn(boxes, scores[:2], labels, HEADER)
    empty = detections2d_to_msg([], [], [], HEADER)
    assert empty.detections == [] and [a.shape for a in msg_to_detections2d(empty)] == [(0, 4), (0,), (0,)]
