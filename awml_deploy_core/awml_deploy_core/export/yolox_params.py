"""Parameter and label files for Autoware's ``tensorrt_yolox`` node, written from the deploy config.

``<model name>.param.yaml`` (``/**: ros__parameters``): ``model_path`` / ``label_path`` (beside the file),
``score_threshold`` 0.35 and ``nms_threshold`` 0.7 (the model config's ``node_score_threshold`` / ``node_nms_iou``,
Autoware's defaults; evaluation uses 0.01 / 0.65), ``precision`` (``export.tensorrt.precision``; Autoware's INT8
default needs calibration images) and ``preprocess_on_gpu``. ``label.txt``: one class per line in the graph's order,
upper case as Autoware's label files spell them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..bundle import atomic_write_text
from .yolox_onnx import yolox_onnx_file_names


def write_tensorrt_yolox_params(out_dir: Path, cfg: Any) -> list[Path]:
    m = cfg.model
    onnx_name = yolox_onnx_file_names(m)["yolox"]
    precision = cfg.export.tensorrt.precision
    params = {"/**": {"ros__parameters": {
        "model_path": f"$(var data_path)/{onnx_name}",
        "label_path": "$(var data_path)/label.txt",
        "score_threshold": float(m.node_score_threshold),
        "nms_threshold": float(m.node_nms_iou),
        "precision": precision if precision in ("fp16", "int8") else "fp32",
        "calibration_algorithm": "Entropy",
        "preprocess_on_gpu": True,
    }}}
    header = (f"# Autoware tensorrt_yolox parameters for {onnx_name} (written by awml_deploy from the deploy "
              f"config).\n# Input {m.input_size[0]}x{m.input_size[1]}, letterbox top-left pad 114, BGR 0..255; "
              f"output width {5 + len(m.class_names)}.\n")
    param = atomic_write_text(Path(out_dir) / f"{m.name}.param.yaml", header + yaml.safe_dump(params, sort_keys=False))
    labels = atomic_write_text(Path(out_dir) / "label.txt", "".join(f"{c.upper()}\n" for c in m.class_names))
    return [param, labels]
