"""Synthetic camera datasets on disk: PNG images, a COCO file, and an AWML-style info linking each image to
its lidar frame and calibration.

Layout of ``out_dir``::

    images/000000.png ...          BGR images (PNG, lossless)
    lidar/000000.pcd.bin ...       only with write_lidar=True; same format as info_dataset's point files
    coco.json                      COCO detection ground truth (see below)
    camera_infos.json              AWML/mmdet3d-v2-style info (see below)

COCO: ``images`` (id = sample_idx + 1, file_name relative to out_dir), ``annotations`` with ``bbox``
``[x, y, w, h]`` in pixel-edge coordinates, ``area`` = w * h, ``category_id`` = T4 index + 1 (the one
mapping: :func:`awml_deploy_core.labels.coco_category_id`), ``iscrowd``, plus ``ignore``, ``truncation``,
``occlusion`` and ``instance_token``. An ignored box has ``iscrowd = 1`` as well, so pycocotools treats it
as an ignore region (detections on it are neither true nor false positives). ``categories`` lists all 8
T4 classes.

Info: ``{"metainfo": {...}, "data_list": [{"sample_idx", "token", "timestamp" (s), "scene_token",
"frame_index", "lidar_points": {"lidar_path": str | None, "num_pts_feats": 5},
"images": {"CAM_FRONT": {"img_path", "height", "width", "cam2img" (3x3), "lidar2cam" (4x4)}},
"instances": [{"bbox_3d", "bbox_label_3d", "velocity", "instance_token"}],
"cam_instances": {"CAM_FRONT": [{"bbox" (xyxy), "bbox_label" (T4), "ignore_flag", "truncation",
"occlusion", "depth", "instance_token", "instance_index"}]}}]}``. Tokens equal the lidar info format's
(``info_dataset``) for the same seed and frames, so a lidar dataset and a camera dataset generated from
one seed pair up by token.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..bundle import atomic_write_bytes, atomic_write_json
from ..errors import DatasetError
from ..labels import T4_2D_CLASSES, coco_categories, coco_category_id
from .camera import CameraFrame, CameraSpec, render_frame
from .lidar import LidarSpec
from .synthetic import SceneSpec, build_layout, generate_sequence, sequence_seed

CAMERA_NAME = "CAM_FRONT"
COCO_NAME = "coco.json"
INFO_NAME = "camera_infos.json"
CAMERA_INFO_VERSION = "awml_deploy-synthetic-camera-1"


@dataclass
class _Rendered:
    """One rendered frame, reduced to what the writer needs (picklable, for worker processes)."""

    png: bytes
    frame: CameraFrame  # image/instance/depth dropped
    boxes3d: np.ndarray
    velocities: np.ndarray
    labels3d: np.ndarray
    instance_ids: np.ndarray
    lidar: bytes | None
    num_lidar_points: np.ndarray | None


def _render_sequence(job: tuple) -> list[_Rendered]:
    """Render one sequence (a worker's unit: sequences are independent, so any worker count gives the
    same bytes)."""
    seq_seed, n, t0, camera, lidar, scene, write_lidar = job
    layout = build_layout(seq_seed, n, lidar, scene)
    lidar_frames = generate_sequence(seq_seed, n, lidar, scene, start_time=t0) if write_lidar else None
    out = []
    for k in range(n):
        cf = render_frame(layout, k, camera, t0 + k * lidar.sweep_period)
        ok, png = cv2.imencode(".png", cf.image)
        if not ok:
            raise DatasetError(f"PNG encoding failed (scene {layout.token}, frame {k})")
        blob, counts = None, None
        if lidar_frames is not None:
            lf = next(lidar_frames)
            pts = np.empty((len(lf.points), 5), "<f4")
            pts[:, :4] = lf.points
            pts[:, 4] = lf.ring
            blob, counts = pts.tobytes(), lf.num_lidar_points
        _, boxes3d, vel = layout.object_state(k)
        cf.image = cf.instance = cf.depth = None
        out.append(_Rendered(png.tobytes(), cf, boxes3d, vel, layout.labels, layout.instance_ids, blob, counts))
    return out


def _jobs(seed: int, num_frames: int, frames_per_sequence: int, camera, lidar, scene, write_lidar) -> list[tuple]:
    """Per sequence: its seed, length and start time, as ``synthetic.generate_frames`` lays them out."""
    if frames_per_sequence < 1:
        raise DatasetError(f"frames_per_sequence must be >= 1, got {frames_per_sequence}")
    jobs, done, i = [], 0, 0
    while done < num_frames:
        n = min(frames_per_sequence, num_frames - done)
        t0 = i * (frames_per_sequence * lidar.sweep_period + 1.0)
        jobs.append((sequence_seed(seed, i), n, t0, camera, lidar, scene, write_lidar))
        done += n
        i += 1
    return jobs


def generate_camera_dataset(
    out_dir: Path,
    num_frames: int,
    seed: int,
    camera: CameraSpec | None = None,
    frames_per_sequence: int = 1,
    progress: bool = True,
    *,
    write_lidar: bool = False,
    workers: int = 1,
    lidar: LidarSpec | None = None,
    scene: SceneSpec | None = None,
) -> Path:
    """Render ``num_frames`` images of the scenes ``generate_frames(seed, ...)`` makes; returns ``out_dir``.

    The COCO file and the info are written last, so a folder holding them is complete.
    ``write_lidar`` also ray-casts and writes each frame's lidar points (slow: seconds per frame).
    ``workers`` > 1 renders sequences in that many spawned processes; the output is byte-identical.
    """
    out_dir = Path(out_dir)
    if num_frames < 1:
        raise DatasetError(f"num_frames must be >= 1, got {num_frames}")
    camera = camera or CameraSpec()
    lidar = lidar or LidarSpec()
    images, annotations, data_list = [], [], []
    jobs = _jobs(seed, num_frames, frames_per_sequence, camera, lidar, scene, write_lidar)
    pool = None
    if workers > 1:  # spawned (a forked child inherits OpenCV's thread pool and can hang); one OpenCV thread each
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=cv2.setNumThreads, initargs=(1,))
    try:
        seqs = pool.imap(_render_sequence, jobs) if pool is not None else map(_render_sequence, jobs)
        it: Iterator[_Rendered] = (r for seq in seqs for r in seq)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=num_frames, desc=f"camera {out_dir}", unit="img")
        for idx, r in enumerate(it):
            _write_one(out_dir, idx, r, camera, images, annotations, data_list)
    finally:
        if pool is not None:
            pool.terminate()
    coco = {
        "info": {"description": "awml_deploy synthetic camera", "version": CAMERA_INFO_VERSION, "seed": int(seed)},
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }
    class_names = list((scene or SceneSpec()).class_names)
    info = {
        "metainfo": {"classes": class_names, "classes_2d": list(T4_2D_CLASSES), "version": CAMERA_INFO_VERSION,
                     "box_origin": [0.5, 0.5, 0.5], "seed": int(seed), "camera": CAMERA_NAME},
        "data_list": data_list,
    }
    atomic_write_json(out_dir / COCO_NAME, coco)
    atomic_write_json(out_dir / INFO_NAME, info)
    return out_dir


def _write_one(out_dir: Path, idx: int, r: _Rendered, camera: CameraSpec, images: list, annotations: list,
               data_list: list) -> None:
    cf = r.frame
    rel = f"images/{idx:06d}.png"
    atomic_write_bytes(out_dir / rel, r.png)
    lidar_rel = None
    if r.lidar is not None:
        lidar_rel = f"lidar/{idx:06d}.pcd.bin"
        atomic_write_bytes(out_dir / lidar_rel, r.lidar)
    token = f"{cf.scene_token}-{cf.frame_index:05d}-{idx:06d}"
    image_id = idx + 1
    images.append(
        {"id": image_id, "file_name": rel, "width": camera.width, "height": camera.height, "token": token,
         "timestamp": cf.timestamp}
    )
    cam_instances = []
    for o in cf.objects:
        x0, y0, x1, y1 = (float(v) for v in o.box)
        tok = f"{o.instance_id:016x}"
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": coco_category_id(o.label),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": int(o.ignore),
                "ignore": int(o.ignore),
                "truncation": o.truncation,
                "occlusion": o.occlusion,
                "instance_token": tok,
            }
        )
        cam_instances.append(
            {"bbox": [x0, y0, x1, y1], "bbox_label": o.label, "ignore_flag": bool(o.ignore),
             "truncation": o.truncation, "occlusion": o.occlusion, "depth": o.depth,
             "instance_token": tok, "instance_index": o.index}
        )
    instances = [
        {"bbox_3d": [float(v) for v in r.boxes3d[m]], "bbox_label_3d": int(r.labels3d[m]),
         "velocity": [float(v) for v in r.velocities[m]], "instance_token": f"{int(r.instance_ids[m]):016x}"}
        for m in range(len(r.boxes3d))
    ]
    if r.num_lidar_points is not None:
        for m, inst in enumerate(instances):
            inst["num_lidar_pts"] = int(r.num_lidar_points[m])
    data_list.append(
        {
            "sample_idx": idx,
            "token": token,
            "timestamp": cf.timestamp,
            "scene_token": cf.scene_token,
            "frame_index": cf.frame_index,
            "lidar_points": {"lidar_path": lidar_rel, "num_pts_feats": 5},
            "images": {
                CAMERA_NAME: {
                    "img_path": rel, "height": camera.height, "width": camera.width,
                    "cam2img": camera.K.tolist(), "lidar2cam": camera.T_cam_lidar.tolist(),
                }
            },
            "instances": instances,
            "cam_instances": {CAMERA_NAME: cam_instances},
        }
    )


@dataclass
class CameraSample:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    boxes: np.ndarray  # (N, 4) float32 xyxy, pixel-edge coordinates
    labels: np.ndarray  # (N,) int64 T4 class indices
    ignore: np.ndarray  # (N,) bool
    token: str
    timestamp_ns: int
    intrinsics: np.ndarray  # (3, 3) K, OpenCV convention
    extrinsic: np.ndarray  # (4, 4) T_cam_lidar
    lidar_points: np.ndarray | None = None  # (N, 5) float32 x, y, z, intensity, ring when written


class CameraDataset:
    """Reader of :func:`generate_camera_dataset` folders (``path`` = the folder or its info file)."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        self.root = path.parent if path.is_file() else path
        self.info_path = self.root / INFO_NAME
        self.coco_path = self.root / COCO_NAME
        for p in (self.info_path, self.coco_path):
            if not p.is_file():
                raise DatasetError(f"{p}: not found; generate the camera dataset first (generate_camera_dataset)")
        try:
            info = json.loads(self.info_path.read_bytes())
            self._data_list = list(info["data_list"])
            self.metainfo = dict(info["metainfo"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{self.info_path}: not a camera info file ({exc}); regenerate it") from None
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self._data_list)

    def __iter__(self) -> Iterator[CameraSample]:
        for i in range(len(self)):
            yield self[i]

    def image_path(self, i: int) -> Path:
        return self.root / self._data_list[i]["images"][CAMERA_NAME]["img_path"]

    def __getitem__(self, i: int) -> CameraSample:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        e = self._data_list[i]
        cam = e["images"][CAMERA_NAME]
        path = self.image_path(i)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"{path}: image missing or unreadable (sample {i}, token {e['token']})")
        inst = e["cam_instances"][CAMERA_NAME]
        points = None
        if e["lidar_points"].get("lidar_path"):
            lp = self.root / e["lidar_points"]["lidar_path"]
            if not lp.is_file():
                raise DatasetError(f"{lp}: point file missing (sample {i}, token {e['token']})")
            points = np.fromfile(lp, np.float32).reshape(-1, int(e["lidar_points"]["num_pts_feats"]))
        return CameraSample(
            image=image,
            boxes=np.array([d["bbox"] for d in inst], np.float32).reshape(-1, 4),
            labels=np.array([d["bbox_label"] for d in inst], np.int64),
            ignore=np.array([d["ignore_flag"] for d in inst], bool),
            token=str(e["token"]),
            timestamp_ns=int(round(float(e["timestamp"]) * 1e9)),
            intrinsics=np.array(cam["cam2img"], np.float64),
            extrinsic=np.array(cam["lidar2cam"], np.float64),
            lidar_points=points,
        )

    def fingerprint(self) -> str:
        """sha256 over the info, the COCO file, and every image's (and point file's) path and bytes."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(self.info_path.read_bytes())
            h.update(self.coco_path.read_bytes())
            for i, e in enumerate(self._data_list):
                rels = [e["images"][CAMERA_NAME]["img_path"]]
                if e["lidar_points"].get("lidar_path"):
                    rels.append(e["lidar_points"]["lidar_path"])
                for rel in rels:
                    p = self.root / rel
                    if not p.is_file():
                        raise DatasetError(f"{p}: missing (sample {i}); regenerate the dataset")
                    data = p.read_bytes()
                    h.update(len(rel).to_bytes(4, "little") + rel.encode() + len(data).to_bytes(8, "little"))
                    h.update(data)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"CameraDataset({str(self.root)!r}, {len(self)} images)"
