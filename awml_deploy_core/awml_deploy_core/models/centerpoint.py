"""CenterPoint (pillars) in plain PyTorch, with mmdet3d / AWML module and parameter names.

The attribute tree mirrors mmdet3d's ``CenterPoint`` as configured by AWML's T4 configs, so an AWML
state dict maps onto it key for key:

- ``pts_voxel_encoder``  PillarFeatureNet: ``pfn_layers.N.linear`` (no bias) + ``pfn_layers.N.norm``
  (BN1d eps 1e-3, momentum 0.01), ReLU, max over the points of a pillar. A layer that is not the last
  outputs half its channels and concatenates them with their pillar max (mmdet3d ``PFNLayer``).
- ``pts_middle_encoder`` PointPillarsScatter (no parameters).
- ``pts_backbone``       SECOND: ``blocks.i`` = Sequential(conv3x3/stride, BN, ReLU, [conv3x3, BN, ReLU] x n).
- ``pts_neck``           SECONDFPN: ``deblocks.i`` = Sequential(deconv or conv, BN, ReLU), concatenated.
  A stride-1 branch uses a 1x1 Conv2d (AWML sets ``use_conv_for_no_stride=True``).
- ``pts_bbox_head``      CenterHead: ``shared_conv.{conv,bn}`` (3x3, BN2d) and one task
  ``task_heads.0.{heatmap,reg,height,dim,rot,vel}``, each Sequential(ConvModule(k, BN2d, ReLU), Conv2d(k, bias)),
  k = ``final_kernel`` = 1 as in AWML's configs (``separate_head=dict(final_kernel=1)``).

Raw head outputs (training, ``CenterPoint.forward_head``) follow mmdet3d v1: ``reg`` = sub-cell offset
(x, y); ``height`` = z of the box's gravity centre; ``dim`` = log(l, w, h); ``rot`` = (sin yaw, cos yaw),
yaw counter-clockwise from +x; ``vel`` = (vx, vy).

The export graph ``BackboneNeckHeadGraph`` instead emits what Autoware's decoder reads (AWML exports the
same with ``--rot_y_axis_reference``; see ``to_autoware_head_outputs``):
- autoware lidar_centerpoint ``lib/postprocess/postprocess_kernel.cu`` (generateBoxes3D_kernel):
  score = sigmoid(heatmap) (logits out of the graph), label = argmax over classes;
  x = voxel_x * downsample * (xi + reg[0]) + range_min_x (no +0.5), y likewise with reg[1];
  z = height as is (used as the object's centre position: no h/2 is added anywhere);
  width = exp(dim[0]), length = exp(dim[1]), height = exp(dim[2])  -> channel order (w, l, h);
  yaw = atan2(rot[0], rot[1]); vel = (vel[0], vel[1]).
- autoware ``lib/ros_utils.cpp`` (box3DToDetectedObject): ROS yaw = -yaw - pi/2 ("mmdet3d yaw format").
  For that to equal our CCW-from-+x yaw t, the graph must output rot = (-cos t, -sin t).
- autoware ``lib/network/network_trt.cpp``: encoder output profile is Dims2(max_voxels, C) -> the graph
  outputs ``pillar_features`` as [num_voxels, C]; ``lib/network/scatter_kernel.cu`` reads it as
  ``pillar_features[C * pillar + c]`` (AWML's own [V, 1, C] export has the same memory layout).
- Head input [batch, C, grid_y, grid_x], outputs [batch, N, grid_y / f, grid_x / f] (network_trt.cpp).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import CenterPointModelConfig

HEAD_OUTPUT_NAMES: tuple[str, ...] = ("heatmap", "reg", "height", "dim", "rot", "vel")
ENCODER_INPUT_NAMES: tuple[str, ...] = ("input_features",)
ENCODER_OUTPUT_NAMES: tuple[str, ...] = ("pillar_features",)
HEAD_INPUT_NAMES: tuple[str, ...] = ("spatial_features",)

# Separate-head layout (channels, number of convs), as in AWML's default/second_secfpn_base.py.
COMMON_HEADS: dict[str, tuple[int, int]] = {"reg": (2, 2), "height": (1, 2), "dim": (3, 2), "rot": (2, 2), "vel": (2, 2)}
NUM_HEATMAP_CONVS = 2
HEAD_FINAL_KERNEL = 1
HEATMAP_INIT_BIAS = -2.19  # sigmoid(-2.19) ~= 0.1, CenterNet/mmdet3d default

_BN1D = {"eps": 1e-3, "momentum": 0.01}
_BN2D_BACKBONE = {"eps": 1e-3, "momentum": 0.01}
_BN2D_HEAD = {"eps": 1e-5, "momentum": 0.1}  # mmdet3d CenterHead norm_cfg=dict(type='BN2d') defaults


# --------------------------------------------------------------------------------------- encoder
class PFNLayer(nn.Module):
    """mmdet3d PFNLayer (mode 'max'): linear (no bias) -> BN1d -> ReLU -> max over points."""

    def __init__(self, in_channels: int, out_channels: int, last_layer: bool) -> None:
        super().__init__()
        self.last_vfe = last_layer
        units = out_channels if last_layer else out_channels // 2
        self.units = units
        self.linear = nn.Linear(in_channels, units, bias=False)
        self.norm = nn.BatchNorm1d(units, **_BN1D)

    # Eval (and export): BatchNorm folded into the linear layer. BatchNorm1d wants channels in dim 1, so the
    # unfolded path permutes (V, P, C) twice and makes it contiguous: most of the encoder's CPU time (measured
    # 288 ms for 20k pillars; `awml-deploy bench --only encoder` compares both). PillarFeatureNet runs the folded
    # layers together (_folded_forward). Training keeps the real BatchNorm (batch statistics, running-stat updates);
    # parameters and state_dict keys are those of Linear + BatchNorm1d, so checkpoints load unchanged.
    fold_bn: bool = True

    def folded(self) -> tuple[Tensor, Tensor]:
        """(weight, bias) of linear followed by the eval-mode BatchNorm: one affine map."""
        n = self.norm
        scale = n.weight / torch.sqrt(n.running_var + n.eps)
        return self.linear.weight * scale[:, None], n.bias - n.running_mean * scale

    def forward(self, inputs: Tensor) -> Tensor:  # (V, P, C_in)
        if self.fold_bn and not self.training and self.norm.track_running_stats:
            weight, bias = self.folded()
            x = nn.functional.linear(inputs, weight, bias)
        else:
            x = self.linear(inputs)
            x = self.norm(x.permute(0, 2, 1).contiguous()).permute(0, 2, 1).contiguous()
        x = torch.relu(x)
        x_max = torch.max(x, dim=1, keepdim=True)[0]
        if self.last_vfe:
            return x_max
        return torch.cat([x, x_max.expand(-1, inputs.shape[1], -1)], dim=2)


class PillarFeatureNet(nn.Module):
    """Runs the PFN layers on decorated point features (V, P, F) -> pillar features (V, C).

    Padded point slots arrive as zeros and take part in the max, as in mmdet3d and Autoware's encoder.
    """

    def __init__(self, in_channels: int, feat_channels: list[int]) -> None:
        super().__init__()
        chans = [in_channels, *feat_channels]
        self.pfn_layers = nn.ModuleList(
            PFNLayer(chans[i], chans[i + 1], last_layer=(i == len(chans) - 2)) for i in range(len(chans) - 1)
        )

    def forward(self, features: Tensor) -> Tensor:
        layers = list(self.pfn_layers)
        if all(p.fold_bn and not p.training and p.norm.track_running_stats for p in layers):
            return self._folded_forward(features, layers)
        for pfn in layers:
            features = pfn(features)
        return features.squeeze(1)

    @staticmethod
    def _folded_forward(x: Tensor, layers: list[PFNLayer]) -> Tensor:
        """Eval: the layers with BatchNorm folded (see ``folded_pfn``)."""
        return folded_pfn(x, folded_weights(layers))


def folded_weights(layers: list[PFNLayer]) -> list[tuple[Tensor, Tensor | None, Tensor]]:
    """Per layer (W_a, W_b, bias) of linear + eval BatchNorm: W_a multiplies the point features, W_b the pillar-wide
    max of the previous layer (None for the first layer)."""
    out: list[tuple[Tensor, Tensor | None, Tensor]] = []
    k = None
    for pfn in layers:
        weight, bias = pfn.folded()
        out.append((weight, None, bias) if k is None else (weight[:, :k], weight[:, k:], bias))
        k = pfn.units
    return out


def folded_pfn(x: Tensor, weights: list[tuple[Tensor, Tensor | None, Tensor]]) -> Tensor:
    """The PFN layers with BatchNorm folded, without building the (V, P, 2C) concatenations.

    A layer's input cat([x, x_max]) times W is x W_a + x_max W_b (the pillar-wide term added by broadcast), and the
    last layer takes the max before the ReLU (they commute). Same values within fp32 rounding.
    """
    x_max: Tensor | None = None
    for i, (w_a, w_b, bias) in enumerate(weights):
        y = nn.functional.linear(x, w_a, bias)
        if w_b is not None:
            y = y + nn.functional.linear(x_max, w_b)
        if i == len(weights) - 1:
            return torch.relu(torch.amax(y, dim=1))  # amax: no argmax indices computed
        x = torch.relu(y)
        x_max = torch.amax(x, dim=1, keepdim=True)
    raise ValueError("PillarFeatureNet has no layers")


class FoldedPillarFeatureNet(nn.Module):
    """The inference and export form of a PillarFeatureNet: its folded weights taken once as buffers, so the ONNX
    graph carries them as initializers (what Q/DQ quantizers and TensorRT need on a MatMul's weight input) whatever
    the exporter's constant folding does. Built from an eval-mode encoder; it does not follow later weight changes."""

    def __init__(self, encoder: PillarFeatureNet) -> None:
        super().__init__()
        with torch.no_grad():
            weights = folded_weights(list(encoder.pfn_layers))
        self.num_layers = len(weights)
        for i, (w_a, w_b, bias) in enumerate(weights):
            self.register_buffer(f"w{i}_a", w_a.detach().clone())
            self.register_buffer(f"w{i}_b", None if w_b is None else w_b.detach().clone())
            self.register_buffer(f"b{i}", bias.detach().clone())

    def forward(self, features: Tensor) -> Tensor:
        weights = [(getattr(self, f"w{i}_a"), getattr(self, f"w{i}_b"), getattr(self, f"b{i}"))
                   for i in range(self.num_layers)]
        return folded_pfn(features, weights)


class PointPillarsScatter(nn.Module):
    """Pillar features -> dense BEV canvas [B, C, grid_y, grid_x] (index_put, no accumulation)."""

    def __init__(self, in_channels: int, grid_x: int, grid_y: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.nx = grid_x
        self.ny = grid_y

    def forward(self, pillar_features: Tensor, coords: Tensor, batch_size: int = 1) -> Tensor:
        """coords: (V, 2) as (y, x) for one sample, or (V, 3) as (batch, y, x)."""
        return scatter_pillars(pillar_features, coords, self.nx, self.ny, batch_size)


def scatter_pillars(pillar_features: Tensor, coords: Tensor, grid_x: int, grid_y: int, batch_size: int = 1,
                    spare_cell: bool = False) -> Tensor:
    """Place each pillar's feature vector at its cell. Coordinates are unique per sample, so the result
    does not depend on write order (deterministic on every device). ``spare_cell``: rows whose cell is
    (grid_y, 0), i.e. index grid_y * grid_x (padding rows of a fixed-size pillar batch), go to one extra cell
    that is cut off."""
    c = pillar_features.shape[-1]
    cells = grid_y * grid_x
    canvas = pillar_features.new_zeros(batch_size, cells + int(spare_cell), c)
    if coords.shape[0]:
        coords = coords.long()
        if coords.shape[1] == 3:
            b, y, x = coords[:, 0], coords[:, 1], coords[:, 2]
        else:
            b = torch.zeros_like(coords[:, 0])
            y, x = coords[:, 0], coords[:, 1]
        canvas.index_put_((b, y * grid_x + x), pillar_features.reshape(-1, c))
    return canvas[:, :cells].permute(0, 2, 1).reshape(batch_size, c, grid_y, grid_x)


# -------------------------------------------------------------------------------- backbone, neck
class SECOND(nn.Module):
    def __init__(self, in_channels: int, out_channels: list[int], layer_nums: list[int], layer_strides: list[int]) -> None:
        super().__init__()
        in_filters = [in_channels, *out_channels[:-1]]
        blocks = []
        for i, n in enumerate(layer_nums):
            layers: list[nn.Module] = [
                nn.Conv2d(in_filters[i], out_channels[i], 3, stride=layer_strides[i], padding=1, bias=False),
                nn.BatchNorm2d(out_channels[i], **_BN2D_BACKBONE),
                nn.ReLU(inplace=True),
            ]
            for _ in range(n):
                layers += [
                    nn.Conv2d(out_channels[i], out_channels[i], 3, padding=1, bias=False),
                    nn.BatchNorm2d(out_channels[i], **_BN2D_BACKBONE),
                    nn.ReLU(inplace=True),
                ]
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs


class SECONDFPN(nn.Module):
    def __init__(self, in_channels: list[int], out_channels: list[int], upsample_strides: list[float]) -> None:
        super().__init__()
        deblocks = []
        for i, stride in enumerate(upsample_strides):
            if stride > 1:
                s = int(round(stride))
                up: nn.Module = nn.ConvTranspose2d(in_channels[i], out_channels[i], s, stride=s, bias=False)
            else:  # stride 1 (use_conv_for_no_stride=True) or a fractional stride: strided conv
                s = int(round(1 / stride))
                up = nn.Conv2d(in_channels[i], out_channels[i], s, stride=s, bias=False)
            deblocks.append(nn.Sequential(up, nn.BatchNorm2d(out_channels[i], **_BN2D_BACKBONE), nn.ReLU(inplace=True)))
        self.deblocks = nn.ModuleList(deblocks)

    def forward(self, xs: list[Tensor]) -> Tensor:
        ups = [deblock(x) for deblock, x in zip(self.deblocks, xs)]
        return torch.cat(ups, dim=1) if len(ups) > 1 else ups[0]


# ------------------------------------------------------------------------------------------ head
class ConvModule(nn.Module):
    """mmcv ConvModule subset: ``conv`` (no bias) -> ``bn`` -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, **_BN2D_HEAD)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x)))


class SeparateHead(nn.Module):
    def __init__(self, in_channels: int, heads: dict[str, tuple[int, int]], head_conv: int, final_kernel: int) -> None:
        super().__init__()
        self.heads = dict(heads)
        for name, (classes, num_conv) in heads.items():
            layers: list[nn.Module] = []
            c_in = in_channels
            for _ in range(num_conv - 1):
                layers.append(ConvModule(c_in, head_conv, final_kernel))
                c_in = head_conv
            layers.append(nn.Conv2d(c_in, classes, final_kernel, padding=final_kernel // 2, bias=True))
            setattr(self, name, nn.Sequential(*layers))
        if "heatmap" in heads:
            nn.init.constant_(self.heatmap[-1].bias, HEATMAP_INIT_BIAS)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {name: getattr(self, name)(x) for name in self.heads}


class CenterHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, share_conv_channel: int, head_conv: int, with_velocity: bool) -> None:
        super().__init__()
        self.shared_conv = ConvModule(in_channels, share_conv_channel, 3)
        heads = {"heatmap": (num_classes, NUM_HEATMAP_CONVS)}
        heads.update({k: v for k, v in COMMON_HEADS.items() if with_velocity or k != "vel"})
        self.task_heads = nn.ModuleList([SeparateHead(share_conv_channel, heads, head_conv, HEAD_FINAL_KERNEL)])

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.task_heads[0](self.shared_conv(x))


# ------------------------------------------------------------------------------------- detector
class CenterPoint(nn.Module):
    def __init__(self, cfg: CenterPointModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        gx, gy = cfg.grid_size
        self.pts_voxel_encoder = PillarFeatureNet(cfg.encoder_in_features, list(cfg.encoder_channels))
        self.pts_middle_encoder = PointPillarsScatter(cfg.pillar_channels, gx, gy)
        self.pts_backbone = SECOND(
            cfg.pillar_channels, list(cfg.backbone_out_channels), list(cfg.backbone_layer_nums), list(cfg.backbone_layer_strides)
        )
        self.pts_neck = SECONDFPN(list(cfg.backbone_out_channels), list(cfg.neck_out_channels), list(cfg.neck_upsample_strides))
        self.pts_bbox_head = CenterHead(
            sum(cfg.neck_out_channels), len(cfg.class_names), cfg.head_shared_channels, cfg.head_conv_channels, cfg.with_velocity
        )

    def forward_head(self, spatial_features: Tensor) -> dict[str, Tensor]:
        """Backbone + neck + head: raw outputs in mmdet3d convention (see module docstring)."""
        return self.pts_bbox_head(self.pts_neck(self.pts_backbone(spatial_features)))

    def forward(self, input_features: Tensor, coords: Tensor, batch_size: int = 1) -> dict[str, Tensor]:
        """Training / reference forward. coords (V, 3) = (batch, y, x) or (V, 2) = (y, x)."""
        pillars = self.pts_voxel_encoder(input_features)
        spatial = self.pts_middle_encoder(pillars, coords, batch_size)
        return self.forward_head(spatial)


def build_centerpoint(cfg: CenterPointModelConfig | None = None) -> CenterPoint:
    return CenterPoint(cfg or CenterPointModelConfig())


# ------------------------------------------------------------------------------ export wrappers
def to_autoware_head_outputs(raw: dict[str, Tensor]) -> tuple[Tensor, ...]:
    """mmdet3d-convention head outputs -> Autoware decoder convention, in HEAD_OUTPUT_NAMES order.

    dim (log l, w, h) -> (log w, l, h); rot (sin t, cos t) -> (-cos t, -sin t); vel zeros if absent.
    """
    dim = raw["dim"]
    rot = raw["rot"]
    dim_aw = torch.cat([dim[:, 1:2], dim[:, 0:1], dim[:, 2:3]], dim=1)
    rot_aw = torch.cat([-rot[:, 1:2], -rot[:, 0:1]], dim=1)
    vel = raw.get("vel")
    if vel is None:
        vel = torch.zeros_like(rot)
    return raw["heatmap"], raw["reg"], raw["height"], dim_aw, rot_aw, vel


def from_autoware_head_outputs(outputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of ``to_autoware_head_outputs`` (for comparing graph outputs with raw training outputs)."""
    dim, rot = outputs["dim"], outputs["rot"]
    return {
        "heatmap": outputs["heatmap"],
        "reg": outputs["reg"],
        "height": outputs["height"],
        "dim": torch.cat([dim[:, 1:2], dim[:, 0:1], dim[:, 2:3]], dim=1),
        "rot": torch.cat([-rot[:, 1:2], -rot[:, 0:1]], dim=1),
        "vel": outputs["vel"],
    }


class VoxelEncoderGraph(nn.Module):
    """``input_features`` [num_voxels, max_points_per_voxel, encoder_in_features] -> ``pillar_features`` [num_voxels, C]."""

    input_names = ENCODER_INPUT_NAMES
    output_names = ENCODER_OUTPUT_NAMES

    def __init__(self, model: CenterPoint) -> None:
        super().__init__()
        enc = model.pts_voxel_encoder
        foldable = all(p.fold_bn and p.norm.track_running_stats for p in enc.pfn_layers)
        self.pts_voxel_encoder = FoldedPillarFeatureNet(enc) if foldable else enc

    def forward(self, input_features: Tensor) -> Tensor:
        return self.pts_voxel_encoder(input_features)


class BackboneNeckHeadGraph(nn.Module):
    """``spatial_features`` [1, C, grid_y, grid_x] -> (heatmap, reg, height, dim, rot, vel), Autoware convention."""

    input_names = HEAD_INPUT_NAMES
    output_names = HEAD_OUTPUT_NAMES

    def __init__(self, model: CenterPoint) -> None:
        super().__init__()
        self.pts_backbone = model.pts_backbone
        self.pts_neck = model.pts_neck
        self.pts_bbox_head = model.pts_bbox_head

    def forward(self, spatial_features: Tensor) -> tuple[Tensor, ...]:
        raw = self.pts_bbox_head(self.pts_neck(self.pts_backbone(spatial_features)))
        return to_autoware_head_outputs(raw)


@dataclass(frozen=True)
class GraphShapes:
    """Static shapes of the two graphs for a config (num_voxels is dynamic: given here as V)."""

    input_features: tuple[int, int, int]
    pillar_features: tuple[int, int]
    spatial_features: tuple[int, int, int, int]
    head_outputs: dict[str, tuple[int, int, int, int]]


def graph_shapes(cfg: CenterPointModelConfig, num_voxels: int | None = None) -> GraphShapes:
    v = cfg.max_voxels if num_voxels is None else num_voxels
    gx, gy = cfg.grid_size
    f = cfg.out_size_factor
    ch = {"heatmap": len(cfg.class_names), "reg": 2, "height": 1, "dim": 3, "rot": 2, "vel": 2}
    return GraphShapes(
        input_features=(v, cfg.max_points_per_voxel, cfg.encoder_in_features),
        pillar_features=(v, cfg.pillar_channels),
        spatial_features=(1, cfg.pillar_channels, gy, gx),
        head_outputs={k: (1, ch[k], gy // f, gx // f) for k in HEAD_OUTPUT_NAMES},
    )
