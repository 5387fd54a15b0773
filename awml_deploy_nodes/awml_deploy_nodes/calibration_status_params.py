"""Parameters of ``calibration_status_node``: one table (name, default, description), one validation function.

Pure Python (no rclpy import), like :mod:`.node_params`, whose shared parts it uses: the model-source parameters
(bundle_dir, config, checkpoint, onnx_cache_dir, backend, device, precision) and diagnostics_period_s have the
same names, meaning and checks as the other model nodes'. Every wrong value is ONE line naming the parameter, the
value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .node_params import (
    DEFAULT_MAX_POINTS,
    DIAGNOSTICS_PERIOD,
    ModelSourceParams,
    ParamError,
    ParamSpec,
    _bool,
    _fail,
    _number,
    _positive,
    _positive_int,
    _string,
    check_names,
    model_source_params,
    probability_or_default,
    validate_model_source,
)
from .tf_static import extrinsic_from_values

MODES = ("periodic", "manual", "active")
DEFAULT_CHECKPOINT = "package://awml_deploy_core/checkpoints/calibration_status_small.pth"

PARAMS: tuple[ParamSpec, ...] = (
    *model_source_params(DEFAULT_CHECKPOINT, "calibration classifier graph"),
    ParamSpec("mode", "periodic",
              "When a synchronized lidar/camera pair is classified: periodic (the newest pair every period_s), "
              "manual (on a std_srvs/Trigger call of ~/trigger; the reply carries the result) or active (every "
              "pair; a pair still waiting when a newer one arrives is dropped).", "one of " + ", ".join(MODES)),
    ParamSpec("period_s", 5.0, "Period of the periodic mode.", "> 0"),
    ParamSpec("sync_queue_size", 10, "Messages kept per input by the approximate-time synchronizer (queue size).",
              ">= 1"),
    ParamSpec("sync_slop_s", 0.05,
              "Largest stamp spread of a synchronized cloud/image/camera_info set (ApproximateTime's max interval).",
              ">= 0"),
    ParamSpec("extrinsic", [0.0],
              "lidar -> camera extrinsic T_cam_lidar (points of the lidar frame into the camera's optical frame): 16 "
              "numbers (4x4 row-major), 6 (x y z roll pitch yaw) or 7 (x y z qx qy qz qw). [0.0] (one number): "
              "look it up in the static transforms of tf_static_topic instead.",
              "[0.0], or 16, 6 or 7 finite numbers"),
    ParamSpec("tf_static_topic", "/tf_static",
              "Static transforms (transient local). tf2_msgs/TFMessage when tf2_msgs is importable, else one "
              "geometry_msgs/TransformStamped a message (tf2_msgs is not installable here)."),
    ParamSpec("lidar_frame_id", "", "Lidar frame for the TF lookup. Empty: the cloud's header.frame_id."),
    ParamSpec("camera_frame_id", "", "Camera frame for the TF lookup. Empty: the image's header.frame_id."),
    ParamSpec("use_odometry", False,
              "Classify only while the ego is slow: ~/input/odometry (nav_msgs/Odometry) speed below max_speed_mps and "
              "|yaw rate| below max_yaw_rate_rps, and not older than odometry_timeout_s."),
    ParamSpec("max_speed_mps", 3.0, "Gating: largest ego speed (norm of twist.linear).", "> 0"),
    ParamSpec("max_yaw_rate_rps", 0.1745, "Gating: largest |twist.angular.z| (10 deg/s).", "> 0"),
    ParamSpec("odometry_timeout_s", 1.0, "Gating: odometry older than this (receive time) closes the gate.", "> 0"),
    ParamSpec("miscalibrated_threshold", -1.0,
              "Miscalibrated when P(miscalibrated) >= this. Negative: the model config's.", "< 0 or in [0, 1]"),
    ParamSpec("publish_preview", False, "Publish ~/debug/preview (sensor_msgs/Image, bgr8): the projected lidar "
              "depth over the image as the model saw it (an extra input build per classified pair)."),
    ParamSpec("processing_time_budget_ms", 1000.0, "Per-pair budget; /diagnostics warns above it.", "> 0"),
    ParamSpec("max_points", DEFAULT_MAX_POINTS, "Clouds with more points are dropped as malformed.", ">= 1"),
    ParamSpec("max_pixels", 7680 * 4320, "Images with more pixels are dropped as malformed.", ">= 1"),
    DIAGNOSTICS_PERIOD,
)
PARAM_NAMES = tuple(p.name for p in PARAMS)
DEFAULTS = {p.name: p.default for p in PARAMS}


@dataclass(frozen=True)
class CalibNodeParams(ModelSourceParams):
    mode: str
    period_s: float
    sync_queue_size: int
    sync_slop_ns: int
    extrinsic: Any  # (4, 4) float64 ndarray, or None: from tf_static_topic
    tf_static_topic: str
    lidar_frame_id: str
    camera_frame_id: str
    use_odometry: bool
    max_speed_mps: float
    max_yaw_rate_rps: float
    odometry_timeout_s: float
    miscalibrated_threshold: float | None
    publish_preview: bool
    processing_time_budget_ms: float
    max_points: int
    max_pixels: int
    diagnostics_period_s: float


def validate(values: dict[str, Any]) -> CalibNodeParams:
    """Check every parameter (missing names take their defaults); raise ParamError with one line."""
    check_names(values, PARAM_NAMES)
    values = {**DEFAULTS, **values}
    source = validate_model_source(values)
    mode = _string(values, "mode")
    if mode not in MODES:
        raise _fail("mode", f"must be one of {', '.join(MODES)}", mode)
    slop = _number(values, "sync_slop_s")
    if slop < 0:
        raise _fail("sync_slop_s", "must be >= 0", slop)
    return CalibNodeParams(
        **source, mode=mode, period_s=_positive(values, "period_s"),
        sync_queue_size=_positive_int(values, "sync_queue_size"), sync_slop_ns=int(round(slop * 1e9)),
        extrinsic=_extrinsic(values["extrinsic"]), tf_static_topic=_string(values, "tf_static_topic"),
        lidar_frame_id=_string(values, "lidar_frame_id"), camera_frame_id=_string(values, "camera_frame_id"),
        use_odometry=_bool(values, "use_odometry"), max_speed_mps=_positive(values, "max_speed_mps"),
        max_yaw_rate_rps=_positive(values, "max_yaw_rate_rps"),
        odometry_timeout_s=_positive(values, "odometry_timeout_s"),
        miscalibrated_threshold=probability_or_default(values, "miscalibrated_threshold"),
        publish_preview=_bool(values, "publish_preview"),
        processing_time_budget_ms=_positive(values, "processing_time_budget_ms"),
        max_points=_positive_int(values, "max_points"), max_pixels=_positive_int(values, "max_pixels"),
        diagnostics_period_s=_positive(values, "diagnostics_period_s"),
    )


def _extrinsic(ext: Any) -> Any:
    """[0.0] -> None (look it up on tf_static_topic), else the (4, 4) T_cam_lidar of 16, 6 or 7 numbers."""
    if isinstance(ext, (str, bytes)) or not isinstance(ext, (list, tuple)) or \
            not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in ext):
        raise _fail("extrinsic", "must be a list of numbers", ext)
    if len(ext) == 1 and float(ext[0]) == 0.0:
        return None
    try:
        return extrinsic_from_values(ext, "parameter 'extrinsic'")
    except ValueError as e:
        raise ParamError(str(e)) from None
