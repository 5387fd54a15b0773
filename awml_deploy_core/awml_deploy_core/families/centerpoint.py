"""CenterPoint (lidar 3D detection, pillars): the family declaration.

Two graphs, exactly as Autoware's ``lidar_centerpoint`` binds them: the voxel encoder (dynamic number of pillars)
and backbone + neck + head on the scattered canvas. Pre/post-processing: ``pipelines/centerpoint``; metrics:
nuScenes-style 3D detection (``metrics/detection3d``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backends.base import RunnerSet, TensorSpec
from ..config import DEFAULT_CHECKPOINT, CenterPointModelConfig, DeployConfig
from ..models.centerpoint import (
    ENCODER_INPUT_NAMES,
    ENCODER_OUTPUT_NAMES,
    HEAD_INPUT_NAMES,
    HEAD_OUTPUT_NAMES,
    BackboneNeckHeadGraph,
    VoxelEncoderGraph,
    graph_shapes,
)
from ..export.onnx_export import onnx_file_names
from .base import GraphSpec, ModelFamily
from .centerpoint_trt import RULES as TRT_RULES


def graphs(cfg: CenterPointModelConfig) -> tuple[GraphSpec, ...]:
    s = graph_shapes(cfg)
    return (
        GraphSpec("encoder", "pts_voxel_encoder",
                  (TensorSpec(ENCODER_INPUT_NAMES[0], torch.float32, (None, *s.input_features[1:])),),
                  ENCODER_OUTPUT_NAMES, rows_independent=True),
        GraphSpec("head", "pts_backbone_neck_head",
                  (TensorSpec(HEAD_INPUT_NAMES[0], torch.float32, s.spatial_features),), HEAD_OUTPUT_NAMES),
    )


def torch_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {"encoder": VoxelEncoderGraph(model), "head": BackboneNeckHeadGraph(model)}


def load_checkpoint(path: Path, cfg: CenterPointModelConfig | None) -> tuple[nn.Module, CenterPointModelConfig]:
    from ..models.checkpoint import load_checkpoint as load

    return load(path, cfg)


def export_onnx(model: nn.Module, cfg: CenterPointModelConfig, out_dir: Path, opset: int, simplify: bool,
                version: str) -> dict[str, Any]:
    from ..export.onnx_export import export_centerpoint_onnx

    return export_centerpoint_onnx(model, cfg, out_dir, opset, simplify, version)


def make_pipeline(cfg: CenterPointModelConfig, runners: RunnerSet, device: str) -> Any:
    from ..pipelines.centerpoint.pipeline import CenterPointPipeline

    return CenterPointPipeline(cfg, runners, device)


def warm_up_input(cfg: CenterPointModelConfig) -> np.ndarray:
    """2,000 random points inside the range (x, y, z, intensity, time lag)."""
    r = cfg.point_cloud_range
    rng = np.random.default_rng(0)
    pts = np.zeros((2000, 5), np.float32)
    for axis in range(3):
        pts[:, axis] = rng.uniform(r[axis], r[axis + 3], len(pts))
    return pts


def open_dataset(cfg: DeployConfig, cache_dir: Path, progress: bool) -> Any:
    from ..evaluate import open_dataset as open_

    return open_(cfg.data, cache_dir, cfg.model.class_names, progress)


def evaluate(name: str, pipeline: Any, samples: Sequence[Any], cfg: DeployConfig, progress: bool) -> Any:
    from ..evaluate import evaluate_backend

    return evaluate_backend(name, pipeline, samples, cfg.evaluate, progress)


def verify(reference: tuple[str, Any], candidate: tuple[str, Any], samples: Sequence[Any], tol: Any,
           precision: str, progress: bool) -> Any:
    from ..evaluate import verify_backends

    return verify_backends(reference, candidate, samples, tol, precision, progress)


def metric_columns(e: Any) -> dict[str, float]:
    from ..evaluate import map_at

    return {"mAP@2m": map_at(e.metrics), "mAP": e.metrics.map, "mAPH": e.metrics.maph}


def report_sections(evaluations: dict[str, Any], plots: Path) -> list[str]:
    from ..report import plot_pr_curves

    if not evaluations:
        return []
    first = next(iter(evaluations.values()))
    curves = {k: {c: {str(float(t)): v for t, v in per.items()} for c, per in e.metrics.pr_curves.items()}
              for k, e in evaluations.items()}
    plot_pr_curves(curves, list(first.metrics.ap), "2.0", plots / "pr_curves.png")
    md = []
    for name, e in evaluations.items():
        md += [f"### {name}: 3D detection metrics", "", "```", e.metrics.table(), "```", ""]
    return md + ["## Precision / recall at 2 m", "", "![pr](plots/pr_curves.png)", ""]


def bundle_files(cfg: DeployConfig, bundle_dir: Path) -> list[Path]:
    """The parameter files Autoware's C++ lidar_centerpoint reads, generated from the same config."""
    from ..export.autoware_params import write_autoware_params

    return write_autoware_params(bundle_dir, cfg)


def quantize(onnx: Any, out_dir: Path, cfg: DeployConfig, cache_dir: Path, evaluation_samples: Sequence[Any]
             ) -> Any:
    """INT8 Q/DQ graphs calibrated on the pipeline's own preprocessing, with the mAP@2m accuracy guard."""
    from ..export.quantize_guard import quantize_with_guard

    return quantize_with_guard(dict(onnx), out_dir, cfg.model, cfg.data, cfg.export.quantize, cache_dir,
                               cfg.evaluate, evaluation_samples)


FAMILY = ModelFamily(
    name="centerpoint",
    model_config=CenterPointModelConfig,
    default_checkpoint=DEFAULT_CHECKPOINT,
    graphs=graphs,
    onnx_file_names=onnx_file_names,
    postprocess_keys=frozenset({"score_threshold", "class_score_thresholds", "max_num", "nms"}),
    load_checkpoint=load_checkpoint,
    torch_modules=torch_modules,
    export_onnx=export_onnx,
    make_pipeline=make_pipeline,
    warm_up_input=warm_up_input,
    open_dataset=open_dataset,
    evaluate=evaluate,
    verify=verify,
    metric_columns=metric_columns,
    report_sections=report_sections,
    bundle_files=bundle_files,
    tensorrt=TRT_RULES,
    quantize=quantize,
    replay="detection3d",
)
