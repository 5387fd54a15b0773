"""Camera-lidar pairs for the calibration-status classifier, and the seeded miscalibration generator.

A pair is one lidar sweep and the camera image of the same instant (``synthetic.build_layout`` renders both from
one world: the lidar by ray casting, the camera by ``camera.render_frame``), the true extrinsic, and the extrinsic
the model is shown: the true one perturbed by a rotation of ``rotation_deg`` about a random axis and a shift of the
camera centre by ``translation_m`` in a random direction.

Labels (``MiscalibrationConfig``): miscalibrated above either threshold (rotation OR translation), calibrated when
both are below half of them, ambiguous in between (excluded from training, reported separately).

Scene ``i`` of seed ``s`` is ``sequence_seed(s, i)`` as for the lidar and camera datasets (training seeds below
10000, held-out 10000 and up); pair ``j`` shows scene ``j // pairs_per_scene`` with the perturbation drawn from
``(s, j)`` alone, so any pair is reproducible on its own.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from ..bundle import atomic_write_bytes, atomic_write_json
from ..errors import DatasetError
from .camera import CameraSpec, render_frame
from .lidar import LidarSpec
from .synthetic import _rng, build_layout, generate_sequence, sequence_seed

log = logging.getLogger(__name__)

MISCALIBRATED, CALIBRATED, AMBIGUOUS = "miscalibrated", "calibrated", "ambiguous"
LABEL_INDEX = {MISCALIBRATED: 0, CALIBRATED: 1}  # the graph's output columns
_KEY_MAGNITUDE, _KEY_AXES = 0xCA11B, 0xA7E5
PAIRS_VERSION = "awml_deploy-calibration-pairs-1"


# ------------------------------------------------------------------------------------- perturbation
def label_of(rotation_deg: float, translation_m: float, cfg: Any) -> str:
    """miscalibrated above either threshold, calibrated below half of both, else ambiguous."""
    r, t = cfg.rotation_threshold_deg, cfg.translation_threshold_m
    if rotation_deg > r or translation_m > t:
        return MISCALIBRATED
    if rotation_deg < r / 2 and translation_m < t / 2:
        return CALIBRATED
    return AMBIGUOUS


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def rotation_matrix(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rodrigues: rotation by ``angle_rad`` about the unit ``axis``."""
    a = np.asarray(axis, np.float64)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * (k @ k)


def perturb_extrinsic(T_cam_lidar: np.ndarray, rotation_deg: float, translation_m: float, seed: int) -> np.ndarray:
    """The extrinsic off by exactly ``rotation_deg`` (about a random axis, camera frame) and ``translation_m``
    (the camera centre moved in a random direction); the axes are drawn from ``seed`` alone (deterministic).

    ``T' = D @ T`` with ``D = [R_d | t_d]``: the rotation between T and T' is R_d, and the camera centre moves by
    ``-R^T R_d^T t_d``, whose length is ``|t_d| = translation_m``."""
    rng = _rng(int(seed), _KEY_AXES)
    axis, direction = _unit(rng), _unit(rng)
    D = np.eye(4)
    D[:3, :3] = rotation_matrix(axis, math.radians(rotation_deg))
    D[:3, 3] = direction * translation_m
    return D @ np.asarray(T_cam_lidar, np.float64)


def extrinsic_error(T_ref: np.ndarray, T: np.ndarray) -> tuple[float, float]:
    """(rotation angle in degrees, camera-centre distance in metres) between two extrinsics."""
    R = np.asarray(T, np.float64)[:3, :3] @ np.asarray(T_ref, np.float64)[:3, :3].T
    angle = math.degrees(math.acos(float(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))

    def centre(M: np.ndarray) -> np.ndarray:
        M = np.asarray(M, np.float64)
        return -M[:3, :3].T @ M[:3, 3]

    return angle, float(np.linalg.norm(centre(T) - centre(T_ref)))


@dataclass(frozen=True)
class Perturbation:
    rotation_deg: float
    translation_m: float
    label: str
    axes_seed: int  # seed of perturb_extrinsic's axes


def draw_magnitudes(rng: np.random.Generator, cfg: Any) -> tuple[float, float]:
    """One draw: with ``miscalibration_probability`` magnitudes uniform in [0, max], else uniform below half the
    thresholds (always calibrated)."""
    if rng.uniform() < cfg.miscalibration_probability:
        return float(rng.uniform(0, cfg.max_rotation_deg)), float(rng.uniform(0, cfg.max_translation_m))
    return (float(rng.uniform(0, cfg.rotation_threshold_deg / 2)),
            float(rng.uniform(0, cfg.translation_threshold_m / 2)))


def pair_perturbation(seed: int, index: int, cfg: Any, exclude_ambiguous: bool = False) -> Perturbation:
    """The perturbation of pair ``index`` of ``seed`` (deterministic); ``exclude_ambiguous`` redraws until the pair
    is labelled (training), otherwise ambiguous pairs occur at their natural rate (evaluation)."""
    rng = _rng(int(seed), _KEY_MAGNITUDE, int(index))
    while True:
        rot, trans = draw_magnitudes(rng, cfg)
        label = label_of(rot, trans, cfg)
        if not (exclude_ambiguous and label == AMBIGUOUS):
            break
    axes_seed = int(rng.integers(0, 2**62))
    return Perturbation(rot, trans, label, axes_seed)


# ------------------------------------------------------------------------------------- scenes
@dataclass
class ScenePair:
    """One rendered instant: image, lidar sweep, camera (K, true extrinsic)."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    points: np.ndarray  # (N, 4) float32 x, y, z, intensity, lidar frame
    K: np.ndarray  # (3, 3)
    T_true: np.ndarray  # (4, 4) lidar -> camera
    timestamp: float
    token: str


def render_scene_pairs(scene_seed: int, num_frames: int = 1, camera: CameraSpec | None = None,
                       lidar: LidarSpec | None = None, start_time: float = 0.0) -> list[ScenePair]:
    """``num_frames`` consecutive instants of scene ``scene_seed``: the lidar sweep of ``generate_sequence`` and
    the camera image of ``render_frame`` at the same timestamps."""
    camera = camera or CameraSpec()
    lidar = lidar or LidarSpec()
    layout = build_layout(scene_seed, num_frames, lidar)
    sweeps = generate_sequence(scene_seed, num_frames, lidar, start_time=start_time)
    out = []
    for k in range(num_frames):
        lf = next(sweeps)
        cf = render_frame(layout, k, camera, lf.timestamp)
        out.append(ScenePair(cf.image, lf.points.astype(np.float32), camera.K, camera.T_cam_lidar, lf.timestamp,
                             f"{layout.token}-{k}"))
    return out


def scene_start_time(index: int, frames: int = 1, lidar: LidarSpec | None = None) -> float:
    return index * (frames * (lidar or LidarSpec()).sweep_period + 1.0)


# ------------------------------------------------------------------------------------- dataset
@dataclass
class CalibrationSample:
    """One evaluation pair: what the pipeline gets (image, points, K, T = the perturbed extrinsic) and the truth."""

    image: np.ndarray
    points: np.ndarray
    K: np.ndarray
    T: np.ndarray
    T_true: np.ndarray
    rotation_deg: float
    translation_m: float
    label: str
    token: str


def _render_job(job: tuple[int, int]) -> tuple[int, bytes]:
    seed, i = job
    p = render_scene_pairs(sequence_seed(seed, i), 1, start_time=scene_start_time(i))[0]
    ok, png = cv2.imencode(".png", p.image)
    if not ok:
        raise DatasetError(f"PNG encoding failed (scene {p.token})")
    buf = io.BytesIO()
    np.savez(buf, image_png=np.frombuffer(png.tobytes(), np.uint8), points=p.points, K=p.K, T=p.T_true,
             timestamp=np.float64(p.timestamp), token=np.array(p.token))
    return i, buf.getvalue()


def generate_pair_scenes(out_dir: Path, seed: int, num_scenes: int, workers: int = 1, progress: bool = False) -> Path:
    """Render scenes 0..num_scenes-1 of ``seed`` into ``out_dir/scene_NNNNNN.npz`` (PNG image + points + K + T);
    ``index.json`` is written last, so a folder holding it is complete. Any worker count gives the same bytes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(seed, i) for i in range(num_scenes)]
    pool = None
    if workers > 1:
        import multiprocessing

        # spawned (a forked child inherits OpenCV's thread pool and can hang); one OpenCV thread each
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=cv2.setNumThreads, initargs=(1,))
    try:
        results = pool.imap(_render_job, jobs) if pool is not None else map(_render_job, jobs)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=num_scenes, desc=f"calibration pairs {out_dir}", unit="scene")
        for i, blob in results:
            atomic_write_bytes(out_dir / f"scene_{i:06d}.npz", blob)
    finally:
        if pool is not None:
            pool.terminate()
    atomic_write_json(out_dir / "index.json", {"version": PAIRS_VERSION, "seed": int(seed), "scenes": num_scenes})
    return out_dir


class CalibrationPairDataset:
    """``num_pairs`` pairs over the rendered scenes of ``folder``, ``pairs_per_scene`` per scene, perturbations
    from ``(seed, pair index)`` and the miscalibration config."""

    def __init__(self, folder: Path, num_pairs: int, miscalibration: Any) -> None:
        self.folder = Path(folder)
        index = json.loads((self.folder / "index.json").read_text())
        self.seed = int(index["seed"])
        self.num_scenes = int(index["scenes"])
        self.cfg = miscalibration
        self.pps = int(miscalibration.pairs_per_scene)
        self.num_pairs = min(int(num_pairs), self.num_scenes * self.pps)
        self._cache: tuple[int, dict[str, Any]] | None = None

    def __len__(self) -> int:
        return self.num_pairs

    def __iter__(self) -> Iterator[CalibrationSample]:
        return (self[i] for i in range(len(self)))

    def _scene(self, i: int) -> dict[str, Any]:
        if self._cache is not None and self._cache[0] == i:
            return self._cache[1]
        path = self.folder / f"scene_{i:06d}.npz"
        if not path.is_file():
            raise DatasetError(f"{path}: scene file missing; delete {self.folder} to regenerate it")
        with np.load(path) as z:
            scene = {"image": cv2.imdecode(z["image_png"], cv2.IMREAD_COLOR), "points": z["points"],
                     "K": z["K"], "T": z["T"], "token": str(z["token"])}
        self._cache = (i, scene)
        return scene

    def __getitem__(self, j: int) -> CalibrationSample:
        if not 0 <= j < len(self):
            raise IndexError(j)
        s = self._scene(j // self.pps)
        p = pair_perturbation(self.seed, j, self.cfg)
        T = perturb_extrinsic(s["T"], p.rotation_deg, p.translation_m, p.axes_seed)
        return CalibrationSample(s["image"], s["points"], s["K"], T, s["T"], p.rotation_deg, p.translation_m,
                                 p.label, f"{s['token']}#{j}")

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"v": PAIRS_VERSION, "seed": self.seed, "n": self.num_pairs,
                             "cfg": self.cfg.model_dump(mode="json")}, sort_keys=True).encode())
        for i in range(-(-self.num_pairs // self.pps)):
            h.update(hashlib.sha256((self.folder / f"scene_{i:06d}.npz").read_bytes()).digest())
        return h.hexdigest()

    def __repr__(self) -> str:
        return (f"CalibrationPairDataset({self.folder}, seed {self.seed}, {self.num_pairs} pairs, "
                f"{self.pps} per scene)")
