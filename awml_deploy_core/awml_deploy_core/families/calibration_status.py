"""Camera-lidar calibration status (AWML CalibrationStatusClassification): the family declaration.

One graph: ``input`` [batch, 5, height, width] (R, G, B, projected lidar depth, projected lidar intensity; H and W
dynamic) -> ``output`` [batch, 2] logits [miscalibrated, calibrated]. Input building and the decision:
``pipelines/calibration``; pairs and miscalibration labels: ``data/calibration_pairs``; metrics: scikit-learn
(``metrics/classification``). Headline (gated) metric: accuracy over the labelled pairs (ambiguous band excluded).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backends.base import RunnerSet, TensorSpec
from ..config import CalibrationStatusModelConfig, DeployConfig
from ..export.calibration_onnx import calibration_onnx_file_names
from ..models.calibration_status import IN_CHANNELS, INPUT_NAMES, OUTPUT_NAMES
from .base import GraphSpec, ModelFamily
from .calibration_status_trt import RULES as TRT_RULES

DEFAULT_CHECKPOINT = "package://awml_deploy_core/checkpoints/calibration_status_small.pth"
GRAPH = "calibration_status"


def graphs(cfg: CalibrationStatusModelConfig) -> tuple[GraphSpec, ...]:
    # rows are frames, each computed on its own (BatchNorm in eval mode)
    return (GraphSpec(GRAPH, GRAPH, (TensorSpec(INPUT_NAMES[0], torch.float32, (None, IN_CHANNELS, None, None)),),
                      OUTPUT_NAMES, rows_independent=True),)


def torch_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {GRAPH: model}


def load_checkpoint(path: Path, cfg: CalibrationStatusModelConfig | None
                    ) -> tuple[nn.Module, CalibrationStatusModelConfig]:
    from ..models.calibration_status import load_calibration_checkpoint

    return load_calibration_checkpoint(path, cfg)


def export_onnx(model: nn.Module, cfg: CalibrationStatusModelConfig, out_dir: Path, opset: int, simplify: bool,
                version: str) -> dict[str, Any]:
    from ..export.calibration_onnx import export_calibration_onnx

    return export_calibration_onnx(model, cfg, out_dir, opset, simplify, version)


def make_pipeline(cfg: CalibrationStatusModelConfig, runners: RunnerSet, device: str) -> Any:
    from ..pipelines.calibration.pipeline import CalibrationStatusPipeline

    return CalibrationStatusPipeline(cfg, runners, device)


def warm_up_input(cfg: CalibrationStatusModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image, points, K, T_cam_lidar) of ``example_size``: random image, a few random points in front."""
    rng = np.random.default_rng(0)
    h, w = cfg.example_size
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    points = np.concatenate([rng.uniform([-5, -5, 2], [5, 5, 30], (256, 3)), rng.uniform(0, 255, (256, 1))],
                            1).astype(np.float32)
    K = np.array([[w / 2, 0, (w - 1) / 2], [0, w / 2, (h - 1) / 2], [0, 0, 1]], np.float64)
    return image, points, K, np.eye(4)


def open_dataset(cfg: DeployConfig, cache_dir: Path, progress: bool) -> Any:
    from .calibration_status_eval import open_pair_dataset

    return open_pair_dataset(cfg, cache_dir, progress)


def evaluate(name: str, pipeline: Any, samples: Sequence[Any], cfg: DeployConfig, progress: bool) -> Any:
    from .calibration_status_eval import evaluate_backend

    return evaluate_backend(name, pipeline, samples, cfg.evaluate.warmup, cfg.model.miscalibration, progress)


def verify(reference: tuple[str, Any], candidate: tuple[str, Any], samples: Sequence[Any], tol: Any,
           precision: str, progress: bool) -> Any:
    from .calibration_status_eval import verify_backends

    return verify_backends(reference, candidate, samples, tol, precision, progress)


def metric_columns(e: Any) -> dict[str, float]:
    m = e.metrics
    return {"accuracy": m.accuracy, "recall_mis": m.recall, "precision_mis": m.precision, "f1_mis": m.f1,
            "roc_auc": m.roc_auc, "false_alarm": m.false_alarm_rate, "recall_large": e.large_error_recall}


def report_sections(evaluations: dict[str, Any], plots: Path) -> list[str]:
    from .calibration_status_report import report_sections as sections

    return sections(evaluations, plots)


def bundle_files(cfg: DeployConfig, bundle_dir: Path) -> list[Path]:
    """Nothing beyond the ONNX: the node reads its thresholds from its own parameters."""
    return []


FAMILY = ModelFamily(
    name="calibration_status",
    model_config=CalibrationStatusModelConfig,
    default_checkpoint=DEFAULT_CHECKPOINT,
    graphs=graphs,
    onnx_file_names=calibration_onnx_file_names,
    postprocess_keys=frozenset({"input_size", "example_size", "min_depth", "max_depth", "depth_divisor",
                                "intensity_divisor", "image_mean", "image_std", "miscalibrated_threshold",
                                "miscalibration", "trt_min_hw", "trt_opt_hw", "trt_max_hw"}),
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
    replay="calibration_status",
)
