"""Accuracy guard for INT8: find the layers INT8 hurts most and keep them in float until mAP fits the budget.

1. Sensitivity: each layer (a weighted node with the Relu right after it, or any other quantized node) is put in
   INT8 alone, and the relative RMS error it causes on the head outputs (through the whole encoder -> scatter ->
   head chain) is measured on a few calibration frames.
2. Everything is quantized; mAP@2m of INT8 vs fp32 is measured on the guard frames (calibration-source frames,
   never evaluation frames). While the drop exceeds `max_metric_drop`, the next most sensitive layer goes back to
   float; a fallback that does not lower the drop is undone. More than `max_fallback_layers` -> a failure result.

`quantize_with_guard` is the whole step for the export job: frames -> calibration -> guard -> Q/DQ files + recipe.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from ..config import CenterPointModelConfig, DataConfig, EvaluateConfig, QuantizeConfig
from . import quantize as qz

log = logging.getLogger(__name__)
HEAD_OUTPUTS = ("heatmap", "reg", "height", "dim", "rot", "vel")


@dataclass
class Layer:
    graph: str
    nodes: list[str]  # the first is the layer's name
    op_type: str

    @property
    def name(self) -> str:
        return self.nodes[0]


@dataclass
class FloatLayer:
    """A layer kept in float, and why."""

    graph: str
    name: str
    nodes: list[str]
    reason: str
    sensitivity: float | None = None


@dataclass
class GuardResult:
    ok: bool
    reason: str  # one line; on failure the export's exit-1 message
    metric: str
    fp32_metric: float
    int8_metric: float
    initial_drop: float
    drop: float
    budget: float
    kept_float: list[FloatLayer]
    sensitivity: list[dict[str, Any]]  # every layer, most sensitive first
    steps: list[dict[str, Any]]  # the fallback trail
    pair: qz.QuantizedPair | None = None
    frames: dict[str, list[str]] = field(default_factory=dict)

    @property
    def excluded(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {g: [] for g in qz.GRAPHS}
        for layer in self.kept_float:
            out[layer.graph] += layer.nodes
        return out

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "pair"}
        if self.pair is not None:
            d["recipe_sha256"] = self.pair.recipe_hash
            d["files"] = {g: str(p) for g, p in self.pair.paths.items()}
        return d


# --------------------------------------------------------------------------------------------- layers
def graph_layers(path: Path, graph: str) -> list[Layer]:
    """The quantizable layers of an fp32 graph: weighted nodes with their single-consumer Relu, then the other
    nodes of the quantized op types (their Q/DQ are separate choices)."""
    model = onnx.load(str(path), load_external_data=False)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    weighted = set(qz.quantizable_nodes(path))
    layers, taken = [], set()
    for n in model.graph.node:
        if n.name in weighted:
            nodes = [n.name]
            nxt = consumers.get(n.output[0], [])
            if len(nxt) == 1 and nxt[0].op_type == "Relu":
                nodes.append(nxt[0].name)
            taken.update(nodes)
            layers.append(Layer(graph, nodes, n.op_type))
    for n in model.graph.node:
        if n.name not in taken and n.op_type in qz.OP_TYPES and n.op_type not in qz.WEIGHTED_OPS:
            layers.append(Layer(graph, [n.name], n.op_type))
    return layers


# --------------------------------------------------------------------------------------------- measuring
def _head_outputs(model_cfg: CenterPointModelConfig, paths: dict[str, Path], calib: qz.CalibrationSet,
                  frames: int) -> list[dict[str, np.ndarray]]:
    """Head outputs through encoder -> scatter -> head on the first calibration frames."""
    pipe = qz._pipeline(model_cfg, paths["encoder"], paths["head"])
    out = []
    with torch.inference_mode():
        for feats, coords in list(zip(calib.encoder_inputs, calib.coords))[:frames]:
            pillars = pipe.encode(torch.from_numpy(feats))
            heads = pipe.head(pipe.scatter(pillars, torch.from_numpy(coords)))
            out.append({k: v.numpy() for k, v in heads.items()})
    return out


def output_error(ref: list[dict[str, np.ndarray]], cand: list[dict[str, np.ndarray]]) -> float:
    """Mean over head outputs of the relative RMS error ||cand - ref|| / ||ref|| (all frames pooled)."""
    errs = []
    for name in HEAD_OUTPUTS:
        num = sum(float(np.sum((c[name].astype(np.float64) - r[name]) ** 2)) for r, c in zip(ref, cand))
        den = sum(float(np.sum(r[name].astype(np.float64) ** 2)) for r in ref)
        errs.append(np.sqrt(num / max(den, 1e-30)))
    return float(np.mean(errs))


def layer_sensitivity(fp32_paths: dict[str, Path], model_cfg: CenterPointModelConfig, q: QuantizeConfig,
                      calib: qz.CalibrationSet, work: Path, frames: int = 2) -> list[dict[str, Any]]:
    """Each layer in INT8 alone (everything else float): its head-output error; most sensitive first."""
    ref = _head_outputs(model_cfg, fp32_paths, calib, frames)
    rows = []
    for g in q.graphs:
        layers = graph_layers(fp32_paths[g], g)
        all_nodes = [n for layer in layers for n in layer.nodes]
        for layer in layers:
            others = [n for n in all_nodes if n not in layer.nodes]
            single = qz.QuantizeConfig(**{**q.model_dump(), "graphs": [g]})
            pair = qz.quantize_centerpoint(fp32_paths, work / "sens", model_cfg, single, calib, {g: others},
                                           ranges_dir=work, check=False)
            err = output_error(ref, _head_outputs(model_cfg, pair.paths, calib, frames))
            rows.append({"graph": g, "layer": layer.name, "nodes": layer.nodes, "op_type": layer.op_type,
                         "output_error": err})
            log.debug("sensitivity %s %s: %.4g", g, layer.name, err)
    rows.sort(key=lambda r: -r["output_error"])
    return rows


def _map(model_cfg: CenterPointModelConfig, paths: dict[str, Path], samples: Sequence, ev: EvaluateConfig) -> float:
    from ..evaluate import evaluate_backend, map_at

    quiet = EvaluateConfig(**{**ev.model_dump(), "warmup": 0})
    return map_at(evaluate_backend("guard", qz._pipeline(model_cfg, paths["encoder"], paths["head"]), samples,
                                   quiet, progress=False).metrics, 2.0)


# --------------------------------------------------------------------------------------------- the guard
def guard(fp32_paths: dict[str, Path], out_dir: Path, model_cfg: CenterPointModelConfig, q: QuantizeConfig,
          calib: qz.CalibrationSet, guard_samples: Sequence, ev: EvaluateConfig | None = None,
          sensitivity_frames: int = 2) -> GuardResult:
    """Quantize, then move the most sensitive layers to float until the mAP@2m drop fits `q.max_metric_drop`."""
    ev = ev or EvaluateConfig()
    budget = q.max_metric_drop
    fixed = [FloatLayer(g, n, [n], "listed in export.quantize.exclude_nodes")
             for g in q.graphs for n in q.exclude_nodes if n in _node_names(fp32_paths[g])]
    with tempfile.TemporaryDirectory(prefix="awml_guard_") as tmp:
        work = Path(tmp)

        def build(kept: list[FloatLayer], where: Path) -> qz.QuantizedPair:
            ex = {g: [n for layer in kept if layer.graph == g for n in layer.nodes] for g in qz.GRAPHS}
            return qz.quantize_centerpoint(fp32_paths, where, model_cfg, q, calib, ex, ranges_dir=work)

        fp32_map = _map(model_cfg, fp32_paths, guard_samples, ev)
        kept = list(fixed)
        pair = build(kept, work / "cand")
        drop = initial = fp32_map - _map(model_cfg, pair.paths, guard_samples, ev)
        steps: list[dict[str, Any]] = [{"float_layers": [k.name for k in kept], "drop": drop}]
        log.info("quantize guard: fp32 mAP@2m %.4f, all INT8 drop %.4f (budget %.4f)", fp32_map, drop, budget)
        sens: list[dict[str, Any]] = []
        if drop > budget:
            sens = layer_sensitivity(fp32_paths, model_cfg, q, calib, work, sensitivity_frames)
            fixed_names = {k.name for k in fixed}
            tried = 0
            for rank, row in enumerate(sens, 1):
                if drop <= budget or tried >= q.max_fallback_layers:
                    break
                if row["layer"] in fixed_names:
                    continue
                tried += 1
                cand = FloatLayer(row["graph"], row["layer"], row["nodes"], "", row["output_error"])
                trial = build(kept + [cand], work / "cand")
                new_drop = fp32_map - _map(model_cfg, trial.paths, guard_samples, ev)
                helped = new_drop < drop
                steps.append({"layer": row["layer"], "graph": row["graph"], "drop_before": drop,
                              "drop_after": new_drop, "kept_float": helped})
                log.info("quantize guard: %s/%s in float: drop %.4f -> %.4f%s", row["graph"], row["layer"], drop,
                         new_drop, "" if helped else " (no gain, back to INT8)")
                if helped:
                    cand.reason = (f"sensitivity rank {rank} (head-output rel. error {row['output_error']:.3g} "
                                   f"with it alone in INT8); mAP@2m drop {drop:.4f} -> {new_drop:.4f} in float")
                    kept.append(cand)
                    drop = new_drop
        ok = drop <= budget
        final = build(kept, Path(out_dir)) if ok else None
    names = ", ".join(f"{k.graph}/{k.name}" for k in kept) or "none"
    if ok:
        reason = (f"INT8 mAP@2m drop {drop:.4f} <= {budget:.4f} on {len(guard_samples)} guard frames; "
                  f"layers in float: {names}")
    else:
        reason = (f"INT8 mAP@2m drop {drop:.4f} exceeds export.quantize.max_metric_drop {budget:.4f} with "
                  f"{len(kept)} layers in float ({names}); raise max_fallback_layers/max_metric_drop or turn "
                  f"export.quantize off")
    return GuardResult(ok, reason, "mAP@2m", fp32_map, fp32_map - drop, initial, drop, budget, kept, sens, steps,
                       final, {"guard": [s.token for s in guard_samples], "calibration": list(calib.tokens)})


def _node_names(path: Path) -> set[str]:
    return {n.name for n in onnx.load(str(path), load_external_data=False).graph.node}


# --------------------------------------------------------------------------------------------- the whole step
def quantize_with_guard(fp32_paths: dict[str, Path], out_dir: Path, model_cfg: CenterPointModelConfig,
                        data: DataConfig, q: QuantizeConfig, cache_dir: Path, ev: EvaluateConfig | None = None,
                        evaluation_samples: Sequence | None = None) -> GuardResult:
    """Calibration frames (checked disjoint from `evaluation_samples`) -> calibration tensors -> guard -> files.

    The result's `pair.recipe` (and `pair.recipe_hash`) go into the manifest and the TensorRT engine cache key;
    `ok` False is the export's exit 1 with `reason`."""
    source = qz.calibration_source(data, q)
    samples = qz.calibration_samples(source, cache_dir, model_cfg.class_names)
    if evaluation_samples is not None:
        qz.check_disjoint(samples, evaluation_samples)
    calib_samples, guard_samples = samples[:q.calibration_frames], samples[q.calibration_frames:]
    pipe = qz._fp32_pipeline(model_cfg, fp32_paths["encoder"], fp32_paths["head"])
    calib = qz.collect_calibration(pipe, calib_samples, source)
    return guard(fp32_paths, out_dir, model_cfg, q, calib, guard_samples or calib_samples, ev)
