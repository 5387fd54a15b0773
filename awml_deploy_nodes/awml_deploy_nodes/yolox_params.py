"""Parameters of ``yolox_node``: its table, its validation, and the thresholds the node runs with.

Pure Python (no rclpy), like :mod:`.node_params`, whose shared parts it uses: the model-source, backend, threshold,
budget and diagnostics parameters have the same names and meaning as ``centerpoint_node``'s. Replay and tests
import :func:`node_model_overrides` from here to run the offline pipeline with exactly the node's thresholds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .node_params import (
    ParamError,
    ParamSpec,
    _fail,
    _number,
    _positive_int,
    check_names,
    model_params,
    runtime_params,
    validate_shared,
)

DEFAULT_CHECKPOINT = "package://awml_deploy_core/checkpoints/yolox_small.pth"
# == image_conversions.DEFAULT_MAX_PIXELS (not imported: that module imports ROS messages and OpenCV)
DEFAULT_MAX_IMAGE_PIXELS = 7680 * 4320
DEFAULT_SYNC_WINDOW_MS = 20.0


def _model_params() -> tuple[ParamSpec, ...]:
    specs = model_params(DEFAULT_CHECKPOINT, "YOLOX graph (one batched call per image set)")
    score = ParamSpec("score_threshold", -1.0,
                      "Detections scoring below this are dropped. Negative: the model config's node_score_threshold "
                      "(Autoware tensorrt_yolox's 0.35 by default); NMS always uses its node_nms_iou.",
                      "< 0 or in [0, 1]")
    return tuple(score if s.name == "score_threshold" else s for s in specs)


PARAMS: tuple[ParamSpec, ...] = (
    *_model_params(),
    ParamSpec("camera_names", [],
              "Multi-camera mode: one name per camera; subscribes ~/input/<name>/image (or .../image/compressed), "
              "runs one batched inference per set of images whose stamps lie within sync_window_ms and publishes "
              "each result on ~/output/<name>/detections. Empty: one camera on ~/input/image.",
              "distinct names of letters, digits and _ (each a ROS topic token)"),
    ParamSpec("compressed", False,
              "Subscribe sensor_msgs/CompressedImage (JPEG or PNG, image_transport's .../compressed topic) instead "
              "of sensor_msgs/Image."),
    ParamSpec("sync_window_ms", DEFAULT_SYNC_WINDOW_MS,
              "Multi-camera: the largest stamp spread of one image set; keep it below half the frame period.",
              ">= 0"),
    *runtime_params(ParamSpec("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS,
                              "Images with more pixels (width x height; of a compressed image, its decoded size) "
                              "are dropped as malformed (too_large).", ">= 1"),
                    "Also publish tier4_perception_msgs/DetectedObjectsWithFeature (one ROI per detection, "
                    "Autoware tensorrt_yolox's output) on ~/output/objects (per camera: ~/output/<name>/objects). "
                    "Where tier4_perception_msgs is not importable: one warning, and the node runs without it."),
)
PARAM_NAMES = tuple(p.name for p in PARAMS)
DEFAULTS = {p.name: p.default for p in PARAMS}


@dataclass(frozen=True)
class YoloxNodeParams:
    bundle_dir: str
    config: str
    checkpoint: str
    onnx_cache_dir: str
    backend: str
    device: str
    precision: str
    score_threshold: float | None  # None: the model config's node_score_threshold
    camera_names: tuple[str, ...]  # empty: single camera
    compressed: bool
    sync_window_ms: float
    processing_time_budget_ms: float
    max_image_pixels: int
    publish_autoware_objects: bool
    diagnostics_period_s: float


def _camera_names(value: Any) -> tuple[str, ...]:
    if value is None:  # an empty YAML list in a params file reaches the node as "not set"
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        raise _fail("camera_names", "must be a list of strings", value)
    names = tuple(n.strip() for n in value)
    bad = [n for n in names if not n or not (n[0].isalpha() and all(c.isalnum() or c == "_" for c in n))]
    if bad:
        raise _fail("camera_names", "names must start with a letter and hold letters, digits and _ only", bad)
    if len(set(names)) != len(names):
        raise _fail("camera_names", "has duplicates", list(names))
    return names


def validate(values: dict[str, Any]) -> YoloxNodeParams:
    """Check every parameter (missing names take their defaults); raise ParamError with one line."""
    check_names(values, PARAM_NAMES)
    values = {**DEFAULTS, **values}
    shared = validate_shared(values)
    compressed = values["compressed"]
    if not isinstance(compressed, bool):
        raise _fail("compressed", "must be true or false", compressed)
    window = _number(values, "sync_window_ms")
    if window < 0 or not math.isfinite(window):
        raise _fail("sync_window_ms", "must be >= 0", window)
    return YoloxNodeParams(**shared, camera_names=_camera_names(values["camera_names"]), compressed=compressed,
                           sync_window_ms=window, max_image_pixels=_positive_int(values, "max_image_pixels"))


def node_model_overrides(model_cfg: Any, score_threshold: float | None) -> dict[str, float]:
    """The post-processing the node runs with: ``score_threshold`` (None: the model config's
    ``node_score_threshold``) and the config's ``node_nms_iou``: Autoware tensorrt_yolox's, not evaluation's."""
    score = model_cfg.node_score_threshold if score_threshold is None else score_threshold
    return {"score_threshold": float(score), "nms_iou": float(model_cfg.node_nms_iou)}


__all__ = ["DEFAULTS", "PARAMS", "PARAM_NAMES", "ParamError", "YoloxNodeParams", "node_model_overrides", "validate"]
