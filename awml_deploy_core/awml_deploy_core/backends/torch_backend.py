"""PyTorch backend: runs the export wrappers themselves (eval mode, inference mode)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..models.centerpoint import BackboneNeckHeadGraph, CenterPoint, VoxelEncoderGraph
from .base import CenterPointRunners


class TorchGraphRunner:
    def __init__(
        self,
        module: nn.Module,
        name: str,
        input_names: tuple[str, ...],
        output_names: tuple[str, ...],
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.name = name
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(f"{self.name}: missing inputs {missing}; expected {list(self.input_names)}")
        args = [inputs[n].to(self.device) for n in self.input_names]
        with torch.inference_mode():
            out = self.module(*args)
        if isinstance(out, torch.Tensor):
            out = (out,)
        return dict(zip(self.output_names, out))


def torch_runners(model: CenterPoint, device: str | torch.device = "cpu") -> CenterPointRunners:
    model = model.to(torch.device(device)).eval()
    enc = VoxelEncoderGraph(model)
    head = BackboneNeckHeadGraph(model)
    return CenterPointRunners(
        encoder=TorchGraphRunner(enc, "pytorch:pts_voxel_encoder", enc.input_names, enc.output_names, device),
        head=TorchGraphRunner(head, "pytorch:pts_backbone_neck_head", head.input_names, head.output_names, device),
    )
