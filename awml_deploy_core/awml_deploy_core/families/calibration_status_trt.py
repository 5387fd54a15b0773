"""Calibration status' TensorRT rules: the input's dynamic [H, W] profile (the model config's trt_min_hw /
trt_opt_hw / trt_max_hw, AWML's min 1080x1920, opt 1860x2880, max 2160x3840 by default, batch 1), and INT8
calibration batches built by the one input builder at the profile's opt size (image resized, K scaled)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DeployConfig
from ..errors import ConfigError
from .base import TrtRules


def profiles(cfg: DeployConfig, graph: str) -> dict[str, dict[str, list[int]]]:
    m = cfg.model
    return {"input": {"min": [1, 5, *m.trt_min_hw], "opt": [1, 5, *m.trt_opt_hw], "max": [1, 5, *m.trt_max_hw]}}


def calibration_shape(cfg: DeployConfig, graph: str) -> list[int]:
    return [1, 5, *cfg.model.trt_opt_hw]


def calibration_batches(samples: Iterable[Any], pipeline: Any, num_frames: int, shape: Sequence[int],
                        graphs: Sequence[str] = ("calibration_status",)) -> Iterator[dict[str, np.ndarray]]:
    """``input`` per pair from the pipeline's own input builder at ``shape``'s [H, W]. Deterministic."""
    from ..pipelines.calibration.input_builder import build_input

    spec = dataclasses.replace(pipeline.spec, input_size=(int(shape[2]), int(shape[3])))
    for i, s in enumerate(samples):
        if i >= num_frames:
            break
        yield {"input": build_input(s.image, s.points, s.K, s.T, spec)[None]}


def check_profiles(onnx_path: Path, graph: str, profile: Mapping[str, Any]) -> list[str]:
    """The profile must keep 5 channels (the ONNX's) and sides of at least 32 pixels (the network's stride)."""
    p = profile.get("input")
    if p is None:
        return []
    for key in ("min", "opt", "max"):
        shape = p[key]
        if len(shape) != 4 or shape[1] != 5:
            raise ConfigError(f"{Path(onnx_path).name}: TensorRT profile {key} {shape} must be [batch, 5, H, W]")
        if min(shape[2:]) < 32:
            raise ConfigError(f"{Path(onnx_path).name}: TensorRT profile {key} {shape}: H and W must be >= 32 "
                              f"(model.trt_{key}_hw)")
    return []


RULES = TrtRules(
    profiles=profiles,
    calibration_shape=calibration_shape,
    calibration_batches=calibration_batches,
    check_profiles=check_profiles,
    axis_names={"input": {0: "batch", 1: "channels (5)", 2: "height (model.trt_*_hw[0])",
                          3: "width (model.trt_*_hw[1])"}},
)
