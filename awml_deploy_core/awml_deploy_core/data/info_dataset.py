"""Datasets in AWML's own info format (the mmdet3d v2 layout), for synthetic and real data alike.

On disk: an info file plus a folder of point files.

* Info file, ``.pkl`` (pickle, as AWML/mmengine write it) or ``.json`` with the same content::

      {"metainfo": {"classes": [...], "version": ...},
       "data_list": [{"sample_idx": int, "token": str, "timestamp": float (seconds),
                      "lidar_points": {"lidar_path": "relative/path.pcd.bin", "num_pts_feats": 5},
                      "instances": [{"bbox_3d": [x, y, z, l, w, h, yaw], "bbox_label_3d": int,
                                     "velocity": [vx, vy], "num_lidar_pts": int,
                                     "bbox_3d_isvalid": bool, "instance_token": str}, ...]}, ...]}

  ``bbox_3d`` holds the box's gravity centre, as AWML's T4 converter writes it (t4_devkit box
  position = box centre; dims reordered to l, w, h; yaw from the quaternion) and as mmdet3d's
  ``NuScenesDataset``/AWML's ``T4Dataset`` read it (``origin=(0.5, 0.5, 0.5)``). A file holding bottom
  centres can be read with ``box_z_origin=0.0``. ``bbox_label_3d`` indexes ``metainfo["classes"]``
  (a mmdet3d ``metainfo["categories"]`` name->index dict is accepted too); ``-1`` marks an ignored box.
  Paths in ``lidar_path`` are relative to ``data_root`` (AWML: ``data_root`` + ``data_prefix.pts``).

* Point files: raw little-endian float32, ``num_pts_feats`` values per point, read with
  ``np.fromfile(path, np.float32).reshape(-1, num_pts_feats)``. In real T4/nuScenes files the fifth
  value is the ring (beam) index, not a time; AWML's ``LoadPointsFromMultiSweeps`` overwrites column 4
  of the key frame with 0 (its time lag) before use. This reader does the same by default
  (``column4="zero"``): a :class:`Sample` always holds ``(N, 5)`` x, y, z, intensity, time_lag.
  Columns past the fifth are dropped; a 4-column file gets a zero time-lag column. The synthetic
  writer stores the ring index in column 4, like T4's ``LIDAR_CONCAT`` files.

Every file is written atomically (:func:`awml_deploy_core.bundle.atomic_write_bytes`).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..bundle import atomic_write_bytes
from ..errors import DatasetError
from ..structures import Boxes3D
from .lidar import LidarSpec
from .synthetic import Frame, SceneSpec, generate_frames

INFO_VERSION = "awml_deploy-synthetic-1"
_TAIL = 64 * 1024


# ---------------------------------------------------------------------------------- safe unpickle
def _allowed_globals() -> dict[tuple[str, str], Any]:
    import builtins
    import codecs
    import collections

    allowed: dict[tuple[str, str], Any] = {
        ("builtins", name): getattr(builtins, name)
        for name in ("set", "frozenset", "bytearray", "complex", "slice", "range")
    }
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed[("_codecs", "encode")] = codecs.encode  # bytes in protocol 0-2 pickles (numpy array data)
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    try:  # numpy >= 2
        from numpy._core import multiarray as _ma
        from numpy._core import numeric as _num
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray as _ma  # type: ignore[no-redef]
        from numpy.core import numeric as _num  # type: ignore[no-redef]
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = _ma._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = _ma.scalar
        allowed[(f"{mod}.numeric", "_frombuffer")] = _num._frombuffer
    # Scalar types appear as dtype classes in numpy >= 1.25 pickles (e.g. numpy.dtypes.Float64DType).
    try:
        import numpy.dtypes as _dt
    except ImportError:  # numpy < 1.25
        _dt = None
    for name in dir(_dt) if _dt is not None else ():
        if name.endswith("DType"):
            allowed[("numpy.dtypes", name)] = getattr(_dt, name)
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Loads only plain containers, numbers, strings and numpy arrays/scalars.

    Any other global (a class or function a pickle could call, e.g. ``os.system``) is refused, so an
    info file from an untrusted source cannot run code while it is read.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        if module == "__builtin__":  # protocol 0-2 pickles name builtins the Python 2 way
            module = "builtins"
        try:
            return _RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in an info file") from None


def safe_load_pickle(data: bytes) -> Any:
    """Unpickle ``data`` allowing only builtin containers and numpy arrays (no code execution)."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()


# --------------------------------------------------------------------------------------- writing
def _frame_info(frame: Frame, sample_idx: int, lidar_path: str) -> dict:
    instances = []
    for i in range(len(frame.gt)):
        label = int(frame.gt.labels[i])
        n = int(frame.num_lidar_points[i])
        instances.append(
            {
                "bbox_3d": [float(v) for v in frame.gt.boxes[i]],
                "bbox_label": label,
                "bbox_label_3d": label,
                "velocity": [float(v) for v in frame.gt.velocities[i]],
                "num_lidar_pts": n,
                "bbox_3d_isvalid": n > 0,
                "instance_token": f"{int(frame.instance_ids[i]):016x}",
            }
        )
    scene = frame.scene_token or "scene"
    return {
        "sample_idx": sample_idx,
        "token": f"{scene}-{frame.frame_index:05d}-{sample_idx:06d}",
        "timestamp": float(frame.timestamp),
        "scene_token": frame.scene_token,
        "lidar_points": {"lidar_path": lidar_path, "num_pts_feats": 5},
        "instances": instances,
    }


def write_info_dataset(
    frames: Iterable[Frame],
    out_dir: Path,
    info_name: str = "infos.pkl",
    progress: bool = False,
    total: int | None = None,
) -> Path:
    """Write ``frames`` as point files under ``out_dir/lidar/`` plus the info file ``out_dir/info_name``.

    Point files hold x, y, z, intensity, ring (float32, like T4 ``LIDAR_CONCAT``). The info file is
    pickled (``.pkl``) or JSON (``.json``) by its suffix, and written last, so a folder with an info
    file is complete. Returns the info file's path.
    """
    out_dir = Path(out_dir)
    suffix = Path(info_name).suffix.lower()
    if suffix not in (".pkl", ".pickle", ".json"):
        raise DatasetError(f"{info_name}: info file name must end in .pkl or .json")
    data_list: list[dict] = []
    class_names: tuple[str, ...] | None = None
    it: Iterable[Frame] = frames
    if progress:
        from tqdm import tqdm

        it = tqdm(frames, total=total, desc=f"writing {out_dir}", unit="frame")
    for idx, frame in enumerate(it):
        if class_names is None:
            class_names = tuple(frame.class_names)
        elif tuple(frame.class_names) != class_names:
            raise DatasetError(
                f"frame {idx}: class_names {frame.class_names} differ from the first frame's {class_names}"
            )
        rel = f"lidar/{idx:06d}.pcd.bin"
        pts = np.empty((len(frame.points), 5), "<f4")
        pts[:, :4] = frame.points
        pts[:, 4] = frame.ring
        atomic_write_bytes(out_dir / rel, pts.tobytes())
        data_list.append(_frame_info(frame, idx, rel))
    info = {
        "metainfo": {"classes": list(class_names or ()), "version": INFO_VERSION, "box_origin": [0.5, 0.5, 0.5]},
        "data_list": data_list,
    }
    if suffix == ".json":
        blob = json.dumps(info).encode()
    else:
        blob = pickle.dumps(info, protocol=4)
    path = out_dir / info_name
    atomic_write_bytes(path, blob)
    return path


def generate_dataset(
    out_dir: Path,
    num_frames: int,
    seed: int,
    frames_per_sequence: int = 1,
    lidar: LidarSpec | None = None,
    scene: SceneSpec | None = None,
    progress: bool = False,
    info_name: str = "infos.pkl",
) -> Path:
    """Render ``num_frames`` synthetic frames (see :func:`generate_frames`) through the info format."""
    frames = generate_frames(seed, num_frames, frames_per_sequence, lidar=lidar, scene=scene)
    return write_info_dataset(frames, Path(out_dir), info_name, progress=progress, total=num_frames)


# --------------------------------------------------------------------------------------- reading
@dataclass
class Sample:
    points: np.ndarray  # (N, 5) float32 x, y, z, intensity, time_lag
    timestamp: float  # seconds
    gt: Boxes3D  # boxes with gravity-centre z; labels index the reader's class_names
    token: str
    lidar_path: Path
    num_lidar_points: np.ndarray  # (M,) int32; -1 where the file does not say
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (M,) bbox_3d_isvalid
    instance_tokens: tuple[str, ...] = ()
    sample_idx: int = 0


def _read_info(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path}: info file not found")
    data = path.read_bytes()
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            info = json.loads(data.decode("utf-8"))
        elif suffix in (".pkl", ".pickle"):
            info = safe_load_pickle(data)
        else:
            raise DatasetError(f"{path}: unknown info file type {suffix!r} (use .pkl or .json)")
    except DatasetError:
        raise
    except Exception as exc:  # corrupt file: pickle/json/unicode errors of every kind
        raise DatasetError(f"{path}: cannot read info file ({type(exc).__name__}: {exc})") from None
    if not isinstance(info, dict):
        raise DatasetError(f"{path}: info file holds a {type(info).__name__}, expected a dict with 'data_list'")
    if not isinstance(info.get("data_list"), list):
        raise DatasetError(f"{path}: 'data_list' missing or not a list (is this an mmdet3d v2 / AWML info file?)")
    return info


def _file_classes(info: dict, path: Path) -> tuple[str, ...] | None:
    meta = info.get("metainfo") or {}
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: 'metainfo' is not a dict")
    if "classes" in meta:
        return tuple(str(c) for c in meta["classes"])
    if isinstance(meta.get("categories"), dict):
        cats = meta["categories"]
        names = [None] * len(cats)
        for name, idx in cats.items():
            if not 0 <= int(idx) < len(cats):
                raise DatasetError(f"{path}: metainfo.categories index {idx} for {name!r} out of range")
            names[int(idx)] = str(name)
        return tuple(names)  # type: ignore[arg-type]
    return None


class InfoDataset:
    """Reads an AWML/mmdet3d v2 info file and its point files (see the module docstring).

    ``class_names``: the model's classes; file labels are mapped onto them by name, boxes of other
    classes (and ignored ``-1`` boxes) are dropped and counted in :attr:`dropped`. Defaults to the
    file's own classes. ``data_root``: folder the ``lidar_path`` entries are relative to; defaults to
    the info file's folder.
    """

    def __init__(
        self,
        info_path: str | Path,
        class_names: Sequence[str] | None = None,
        data_root: str | Path | None = None,
        *,
        box_z_origin: float = 0.5,
        column4: str = "zero",
    ) -> None:
        self.info_path = Path(info_path)
        self.data_root = Path(data_root) if data_root is not None else self.info_path.parent
        if column4 not in ("zero", "keep"):
            raise DatasetError(f"column4 must be 'zero' or 'keep', got {column4!r}")
        self._column4 = column4
        self._box_z_shift = 0.5 - float(box_z_origin)
        info = _read_info(self.info_path)
        self.metainfo: dict = dict(info.get("metainfo") or {})
        self.file_classes = _file_classes(info, self.info_path)
        if class_names is None:
            if self.file_classes is None:
                raise DatasetError(f"{self.info_path}: metainfo has no 'classes'; pass class_names")
            class_names = self.file_classes
        self.class_names: tuple[str, ...] = tuple(class_names)
        if self.file_classes is None:  # labels are taken to index class_names directly
            self.file_classes = self.class_names
        self._data_list: list[dict] = info["data_list"]
        # File label index -> our label index (-1 = drop).
        fc = self.file_classes or ()
        self._label_map = np.array([self.class_names.index(c) if c in self.class_names else -1 for c in fc], np.int64)
        self.dropped: dict[str, int] = {}
        for i, entry in enumerate(self._data_list):
            self._check_entry(i, entry)
            for inst in entry.get("instances") or ():
                lab = self._file_label(inst, i)
                if lab < 0 or self._label_map[lab] < 0:
                    name = fc[lab] if lab >= 0 else "<ignored>"
                    self.dropped[name] = self.dropped.get(name, 0) + 1
        self._fingerprint: str | None = None

    # -------------------------------------------------------------------------------- validation
    def _where(self, i: int, entry: Any = None) -> str:
        tok = entry.get("token") if isinstance(entry, dict) else None
        return f"{self.info_path}: frame {i}" + (f" (token {tok})" if tok else "")

    def _check_entry(self, i: int, entry: Any) -> None:
        if not isinstance(entry, dict):
            raise DatasetError(f"{self._where(i)}: entry is a {type(entry).__name__}, expected a dict")
        lp = entry.get("lidar_points")
        if not isinstance(lp, dict) or not isinstance(lp.get("lidar_path"), str):
            raise DatasetError(f"{self._where(i, entry)}: 'lidar_points.lidar_path' missing")
        nf = lp.get("num_pts_feats", 5)
        if not isinstance(nf, (int, np.integer)) or nf < 4:
            raise DatasetError(f"{self._where(i, entry)}: num_pts_feats={nf!r}, need an int >= 4")
        inst = entry.get("instances", [])
        if not isinstance(inst, list):
            raise DatasetError(f"{self._where(i, entry)}: 'instances' is not a list")

    def _file_label(self, inst: dict, i: int) -> int:
        lab = inst.get("bbox_label_3d", inst.get("bbox_label"))
        if lab is None:
            raise DatasetError(f"{self._where(i, self._data_list[i])}: an instance has no 'bbox_label_3d'")
        lab = int(lab)
        n = len(self._label_map)
        if lab >= n or lab < -1:
            where = self._where(i, self._data_list[i])
            raise DatasetError(f"{where}: label {lab} outside metainfo classes (0..{n - 1})")
        return lab

    # ----------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._data_list)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def point_path(self, i: int) -> Path:
        return self.data_root / self._data_list[i]["lidar_points"]["lidar_path"]

    def load_points(self, i: int) -> np.ndarray:
        """(N, 5) float32 x, y, z, intensity, time_lag of frame ``i``."""
        entry = self._data_list[i]
        path = self.point_path(i)
        nf = int(entry["lidar_points"].get("num_pts_feats", 5))
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise DatasetError(f"{self._where(i, entry)}: point file {path} not found") from None
        if size % (nf * 4):
            raise DatasetError(
                f"{self._where(i, entry)}: point file {path} has {size} bytes, not a multiple of "
                f"num_pts_feats*4 = {nf * 4} (truncated or wrong num_pts_feats?)"
            )
        raw = np.fromfile(path, dtype="<f4").reshape(-1, nf)
        out = np.zeros((len(raw), 5), np.float32)
        out[:, :4] = raw[:, :4]
        if nf >= 5 and self._column4 == "keep":
            out[:, 4] = raw[:, 4]
        return out

    def __getitem__(self, i: int) -> Sample:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} out of range (dataset has {len(self)})")
        entry = self._data_list[i]
        points = self.load_points(i)
        boxes, labels, vels, nums, valid, toks = [], [], [], [], [], []
        for inst in entry.get("instances") or ():
            lab = self._file_label(inst, i)
            if lab < 0 or self._label_map[lab] < 0:
                continue
            try:
                b = np.asarray(inst["bbox_3d"], np.float64).reshape(-1)[:7]
                if b.size != 7 or not np.isfinite(b).all():
                    raise ValueError(f"bbox_3d {inst['bbox_3d']!r}")
                v = np.asarray(inst.get("velocity", (0.0, 0.0)), np.float64).reshape(-1)[:2]
                if v.size != 2:
                    raise ValueError(f"velocity {inst.get('velocity')!r}")
            except (KeyError, TypeError, ValueError) as exc:
                raise DatasetError(f"{self._where(i, entry)}: bad instance ({exc})") from None
            b[2] += self._box_z_shift * b[5]
            boxes.append(b)
            labels.append(self._label_map[lab])
            vels.append(np.nan_to_num(v, nan=0.0))  # nuScenes marks unknown velocity as NaN
            nums.append(int(inst.get("num_lidar_pts", -1)))
            valid.append(bool(inst.get("bbox_3d_isvalid", nums[-1] != 0)))
            toks.append(str(inst.get("instance_token", "")))
        gt = Boxes3D(
            np.array(boxes, np.float64).reshape(-1, 7),
            np.ones(len(boxes), np.float32),
            np.array(labels, np.int64),
            np.array(vels, np.float64).reshape(-1, 2),
        )
        ts = float(entry.get("timestamp", 0.0))
        if ts > 1e12:  # v1-style microseconds
            ts /= 1e6
        return Sample(
            points=points,
            timestamp=ts,
            gt=gt,
            token=str(entry.get("token", entry.get("sample_idx", i))),
            lidar_path=self.point_path(i),
            num_lidar_points=np.array(nums, np.int32),
            valid=np.array(valid, bool),
            instance_tokens=tuple(toks),
            sample_idx=int(entry.get("sample_idx", i)),
        )

    # ------------------------------------------------------------------------------ fingerprint
    def fingerprint(self) -> str:
        """sha256 over the info file's bytes and, per point file, its path, size and first/last 64 KiB.

        Content based (not mtimes), cheap on large datasets; a change in the middle of a big point
        file that keeps its size would go unnoticed.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(self.info_path.read_bytes())
            for i in range(len(self)):
                entry = self._data_list[i]
                path = self.point_path(i)
                try:
                    size = path.stat().st_size
                    with open(path, "rb") as fh:
                        head = fh.read(_TAIL)
                        tail = b""
                        if size > _TAIL:
                            fh.seek(max(size - _TAIL, _TAIL))
                            tail = fh.read()
                except FileNotFoundError:
                    raise DatasetError(f"{self._where(i, entry)}: point file {path} not found") from None
                rel = entry["lidar_points"]["lidar_path"].encode()
                h.update(len(rel).to_bytes(4, "little") + rel + size.to_bytes(8, "little"))
                h.update(head)
                h.update(tail)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"InfoDataset({str(self.info_path)!r}, {len(self)} frames, classes={self.class_names})"


__all__ = [
    "InfoDataset",
    "Sample",
    "generate_dataset",
    "safe_load_pickle",
    "write_info_dataset",
]
