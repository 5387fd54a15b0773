"""The one YOLOX pipeline every consumer runs (export job, bench, node, replay): letterbox -> ``images`` ->
graph -> ``output`` -> decode -> per-class NMS -> boxes in original image pixels, for one image or a batch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...backends.base import RunnerSet
from ...config import YOLOXModelConfig
from ...models.yolox import INPUT_NAMES, OUTPUT_NAMES
from .postprocess import Detections2D, make_grid, postprocess
from .preprocess import Letterbox, letterbox

STAGES = ("preprocess", "inference", "postprocess", "total")


@dataclass
class PipelineOutput:
    """``detections`` for a single image; ``batch`` holds one per image of a batched call."""

    detections: Detections2D
    timings_ms: dict[str, float]
    batch: list[Detections2D]
    raw: dict[str, torch.Tensor] | None = None


class YOLOXPipeline:
    def __init__(self, cfg: YOLOXModelConfig, runners: RunnerSet, device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.runners = runners
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self.input_hw = (int(cfg.input_size[0]), int(cfg.input_size[1]))
        self.grid, self.strides = make_grid(self.input_hw, cfg.strides, self.device)

    # -------------------------------------------------------------------------------- stages
    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Letterbox]]:
        """[B, 3, H, W] float32 letterboxed batch and each image's geometry."""
        batch = torch.empty((len(images), 3, *self.input_hw), dtype=torch.float32, device=self.device)
        geos = [letterbox(img, self.input_hw, self.device, out=batch[i])[1] for i, img in enumerate(images)]
        return batch, geos

    def infer(self, images: torch.Tensor) -> torch.Tensor:
        return self.runners["yolox"]({INPUT_NAMES[0]: images})[OUTPUT_NAMES[0]]

    def postprocess(self, output: torch.Tensor, geos: list[Letterbox]) -> list[Detections2D]:
        c = self.cfg
        return postprocess(output.to(self.device).float(), self.grid, self.strides, geos, c.score_threshold,
                           c.nms_iou, c.max_per_img)

    def close(self) -> None:
        """Release the backend; the pipeline refuses to run afterwards."""
        self.runners.close()

    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.device)

    # -------------------------------------------------------------------------------- all
    def __call__(self, image: np.ndarray | Sequence[np.ndarray], return_raw: bool = False) -> PipelineOutput:
        """One HxWx3 uint8 BGR image, or a list of them (one batched inference)."""
        images = [image] if isinstance(image, np.ndarray) and image.ndim == 3 else list(image)
        if not images:
            raise ValueError("YOLOXPipeline: no image given")
        self._sync()
        t0 = time.perf_counter()
        batch, geos = self.preprocess(images)
        self._sync()
        t1 = time.perf_counter()
        out = self.infer(batch)
        self._sync()
        t2 = time.perf_counter()
        dets = self.postprocess(out, geos)
        t3 = time.perf_counter()
        t = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3,
             "total": (t3 - t0) * 1e3}
        raw = {"images": batch, "output": out} if return_raw else None
        return PipelineOutput(detections=dets[0], timings_ms=t, batch=dets, raw=raw)
