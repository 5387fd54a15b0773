"""Preprocess (voxelize + encoder features) on CUDA replayed from captured CUDA graphs.

Eager, preprocess is ~160 small kernels: at 200k points their launch cost (~3 ms of CPU) dwarfs the GPU work.
Here the cloud is copied into a static buffer of a bucket size (the next multiple of ``BUCKET_POINTS``; rows past
the cloud are padding, masked by a device-side point count, never counted), and one graph per bucket runs
``voxelize_padded`` + the features at ``max_voxels`` rows. ``__call__`` reads the counters (the pillar count and
the ``VoxelStats``) to slice the padded outputs: one host synchronization. ``padded`` does not read them: it hands
out all ``max_voxels`` rows (padding rows carry the cell (grid_y, 0), one row below the canvas) and starts a
non-blocking copy of the counters into pinned host memory, read after the frame's one synchronization
(:class:`PendingStats`). Results equal ``voxelize`` + ``encoder_features`` bit for bit (the same elementwise code;
padding rows are masked out).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor

from ...config import CenterPointModelConfig
from .features import encoder_features_from
from .voxelize import POINT_DIMS, VoxelStats, voxel_stats, voxelize_padded

log = logging.getLogger(__name__)

BUCKET_POINTS = 32768  # a graph per multiple of this many points: <= 32k rows of padding per frame
MAX_GRAPHS = 8  # buckets kept captured (least recently used dropped): each holds its padded outputs


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    buf: Tensor  # (bucket, 5) the cloud, padded
    n_real: Tensor  # (1,) int64: rows of buf that are points
    feats: Tensor  # (max_voxels, P, F)
    coords: Tensor  # (max_voxels, 2); padding rows (grid_y, 0)
    counters: Tensor  # (6,)
    below: Tensor  # (2,) the padding cell the graph reads: held here so its memory is never reused
    host_counters: Tensor  # (6,) pinned: where ``padded`` sends the counters
    counters_sent: torch.cuda.Event


@dataclass
class PendingStats:
    """A frame's VoxelStats still on their way to the host: a non-blocking copy into pinned memory, queued on the
    stream before the frame's one synchronizing transfer (the detections), so reading it afterwards costs nothing."""

    host: Tensor  # (6,) int64, pinned
    done: torch.cuda.Event
    n_in: int
    cfg: CenterPointModelConfig

    def resolve(self) -> VoxelStats:
        self.done.synchronize()  # already passed when the detections came back
        return voxel_stats(self.host.tolist(), self.n_in, self.cfg)


def bucket_size(n: int) -> int:
    return max(1, -(-n // BUCKET_POINTS)) * BUCKET_POINTS


class GraphPreprocessor:
    """(N, 5) float32 CUDA cloud -> (features (V, P, F), coords (V, 2), VoxelStats) with one sync."""

    def __init__(self, cfg: CenterPointModelConfig) -> None:
        self.cfg = cfg
        self._graphs: OrderedDict[int, _Captured] = OrderedDict()
        self.eager_reason: str | None = None  # set when a capture failed: callers preprocess eagerly

    def _run(self, buf: Tensor, n_real: Tensor, below: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pts, num_points, coords, counters = voxelize_padded(buf, n_real, self.cfg)
        feats = encoder_features_from(pts, num_points, coords, self.cfg)
        kept = torch.arange(coords.shape[0], device=coords.device) < counters[0]  # counters[0]: pillars seen
        return feats, torch.where(kept[:, None], coords, below), counters

    def _capture(self, bucket: int, device: torch.device) -> _Captured | None:
        buf = torch.zeros(bucket, POINT_DIMS, dtype=torch.float32, device=device)
        n_real = torch.zeros(1, dtype=torch.int64, device=device)
        # the padding rows' cell (grid_y, 0), made here by a fill (a host-to-device copy would synchronize, and
        # cannot be captured)
        below = torch.zeros(2, dtype=torch.int64, device=device)
        below[0].fill_(self.cfg.grid_size[1])
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # uploads the constants, settles the allocator
                self._run(buf, n_real, below)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                feats, coords, counters = self._run(buf, n_real, below)
        except RuntimeError as e:  # an op that cannot be captured on this torch/GPU: say so, run eagerly
            self.eager_reason = str(e).splitlines()[0]
            log.warning("preprocess: CUDA graph capture failed (%s); preprocessing eagerly", self.eager_reason)
            return None
        host = torch.empty(counters.shape, dtype=counters.dtype, pin_memory=True)
        return _Captured(graph, buf, n_real, feats, coords, counters, below, host, torch.cuda.Event())

    def _replay(self, pts: Tensor) -> _Captured | None:
        if self.eager_reason is not None:
            return None
        n = pts.shape[0]
        bucket = bucket_size(n)
        cap = self._graphs.get(bucket)
        if cap is None:
            cap = self._capture(bucket, pts.device)
            if cap is None:
                return None
            self._graphs[bucket] = cap
            while len(self._graphs) > MAX_GRAPHS:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(bucket)
        cap.buf[:n].copy_(pts)
        cap.n_real.fill_(n)
        cap.graph.replay()
        return cap

    def __call__(self, pts: Tensor) -> tuple[Tensor, Tensor, VoxelStats] | None:
        """None when graphs are unavailable (capture failed): the caller runs the eager path."""
        cap = self._replay(pts)
        if cap is None:
            return None
        stats = voxel_stats(cap.counters.tolist(), pts.shape[0], self.cfg)  # the one sync
        v = stats.num_voxels
        # The graph's outputs are overwritten by the next replay: hand out copies.
        return cap.feats[:v].clone(), cap.coords[:v].clone(), stats

    def padded(self, pts: Tensor) -> tuple[Tensor, Tensor, PendingStats] | None:
        """All ``max_voxels`` rows (padding coords one row below the canvas) and the stats still in flight: no
        host synchronization. None when graphs are unavailable. Unlike ``__call__`` it hands out the graph's own
        buffers, no copies: they (and the stats) hold until the next replay of this bucket, which is all one
        frame needs (the pipeline consumes them at once)."""
        cap = self._replay(pts)
        if cap is None:
            return None
        cap.host_counters.copy_(cap.counters, non_blocking=True)
        cap.counters_sent.record()
        return cap.feats, cap.coords, PendingStats(cap.host_counters, cap.counters_sent, pts.shape[0], self.cfg)
