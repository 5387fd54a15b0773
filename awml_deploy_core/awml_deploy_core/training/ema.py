"""Exponential moving average of a model's weights (the trainers ship the EMA model)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model for floating-point state; integer buffers (BatchNorm's batch count)
    are copied."""
    for pe, pm in zip(ema.state_dict().values(), model.state_dict().values()):
        if pe.dtype.is_floating_point:
            pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
        else:
            pe.copy_(pm)
