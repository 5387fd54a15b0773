"""The calibration-status classifier: a ResNet18-style network with a 5-channel stem (R, G, B, lidar depth, lidar
intensity) and a linear head -> 2 logits [miscalibrated, calibrated] (AWML CalibrationStatusClassification).

Parameter names follow mmpretrain's ImageClassifier (``backbone.conv1``, ``backbone.bn1``,
``backbone.layer1.0.conv1`` ... ``backbone.layer4.1.bn2``, ``downsample.0/1``, ``head.fc``); torchvision's
ResNet names (no ``backbone.`` prefix, ``fc``) are read too. Width: ``base_channels`` * (1, 2, 4, 8); torchvision's
ResNet18 is 64, the small default 32.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import CalibrationStatusModelConfig

INPUT_NAMES = ("input",)
OUTPUT_NAMES = ("output",)
IN_CHANNELS = 5


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + idt)


class ResNet(nn.Module):
    def __init__(self, in_channels: int, base: int, blocks: list[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = base
        for i, n in enumerate(blocks):
            cout = base * 2 ** i
            layers = [BasicBlock(cin, cout, 1 if i == 0 else 2)] + [BasicBlock(cout, cout, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            cin = cout
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class LinearHead(nn.Module):
    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(feats, 1), 1))


class CalibrationStatusClassifier(nn.Module):
    """[B, 5, H, W] (any H, W >= 32) -> logits [B, 2] = [miscalibrated, calibrated]."""

    def __init__(self, cfg: CalibrationStatusModelConfig) -> None:
        super().__init__()
        self.backbone = ResNet(IN_CHANNELS, cfg.base_channels, list(cfg.stage_blocks))
        self.head = LinearHead(self.backbone.out_channels, len(cfg.class_names))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_calibration_status(cfg: CalibrationStatusModelConfig) -> CalibrationStatusClassifier:
    """Kaiming-initialised convolutions, BatchNorm at 1/0 and the last BN of each block at 0 (a block starts as the
    identity), as torchvision's zero_init_residual."""
    model = CalibrationStatusClassifier(cfg)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    for m in model.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
    return model


def mmpretrain_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ResNet keys (``conv1.weight``, ``fc.bias``) -> mmpretrain's (``backbone.conv1.weight``,
    ``head.fc.bias``); keys already in mmpretrain form are kept."""
    if any(k.startswith(("backbone.", "head.")) for k in sd):
        return dict(sd)
    return {(f"head.{k}" if k.startswith("fc.") else f"backbone.{k}"): v for k, v in sd.items()}


def load_calibration_checkpoint(path: str | Path, cfg: CalibrationStatusModelConfig | None = None,
                                map_location: str | torch.device = "cpu"
                                ) -> tuple[CalibrationStatusClassifier, CalibrationStatusModelConfig]:
    """Build the classifier (from ``cfg`` or the checkpoint's ``model_config``) and load the weights strictly by
    name (our checkpoints, mmpretrain/AWML ones, or torchvision ResNet keys)."""
    from .checkpoint import load_weights

    def ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return mmpretrain_names({k: v for k, v in sd.items() if not k.startswith("data_preprocessor.")})

    return load_weights(path, cfg, CalibrationStatusModelConfig, build_calibration_status, map_location, ours)
