"""The one interface every backend implements: a named graph that maps named tensors to named tensors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class GraphRunner(Protocol):
    """One exported graph on one backend.

    ``__call__`` takes the graph inputs by name and returns every output by name, in ``output_names`` order.
    Inputs arrive as torch tensors on the pipeline's device; outputs may come back on any device (the
    pipeline moves them).
    """

    name: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


@dataclass
class CenterPointRunners:
    encoder: GraphRunner  # input_features -> pillar_features
    head: GraphRunner  # spatial_features -> heatmap, reg, height, dim, rot, vel
