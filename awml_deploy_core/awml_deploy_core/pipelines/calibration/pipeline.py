"""The one calibration-status pipeline every consumer runs (export job, bench, node, replay):
image + lidar + K + extrinsic -> input builder -> graph (``input`` -> ``output`` logits) -> softmax -> decision.

The graph outputs logits [B, 2] in AWML's class order [miscalibrated, calibrated]; the softmax and the decision
(miscalibrated when P(miscalibrated) >= ``miscalibrated_threshold`` of the model config) run here, outside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ...backends.base import RunnerSet
from ...config import CalibrationStatusModelConfig
from ...models.calibration_status import INPUT_NAMES, OUTPUT_NAMES
from .input_builder import BuilderSpec, BuiltInput, build_input_ex

STAGES = ("input_build", "inference", "postprocess", "total")
MISCALIBRATED, CALIBRATED = 0, 1  # output columns


@dataclass
class CalibrationResult:
    """One decision. Scores are the softmax of the logits (they sum to 1)."""

    is_calibrated: bool
    calibrated_score: float
    miscalibrated_score: float
    projected_points: int
    timings_ms: dict[str, float]
    logits: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # [miscalibrated, calibrated]
    filled_pixels: int = 0


def decide(logits: np.ndarray, threshold: float) -> tuple[bool, float, float]:
    """(is_calibrated, calibrated score, miscalibrated score) of one row of logits, softmax in float64."""
    z = np.asarray(logits, np.float64).reshape(2)
    e = np.exp(z - z.max())
    p = e / e.sum()
    mis, cal = float(p[MISCALIBRATED]), float(p[CALIBRATED])
    return bool(mis < threshold), cal, mis


class CalibrationStatusPipeline:
    def __init__(self, cfg: CalibrationStatusModelConfig, runners: RunnerSet,
                 device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.runners = runners
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self.spec = BuilderSpec.of(cfg)

    # -------------------------------------------------------------------------------- stages
    def preprocess(self, image_bgr: np.ndarray, points: np.ndarray, K: np.ndarray,
                   T_cam_lidar: np.ndarray) -> tuple[torch.Tensor, BuiltInput]:
        """[1, 5, H, W] float32 on the pipeline's device, and the built input (numpy, counts)."""
        built = build_input_ex(image_bgr, points, K, T_cam_lidar, self.spec)
        return torch.from_numpy(built.tensor)[None].to(self.device), built

    def infer(self, batch: torch.Tensor) -> torch.Tensor:
        return self.runners["calibration_status"]({INPUT_NAMES[0]: batch})[OUTPUT_NAMES[0]]

    def close(self) -> None:
        """Release the backend; the pipeline refuses to run afterwards."""
        self.runners.close()

    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.device)

    # -------------------------------------------------------------------------------- all
    def __call__(self, image_bgr: np.ndarray, points: np.ndarray, K: np.ndarray,
                 T_cam_lidar: np.ndarray) -> CalibrationResult:
        """One frame: HxWx3 uint8 BGR image, Nx4+ lidar points (x, y, z, intensity; lidar frame), 3x3 K, 4x4
        lidar->camera extrinsic."""
        self._sync()
        t0 = time.perf_counter()
        batch, built = self.preprocess(image_bgr, points, K, T_cam_lidar)
        self._sync()
        t1 = time.perf_counter()
        out = self.infer(batch)
        self._sync()
        t2 = time.perf_counter()
        logits = out.detach().float().cpu().numpy().reshape(-1, 2)[0]
        ok, cal, mis = decide(logits, self.cfg.miscalibrated_threshold)
        t3 = time.perf_counter()
        t = {"input_build": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3,
             "total": (t3 - t0) * 1e3}
        return CalibrationResult(ok, cal, mis, built.projected_points, t, logits.astype(np.float32),
                                 built.filled_pixels)
