"""Backends behind one tiny interface (``GraphRunner``): torch here; onnxruntime and tensorrt alongside."""

from .base import CenterPointRunners, GraphRunner

__all__ = ["CenterPointRunners", "GraphRunner"]
