"""Head outputs (the export graph's Autoware convention) -> candidate boxes.

Follows Autoware lidar_centerpoint ``lib/postprocess/postprocess_kernel.cu`` (generateBoxes3D_kernel):
every cell of the output map is a candidate; its label is the argmax over classes of sigmoid(heatmap) and
its score that maximum (no 3x3 max-pool peak check: neither Autoware nor mmdet3d's CenterPoint decoder
does one; duplicates are removed by NMS). Then:
  x = voxel_x * out_size_factor * (xi + reg[0]) + range_min_x,   y likewise with reg[1] and yi
  z = height  (box gravity centre; Autoware publishes it as the object's centre, no h/2 shift)
  w, l, h = exp(dim[0]), exp(dim[1]), exp(dim[2])
  yaw = -atan2(rot[0], rot[1]) - pi/2   (``lib/ros_utils.cpp``: "mmdet3d yaw format to ros yaw format")
  vx, vy = vel[0], vel[1]
Autoware's order is kept: (1) a candidate whose rot-vector norm sqrt(rot[0]^2 + rot[1]^2) is below its class's
``nms.yaw_norm_thresholds`` value gets score 0 (the kernel keeps it when ``norm >= threshold``), (2) scores must
exceed the per-class threshold (``score > threshold``; a zeroed score never does, thresholds being >= 0),
(3) sort by score, then NMS (nms.py: circle, then IoU). The norm is taken in float32 as the kernel does.
Candidates are sorted by score (stable, so ties keep raster order) and capped at ``cfg.max_num``; centres outside
the x/y range are dropped (two steps Autoware does not have; see export/autoware_params.py for the parity notes).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from ...arrays import device_table
from ...config import CenterPointModelConfig
from ...structures import Boxes3D
from .gpu_nms import circle_nms_keep, gpu_nms_supported
from .nms import nms

log = logging.getLogger(__name__)


def class_thresholds(cfg: CenterPointModelConfig) -> list[float]:
    if cfg.class_score_thresholds is not None:
        return list(cfg.class_score_thresholds)
    return [cfg.score_threshold] * len(cfg.class_names)


def yaw_norm_thresholds(cfg: CenterPointModelConfig) -> list[float]:
    """Per-class Autoware yaw norm thresholds; unset = 0 for every class (a norm is never below 0: off)."""
    if cfg.nms.yaw_norm_thresholds is not None:
        return list(cfg.nms.yaw_norm_thresholds)
    return [0.0] * len(cfg.class_names)


def wrap_angle(a: Tensor) -> Tensor:
    """Wrap to [-pi, pi)."""
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


def _candidates(outputs: Mapping[str, Tensor], cfg: CenterPointModelConfig) -> tuple[Tensor, Tensor, Tensor, int]:
    """Per output cell: best score, its label, whether it passes (class threshold, yaw norm); and the map width."""
    heatmap = outputs["heatmap"]
    if heatmap.dim() != 4 or heatmap.shape[0] != 1:
        raise ValueError(f"heatmap must have shape [1, num_classes, H, W], got {tuple(heatmap.shape)}")
    n_cls, h_out, w_out = heatmap.shape[1:]
    if n_cls != len(cfg.class_names):
        raise ValueError(f"heatmap has {n_cls} classes but the config names {len(cfg.class_names)}")
    dev = heatmap.device
    scores_all = torch.sigmoid(heatmap[0].float())  # (C, H, W)
    score, label = torch.max(scores_all, dim=0)
    thr = device_table(tuple(class_thresholds(cfg)), torch.float32, dev)
    flat_score = score.reshape(-1)
    flat_label = label.reshape(-1)
    passed = flat_score > thr[flat_label]
    if cfg.nms.yaw_norm_thresholds is not None and any(t > 0 for t in cfg.nms.yaw_norm_thresholds):
        rot = outputs["rot"][0].float()
        norm = torch.sqrt(rot[0] * rot[0] + rot[1] * rot[1]).reshape(-1)
        yaw_thr = device_table(tuple(yaw_norm_thresholds(cfg)), torch.float32, dev)
        passed &= norm >= yaw_thr[flat_label]
    return flat_score, flat_label, passed, w_out


def decode(outputs: Mapping[str, Tensor], cfg: CenterPointModelConfig) -> Boxes3D:
    if outputs["heatmap"].is_cuda:
        return unpack(decode_packed(outputs, cfg).cpu().numpy())  # one transfer: the one sync
    flat_score, flat_label, passed, w_out = _candidates(outputs, cfg)
    idx = torch.nonzero(passed).squeeze(1)
    if idx.numel() == 0:
        return Boxes3D()
    s = flat_score[idx]
    order = torch.sort(s, descending=True, stable=True).indices[: cfg.max_num]
    idx, s = idx[order], s[order]
    lab = flat_label[idx]
    boxes, velocity, inside = _boxes_at(outputs, cfg, idx, w_out)
    return Boxes3D(
        boxes=boxes[inside].cpu().numpy(),
        scores=s[inside].cpu().numpy(),
        labels=lab[inside].cpu().numpy().astype(np.int64),
        velocities=velocity[inside].cpu().numpy(),
    )


# Columns of the packed rows (``decode_packed`` writes 0..11, the graph decoder's NMS adds the last two).
COL_KEEP = 11  # a candidate of decode: passed its thresholds, centre inside the range
COL_NMS_KEEP = 12  # kept by the GPU circle NMS and the post-NMS cap
COL_CONVERGED = 13  # the GPU NMS reached its fixed point (else: the host NMS on columns 0..11)


def decode_packed(outputs: Mapping[str, Tensor], cfg: CenterPointModelConfig,
                  stacked: tuple[Tensor, dict[str, int]] | None = None) -> Tensor:
    """The same candidates as the CPU path with no data-dependent shape (so no sync, and CUDA-graph capturable):
    all cells sorted with the failed ones below every passing score (stable, so ties keep raster order), the
    first ``max_num`` decoded. Returns (K, 12) float32 rows [box 7, score, label, vx, vy, keep]; ``unpack`` them
    on the host. ``stacked``: every output map as rows of one (channels, H * W) tensor and each output's first
    row there, so that the K cells of all channels are gathered in one kernel (one node of the graph, not 11)."""
    flat_score, flat_label, passed, w_out = _candidates(outputs, cfg)
    masked = torch.where(passed, flat_score, torch.full((), -1.0, device=flat_score.device))
    s, idx = torch.sort(masked, descending=True, stable=True)
    k = min(cfg.max_num, idx.numel())
    idx, s = idx[:k], s[:k]
    boxes, velocity, inside = _boxes_at(outputs, cfg, idx, w_out, stacked)
    keep = inside & (s >= 0)  # a passing score is > its threshold >= 0
    return torch.cat([boxes, s[:, None], flat_label[idx].to(torch.float32)[:, None], velocity,
                      keep.to(torch.float32)[:, None]], dim=1)


def unpack(packed: np.ndarray) -> Boxes3D:
    rows = packed[packed[:, COL_KEEP] > 0]
    return Boxes3D(boxes=np.ascontiguousarray(rows[:, :7]), scores=np.ascontiguousarray(rows[:, 7]),
                   labels=rows[:, 8].astype(np.int64), velocities=np.ascontiguousarray(rows[:, 9:11]))


def unpack_nms(packed: np.ndarray, cfg: CenterPointModelConfig) -> Boxes3D:
    """The graph decoder's rows on the host (NMS columns included) -> the detections after NMS (the host NMS where
    the GPU one had not converged: the same kept set either way)."""
    if len(packed) and packed[0, COL_CONVERGED] > 0:
        return unpack(packed[packed[:, COL_NMS_KEEP] > 0, :COL_KEEP + 1])
    return nms(unpack(packed[:, :COL_KEEP + 1]), cfg)


class GraphDecoder:
    """``decode`` on CUDA replayed from one captured CUDA graph (decode_packed is static in shape): the head
    outputs are copied into the graph's input buffer (every map a slice of one tensor, gathered in one kernel),
    one replay, one device-to-host copy. Captured on the first call; head outputs of another shape than the
    captured ones are decoded eagerly. Where the NMS config allows (``gpu_nms_supported``) the graph runs the
    circle NMS too (``postprocess``)."""

    def __init__(self, cfg: CenterPointModelConfig) -> None:
        self.cfg = cfg
        self.gpu_nms = gpu_nms_supported(cfg)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: dict[str, Tensor] = {}
        self._stacked: tuple[Tensor, dict[str, int]] | None = None
        self._packed: Tensor | None = None
        self._host: Tensor | None = None  # pinned: the packed rows' landing place on the host
        self.eager_reason: str | None = None  # set when capture failed: decoding eagerly from then on

    @property
    def buffers(self) -> dict[str, Tensor] | None:
        """The graph's input buffers once captured (one (1, C, H, W) float32 tensor per head output): the head
        can write its outputs straight into them (``GraphRunner(..., out=buffers)``), and ``postprocess`` then
        copies nothing."""
        return self._inputs if self._graph is not None else None

    def _fn(self) -> Tensor:
        packed = decode_packed(self._inputs, self.cfg, self._stacked)
        if not self.gpu_nms:
            return packed
        keep, converged = circle_nms_keep(packed, self.cfg)
        k = packed.shape[0]
        return torch.cat([packed, keep.to(torch.float32)[:, None], converged.to(torch.float32).expand(k)[:, None]],
                         dim=1)

    def _capture(self, outputs: Mapping[str, Tensor]) -> None:
        names = list(outputs)
        first = outputs[names[0]]
        h, w = first.shape[-2:]
        offsets, total = {}, 0
        for n in names:
            offsets[n], total = total, total + outputs[n].shape[1]
        stack = torch.empty(total, h, w, dtype=torch.float32, device=first.device)
        self._inputs = {n: stack[offsets[n]:offsets[n] + outputs[n].shape[1]].unsqueeze(0) for n in names}
        for n in names:
            self._inputs[n].copy_(outputs[n])
        self._stacked = (stack.view(total, h * w), offsets)
        side = torch.cuda.Stream(first.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # uploads the constant tables, settles the allocator
                self._fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._packed = self._fn()
        except RuntimeError as e:  # an op that cannot be captured on this torch/GPU: say so, decode eagerly
            self.eager_reason = str(e).splitlines()[0]
            log.warning("decode: CUDA graph capture failed (%s); decoding eagerly", self.eager_reason)
            return
        self._graph = graph
        self._host = torch.empty(self._packed.shape, dtype=self._packed.dtype, pin_memory=True)

    def _replay(self, outputs: Mapping[str, Tensor]) -> np.ndarray | None:
        """The packed rows on the host, or None where the eager path must run (other shapes, no graph)."""
        if self._graph is None and self.eager_reason is None:
            fits = all(v.dim() == 4 and v.shape[0] == 1 and v.shape[-2:] == outputs["heatmap"].shape[-2:]
                       and v.is_floating_point() for v in outputs.values())
            if not fits:
                return None
            self._capture(outputs)
        if self._graph is None or outputs.keys() != self._inputs.keys():
            return None
        for k, buf in self._inputs.items():
            given = outputs[k]
            if given is buf:  # the head wrote it there itself (buffers)
                continue
            if given.shape != buf.shape or given.dtype != buf.dtype:
                return None
            buf.copy_(given)
        self._graph.replay()
        # One blocking transfer, the frame's one sync, into pinned memory (no staging copy, no allocation).
        # Callers copy what they keep (``unpack`` selects rows), so the next frame may overwrite it.
        self._host.copy_(self._packed)
        return self._host.numpy()

    def __call__(self, outputs: Mapping[str, Tensor]) -> Boxes3D:
        """Decoded candidates, before NMS (= ``decode``)."""
        packed = self._replay(outputs)
        return decode(outputs, self.cfg) if packed is None else unpack(packed[:, :COL_KEEP + 1])

    def postprocess(self, outputs: Mapping[str, Tensor]) -> Boxes3D:
        """Detections after NMS (= ``nms(decode(...))``), the NMS in the graph where supported."""
        packed = self._replay(outputs)
        if packed is None:
            return nms(decode(outputs, self.cfg), self.cfg)
        return unpack_nms(packed, self.cfg) if self.gpu_nms else nms(unpack(packed[:, :COL_KEEP + 1]), self.cfg)


def _boxes_at(outputs: Mapping[str, Tensor], cfg: CenterPointModelConfig, idx: Tensor, w_out: int,
              stacked: tuple[Tensor, dict[str, int]] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes (K, 7), velocities (K, 2) and the in-range mask (K,) of the output cells ``idx`` (raster order)."""
    dev = idx.device
    if stacked is not None:
        rows, first = stacked[0][:, idx], stacked[1]  # every channel at the K cells: one gather

        def at(name: str, ch: int) -> Tensor:
            return rows[first[name] + ch]
    else:
        def at(name: str, ch: int) -> Tensor:
            return outputs[name][0, ch].reshape(-1)[idx].float()

    yi = (idx // w_out).to(torch.float32)
    xi = (idx % w_out).to(torch.float32)
    vx, vy = cfg.voxel_size[0], cfg.voxel_size[1]
    r = cfg.point_cloud_range
    f = cfg.out_size_factor
    x = (vx * f) * (xi + at("reg", 0)) + r[0]
    y = (vy * f) * (yi + at("reg", 1)) + r[1]
    z = at("height", 0)
    width = torch.exp(at("dim", 0))
    length = torch.exp(at("dim", 1))
    height = torch.exp(at("dim", 2))
    yaw = wrap_angle(-torch.atan2(at("rot", 0), at("rot", 1)) - math.pi / 2)
    vel = outputs.get("vel")
    if vel is not None and cfg.with_velocity:
        velocity = torch.stack([at("vel", 0), at("vel", 1)], dim=1)
    else:
        velocity = torch.zeros(idx.numel(), 2, device=dev)
    inside = (x >= r[0]) & (x <= r[3]) & (y >= r[1]) & (y <= r[4])
    return torch.stack([x, y, z, length, width, height, yaw], dim=1), velocity, inside
