"""Parameter files for Autoware's C++ ``autoware_lidar_centerpoint`` node, written from the deploy config.

Autoware's launch file (``lidar_centerpoint.launch.xml``) loads three files; we write all three into ``out_dir``:
- ``<model name>.param.yaml`` (its ``model_param_path``): ONNX/engine paths, ``trt_precision``, ``cloud_capacity``,
  ``post_process_params`` and ``densification_params``.
- ``<model name>_ml_package.param.yaml``: ``model_params`` (geometry and head layout).
- ``detection_class_remapper.param.yaml``: the area-based relabelling after NMS. We write the identity (all zero),
  because our evaluation does not relabel: with it the node publishes what we score.

Meaning of every post-process value (checked against Autoware's sources; see ``NmsConfig`` and decode.py):
- ``score_thresholds`` (per class, Autoware >= 0.47; ``score_threshold``, one value, before): kept when
  ``score > threshold``. Autoware ignores values outside (0, 1) (its default 0.35 applies instead).
- ``yaw_norm_thresholds``: per class, candidate scores 0 when sqrt(rot_sin^2 + rot_cos^2) < value.
- ``circle_nms_dist_threshold``: one radius, class-agnostic, squared BEV centre distance < radius^2 suppresses.
  Ours is per class unless ``nms.circle_nms_dist_threshold`` is set: then the file holds exactly that value;
  otherwise it holds ``min(nms.circle_radius)`` and the header says the parity is NOT exact.
- ``iou_nms_search_distance_2d`` / ``iou_nms_threshold`` (+ ``iou_nms_target_class_names`` for Autoware <= 0.39):
  the IoU NMS after circle NMS (``nms.autoware_iou_nms``). Autoware always runs it; ``nms.iou_nms: off`` is written
  as ``iou_nms_threshold: 1.0`` (an IoU never exceeds 1, so nothing is removed).
- ``densification_params.num_past_frames: 0``: we feed single sweeps (time_lag 0), so does the node then.
``nms.iou_nms: autoware_target_classes`` writes the <= 0.39 layout (``score_threshold`` scalar and
``iou_nms_target_class_names``); every other setting writes the current one (``score_thresholds`` per class).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..bundle import atomic_write_text
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import CenterPointModelConfig, DeployConfig

log = logging.getLogger(__name__)

# autoware_perception_msgs/ObjectClassification labels, in their numeric order (the remapper matrices use it).
AUTOWARE_LABELS = ("UNKNOWN", "CAR", "TRUCK", "BUS", "TRAILER", "MOTORCYCLE", "BICYCLE", "PEDESTRIAN")
# Autoware fixes these in centerpoint_config.hpp; a model that differs cannot run in the node.
AUTOWARE_POINTS_PER_PILLAR = 32
AUTOWARE_ENCODER_OUT_CHANNELS = 32
AUTOWARE_CLOUD_CAPACITY = 2_000_000  # Autoware's shipped value: the node's point buffer, not a model property
# Always true, whatever the config: steps we have and the node does not.
PARITY_NOTES = (
    "the node has no candidate caps (ours: model.max_num, nms.pre_max_size, nms.post_max_size)",
    "the node does not drop box centres outside point_cloud_range x/y (our decode does)",
)


def autoware_class_name(name: str) -> str:
    """Our class name (lower case) -> the name Autoware's node is given and maps to a label: the one place the
    two spellings meet. Autoware turns a name it does not know into UNKNOWN."""
    upper = name.upper()
    return upper if upper in AUTOWARE_LABELS else "UNKNOWN"


def _score_thresholds(m: CenterPointModelConfig) -> list[float]:
    if m.class_score_thresholds is not None:
        return [float(t) for t in m.class_score_thresholds]
    return [float(m.score_threshold)] * len(m.class_names)


def _circle_dist(m: CenterPointModelConfig) -> float:
    if m.nms.circle_nms_dist_threshold is not None:
        return float(m.nms.circle_nms_dist_threshold)
    return float(min(m.nms.circle_radius))


def parity_gaps(cfg: DeployConfig) -> list[str]:
    """Why the node, fed the written files, would publish something other than what our pipeline scores.
    Empty = the post-processing is the same (up to ``PARITY_NOTES``)."""
    m = cfg.model
    gaps: list[str] = []
    if m.nms.kind == "bev_iou":
        gaps.append("nms.kind bev_iou (per-class rotated IoU NMS) has no Autoware equivalent: the node runs circle "
                    f"NMS with circle_nms_dist_threshold {_circle_dist(m):g} instead")
    elif m.nms.circle_nms_dist_threshold is None:
        gaps.append(f"nms.circle_radius {m.nms.circle_radius} is per class and within a class; Autoware's circle NMS "
                    f"is one radius across classes (written: {_circle_dist(m):g}): set nms.circle_nms_dist_threshold")
    bad = [t for t in _score_thresholds(m) if not 0.0 < t < 1.0]
    if bad:
        gaps.append(f"score thresholds {bad} are outside (0, 1): Autoware uses its default 0.35 instead")
    unknown = [c for c in m.class_names if autoware_class_name(c) == "UNKNOWN"]
    if unknown:
        gaps.append(f"classes {unknown} are not Autoware labels: the node publishes them as UNKNOWN")
    if m.max_points_per_voxel != AUTOWARE_POINTS_PER_PILLAR:
        gaps.append(f"max_points_per_voxel {m.max_points_per_voxel}: the node fixes {AUTOWARE_POINTS_PER_PILLAR}")
    if m.pillar_channels != AUTOWARE_ENCODER_OUT_CHANNELS:
        gaps.append(f"encoder_channels[-1] {m.pillar_channels}: the node fixes {AUTOWARE_ENCODER_OUT_CHANNELS}")
    if cfg.export.tensorrt.precision not in ("fp16", "fp32_tf32"):
        gaps.append(f"export.tensorrt.precision {cfg.export.tensorrt.precision}: the node builds fp16 or fp32 only "
                    f"(written: {_trt_precision(cfg)})")
    return gaps


def _trt_precision(cfg: DeployConfig) -> str:
    return "fp32" if cfg.export.tensorrt.precision == "fp32_tf32" else "fp16"


def post_process_params(m: CenterPointModelConfig) -> dict[str, Any]:
    """``post_process_params`` as the node reads them (layout by ``nms.iou_nms``, see the module docstring)."""
    n = m.nms
    nc = len(m.class_names)
    out: dict[str, Any] = {}
    scores = _score_thresholds(m)
    if n.iou_nms == "autoware_target_classes":
        if len(set(scores)) != 1:
            raise ConfigError(f"model.class_score_thresholds {scores}: nms.iou_nms autoware_target_classes writes "
                              "Autoware <= 0.39 params, which hold one score_threshold; use equal values or iou_nms "
                              "autoware")
        out["score_threshold"] = scores[0]
    else:
        out["score_thresholds"] = scores
    out["yaw_norm_thresholds"] = [float(t) for t in (n.yaw_norm_thresholds or [0.0] * nc)]
    out["circle_nms_dist_threshold"] = _circle_dist(m)
    if n.iou_nms == "autoware_target_classes":
        out["iou_nms_target_class_names"] = [autoware_class_name(c) for c in n.iou_nms_target_class_names]
    out["iou_nms_search_distance_2d"] = float(n.iou_nms_search_distance_2d)
    out["iou_nms_threshold"] = 1.0 if n.iou_nms == "off" else float(n.iou_nms_threshold)
    return out


def model_params(cfg: DeployConfig) -> dict[str, Any]:
    m = cfg.model
    return {
        "class_names": [autoware_class_name(c) for c in m.class_names],
        # Per input point: x, y, z, time_lag (+ intensity for the 11-feature encoder; features.py).
        "point_feature_size": 5 if m.encoder_in_features == 11 else 4,
        "max_voxel_size": int(m.max_voxels),
        "point_cloud_range": [float(v) for v in m.point_cloud_range],
        "voxel_size": [float(v) for v in m.voxel_size],
        "downsample_factor": int(m.out_size_factor),
        "encoder_in_feature_size": int(m.encoder_in_features),
        "has_variance": False,
        "has_twist": bool(m.with_velocity),
    }


def _node_params(cfg: DeployConfig) -> dict[str, Any]:
    from .onnx_export import onnx_file_names  # lazy: keeps nms.py's import of this module light

    names = onnx_file_names(cfg.model)
    enc, head = names["encoder"], names["head"]
    return {
        "encoder_onnx_path": f"$(var model_path)/{enc}",
        "encoder_engine_path": f"$(var model_path)/{enc.removesuffix('.onnx')}.engine",
        "head_onnx_path": f"$(var model_path)/{head}",
        "head_engine_path": f"$(var model_path)/{head.removesuffix('.onnx')}.engine",
        "trt_precision": _trt_precision(cfg),
        "cloud_capacity": AUTOWARE_CLOUD_CAPACITY,
        "post_process_params": post_process_params(cfg.model),
        # We feed single sweeps (time_lag 0): no past frames, so the node must not densify either.
        "densification_params": {"world_frame_id": "map", "num_past_frames": 0},
    }


def _remapper_params() -> dict[str, Any]:
    k = len(AUTOWARE_LABELS)
    return {"allow_remapping_by_area_matrix": [0] * (k * k), "min_area_matrix": [0.0] * (k * k),
            "max_area_matrix": [0.0] * (k * k)}


def _header(cfg: DeployConfig, what: str, gaps: list[str]) -> str:
    lines = [f"Autoware autoware_lidar_centerpoint {what} for model {cfg.model.name!r}, written by awml_deploy "
             "(awml_deploy_core/export/autoware_params.py) from the deploy config.",
             "Autoware parity: " + ("exact" if not gaps else "NOT exact:")]
    lines += [f"  - {g}" for g in gaps]
    lines += [f"Note: {note}" for note in PARITY_NOTES]
    return "".join(f"# {line}\n" for line in lines)


def _dump(params: dict[str, Any]) -> str:
    return yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False, default_flow_style=None, width=120)


def write_autoware_params(out_dir: Path, cfg: DeployConfig) -> list[Path]:
    """Write the node's three parameter files into ``out_dir``; returns their paths (node, ml_package, remapper).
    Every way the node would differ from our post-processing is written into each file's header and logged."""
    out_dir = Path(out_dir)
    gaps = parity_gaps(cfg)
    for gap in gaps:
        log.warning("Autoware params: not exact: %s", gap)
    name = cfg.model.name
    files = [
        (out_dir / f"{name}.param.yaml", "node params", _node_params(cfg)),
        (out_dir / f"{name}_ml_package.param.yaml", "model params", {"model_params": model_params(cfg)}),
        (out_dir / "detection_class_remapper.param.yaml", "class remapper params (identity: no relabelling)",
         _remapper_params()),
    ]
    written = []
    for path, what, params in files:
        written.append(atomic_write_text(path, _header(cfg, what, gaps) + _dump(params)))
    return written
