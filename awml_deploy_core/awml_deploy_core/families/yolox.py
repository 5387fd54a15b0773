"""YOLOX (camera 2D detection): the family declaration.

One graph, AWML's YOLOX_opt_elan deployment: ``images`` [batch, 3, H, W] (BGR 0..255, letterboxed) -> ``output``
[batch, N, 4 + 1 + C]. Pre/post-processing: ``pipelines/yolox``; metrics: COCO through pycocotools
(``metrics/detection2d``); frames: the synthetic camera (``data/camera_dataset``).

Headline (gated) metric: AP@[.5:.95]. The gate compares backends of the same model (fp16/INT8 engines, ONNX
Runtime) against PyTorch; what those change is box regression precision, which AP50 barely sees (a box 3 px off is
still a hit at IoU 0.5) and the IoU-averaged AP does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backends.base import RunnerSet, TensorSpec
from ..config import DeployConfig, YOLOXModelConfig
from ..export.yolox_onnx import yolox_onnx_file_names
from ..models.yolox import INPUT_NAMES, OUTPUT_NAMES, YOLOXGraph
from .base import GraphSpec, ModelFamily

DEFAULT_CHECKPOINT = "package://awml_deploy_core/checkpoints/yolox_small.pth"


def graphs(cfg: YOLOXModelConfig) -> tuple[GraphSpec, ...]:
    h, w = cfg.input_size
    # rows are images: each is computed on its own (BatchNorm in eval mode), so TensorRT may pad the batch
    return (GraphSpec("yolox", "yolox", (TensorSpec(INPUT_NAMES[0], torch.float32, (None, 3, h, w), batched=True),), OUTPUT_NAMES,
                      rows_independent=True),)


def torch_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {"yolox": YOLOXGraph(model)}


def load_checkpoint(path: Path, cfg: YOLOXModelConfig | None) -> tuple[nn.Module, YOLOXModelConfig]:
    from ..models.yolox import load_yolox_checkpoint

    return load_yolox_checkpoint(path, cfg)


def export_onnx(model: nn.Module, cfg: YOLOXModelConfig, out_dir: Path, opset: int, simplify: bool,
                version: str) -> dict[str, Any]:
    from ..export.yolox_onnx import export_yolox_onnx

    return export_yolox_onnx(model, cfg, out_dir, opset, simplify, version)


def make_pipeline(cfg: YOLOXModelConfig, runners: RunnerSet, device: str) -> Any:
    from ..pipelines.yolox.pipeline import YOLOXPipeline

    return YOLOXPipeline(cfg, runners, device)


def warm_up_input(cfg: YOLOXModelConfig) -> np.ndarray:
    """One random BGR image of the network's input size."""
    return np.random.default_rng(0).integers(0, 256, (*cfg.input_size, 3), dtype=np.uint8)


def open_dataset(cfg: DeployConfig, cache_dir: Path, progress: bool) -> Any:
    from .yolox_data import open_camera_dataset

    return open_camera_dataset(cfg.data, cache_dir, progress)


def evaluate(name: str, pipeline: Any, samples: Sequence[Any], cfg: DeployConfig, progress: bool) -> Any:
    from .yolox_eval import evaluate_backend

    return evaluate_backend(name, pipeline, samples, cfg.evaluate.warmup, cfg.model.class_names, progress)


def verify(reference: tuple[str, Any], candidate: tuple[str, Any], samples: Sequence[Any], tol: Any,
           precision: str, progress: bool) -> Any:
    from .yolox_eval import verify_backends

    return verify_backends(reference, candidate, samples, tol, precision, progress)


def metric_columns(e: Any) -> dict[str, float]:
    s = e.metrics.stats
    return {"AP": s["map"], "AP50": s["ap50"], "AP75": s["ap75"], "AR100": s["ar100"]}


def report_sections(evaluations: dict[str, Any], plots: Path) -> list[str]:
    from .yolox_report import report_sections as sections

    if not evaluations:
        return []
    first = next(iter(evaluations.values()))
    # drawn at Autoware tensorrt_yolox's on-vehicle threshold (0.35), the boxes a driver's stack would see
    return sections(evaluations, plots, first.class_names, 0.35)


def bundle_files(cfg: DeployConfig, bundle_dir: Path) -> list[Path]:
    """Autoware ``tensorrt_yolox``'s parameter and label files, from the same config."""
    from ..export.yolox_params import write_tensorrt_yolox_params

    return write_tensorrt_yolox_params(bundle_dir, cfg)


FAMILY = ModelFamily(
    name="yolox",
    model_config=YOLOXModelConfig,
    default_checkpoint=DEFAULT_CHECKPOINT,
    graphs=graphs,
    onnx_file_names=yolox_onnx_file_names,
    postprocess_keys=frozenset({"score_threshold", "nms_iou", "max_per_img", "node_score_threshold",
                                "node_nms_iou"}),
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
    replay="detection2d",
)
