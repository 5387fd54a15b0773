"""Backends behind one small interface (``GraphRunner``): pytorch, onnxruntime and tensorrt.

Which backend builds the runners of a model is decided in one place: ``awml_deploy_core.loader.select_runners``.
"""

from .base import GraphRunner, RunnerSet, TensorSpec

__all__ = ["GraphRunner", "RunnerSet", "TensorSpec"]
