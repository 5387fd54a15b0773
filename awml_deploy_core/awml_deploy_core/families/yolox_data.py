"""The camera frames YOLOX is verified and evaluated on: the synthetic camera's COCO dataset, generated once into
the cache folder (keyed by seed and frame count), from the held-out seed by default."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from ..bundle import sha256_json
from ..errors import ConfigError, DatasetError

log = logging.getLogger(__name__)


def open_camera_dataset(data: Any, cache_dir: Path, progress: bool) -> Any:
    from ..data.camera_dataset import CameraDataset, generate_camera_dataset

    if data.num_frames == 0:
        raise DatasetError("data.num_frames is 0: there are no frames to verify or evaluate; set it to 1 or more")
    if data.source != "synthetic":
        raise ConfigError("data.source: the yolox family reads the synthetic camera only (source: synthetic)")
    key = sha256_json({"camera": 1, "seed": data.seed, "n": data.num_frames, "per_seq": data.frames_per_sequence})[:12]
    folder = Path(cache_dir) / f"camera_{key}"
    if not folder.is_dir():
        log.info("generating %d synthetic camera frames (seed %d) into %s", data.num_frames, data.seed, folder)
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        generate_camera_dataset(tmp, data.num_frames, data.seed, frames_per_sequence=data.frames_per_sequence,
                                progress=progress)
        tmp.rename(folder)  # the whole folder appears at once
    dataset = CameraDataset(folder)
    if len(dataset) == 0:
        raise DatasetError(f"{dataset!r} holds no frames: nothing to verify or evaluate")
    return dataset
