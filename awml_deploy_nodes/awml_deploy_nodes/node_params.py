"""Parameters of the model nodes: one table per node (name, default, description), one validation function each.

``centerpoint_node``'s table is here (:data:`PARAMS`, :func:`validate`); the parts every model node shares (where
the model comes from, backend, threshold, budget, diagnostics: :func:`model_params`, :func:`runtime_params`,
:func:`validate_shared`) are used by ``yolox_params`` too, so both nodes take the same names with the same meaning.
``calibration_status_params`` (a classifier: no score threshold, no Autoware objects) takes the model-source part
(:func:`model_source_params`, :func:`validate_model_source`, :class:`ModelSourceParams`) and
:data:`DIAGNOSTICS_PERIOD`.

Pure Python (no rclpy import), so tests and the launch-file checks can read the table without a ROS
context. The node declares every entry with a ``ParameterDescriptor`` built from it (read-only: the node
is configured at start-up and never reconfigured) and passes the values to :func:`validate`, which
raises :class:`ParamError` with ONE line naming the parameter, the value and what is allowed.

Types are checked here rather than by rclpy (the descriptors are declared with ``dynamic_typing``), so
that ``processing_time_budget_ms:=100`` (an integer) is accepted for a double parameter and a wrong type
gives the same one-line message on Humble and newer distributions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from awml_deploy_core.config import BACKENDS, CENTERPOINT_CLASSES
from awml_deploy_core.errors import ConfigError

# export.tensorrt.precision policies (awml_deploy_core.config.TensorRTConfig); the engines of a bundle are
# built with one of them and the node checks that they are the ones asked for.
TRT_PRECISIONS = ("auto", "fp16", "fp32_tf32", "strongly_typed", "int8")
DEFAULT_CLASS_NAMES = tuple(CENTERPOINT_CLASSES)  # the classes of the default (shipped) model
DEFAULT_MAX_POINTS = 2_000_000  # == conversions.DEFAULT_MAX_POINTS (not imported: that module imports ROS messages)
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


class ParamError(ConfigError):
    """A node parameter is wrong; the message is one line."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    constraints: str = ""


def declare_read_only(node: Any, specs: tuple[ParamSpec, ...], dynamic_typing: bool = False) -> dict[str, Any]:
    """Declare every spec as a described, read-only parameter and return {name: value}."""
    from rcl_interfaces.msg import ParameterDescriptor

    from rclpy.exceptions import ParameterException

    from .startup import cli_overrides

    cli = cli_overrides()
    values = {}
    for spec in specs:
        desc = ParameterDescriptor(name=spec.name, description=spec.description, read_only=True,
                                   additional_constraints=spec.constraints, dynamic_typing=dynamic_typing)
        try:
            node.declare_parameter(spec.name, spec.default, desc)
        except ParameterException as e:  # rclpy refused the type itself (statically typed parameters)
            got = node._parameter_overrides.get(spec.name)
            raise _fail(spec.name, f"must be {_type_name(spec.default)}", getattr(got, "value", e)) from None
        value = node.get_parameter(spec.name).value
        if spec.name in cli and not _same_value(cli[spec.name], value):
            # rcl keeps a params file's value when a -p of another type names the same parameter: refuse it.
            if not dynamic_typing:
                raise _fail(spec.name, f"must be {_type_name(spec.default)} (from -p)", cli[spec.name])
            value = cli[spec.name]  # validate() refuses it by name
        values[spec.name] = value
    return values


def _type_name(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, (list, tuple)):
        return "a list"
    return "a string"


def _same_value(a: Any, b: Any) -> bool:
    """A -p value (YAML-parsed) and the value rclpy reports are the same parameter value."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    numbers = (int, float)
    if (isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool)
            and not isinstance(b, bool)):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


def model_source_params(default_checkpoint: str, graphs: str) -> tuple[ParamSpec, ...]:
    """Where the model comes from and what runs it (bundle_dir .. precision): every model node's, in table order.

    ``default_checkpoint`` is named in the 'checkpoint' description; ``graphs`` says what the backend runs.
    """
    return (
        ParamSpec("bundle_dir", "",
                  "Export bundle folder (manifest.json from `awml-deploy export`): model config, ONNX graphs, TensorRT "
                  "engines and the checkpoint it was exported from. Artifacts are sha256-checked before use.",
                  "empty, or a folder holding manifest.json; exclusive with 'config'"),
        ParamSpec("config", "",
                  "Deploy config YAML (the `awml-deploy export` config) used when bundle_dir is empty: model "
                  "geometry, post-processing, checkpoint, onnxruntime settings.",
                  "empty, or a YAML file; exclusive with 'bundle_dir'"),
        ParamSpec("checkpoint", "",
                  "Checkpoint path or package:// URI. Overrides the one of 'config'/'bundle_dir'; alone, the model "
                  "config stored in the checkpoint is used. All of bundle_dir, config and checkpoint empty: the "
                  f"shipped {default_checkpoint}."),
        ParamSpec("onnx_cache_dir", "",
                  "Where ONNX graphs exported on the fly go (backend onnxruntime without bundle_dir). Reused while "
                  "the checkpoint and model config are unchanged. Empty: $XDG_CACHE_HOME (or ~/.cache)/awml_deploy/"
                  "onnx/."),
        ParamSpec("backend", "onnxruntime", f"Inference backend running the {graphs}.",
                  "one of " + ", ".join(BACKENDS)),
        ParamSpec("device", "", "Torch device of pre/post-processing (and of the graphs for pytorch/tensorrt). "
                  "Empty: the config's device (cpu by default; cuda for tensorrt).", "empty, cpu, cuda or cuda:N"),
        ParamSpec("precision", "fp16",
                  "TensorRT precision policy the bundle's engines must have been built with (checked against the "
                  "manifest). Ignored by pytorch and onnxruntime, which run fp32.",
                  "one of " + ", ".join(TRT_PRECISIONS)),
    )


def model_params(default_checkpoint: str, graphs: str) -> tuple[ParamSpec, ...]:
    """:func:`model_source_params` and the detectors' score threshold, in table order."""
    return (
        *model_source_params(default_checkpoint, graphs),
        ParamSpec("score_threshold", -1.0,
                  "Detections scoring below this are dropped (replaces the model's score_threshold and per-class "
                  "thresholds). Negative: keep the model config's thresholds.", "< 0 or in [0, 1]"),
    )


DIAGNOSTICS_PERIOD = ParamSpec("diagnostics_period_s", 1.0, "Period of the /diagnostics status.", "> 0")


def runtime_params(size_limit: ParamSpec, autoware_output: str) -> tuple[ParamSpec, ...]:
    """The run-time parameters every model node shares: budget, the node's input size limit, Autoware output
    (``autoware_output``: its description), diagnostics period."""
    return (
        ParamSpec("processing_time_budget_ms", 100.0,
                  "Per-frame processing budget (input taken -> detections published); /diagnostics warns above it.",
                  "> 0"),
        size_limit,
        ParamSpec("publish_autoware_objects", False, autoware_output),
        DIAGNOSTICS_PERIOD,
    )


_CENTERPOINT_MODEL = model_params("package://awml_deploy_core/checkpoints/centerpoint_small.pth",
                                  "two CenterPoint graphs")
PARAMS: tuple[ParamSpec, ...] = (
    *_CENTERPOINT_MODEL,
    ParamSpec("class_names", list(DEFAULT_CLASS_NAMES),
              "Names of the model's classes, in output order; they map to Autoware labels (case-insensitive: car, "
              "truck, bus, trailer, motorcycle/motorbike, bicycle, pedestrian; others -> UNKNOWN).",
              "as many non-empty names as the model has classes"),
    ParamSpec("frame_id", "",
              "Output frame_id. Empty: the input cloud's frame_id. Only relabels the header; no TF transform is "
              "applied."),
    *runtime_params(ParamSpec("max_points", DEFAULT_MAX_POINTS,
                              "Clouds with more points (width x height) are dropped as malformed (too_many_points).",
                              ">= 1"),
                   "Also publish autoware_perception_msgs/DetectedObjects on ~/output/autoware_objects (needs "
                   "autoware_perception_msgs importable; start-up fails otherwise)."),
)
PARAM_NAMES = tuple(p.name for p in PARAMS)
DEFAULTS = {p.name: p.default for p in PARAMS}


@dataclass(frozen=True)
class ModelSourceParams:
    """The values of :func:`model_source_params` (:func:`validate_model_source`); every node's parameters start
    with them."""

    bundle_dir: str
    config: str
    checkpoint: str
    onnx_cache_dir: str
    backend: str
    device: str
    precision: str


@dataclass(frozen=True)
class NodeParams(ModelSourceParams):
    score_threshold: float | None  # None: the model config's thresholds
    class_names: tuple[str, ...]
    frame_id: str
    processing_time_budget_ms: float
    max_points: int
    publish_autoware_objects: bool
    diagnostics_period_s: float


def _fail(name: str, what: str, value: Any) -> ParamError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ParamError(f"parameter '{name}': {what} (got {shown})")


def _string(values: dict[str, Any], name: str) -> str:
    v = values[name]
    if not isinstance(v, str):
        raise _fail(name, "must be a string", v)
    return v.strip()


def _number(values: dict[str, Any], name: str) -> float:
    v = values[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(name, "must be a number", v)
    v = float(v)
    if not math.isfinite(v):
        raise _fail(name, "must be finite", v)
    return v


def check_names(values: dict[str, Any], names: tuple[str, ...]) -> None:
    """Overrides that name no declared parameter are typos: one line listing the known names."""
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ParamError(f"unknown parameter(s) {unknown}; known: {', '.join(names)}")


def _positive_int(values: dict[str, Any], name: str) -> int:
    v = values[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _fail(name, "must be an integer >= 1", v)
    return int(v)


def _bool(values: dict[str, Any], name: str) -> bool:
    v = values[name]
    if not isinstance(v, bool):
        raise _fail(name, "must be true or false", v)
    return v


def _positive(values: dict[str, Any], name: str) -> float:
    v = _number(values, name)
    if v <= 0:
        raise _fail(name, "must be > 0", v)
    return v


def validate_model_source(values: dict[str, Any]) -> dict[str, Any]:
    """The parameters of :func:`model_source_params`, checked and converted: {name: value}."""
    bundle_dir, config = _string(values, "bundle_dir"), _string(values, "config")
    if bundle_dir and config:
        raise ParamError("parameters 'bundle_dir' and 'config' are exclusive: a bundle carries its own config "
                         f"(got bundle_dir={bundle_dir!r}, config={config!r})")
    backend = _string(values, "backend")
    if backend not in BACKENDS:
        raise _fail("backend", f"must be one of {', '.join(BACKENDS)}", backend)
    device = _string(values, "device")
    if device and not _DEVICE.match(device):
        raise _fail("device", "must be empty, cpu, cuda or cuda:N", device)
    if backend == "tensorrt" and device == "cpu":
        raise _fail("device", "the tensorrt backend runs on CUDA; use cuda, cuda:N or leave it empty", device)
    precision = _string(values, "precision")
    if precision not in TRT_PRECISIONS:
        raise _fail("precision", f"must be one of {', '.join(TRT_PRECISIONS)}", precision)
    return dict(bundle_dir=bundle_dir, config=config, checkpoint=_string(values, "checkpoint"),
                onnx_cache_dir=_string(values, "onnx_cache_dir"), backend=backend, device=device, precision=precision)


def probability_or_default(values: dict[str, Any], name: str) -> float | None:
    """A threshold parameter: negative -> None (the model config's), else a value in [0, 1]."""
    v = _number(values, name)
    if v > 1.0:
        raise _fail(name, "must be negative (model default) or in [0, 1]", v)
    return None if v < 0 else v


def validate_shared(values: dict[str, Any]) -> dict[str, Any]:
    """The parameters of :func:`model_params` and :func:`runtime_params` (but the size limit) of a model node,
    checked and converted: {name: value} for the node's own parameter dataclass. ``values`` holds every name."""
    return dict(
        **validate_model_source(values),
        score_threshold=probability_or_default(values, "score_threshold"),
        processing_time_budget_ms=_positive(values, "processing_time_budget_ms"),
        publish_autoware_objects=_bool(values, "publish_autoware_objects"),
        diagnostics_period_s=_positive(values, "diagnostics_period_s"),
    )


def validate(values: dict[str, Any]) -> NodeParams:
    """Check every parameter (missing names take their defaults); raise ParamError with one line."""
    check_names(values, PARAM_NAMES)
    values = {**DEFAULTS, **values}
    shared = validate_shared(values)
    names = values["class_names"]
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise _fail("class_names", "must be a list of strings", names)
    names = tuple(n.strip() for n in names)
    if not names or any(not n for n in names):
        raise _fail("class_names", "must be a non-empty list of non-empty names", list(names))
    if len(set(names)) != len(names):
        raise _fail("class_names", "has duplicates", list(names))
    return NodeParams(**shared, class_names=names, frame_id=_string(values, "frame_id"),
                      max_points=_positive_int(values, "max_points"))
