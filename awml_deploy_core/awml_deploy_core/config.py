"""Typed, validated configuration. Every default lives here and nowhere else.

A config error is reported as one line naming the field path, the bad value and what is allowed
(see :func:`format_validation_error`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

CENTERPOINT_CLASSES = ("car", "truck", "bus", "bicycle", "pedestrian")
Precision = Literal["fp32", "tf32", "fp16", "int8"]
# onnxruntime_int8: the INT8 Q/DQ graphs export.quantize makes, on ONNX Runtime
BackendName = Literal["pytorch", "onnxruntime", "onnxruntime_int8", "tensorrt"]
# The backends every entry point offers (loader, replay flags, node parameter), in one place.
BACKENDS: tuple[str, ...] = get_args(BackendName)


class StrictModel(BaseModel):
    """Unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# --------------------------------------------------------------------------------------------- model
class NmsConfig(StrictModel):
    """Suppression after decoding, in Autoware ``lidar_centerpoint``'s order: circle NMS, then IoU NMS.

    Circle radius vs Autoware's ``post_process_params.circle_nms_dist_threshold``: Autoware's circle NMS uses ONE
    radius for all classes and is class-agnostic (``circle_nms_kernel.cu`` never looks at the label: a car
    suppresses a pedestrian whose centre is nearer than the radius). Our ``circle_radius`` is per class and only
    suppresses within a class, which Autoware cannot express. Set ``circle_nms_dist_threshold`` to run Autoware's
    rule exactly (``circle_radius`` is then not read); left unset, today's per-class rule runs and the Autoware
    param-file writer reports the mismatch (export/autoware_params.py).

    ``iou_nms`` is Autoware's second stage (``non_maximum_suppression.cpp``, run in the node after circle NMS):
    boxes in descending score order; a box is removed when its BEV IoU with ANY higher-scoring box of an eligible
    pair exceeds ``iou_nms_threshold`` (even one that was itself removed: not greedy). Eligible pairs:
    - ``autoware`` (Autoware >= 0.40): centres within ``iou_nms_search_distance_2d`` (squared distance <=
      squared search distance), any two classes, except a pedestrian paired with another class.
    - ``autoware_target_classes`` (Autoware <= 0.39): both labels in ``iou_nms_target_class_names`` (at any
      distance), OR centres within ``iou_nms_search_distance_2d`` (any two classes).
    - ``off``: no second stage (the default: today's detections).
    """

    kind: Literal["circle", "bev_iou"] = "circle"
    # Circle NMS suppresses centres closer than this (metres), one value per class. Measured on the held-out
    # synthetic set: [4, 6, 8, 1, 0.6] suppressed cars in adjacent lanes (car AP@2m 0.953 -> 0.988 halved).
    circle_radius: list[float] = Field(default_factory=lambda: [2.0, 3.0, 4.0, 0.5, 0.3])
    # Autoware's single class-agnostic radius (metres); set = Autoware's circle rule, circle_radius unused.
    # Autoware ignores values <= 0 (its default 1.5 m then applies), hence > 0.
    circle_nms_dist_threshold: float | None = Field(None, gt=0.0)
    iou_threshold: float = Field(0.2, gt=0.0, le=1.0)
    # Autoware ``post_process_params.yaw_norm_thresholds``, one per class: a candidate whose rot vector norm
    # sqrt(rot[0]^2 + rot[1]^2) is below its class's value scores 0 and is dropped (kept when norm >= value).
    # None = 0 for every class (off). Autoware replaces values outside [0, 1) with 0, hence the range. Applied
    # in decode; it sits in this post-process section so that changing it leaves the exported graphs' identity.
    yaw_norm_thresholds: list[float] | None = None
    iou_nms: Literal["off", "autoware", "autoware_target_classes"] = "off"
    # Our (lower-case) class names; the Autoware param writer upper-cases them. Read by autoware_target_classes only.
    iou_nms_target_class_names: list[str] = Field(default_factory=list)
    iou_nms_search_distance_2d: float = Field(10.0, ge=0.0)
    iou_nms_threshold: float = Field(0.1, ge=0.0, le=1.0)
    pre_max_size: int = Field(1000, ge=1)
    post_max_size: int = Field(100, ge=1)

    @field_validator("circle_radius")
    @classmethod
    def _positive_radii(cls, v: list[float]) -> list[float]:
        if any(r <= 0 for r in v):
            raise ValueError("every circle radius must be > 0")
        return v

    @field_validator("yaw_norm_thresholds")
    @classmethod
    def _yaw_norm_range(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(not 0.0 <= t < 1.0 for t in v):
            raise ValueError("every yaw norm threshold must be in [0, 1) (Autoware replaces others with 0)")
        return v

    @field_validator("iou_nms", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _fields_read(self) -> "NmsConfig":
        if self.circle_nms_dist_threshold is not None and self.kind != "circle":
            raise ValueError(f"nms.circle_nms_dist_threshold is only read when nms.kind is 'circle' (kind is "
                             f"{self.kind!r}): drop it or use kind circle")
        if self.iou_nms_target_class_names and self.iou_nms != "autoware_target_classes":
            raise ValueError(f"nms.iou_nms_target_class_names is only read when nms.iou_nms is "
                             f"'autoware_target_classes' (iou_nms is {self.iou_nms!r})")
        return self


class CenterPointModelConfig(StrictModel):
    """CenterPoint (pillars) geometry and layer sizes. Defaults: the small CPU-friendly model."""

    name: str = Field("centerpoint_small", pattern=r"^[A-Za-z0-9_\-]+$")
    class_names: list[str] = Field(default_factory=lambda: list(CENTERPOINT_CLASSES), min_length=1)
    # [x_min, y_min, z_min, x_max, y_max, z_max], metres, lidar frame.
    point_cloud_range: list[float] = Field(
        default_factory=lambda: [-40.96, -40.96, -3.0, 40.96, 40.96, 5.0], min_length=6, max_length=6
    )
    # Pillar size [x, y, z]; z must span the whole range (pillars).
    voxel_size: list[float] = Field(default_factory=lambda: [0.32, 0.32, 8.0], min_length=3, max_length=3)
    # Autoware's C++ node fixes 32 points per pillar (centerpoint_config.hpp): the encoder graph must match.
    max_points_per_voxel: int = Field(32, ge=1, le=256)
    max_voxels: int = Field(30000, ge=1)
    encoder_in_features: Literal[9, 10, 11] = 11
    encoder_channels: list[int] = Field(default_factory=lambda: [32, 32], min_length=1)
    backbone_layer_nums: list[int] = Field(default_factory=lambda: [3, 5, 5], min_length=1)
    backbone_layer_strides: list[int] = Field(default_factory=lambda: [2, 2, 2], min_length=1)
    backbone_out_channels: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    neck_upsample_strides: list[float] = Field(default_factory=lambda: [1, 2, 4], min_length=1)
    neck_out_channels: list[int] = Field(default_factory=lambda: [64, 64, 64], min_length=1)
    head_shared_channels: int = Field(64, ge=1)
    head_conv_channels: int = Field(64, ge=1)
    out_size_factor: int = Field(2, ge=1)
    with_velocity: bool = True
    # Boxes must score above this (strictly, as Autoware's ``score > threshold``) to reach NMS; per-class values
    # override it when given. Autoware: ``post_process_params.score_thresholds`` (per class, >= 0.47) or
    # ``score_threshold`` (one value, older).
    score_threshold: float = Field(0.1, ge=0.0, le=1.0)
    class_score_thresholds: list[float] | None = None
    max_num: int = Field(500, ge=1)
    nms: NmsConfig = Field(default_factory=NmsConfig)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(grid_x, grid_y) in pillars."""
        r, v = self.point_cloud_range, self.voxel_size
        return round((r[3] - r[0]) / v[0]), round((r[4] - r[1]) / v[1])

    @property
    def pillar_channels(self) -> int:
        return self.encoder_channels[-1]

    @model_validator(mode="after")
    def _consistent(self) -> "CenterPointModelConfig":
        r, v = self.point_cloud_range, self.voxel_size
        for axis, name in enumerate("xyz"):
            if r[axis + 3] <= r[axis]:
                raise ValueError(f"point_cloud_range: {name}_max must be greater than {name}_min, got {r}")
            if v[axis] <= 0:
                raise ValueError(f"voxel_size: every size must be > 0, got {v}")
        for axis, name in enumerate("xy"):
            cells = (r[axis + 3] - r[axis]) / v[axis]
            if not math.isclose(cells, round(cells), abs_tol=1e-4):
                raise ValueError(
                    f"voxel_size[{axis}]={v[axis]} does not divide the {name} extent of point_cloud_range "
                    f"({r[axis + 3] - r[axis]:g} m) into whole pillars"
                )
        if not math.isclose(r[5] - r[2], v[2], abs_tol=1e-4):
            raise ValueError(f"voxel_size[2]={v[2]} must equal the z extent of point_cloud_range ({r[5] - r[2]:g})")
        n = len(self.backbone_layer_nums)
        lists = {
            "backbone_layer_strides": self.backbone_layer_strides,
            "backbone_out_channels": self.backbone_out_channels,
            "neck_upsample_strides": self.neck_upsample_strides,
            "neck_out_channels": self.neck_out_channels,
        }
        for key, values in lists.items():
            if len(values) != n:
                raise ValueError(f"{key} has {len(values)} entries but backbone_layer_nums has {n}")
        # Every neck branch must land on the same resolution: out_size_factor.
        stride = 1
        for i, (s, up) in enumerate(zip(self.backbone_layer_strides, self.neck_upsample_strides)):
            stride *= s
            if not math.isclose(stride / up, self.out_size_factor):
                raise ValueError(
                    f"neck_upsample_strides[{i}]={up} brings backbone stride {stride} to {stride / up:g}, "
                    f"but out_size_factor is {self.out_size_factor}"
                )
        gx, gy = self.grid_size
        if gx % self.out_size_factor or gy % self.out_size_factor:
            raise ValueError(f"grid {gx}x{gy} is not divisible by out_size_factor {self.out_size_factor}")
        nc = len(self.class_names)
        if len(set(self.class_names)) != nc:
            raise ValueError(f"class_names has duplicates: {self.class_names}")
        if len(self.nms.circle_radius) not in (1, nc):
            raise ValueError(f"nms.circle_radius needs 1 or {nc} values (one per class), got {len(self.nms.circle_radius)}")
        if self.class_score_thresholds is not None and len(self.class_score_thresholds) != nc:
            raise ValueError(f"class_score_thresholds needs {nc} values (one per class), got {len(self.class_score_thresholds)}")
        if self.nms.yaw_norm_thresholds is not None and len(self.nms.yaw_norm_thresholds) != nc:
            raise ValueError(f"nms.yaw_norm_thresholds needs {nc} values (one per class), got {len(self.nms.yaw_norm_thresholds)}")
        unknown = [n for n in self.nms.iou_nms_target_class_names if n not in self.class_names]
        if unknown:
            raise ValueError(f"nms.iou_nms_target_class_names: {unknown} not in class_names {self.class_names} "
                             "(use our names; the Autoware param writer upper-cases them)")
        return self


def awml_base_model() -> CenterPointModelConfig:
    """AWML's base geometry (+-122.4 m, 0.24 m pillars, 1020x1020, 32 points, 11 features), for performance work."""
    return CenterPointModelConfig(
        name="centerpoint_awml_base",
        point_cloud_range=[-122.4, -122.4, -3.0, 122.4, 122.4, 5.0],
        voxel_size=[0.24, 0.24, 8.0],
        max_points_per_voxel=32,
        max_voxels=64000,
        encoder_in_features=11,
        encoder_channels=[32, 32],
        backbone_layer_nums=[3, 5, 5],
        backbone_layer_strides=[1, 2, 2],
        backbone_out_channels=[64, 128, 256],
        neck_upsample_strides=[0.5, 1, 2],
        neck_out_channels=[128, 128, 128],
        head_shared_channels=64,
        head_conv_channels=64,
        out_size_factor=2,
    )


T4_CLASSES = ("unknown", "car", "truck", "bus", "trailer", "motorcycle", "pedestrian", "bicycle")


class YOLOXModelConfig(StrictModel):
    """YOLOX (camera 2D detection): CSPDarknet + PAFPN + decoupled head, AWML's one-graph deployment.

    The class list keeps T4's order (C = 8, output width 4 + 1 + 8 = 13) so a T4 checkpoint maps one to one; the
    synthetic world fills 5 of the 8. Defaults: the small CPU-friendly model (about YOLOX-tiny widths).

    Thresholds: ``score_threshold`` 0.01 / ``nms_iou`` 0.65 / ``max_per_img`` 300 are AWML's evaluation settings (AP
    needs the low-score tail). Autoware's ``tensorrt_yolox`` runs score 0.35 and NMS IoU 0.7 on the vehicle: the
    node passes those as post-processing overrides (both keys are post-processing only, outside the graph).
    """

    name: str = Field("yolox_small", pattern=r"^[A-Za-z0-9_\-]+$")
    class_names: list[str] = Field(default_factory=lambda: list(T4_CLASSES), min_length=1)
    # [H, W] of the letterboxed network input; multiples of the largest stride.
    input_size: list[int] = Field(default_factory=lambda: [384, 640], min_length=2, max_length=2)
    deepen_factor: float = Field(0.33, gt=0.0, le=2.0)
    widen_factor: float = Field(0.25, gt=0.0, le=2.0)
    strides: list[int] = Field(default_factory=lambda: [8, 16, 32], min_length=3, max_length=3)
    score_threshold: float = Field(0.01, ge=0.0, le=1.0)
    nms_iou: float = Field(0.65, gt=0.0, le=1.0)
    max_per_img: int = Field(300, ge=1)
    # Autoware tensorrt_yolox's on-vehicle settings (the node's defaults), documented here and not read by evaluation.
    node_score_threshold: float = Field(0.35, ge=0.0, le=1.0)
    node_nms_iou: float = Field(0.7, gt=0.0, le=1.0)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @model_validator(mode="after")
    def _consistent(self) -> "YOLOXModelConfig":
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names has duplicates: {self.class_names}")
        if sorted(self.strides) != list(self.strides) or any(s <= 0 for s in self.strides):
            raise ValueError(f"strides must be positive and increasing, got {self.strides}")
        top = self.strides[-1]
        if any(d <= 0 or d % top for d in self.input_size):
            raise ValueError(f"input_size {self.input_size} must be positive multiples of the largest stride {top}")
        return self


def t4_yolox_model() -> YOLOXModelConfig:
    """The T4 geometry (960x960, 8 classes, YOLOX-tiny widths) for performance work and the contract test."""
    return YOLOXModelConfig(name="yolox_t4", input_size=[960, 960], widen_factor=0.375)


CALIBRATION_CLASSES = ("miscalibrated", "calibrated")  # AWML's class order = the graph's output columns


class MiscalibrationConfig(StrictModel):
    """What "miscalibrated" means and how the perturbed pairs are drawn (data/calibration_pairs.py).

    A pair is miscalibrated when its rotation error exceeds ``rotation_threshold_deg`` OR its translation error
    exceeds ``translation_threshold_m``; calibrated when both are below HALF of them; in between is the ambiguous
    band (never trained on, reported separately). A drawn pair is a miscalibration draw with probability
    ``miscalibration_probability`` (magnitudes uniform in [0, max_*], random axes), else a calibrated draw
    (magnitudes uniform below half the thresholds).
    """

    rotation_threshold_deg: float = Field(1.0, gt=0.0)
    translation_threshold_m: float = Field(0.05, gt=0.0)
    max_rotation_deg: float = Field(5.0, gt=0.0, le=45.0)
    max_translation_m: float = Field(0.25, gt=0.0, le=5.0)
    miscalibration_probability: float = Field(0.5, ge=0.0, le=1.0)
    # evaluation pairs per rendered scene (each with its own perturbation): rendering dominates the cost
    pairs_per_scene: int = Field(4, ge=1, le=64)

    @model_validator(mode="after")
    def _ranges(self) -> "MiscalibrationConfig":
        if (self.max_rotation_deg <= self.rotation_threshold_deg
                or self.max_translation_m <= self.translation_threshold_m):
            raise ValueError(f"max_rotation_deg/max_translation_m ({self.max_rotation_deg}, {self.max_translation_m}) "
                             f"must exceed the thresholds ({self.rotation_threshold_deg}, "
                             f"{self.translation_threshold_m}), else no pair is miscalibrated")
        return self


class CalibrationStatusModelConfig(StrictModel):
    """Camera-lidar calibration status (AWML CalibrationStatusClassification): a ResNet18-style classifier over
    [R, G, B, projected lidar depth, projected lidar intensity] -> logits [miscalibrated, calibrated].

    Input building (pipelines/calibration/input_builder.py, one function for training, evaluation, INT8
    calibration and the node): lidar points in (min_depth, max_depth] metres of camera z are projected with K and
    the extrinsic, the nearest point per pixel wins; depth channel = z / depth_divisor, intensity channel =
    intensity / intensity_divisor, both 0 where no point lands; RGB = (pixel - image_mean) / image_std.
    """

    name: str = Field("calibration_status_small", pattern=r"^[A-Za-z0-9_\-]+$")
    class_names: list[str] = Field(default_factory=lambda: list(CALIBRATION_CLASSES))
    # ResNet18 widths: base_channels * (1, 2, 4, 8); torchvision's is 64, the small default 32 (under 20 MB)
    base_channels: int = Field(32, ge=4, le=128)
    stage_blocks: list[int] = Field(default_factory=lambda: [2, 2, 2, 2], min_length=4, max_length=4)
    # [H, W] the network input is resized to (image resized, K scaled); None = the camera image's own size
    input_size: list[int] | None = Field(None, min_length=2, max_length=2)
    # [H, W] traced into the ONNX example and used for warm-up (the graph's H and W stay dynamic)
    example_size: list[int] = Field(default_factory=lambda: [384, 640], min_length=2, max_length=2)
    min_depth: float = Field(0.1, gt=0.0)
    max_depth: float = Field(128.0, gt=0.0)  # Autoware calibration_status_classifier's projection limit
    depth_divisor: float = Field(128.0, gt=0.0)
    intensity_divisor: float = Field(255.0, gt=0.0)
    image_mean: list[float] = Field(default_factory=lambda: [123.675, 116.28, 103.53], min_length=3, max_length=3)
    image_std: list[float] = Field(default_factory=lambda: [58.395, 57.12, 57.375], min_length=3, max_length=3)
    # decision: miscalibrated when softmax(miscalibrated) >= this
    miscalibrated_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    miscalibration: MiscalibrationConfig = Field(default_factory=MiscalibrationConfig)
    # TensorRT optimisation profile of the input's [H, W] (AWML's: min 1080x1920, opt 1860x2880, max 2160x3840)
    trt_min_hw: list[int] = Field(default_factory=lambda: [1080, 1920], min_length=2, max_length=2)
    trt_opt_hw: list[int] = Field(default_factory=lambda: [1860, 2880], min_length=2, max_length=2)
    trt_max_hw: list[int] = Field(default_factory=lambda: [2160, 3840], min_length=2, max_length=2)

    @model_validator(mode="after")
    def _consistent(self) -> "CalibrationStatusModelConfig":
        if list(self.class_names) != list(CALIBRATION_CLASSES):
            raise ValueError(f"class_names must be {list(CALIBRATION_CLASSES)} (AWML's order = the output columns)")
        if not self.min_depth < self.max_depth:
            raise ValueError(f"min_depth {self.min_depth} must be below max_depth {self.max_depth}")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be > 0, got {self.image_std}")
        for key in ("input_size", "example_size", "trt_min_hw", "trt_opt_hw", "trt_max_hw"):
            v = getattr(self, key)
            if v is not None and any(d < 32 for d in v):
                raise ValueError(f"{key} {v}: every side must be >= 32 pixels (the network downsamples 32x)")
        lo, mid, hi = self.trt_min_hw, self.trt_opt_hw, self.trt_max_hw
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)):
            raise ValueError(f"need trt_min_hw <= trt_opt_hw <= trt_max_hw per side, got {lo}, {mid}, {hi}")
        return self


# --------------------------------------------------------------------------------------------- deploy
DEFAULT_CHECKPOINT = "package://awml_deploy_core/checkpoints/centerpoint_small.pth"


class DataConfig(StrictModel):
    """Frames used for verification, evaluation and INT8 calibration."""

    # synthetic: generated on the fly from `seed` (the embedded default); info: an AWML info file.
    source: Literal["synthetic", "info"] = "synthetic"
    info_path: str | None = None
    num_frames: int = Field(20, ge=0)
    # Held-out seed: never used for training the shipped checkpoint (training uses 0..9999).
    seed: int = Field(10_000, ge=0)
    frames_per_sequence: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _source_fields(self) -> "DataConfig":
        if self.source == "info" and not self.info_path:
            raise ValueError("data.info_path is required when data.source is 'info'")
        if self.source == "synthetic" and self.info_path:
            raise ValueError("data.info_path is only read when data.source is 'info' (set source: info)")
        return self


class TensorRTConfig(StrictModel):
    precision: Literal["auto", "fp16", "fp32_tf32", "strongly_typed", "int8"] = "fp16"
    workspace_mb: int = Field(2048, ge=16)
    # Optimisation profile for the encoder's dynamic num_voxels: min <= opt <= max.
    num_voxels_min: int = Field(1000, ge=1)
    num_voxels_opt: int = Field(20000, ge=1)
    num_voxels_max: int = Field(40000, ge=1)
    calibration_frames: int = Field(32, ge=0)
    calibrator: Literal["entropy", "minmax"] = "entropy"
    dla_core: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _profile_order(self) -> "TensorRTConfig":
        if not self.num_voxels_min <= self.num_voxels_opt <= self.num_voxels_max:
            raise ValueError(
                f"export.tensorrt: need num_voxels_min <= num_voxels_opt <= num_voxels_max, got "
                f"{self.num_voxels_min}, {self.num_voxels_opt}, {self.num_voxels_max}"
            )
        if self.precision == "int8" and self.calibration_frames == 0:
            raise ValueError("export.tensorrt.calibration_frames must be > 0 for int8 precision")
        if self.dla_core is not None and self.precision == "fp32_tf32":
            raise ValueError("export.tensorrt.dla_core is set but precision is fp32_tf32: DLA runs FP16 and INT8 "
                             "only; use fp16, int8 or auto, or drop dla_core")
        return self


class QuantizeConfig(StrictModel):
    """INT8 post-training quantization into explicit Q/DQ ONNX graphs (export/quantize.py). Off by default."""

    enabled: bool = False
    # Activation range calibration: minmax, entropy (KL) or percentile (of |x|, see `percentile`).
    # Default min-max: on the head of the shipped model it kept every layer in INT8 within budget (guard frames drop
    # 0.0001; 200 held-out frames mAP@2m 0.9639 -> 0.9611), where percentile 99.999 dropped 0.018 on the guard
    # frames even with the most sensitive layer in float.
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(99.999, gt=90.0, le=100.0)
    # Which graphs get Q/DQ; the others stay fp32. Default: the head only. The voxel encoder is a few tiny MatMuls
    # (11 input features) that INT8 does not speed up (ORT CPU 0.94x measured) and whose first layer sees raw
    # coordinates: in INT8 it cost most of the accuracy (200 held-out frames: guard could not reach 0.01 with it).
    graphs: list[Literal["encoder", "head"]] = Field(default_factory=lambda: ["head"], min_length=1)
    # Calibration frames: synthetic ones come from their own seed (never the evaluation seed, never a training
    # seed 0..9999); with data.source info, from `calibration_info_path`, else from the info file's frames after
    # the evaluation frames. The guard scores mAP on `guard_frames` frames of the same calibration source.
    calibration_frames: int = Field(32, ge=1)
    calibration_seed: int = Field(20_000, ge=10_000)
    calibration_info_path: str | None = None
    guard_frames: int = Field(48, ge=0)
    # Accuracy guard: mAP@2m (INT8 vs fp32 on the guard frames) may drop at most this much; the most sensitive
    # layers fall back to float until it fits, at most `max_fallback_layers` of them (else the export fails).
    max_metric_drop: float = Field(0.01, ge=0.0, le=1.0)
    max_fallback_layers: int = Field(8, ge=0)
    # Layers (ONNX node names) kept in float whatever the guard says.
    exclude_nodes: list[str] = Field(default_factory=list)


class ExportConfig(StrictModel):
    # onnx: write ONNX; trt: build engines from existing ONNX (export.onnx_source when set, else the bundle's
    # ONNX in work_dir); both; none: reuse the bundle (ONNX from export.onnx_source when set).
    mode: Literal["onnx", "trt", "both", "none"] = "onnx"
    opset: int = Field(17, ge=13, le=21)
    simplify: bool = True
    # A folder holding pts_voxel_encoder_<name>.onnx and pts_backbone_neck_head_<name>.onnx (modes trt, none).
    onnx_source: str | None = None
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)


class Tolerance(StrictModel):
    atol: float = Field(ge=0.0)
    rtol: float = Field(ge=0.0)
    # Share of an output's elements allowed outside atol + rtol * |ref|: 0 for float precisions; INT8 Q/DQ graphs
    # differ element-wise by up to a few quantization steps, so a small share is allowed there and the accuracy
    # guard, the mAP gate and the detection-level diff judge them.
    max_outlier_fraction: float = Field(0.0, ge=0.0, le=1.0)


def _default_tolerances() -> dict[str, Tolerance]:
    return {
        "fp32": Tolerance(atol=1e-4, rtol=1e-3),
        "tf32": Tolerance(atol=5e-3, rtol=5e-3),
        "fp16": Tolerance(atol=2e-2, rtol=2e-2),
        "int8": Tolerance(atol=0.5, rtol=0.1, max_outlier_fraction=0.01),
    }


class VerifyConfig(StrictModel):
    enabled: bool = True
    # Pairs [reference, candidate] of backends compared output by output.
    scenarios: list[tuple[BackendName, BackendName]] = Field(default_factory=lambda: [("pytorch", "onnxruntime")])
    num_samples: int = Field(5, ge=1)
    tolerances: dict[Precision, Tolerance] = Field(default_factory=_default_tolerances)


class EvaluateConfig(StrictModel):
    enabled: bool = True
    backends: list[BackendName] = Field(default_factory=lambda: ["pytorch", "onnxruntime"], min_length=1)
    warmup: int = Field(3, ge=0)
    distance_thresholds: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0], min_length=1)
    # Precision envelope (running max from the right) before the 101-point resampling. Off by default: AP then
    # equals the nuScenes devkit's bit for bit (the envelope raises it by up to ~4e-3). Every report names the
    # rule used ("ap_rule").
    precision_envelope: bool = False
    # Gate: every backend's mAP (at 2 m) must be >= the PyTorch mAP minus this.
    map_tolerance: float = Field(0.01, ge=0.0, le=1.0)

    @field_validator("distance_thresholds")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(t <= 0 for t in v):
            raise ValueError("distance thresholds must be > 0 metres")
        return v


class OnnxRuntimeConfig(StrictModel):
    providers: list[Literal["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]] = Field(
        default_factory=lambda: ["CPUExecutionProvider"], min_length=1
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    intra_op_threads: int = Field(0, ge=0)
    # Busy-waiting worker threads cut a little latency on an idle, dedicated CPU but cost 30-45% on a shared
    # or loaded one (measured in the node on this 2-core machine); off by default.
    allow_spinning: bool = False


class PyTorchConfig(StrictModel):
    """How the PyTorch backend runs the graphs. fp16: half weights (the head channels_last), inputs cast at the
    runner boundary and outputs back to float32, so pre/post-processing is unchanged. tf32: fp32 weights with
    TF32 matmul/convolution. cuda_graph: graphs of static shape (the CenterPoint head's canvas; YOLOX once per
    batch size) replay captured CUDA graphs; unset (null), they do on a CUDA device and not on CPU: eager, the
    small CenterPoint head's ~100 kernel launches took 4x the graph's time on an H200. fp16, tf32 and
    cuda_graph true need a CUDA device (refused on CPU when the pipeline is loaded)."""

    precision: Literal["fp32", "tf32", "fp16"] = "fp32"
    cuda_graph: bool | None = None


class DeployConfig(StrictModel):
    """The whole `export` job: model -> bundle -> verification -> evaluation."""

    # The model family (families/__init__.py FAMILIES): which declaration builds, exports and scores the model.
    family: str = "centerpoint"
    # The family's own model config class (``ModelFamily.model_config``), chosen by ``family`` (see _family_model).
    model: CenterPointModelConfig | YOLOXModelConfig | CalibrationStatusModelConfig = Field(
        default_factory=CenterPointModelConfig)
    checkpoint: str = DEFAULT_CHECKPOINT
    work_dir: str = "work_dirs/centerpoint"
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    data: DataConfig = Field(default_factory=DataConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    onnxruntime: OnnxRuntimeConfig = Field(default_factory=OnnxRuntimeConfig)
    pytorch: PyTorchConfig = Field(default_factory=PyTorchConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @field_validator("family")
    @classmethod
    def _known_family(cls, v: str) -> str:
        from .families import FAMILIES

        if v not in FAMILIES:
            raise ValueError(f"unknown model family; known: {', '.join(sorted(FAMILIES))}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _family_model(cls, data: Any) -> Any:
        """Validate ``model`` with the class the family declares (no family names here: the registry says)."""
        if not isinstance(data, dict):
            return data
        from .families import FAMILIES, get_family

        family = data.get("family", "centerpoint")
        if not isinstance(family, str) or family not in FAMILIES:
            return data  # the field validator names the problem
        model_cls = get_family(family).model_config
        model = data.get("model")
        if model is None:
            return {**data, "model": model_cls()}
        if isinstance(model, BaseModel) and not isinstance(model, model_cls):
            raise ValueError(f"model: family {family!r} takes a {model_cls.__name__}, got {type(model).__name__}")
        if isinstance(model, dict):
            try:
                return {**data, "model": model_cls.model_validate(model)}
            except ValidationError as e:  # one line with the field path under model.
                first = e.errors()[0]
                path = ".".join(["model", *(str(p) for p in first["loc"])])
                msg = first["msg"].removeprefix("Value error, ")
                shown = "" if isinstance(first.get("input"), dict) else f" (got {first.get('input')!r})"
                raise ValueError(f"{path}: {msg}{shown}") from None
        return data

    @model_validator(mode="after")
    def _backends_have_artifacts(self) -> "DeployConfig":
        used = set(self.evaluate.backends) | {b for pair in self.verify.scenarios for b in pair}
        if "tensorrt" in used and self.export.mode == "onnx":
            raise ValueError(
                "tensorrt is evaluated or verified but export.mode is 'onnx' (no engines are built): "
                "use mode 'both' or 'trt', or drop tensorrt"
            )
        if self.device == "cpu" and "tensorrt" in used:
            raise ValueError("tensorrt needs device 'cuda', but device is 'cpu'")
        if "onnxruntime_int8" in used and not self.export.quantize.enabled:
            raise ValueError("onnxruntime_int8 is evaluated or verified but export.quantize.enabled is false (no Q/DQ "
                             "graphs are made): set export.quantize.enabled: true, or drop onnxruntime_int8")
        return self


def load_deploy_config(path: str | Path, overrides: dict[str, Any] | None = None) -> DeployConfig:
    """Read a YAML deploy config; `overrides` (dotted keys; None = not given) are applied before validation."""
    data = load_yaml(path)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return validate(DeployConfig, data, source=str(path))


# --------------------------------------------------------------------------------------------- load
def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """One line: '<source>: <field.path>: <what is wrong> (got <value>)'."""
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    where = f"{path}: " if path else ""
    if isinstance(value, dict):  # a cross-field check: its message names the fields and values itself
        return f"{source}: {where}{msg}{more}"
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{source}: {where}{msg} (got {shown}){more}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def validate(model_cls: type[BaseModel], data: dict[str, Any], source: str = "config") -> Any:
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None
