"""The ONE input builder of the calibration-status classifier, shared by training, evaluation, INT8 calibration and
the node: image + lidar + intrinsics + extrinsic -> [5, H, W] float32 = R, G, B, depth, intensity.

Rules (the model config's keys in brackets):
- a point is ``p_cam = R @ p_lidar + t`` (``T_cam_lidar``), kept when ``min_depth < z <= max_depth`` (camera z,
  metres) and its pixel ``(round(u), round(v))`` lies in the image: ``u = fx x / z + cx`` in OpenCV's convention
  (pixel centres at integers), the same rule as ``data.camera.project_points``; no lens distortion (undistort
  the image first);
- z-buffer: per pixel the point of smallest z wins; equal z: the lower point index (deterministic);
- depth channel = z / depth_divisor, intensity channel = intensity / intensity_divisor, 0 where no point landed;
- RGB = (pixel - image_mean) / image_std on the BGR input flipped to RGB;
- with ``input_size`` [H, W] set, the image is resized (bilinear) to it and K scaled alike before projecting.

Written once in torch so the same code runs per frame on the CPU (numpy in, numpy out: ``build_input``) and batched
on a GPU in training (``build_batch``); projection is float64 either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from ...arrays import tensor_view
from ...errors import DatasetError

NUM_CHANNELS = 5


@dataclass(frozen=True)
class BuilderSpec:
    """The model config's input-building keys (any object with these attributes works as ``cfg``)."""

    min_depth: float = 0.1
    max_depth: float = 128.0
    depth_divisor: float = 128.0
    intensity_divisor: float = 255.0
    image_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    image_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    input_size: tuple[int, int] | None = None

    @staticmethod
    def of(cfg: Any) -> "BuilderSpec":
        size = getattr(cfg, "input_size", None)
        return BuilderSpec(float(cfg.min_depth), float(cfg.max_depth), float(cfg.depth_divisor),
                           float(cfg.intensity_divisor), tuple(float(v) for v in cfg.image_mean),
                           tuple(float(v) for v in cfg.image_std), None if size is None else (int(size[0]), int(size[1])))


@dataclass
class BuiltInput:
    """One built input: ``tensor`` [5, H, W] float32, ``projected_points`` (points inside the image and the depth
    range, before the z-buffer) and ``filled_pixels`` (pixels a point landed on)."""

    tensor: np.ndarray
    projected_points: int
    filled_pixels: int


def check_inputs(image_bgr: np.ndarray, points: np.ndarray, K: np.ndarray, T_cam_lidar: np.ndarray) -> None:
    """DatasetError naming the malformed input (the node counts these, never dies on them)."""
    if not (isinstance(image_bgr, np.ndarray) and image_bgr.ndim == 3 and image_bgr.shape[2] == 3
            and image_bgr.dtype == np.uint8 and image_bgr.shape[0] > 0 and image_bgr.shape[1] > 0):
        raise DatasetError(f"calibration input: image must be HxWx3 uint8 BGR, got "
                           f"{getattr(image_bgr, 'shape', None)} {getattr(image_bgr, 'dtype', type(image_bgr))}")
    if not (isinstance(points, np.ndarray) and points.ndim == 2 and points.shape[1] >= 4):
        raise DatasetError(f"calibration input: points must be Nx4+ (x, y, z, intensity), got "
                           f"{getattr(points, 'shape', None)}")
    K = np.asarray(K)
    T = np.asarray(T_cam_lidar)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DatasetError(f"calibration input: K must be a finite 3x3 intrinsic matrix with fx, fy > 0, got shape "
                           f"{K.shape}")
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise DatasetError(f"calibration input: T_cam_lidar must be a finite 4x4 transform, got shape {T.shape}")


def resized(image_bgr: np.ndarray, K: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """The image resized to ``size`` [H, W] (bilinear) and K scaled alike (pixel centres stay at integers)."""
    K = np.asarray(K, np.float64)
    h, w = image_bgr.shape[:2]
    if size is None or (int(size[0]), int(size[1])) == (h, w):
        return image_bgr, K
    H, W = int(size[0]), int(size[1])
    sx, sy = W / w, H / h
    K2 = K.copy()
    K2[0, 0], K2[0, 1], K2[0, 2] = K[0, 0] * sx, K[0, 1] * sx, (K[0, 2] + 0.5) * sx - 0.5
    K2[1, 1], K2[1, 2] = K[1, 1] * sy, (K[1, 2] + 0.5) * sy - 0.5
    return cv2.resize(image_bgr, (W, H), interpolation=cv2.INTER_LINEAR), K2


def build_batch(images_bgr: torch.Tensor, points: torch.Tensor, batch_index: torch.Tensor, K: torch.Tensor,
                T_cam_lidar: torch.Tensor, cfg: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The builder on tensors (any device): ``images_bgr`` [B, H, W, 3] uint8, ``points`` [N, >=4] (all frames'
    points), ``batch_index`` [N] long (the frame of each point), ``K`` [B, 3, 3], ``T_cam_lidar`` [B, 4, 4].
    Returns ([B, 5, H, W] float32, projected points [B], filled pixels [B]). No resizing here (``build_input``
    resizes; a batch shares one size)."""
    spec = cfg if isinstance(cfg, BuilderSpec) else BuilderSpec.of(cfg)
    dev = images_bgr.device
    B, H, W, _ = images_bgr.shape
    out = torch.zeros((B, NUM_CHANNELS, H, W), dtype=torch.float32, device=dev)
    mean = torch.tensor(spec.image_mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(spec.image_std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    rgb = images_bgr.flip(-1).permute(0, 3, 1, 2).float()
    out[:, :3] = (rgb - mean) / std
    bi = batch_index.long()
    T = T_cam_lidar.to(dev, torch.float64)
    Kd = K.to(dev, torch.float64)
    xyz = points[:, :3].to(torch.float64)
    pc = torch.einsum("nij,nj->ni", T[bi, :3, :3], xyz) + T[bi, :3, 3]
    z = pc[:, 2]
    in_range = (z > spec.min_depth) & (z <= spec.max_depth)
    zs = torch.where(in_range, z, torch.ones_like(z))
    Kb = Kd[bi]
    u = Kb[:, 0, 0] * pc[:, 0] / zs + Kb[:, 0, 1] * pc[:, 1] / zs + Kb[:, 0, 2]
    v = Kb[:, 1, 1] * pc[:, 1] / zs + Kb[:, 1, 2]
    col = torch.floor(u + 0.5)
    row = torch.floor(v + 0.5)
    keep = in_range & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    idx = torch.nonzero(keep).squeeze(1)
    counts = torch.bincount(bi[idx], minlength=B)
    flat = bi[idx] * (H * W) + row[idx].long() * W + col[idx].long()
    # z-buffer by two stable sorts (z, then pixel): the first entry of each pixel's run is its nearest point, the
    # lowest point index among equal z (stable sorts keep index order); no atomics, same result on CPU and GPU
    by_z = torch.sort(z[idx], stable=True).indices
    by_pix = by_z[torch.sort(flat[by_z], stable=True).indices]
    fs = flat[by_pix]
    head = torch.ones_like(fs, dtype=torch.bool)
    head[1:] = fs[1:] != fs[:-1]
    pix, src = fs[head], idx[by_pix[head]]
    b, rem = pix // (H * W), pix % (H * W)
    r, c = rem // W, rem % W
    out[b, 3, r, c] = (z[src] / spec.depth_divisor).float()
    out[b, 4, r, c] = (points[src, 3].to(torch.float64) / spec.intensity_divisor).float()
    filled = torch.bincount(b, minlength=B)
    return out, counts, filled


def build_input_ex(image_bgr: np.ndarray, points: np.ndarray, K: np.ndarray, T_cam_lidar: np.ndarray,
                   cfg: Any) -> BuiltInput:
    """``build_input`` plus the projected point count and the filled pixel count."""
    check_inputs(image_bgr, points, K, T_cam_lidar)
    spec = cfg if isinstance(cfg, BuilderSpec) else BuilderSpec.of(cfg)
    image, K2 = resized(image_bgr, K, spec.input_size)
    pts = torch.from_numpy(np.ascontiguousarray(points[:, :4], dtype=np.float32))
    finite = torch.isfinite(pts).all(1)
    if not bool(finite.all()):
        pts = pts[finite]  # NaN returns (no echo) carry no position
    img = tensor_view(np.ascontiguousarray(image))[None]
    out, counts, filled = build_batch(img, pts, torch.zeros(len(pts), dtype=torch.long),
                                      torch.from_numpy(K2)[None], torch.from_numpy(np.asarray(T_cam_lidar,
                                                                                              np.float64))[None], spec)
    return BuiltInput(out[0].numpy(), int(counts[0]), int(filled[0]))


def build_input(image_bgr: np.ndarray, points: np.ndarray, K: np.ndarray, T_cam_lidar: np.ndarray,
                cfg: Any) -> np.ndarray:
    """[5, H, W] float32 = R, G, B, depth, intensity of one frame (see the module doc for every rule)."""
    return build_input_ex(image_bgr, points, K, T_cam_lidar, cfg).tensor
