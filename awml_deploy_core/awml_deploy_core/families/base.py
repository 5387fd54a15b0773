"""What a model family declares, in one place; everything generic (loader, export job, verification, evaluation,
replay, bench, node base) is written against this and nothing family-specific.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..backends.base import RunnerSet, TensorSpec


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: its key in the family (``encoder``), its name (``pts_voxel_encoder``) and I/O contract."""

    key: str
    name: str
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...]
    # The first axis is dynamic and its rows are computed independently (TensorRT may zero-pad up to the
    # optimisation profile's minimum and cut the padding from the outputs).
    rows_independent: bool = False


@dataclass(frozen=True)
class TrtRules:
    """What TensorRT planning needs that only the family knows. The planner, builder and loader are generic; a family
    whose graphs all have static inputs and that needs no INT8 calibration may leave ``ModelFamily.tensorrt`` None."""

    # (deploy config, graph key) -> {input name: {"min"|"opt"|"max": shape}} for the graph's dynamic inputs
    profiles: Callable[[Any, str], dict[str, dict[str, list[int]]]]
    # (deploy config, graph key) -> the one fixed shape INT8 calibration feeds the graph's input
    calibration_shape: Callable[[Any, str], list[int]]
    # (samples, FP32 reference pipeline, frames, calibration shape, graph keys) -> {input name: array} per frame,
    # from the same preprocessing as evaluation
    calibration_batches: Callable[[Sequence[Any], Any, int, Sequence[int], Sequence[str]],
                                  Iterator[dict[str, Any]]]
    # (ONNX path, graph key, profiles) -> notes; ConfigError when the profile contradicts what the ONNX records
    check_profiles: Callable[[Path, str, Mapping[str, Any]], list[str]]
    # input name -> {axis: what it is and which config key sets it}, for profile error messages
    axis_names: Mapping[str, Mapping[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelFamily:
    """A model family's declaration. Each field is a plain function of the family's own types."""

    name: str
    # The pydantic class of ``DeployConfig.model`` for this family.
    model_config: type
    default_checkpoint: str
    # model config -> the graphs, in the order the pipeline runs them
    graphs: Callable[[Any], tuple[GraphSpec, ...]]
    # model config -> {graph key: ONNX file name}
    onnx_file_names: Callable[[Any], dict[str, str]]
    # model config keys that change pre/post-processing only, not the exported graphs
    postprocess_keys: frozenset[str]
    # (checkpoint path, model config or None = the checkpoint's own) -> (eval-mode model, model config)
    load_checkpoint: Callable[[Path, Any], tuple[nn.Module, Any]]
    # model -> {graph key: nn.Module taking the graph's inputs positionally}
    torch_modules: Callable[[nn.Module], dict[str, nn.Module]]
    # (model, model config, out dir, opset, simplify, producer version) -> {graph key: ExportedGraph}; checks the
    # contract from the written files
    export_onnx: Callable[[nn.Module, Any, Path, int, bool, str], dict[str, Any]]
    # (model config, runners, device) -> the pipeline every consumer runs
    make_pipeline: Callable[[Any, RunnerSet, str], Any]
    # model config -> one small input for warming a pipeline up (first-call initialisation off the first frame)
    warm_up_input: Callable[[Any], Any]
    # (deploy config, cache dir, progress) -> dataset with __len__, __getitem__ and fingerprint()
    open_dataset: Callable[[Any, Path, bool], Any]
    # (backend name, pipeline, samples, deploy config, progress) -> evaluation (to_dict(), headline())
    evaluate: Callable[[str, Any, Sequence[Any], Any, bool], Any]
    # ((name, pipeline), (name, pipeline), samples, tolerance, precision, progress) -> verify.ScenarioResult
    verify: Callable[..., Any]
    # evaluation -> {column: value} for the side-by-side table; the FIRST column is the gated headline metric
    metric_columns: Callable[[Any], dict[str, float]]
    # ({backend: evaluation}, plots dir) -> Markdown lines of the family's own report sections (tables, plots)
    report_sections: Callable[[dict[str, Any], Path], list[str]]
    # (deploy config, bundle dir) -> files the bundle also carries for the vehicle (e.g. Autoware parameter files)
    bundle_files: Callable[[Any, Path], list[Path]]
    # TensorRT profiles and calibration (None: static shapes only, no INT8 calibration)
    tensorrt: TrtRules | None = None
    # INT8 Q/DQ post-training quantization with its accuracy guard (None: the family has none; export.quantize is
    # then refused). (fp32 ONNX per graph key, out dir, deploy config, data cache dir, evaluation samples) -> a
    # result with ``ok``, ``reason`` (one line), ``kept_float`` (layers in float: graph, name, reason, sensitivity),
    # ``sensitivity``, ``to_dict()`` and ``pair`` (None when not ok; else ``paths`` {graph key: Q/DQ file or the
    # fp32 one for graphs left unquantized}, ``recipe`` and ``recipe_hash``)
    quantize: Callable[[Mapping[str, Path], Path, Any, Path, Sequence[Any]], Any] | None = None
    # The replay task (replay/task.py) that plays, scores and reports this family's bags: "detection3d" (lidar
    # clouds -> DetectedObjects) or "detection2d" (camera images -> Detections2D); None: no replay.
    replay: str | None = None

    def graph(self, model_cfg: Any, key: str) -> GraphSpec:
        return next(g for g in self.graphs(model_cfg) if g.key == key)


def qdq_artifact(graph_key: str) -> str:
    """The manifest key of a graph's INT8 Q/DQ ONNX (``encoder`` -> ``encoder_int8``)."""
    return f"{graph_key}_int8"


def qdq_file_name(onnx_name: str) -> str:
    """The Q/DQ file next to the fp32 one: ``<fp32 stem>_int8.onnx``."""
    return f"{Path(onnx_name).stem}_int8.onnx"
