"""CenterPoint pipeline: preprocess -> encoder graph -> scatter -> head graph -> postprocess.

The one implementation shared by evaluation, verification, training-time checks and the ROS nodes; the
backend only supplies the two graph runners (``runners["encoder"]``, ``runners["head"]``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ...backends.base import RunnerSet
from ...config import CenterPointModelConfig
from ...models.centerpoint import HEAD_OUTPUT_NAMES, scatter_pillars
from ...structures import Boxes3D
from .decode import GraphDecoder, decode
from .features import encoder_features
from .nms import nms
from .preprocess_graph import GraphPreprocessor, PendingStats
from .voxelize import VoxelStats, as_points, voxelize

STAGES = ("preprocess", "encoder", "scatter", "head", "postprocess", "total")


@dataclass
class PreprocessOutput:
    input_features: Tensor  # (V, P, F)
    coords: Tensor  # (V, 2) int64 (y, x)
    stats: VoxelStats | PendingStats  # PendingStats only from preprocess(..., padded=True)

    @property
    def padded(self) -> bool:
        """Rows past the pillar count are padding (their cell is one row below the canvas)."""
        return isinstance(self.stats, PendingStats)


@dataclass
class PipelineOutput:
    detections: Boxes3D
    timings_ms: dict[str, float]
    stats: VoxelStats
    raw: dict[str, Tensor] | None = field(default=None)


class CenterPointPipeline:
    def __init__(self, cfg: CenterPointModelConfig, runners: RunnerSet, device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.runners = runners
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._decoder = GraphDecoder(cfg) if self._cuda else None
        self._pre_graph = GraphPreprocessor(cfg) if self._cuda else None

    # ------------------------------------------------------------------------------ stages
    def preprocess(self, points: np.ndarray | Tensor, padded: bool = False) -> PreprocessOutput:
        """Encoder features and coords of the cloud's pillars. ``padded`` (what ``__call__`` asks for on CUDA):
        all ``max_voxels`` rows and the stats still in flight, so preprocessing never waits for the GPU; the
        frame's one synchronization is postprocess's transfer of the detections. Elsewhere it is ignored."""
        pts = as_points(points, self.device)
        if self._pre_graph is not None:
            got = self._pre_graph.padded(pts) if padded else self._pre_graph(pts)
            if got is not None:
                return PreprocessOutput(*got)
        vox = voxelize(pts, self.cfg)
        return PreprocessOutput(encoder_features(vox, self.cfg), vox.coords, vox.stats)

    def encode(self, input_features: Tensor) -> Tensor:
        if input_features.shape[0] == 0:
            return torch.zeros(0, self.cfg.pillar_channels, device=self.device)
        out = self.runners["encoder"]({"input_features": input_features})["pillar_features"]
        return out.to(self.device).reshape(input_features.shape[0], -1)

    def scatter(self, pillar_features: Tensor, coords: Tensor, padded: bool = False) -> Tensor:
        gx, gy = self.cfg.grid_size
        # padded: the padding rows' cell (gy, 0) is the spare cell past the canvas, cut off
        return scatter_pillars(pillar_features.float(), coords, gx, gy, batch_size=1, spare_cell=padded)

    def head(self, spatial_features: Tensor, into: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The head's outputs; ``into``: tensors to write them into (the graph decoder's input buffers)."""
        out = self.runners["head"]({"spatial_features": spatial_features}, out=into)
        missing = [n for n in HEAD_OUTPUT_NAMES if n not in out]
        if missing:
            raise ValueError(f"head runner {self.runners['head'].name!r} did not return {missing}")
        return {n: out[n].to(self.device) for n in HEAD_OUTPUT_NAMES}

    def postprocess(self, head_outputs: Mapping[str, Tensor]) -> Boxes3D:
        if self._decoder is not None and head_outputs["heatmap"].is_cuda:
            return self._decoder.postprocess(head_outputs)
        return nms(decode(head_outputs, self.cfg), self.cfg)

    def close(self) -> None:
        """Release the backend's sessions, engines and device memory; the pipeline refuses to run afterwards."""
        self.runners.close()
        if self._decoder is not None:
            self._decoder = GraphDecoder(self.cfg)  # drops the captured graphs and their buffers
            self._pre_graph = GraphPreprocessor(self.cfg)

    # -------------------------------------------------------------------------------- all
    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.device)

    def __call__(self, points: np.ndarray | Tensor, return_raw: bool = False) -> PipelineOutput:
        t = {k: 0.0 for k in STAGES}
        self._sync()
        t0 = time.perf_counter()
        pre = self.preprocess(points, padded=True)
        self._sync()
        t1 = time.perf_counter()
        t["preprocess"] = (t1 - t0) * 1e3
        raw: dict[str, Tensor] | None = None
        stats = None if pre.padded else pre.stats
        if stats is not None and stats.num_voxels == 0:
            # No pillar, no object: skip the graphs (an empty canvas would only decode biases).
            dets = Boxes3D()
            if return_raw:
                raw = {"pillar_features": torch.zeros(0, self.cfg.pillar_channels, device=self.device)}
        else:
            pillars = self.encode(pre.input_features)
            self._sync()
            t2 = time.perf_counter()
            spatial = self.scatter(pillars, pre.coords, pre.padded)
            if not return_raw:
                del pillars
            self._sync()
            t3 = time.perf_counter()
            # Straight into the graph decoder's input buffers once it has them (one copy per output less); not
            # when the raw outputs are handed out: the next frame would overwrite them.
            into = self._decoder.buffers if self._decoder is not None and not return_raw else None
            outs = self.head(spatial, into)
            del spatial  # the frame's buffers are freed inside the stage that last used them, not after it
            self._sync()
            t4 = time.perf_counter()
            dets = self.postprocess(outs)
            if not return_raw:
                del outs
            t5 = time.perf_counter()
            t.update(encoder=(t2 - t1) * 1e3, scatter=(t3 - t2) * 1e3, head=(t4 - t3) * 1e3, postprocess=(t5 - t4) * 1e3)
            if stats is None:  # padded: read after postprocess's transfer, no wait
                stats = pre.stats.resolve()
                if stats.num_voxels == 0:
                    dets = Boxes3D()  # the same answer as the early exit above: no pillar, no object
            if return_raw:
                raw = {"pillar_features": pillars[: stats.num_voxels], **outs}
        t["total"] = (time.perf_counter() - t0) * 1e3
        return PipelineOutput(detections=dets, timings_ms=t, stats=stats, raw=raw)
