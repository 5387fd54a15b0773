"""Calibration status -> AWML's deploy graph: ``input`` [batch, 5, height, width] (R, G, B, lidar depth, lidar
intensity; batch, height and width dynamic) -> ``output`` [batch, 2] LOGITS in AWML's class order
[miscalibrated, calibrated] (softmax and the decision run in the pipeline). The contract is checked from the
written file alone.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch

from ..config import CALIBRATION_CLASSES, CalibrationStatusModelConfig
from ..errors import ArtifactError
from ..models.calibration_status import IN_CHANNELS, INPUT_NAMES, OUTPUT_NAMES, CalibrationStatusClassifier
from .onnx_export import PRODUCER, ExportedGraph, _dims, _finish, _to_onnx

DYNAMIC = {0: "batch", 2: "height", 3: "width"}
OUTPUT_CONVENTION = "logits"


def calibration_onnx_file_names(cfg: CalibrationStatusModelConfig) -> dict[str, str]:
    return {"calibration_status": f"{cfg.name}.onnx"}


def export_calibration_onnx(model: CalibrationStatusClassifier, cfg: CalibrationStatusModelConfig, out_dir: Path,
                            opset: int = 17, simplify: bool = True, version: str = "") -> dict[str, ExportedGraph]:
    """Traced at batch 2 and ``example_size`` with batch, height and width dynamic; checks the contract after."""
    model = model.cpu().eval()
    path = Path(out_dir) / calibration_onnx_file_names(cfg)["calibration_status"]
    metadata = {"producer": PRODUCER, "producer_version": version, "model": "calibration_status",
                "model_config": cfg.model_dump_json(), "class_names": ",".join(CALIBRATION_CLASSES),
                "output_convention": OUTPUT_CONVENTION, "graph": "calibration_status"}
    torch.manual_seed(0)
    example = torch.randn(2, IN_CHANNELS, *cfg.example_size)
    with torch.no_grad():
        proto = _to_onnx(model, example, INPUT_NAMES, OUTPUT_NAMES,
                         {INPUT_NAMES[0]: dict(DYNAMIC), OUTPUT_NAMES[0]: {0: "batch"}}, opset)
    out = {"calibration_status": _finish(proto, path, metadata, simplify)}
    problems = check_calibration_contract(path)
    if problems:
        raise ArtifactError(f"{path.name}: exported ONNX breaks the calibration-status contract: " + "; ".join(problems))
    return out


def check_calibration_contract(path: Path, opset: int | None = None) -> list[str]:
    """Problems against the contract, read from the ONNX file only ([] = compliant): one float32 input ``input``
    [dynamic, 5, dynamic, dynamic], one output ``output`` [dynamic, 2], class order recorded."""
    m = onnx.load(str(path), load_external_data=False)
    ins, outs = list(m.graph.input), list(m.graph.output)
    if [i.name for i in ins] != list(INPUT_NAMES) or [o.name for o in outs] != list(OUTPUT_NAMES):
        return [f"I/O names are {[i.name for i in ins]} -> {[o.name for o in outs]}, expected "
                f"{list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}"]
    problems: list[str] = []
    din, dout = _dims(ins[0]), _dims(outs[0])
    if len(din) != 4 or din[1] != IN_CHANNELS or not all(isinstance(din[a], str) for a in (0, 2, 3)):
        problems.append(f"input is {din}, expected [batch, {IN_CHANNELS}, height, width] with batch, height and "
                        f"width dynamic")
    if len(dout) != 2 or not isinstance(dout[0], str) or dout[1] != len(CALIBRATION_CLASSES):
        problems.append(f"output is {dout}, expected [batch (dynamic), {len(CALIBRATION_CLASSES)}]")
    if ins[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        problems.append("input is not float32")
    meta = {p.key: p.value for p in m.metadata_props}
    if meta.get("class_names") != ",".join(CALIBRATION_CLASSES):
        problems.append(f"metadata class_names is {meta.get('class_names')!r}, expected "
                        f"{','.join(CALIBRATION_CLASSES)!r}")
    if opset is not None:
        got = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
        if got != opset:
            problems.append(f"opset is {got}, expected {opset}")
    return problems
