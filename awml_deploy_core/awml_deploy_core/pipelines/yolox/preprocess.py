"""Autoware ``tensorrt_yolox``'s letterbox: resize with the aspect ratio kept, image at the top left, the rest padded
with 114; BGR, 0..255 float, no normalisation (AWML's YOLOX_opt_elan input).

Resizing is bilinear with half-pixel centres and no antialiasing (OpenCV's INTER_LINEAR rule), done in torch so
the same code runs on CPU and GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...arrays import tensor_view

PAD_VALUE = 114.0


@dataclass(frozen=True)
class Letterbox:
    """Where an image landed in the network input: ``scale`` and the resized (height, width)."""

    scale: float
    resized_hw: tuple[int, int]
    original_hw: tuple[int, int]


def letterbox_geometry(h: int, w: int, input_hw: tuple[int, int]) -> Letterbox:
    """scale = min(H/h, W/w); resized size truncated to whole pixels (Autoware's int(cols * scale))."""
    scale = min(input_hw[0] / h, input_hw[1] / w)
    rh, rw = min(int(h * scale), input_hw[0]), min(int(w * scale), input_hw[1])
    return Letterbox(scale, (max(rh, 1), max(rw, 1)), (h, w))


def letterbox(image: np.ndarray | torch.Tensor, input_hw: tuple[int, int], device: str | torch.device = "cpu",
              out: torch.Tensor | None = None) -> tuple[torch.Tensor, Letterbox]:
    """HxWx3 uint8 BGR -> [3, H, W] float32 (written into ``out`` when given) and its geometry."""
    img = (tensor_view(image) if isinstance(image, np.ndarray) else image).to(device)
    if img.dim() != 3 or img.shape[2] != 3:
        raise ValueError(f"letterbox: expected an HxWx3 image, got shape {tuple(img.shape)}")
    h, w = int(img.shape[0]), int(img.shape[1])
    geo = letterbox_geometry(h, w, input_hw)
    chw = img.permute(2, 0, 1).unsqueeze(0).float()
    if geo.resized_hw != (h, w):
        chw = F.interpolate(chw, size=geo.resized_hw, mode="bilinear", align_corners=False, antialias=False)
    if out is None:
        out = torch.empty((3, *input_hw), dtype=torch.float32, device=device)
    out.fill_(PAD_VALUE)
    out[:, : geo.resized_hw[0], : geo.resized_hw[1]] = chw[0]
    return out, geo
