"""YOLOX in plain PyTorch with mmdet/AWML parameter names, so an AWML YOLOX state dict maps by name.

backbone: CSPDarknet (``backbone.stem`` Focus, ``backbone.stage1..4``), neck: YOLOXPAFPN (``neck.reduce_layers``,
``top_down_blocks``, ``downsamples``, ``bottom_up_blocks``, ``out_convs``), head: decoupled YOLOX head
(``bbox_head.multi_level_cls_convs / reg_convs / conv_cls / conv_reg / conv_obj``).

The deployed graph (``YOLOXGraph``) is AWML's: ``images`` [B, 3, H, W] (BGR, 0..255, no normalisation) ->
``output`` [B, N, 4 + 1 + C] with raw box regression, sigmoid objectness and sigmoid class scores, levels in
stride order and each level flattened row-major. Decoding and NMS run outside the graph (pipelines/yolox).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..config import YOLOXModelConfig

INPUT_NAMES = ("images",)
OUTPUT_NAMES = ("output",)
# mmdet's YOLOX BatchNorm settings
BN_MOMENTUM, BN_EPS = 0.03, 1e-3


class ConvModule(nn.Module):
    """conv (no bias) -> bn -> SiLU, with mmcv ConvModule's names (``conv``, ``bn``)."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.activate = nn.SiLU()  # not in place: see export notes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class Focus(nn.Module):
    """Space to depth (2x2 patches into channels), then a 3x3 conv: mmdet's order tl, bl, tr, br."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvModule(cin * 4, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tl, tr = x[..., ::2, ::2], x[..., ::2, 1::2]
        bl, br = x[..., 1::2, ::2], x[..., 1::2, 1::2]
        return self.conv(torch.cat((tl, bl, tr, br), dim=1))


class DarknetBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: float = 1.0, add_identity: bool = True) -> None:
        super().__init__()
        hidden = int(cout * expansion)
        self.conv1 = ConvModule(cin, hidden, 1)
        self.conv2 = ConvModule(hidden, cout, 3)
        self.add_identity = add_identity and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    def __init__(self, cin: int, cout: int, num_blocks: int, add_identity: bool = True) -> None:
        super().__init__()
        mid = int(cout * 0.5)
        self.main_conv = ConvModule(cin, mid, 1)
        self.short_conv = ConvModule(cin, mid, 1)
        self.final_conv = ConvModule(2 * mid, cout, 1)
        self.blocks = nn.Sequential(*(DarknetBottleneck(mid, mid, 1.0, add_identity) for _ in range(num_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1))


class SPPBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        mid = cin // 2
        self.conv1 = ConvModule(cin, mid, 1)
        self.poolings = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.conv2 = ConvModule(mid * (len(kernels) + 1), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x, *(p(x) for p in self.poolings)], dim=1))


# mmdet CSPDarknet P5: (in, out, blocks, add_identity, use_spp) before widen/deepen
_P5 = ((64, 128, 3, True, False), (128, 256, 9, True, False), (256, 512, 9, True, False),
       (512, 1024, 3, False, True))


class CSPDarknet(nn.Module):
    def __init__(self, deepen: float, widen: float) -> None:
        super().__init__()
        self.stem = Focus(3, int(64 * widen))
        for i, (cin, cout, n, identity, spp) in enumerate(_P5):
            cin, cout, n = int(cin * widen), int(cout * widen), max(round(n * deepen), 1)
            layers: list[nn.Module] = [ConvModule(cin, cout, 3, 2)]
            if spp:
                layers.append(SPPBottleneck(cout, cout))
            layers.append(CSPLayer(cout, cout, n, identity))
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
        self.out_channels = [int(c * widen) for c in (256, 512, 1024)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stage2(self.stage1(self.stem(x)))
        c3 = x
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        return [c3, c4, c5]


class YOLOXPAFPN(nn.Module):
    def __init__(self, in_channels: list[int], out_channels: int, num_blocks: int) -> None:
        super().__init__()
        n = len(in_channels)
        self.reduce_layers = nn.ModuleList(ConvModule(in_channels[i], in_channels[i - 1], 1) for i in range(n - 1, 0, -1))
        self.top_down_blocks = nn.ModuleList(CSPLayer(in_channels[i - 1] * 2, in_channels[i - 1], num_blocks, False)
                                             for i in range(n - 1, 0, -1))
        self.downsamples = nn.ModuleList(ConvModule(in_channels[i], in_channels[i], 3, 2) for i in range(n - 1))
        self.bottom_up_blocks = nn.ModuleList(CSPLayer(in_channels[i] * 2, in_channels[i + 1], num_blocks, False)
                                              for i in range(n - 1))
        self.out_convs = nn.ModuleList(ConvModule(c, out_channels, 1) for c in in_channels)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(inputs)
        inner = [inputs[-1]]
        for idx in range(n - 1, 0, -1):
            high = self.reduce_layers[n - 1 - idx](inner[0])
            inner[0] = high
            inner.insert(0, self.top_down_blocks[n - 1 - idx](torch.cat((self.upsample(high), inputs[idx - 1]), 1)))
        outs = [inner[0]]
        for idx in range(n - 1):
            down = self.downsamples[idx](outs[-1])
            outs.append(self.bottom_up_blocks[idx](torch.cat((down, inner[idx + 1]), 1)))
        return [conv(o) for conv, o in zip(self.out_convs, outs)]


class YOLOXHead(nn.Module):
    """Decoupled head per level: 2 cls convs -> conv_cls; 2 reg convs -> conv_reg (4) and conv_obj (1)."""

    def __init__(self, num_classes: int, channels: int, num_levels: int = 3, stacked: int = 2) -> None:
        super().__init__()

        def tower() -> nn.Sequential:
            return nn.Sequential(*(ConvModule(channels, channels, 3) for _ in range(stacked)))

        self.multi_level_cls_convs = nn.ModuleList(tower() for _ in range(num_levels))
        self.multi_level_reg_convs = nn.ModuleList(tower() for _ in range(num_levels))
        self.multi_level_conv_cls = nn.ModuleList(nn.Conv2d(channels, num_classes, 1) for _ in range(num_levels))
        self.multi_level_conv_reg = nn.ModuleList(nn.Conv2d(channels, 4, 1) for _ in range(num_levels))
        self.multi_level_conv_obj = nn.ModuleList(nn.Conv2d(channels, 1, 1) for _ in range(num_levels))
        self.init_bias()

    def init_bias(self, prior: float = 0.01) -> None:
        """mmdet's initial bias: sigmoid(b) = prior for the class and objectness logits."""
        b = -math.log((1 - prior) / prior)
        for conv in (*self.multi_level_conv_cls, *self.multi_level_conv_obj):
            nn.init.constant_(conv.bias, b)

    def forward(self, feats: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per level (reg [B,4,h,w], obj logits [B,1,h,w], cls logits [B,C,h,w])."""
        out = []
        for i, x in enumerate(feats):
            c, r = self.multi_level_cls_convs[i](x), self.multi_level_reg_convs[i](x)
            out.append((self.multi_level_conv_reg[i](r), self.multi_level_conv_obj[i](r), self.multi_level_conv_cls[i](c)))
        return out


class YOLOX(nn.Module):
    def __init__(self, cfg: YOLOXModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = CSPDarknet(cfg.deepen_factor, cfg.widen_factor)
        chans = self.backbone.out_channels
        blocks = max(round(3 * cfg.deepen_factor), 1)
        self.neck = YOLOXPAFPN(chans, chans[0], blocks)
        self.bbox_head = YOLOXHead(cfg.num_classes, chans[0], len(cfg.strides))

    def forward_raw(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Logits per level, for training."""
        return self.bbox_head(self.neck(self.backbone(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return flatten_levels(self.forward_raw(images))


def flatten_levels(levels: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """AWML's deploy output: per anchor [reg(4), sigmoid(obj), sigmoid(cls)], levels concatenated -> [B, N, 5+C]."""
    outs = []
    for reg, obj, cls in levels:
        x = torch.cat((reg, obj.sigmoid(), cls.sigmoid()), dim=1)
        outs.append(x.flatten(2))
    return torch.cat(outs, dim=2).permute(0, 2, 1).contiguous()


class YOLOXGraph(nn.Module):
    """The exported graph: ``images`` -> ``output``."""

    def __init__(self, model: YOLOX) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def num_anchors(cfg: YOLOXModelConfig) -> int:
    """N = sum over strides of (H/s)(W/s): 18,900 at 960x960."""
    h, w = cfg.input_size
    return sum((h // s) * (w // s) for s in cfg.strides)


def build_yolox(cfg: YOLOXModelConfig) -> YOLOX:
    return YOLOX(cfg)


def load_yolox_checkpoint(path: str | Path, cfg: YOLOXModelConfig | None = None,
                          map_location: str | torch.device = "cpu") -> tuple[YOLOX, YOLOXModelConfig]:
    """Build YOLOX (from ``cfg`` or the checkpoint's ``model_config``) and load the weights strictly by name
    (our own checkpoints and mmdet/AWML ones: ``state_dict`` with ``backbone.``/``neck.``/``bbox_head.`` keys)."""
    from .checkpoint import load_weights

    def ours(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in sd.items() if not k.startswith(("ema_", "data_preprocessor."))}

    return load_weights(path, cfg, YOLOXModelConfig, build_yolox, map_location, ours)
