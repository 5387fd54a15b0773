"""CenterPoint's TensorRT rules, the one place they live: the encoder's dynamic num_voxels profile (from
``export.tensorrt.num_voxels_*``), the INT8 calibration shapes and batches, and the profile check against the
``max_voxels`` the ONNX records. The planner and builder (``export/tensorrt_*``) are generic and read these through
``ModelFamily.tensorrt``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import DeployConfig
from ..errors import ConfigError
from .base import TrtRules

if TYPE_CHECKING:
    from ..pipelines.centerpoint.pipeline import CenterPointPipeline

log = logging.getLogger(__name__)


def profiles(cfg: DeployConfig, graph: str) -> dict[str, dict[str, list[int]]]:
    """min/opt/max of the encoder's dynamic num_voxels (P and F from the model config); the head is static."""
    if graph != "encoder":
        return {}
    t, m = cfg.export.tensorrt, cfg.model
    p, f = m.max_points_per_voxel, m.encoder_in_features
    return {"input_features": {"min": [t.num_voxels_min, p, f], "opt": [t.num_voxels_opt, p, f],
                               "max": [t.num_voxels_max, p, f]}}


def calibration_shape(cfg: DeployConfig, graph: str) -> list[int]:
    """Encoder: num_voxels_opt pillars; head: the BEV canvas."""
    m = cfg.model
    if graph == "encoder":
        return [cfg.export.tensorrt.num_voxels_opt, m.max_points_per_voxel, m.encoder_in_features]
    return [1, m.pillar_channels, m.grid_size[1], m.grid_size[0]]


def calibration_batches(samples: Iterable[Any], pipeline: "CenterPointPipeline", num_frames: int,
                        shape: Sequence[int], graphs: Sequence[str] = ("encoder", "head")
                        ) -> Iterator[dict[str, np.ndarray]]:
    """What the INT8 calibrators are fed, one dict per frame, from the SAME preprocessing as evaluation.

    encoder: `input_features` = pipeline.preprocess(points).input_features fitted to ``shape[0]`` rows (the
    calibration profile's fixed shape). head: `spatial_features` = the reference pipeline's encoder output scattered
    to the BEV canvas (computed from the real, unfitted pillars). Frames without pillars are skipped (the pipeline
    skips the graphs for them too). Deterministic: same samples -> same batches.
    """
    import torch

    from ..export.tensorrt_plan import fit_rows

    done = 0
    for s in samples:
        if done >= num_frames:
            break
        pre = pipeline.preprocess(s.points)
        if pre.input_features.shape[0] == 0:
            log.debug("calibration: frame %s has no pillars; skipped", getattr(s, "token", "?"))
            continue
        batch: dict[str, np.ndarray] = {}
        if "encoder" in graphs:
            batch["input_features"] = fit_rows(pre.input_features.detach().float().cpu().numpy(), int(shape[0]))
        if "head" in graphs:
            with torch.inference_mode():
                spatial = pipeline.scatter(pipeline.encode(pre.input_features), pre.coords)
            batch["spatial_features"] = np.ascontiguousarray(spatial.detach().float().cpu().numpy())
        yield batch
        done += 1


def _recorded_max_voxels(onnx_path: Path) -> int | None:
    from ..export.tensorrt_policy import load_onnx_graph

    for p in load_onnx_graph(onnx_path).metadata_props:
        if p.key == "model_config":
            try:
                return int(json.loads(p.value)["max_voxels"])
            except (ValueError, KeyError, TypeError):
                return None
    return None


def check_profiles(onnx_path: Path, graph: str, profile: Mapping[str, Any]) -> list[str]:
    """num_voxels_max below the model's max_voxels (recorded in the ONNX) is an error: dense frames would not fit
    the engine; above it, a note (the extra range costs memory only)."""
    if "input_features" not in profile:
        return []
    max_voxels = _recorded_max_voxels(onnx_path)
    mx = profile["input_features"]["max"][0]
    if max_voxels is None:
        return []
    if mx < max_voxels:
        raise ConfigError(
            f"{Path(onnx_path).name}: export.tensorrt.num_voxels_max={mx} is below the model's max_voxels="
            f"{max_voxels} recorded in the ONNX: frames with more pillars would not fit the engine; raise "
            f"num_voxels_max to at least {max_voxels} or lower model.max_voxels")
    if mx > max_voxels:
        return [f"num_voxels_max {mx} exceeds model.max_voxels {max_voxels}: the pipeline never feeds more than "
                f"{max_voxels} pillars (the extra range costs memory only)"]
    return []


RULES = TrtRules(
    profiles=profiles,
    calibration_shape=calibration_shape,
    calibration_batches=calibration_batches,
    check_profiles=check_profiles,
    axis_names={"input_features": {0: "num_voxels (export.tensorrt.num_voxels_min/opt/max)",
                                   1: "max_points_per_voxel (P)", 2: "encoder_in_features (F)"}},
)
