"""What a model family declares, in one place; everything generic (loader, export job, verification, evaluation,
replay, bench, node base) is written against this and nothing family-specific.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

    def graph(self, model_cfg: Any, key: str) -> GraphSpec:
        return next(g for g in self.graphs(model_cfg) if g.key == key)
