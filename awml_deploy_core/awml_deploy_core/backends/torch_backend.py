"""PyTorch backend: runs the family's export wrappers themselves (eval mode, inference mode)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .base import GraphRunner, TensorSpec


class TorchGraphRunner(GraphRunner):
    def __init__(self, module: nn.Module, name: str, inputs: tuple[TensorSpec, ...], output_names: tuple[str, ...],
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.module: nn.Module | None = module.to(self.device).eval()
        self.name = name
        self.inputs = tuple(inputs)
        self.output_names = tuple(output_names)

    def _infer_impl(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        args = [inputs[n].to(self.device) for n in self.input_names]
        with torch.inference_mode():
            out = self.module(*args)
        if isinstance(out, torch.Tensor):
            out = (out,)
        return dict(zip(self.output_names, out))

    def _release(self) -> None:
        self.module = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
