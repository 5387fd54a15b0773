"""Class name <-> Autoware label: the one table the bag code, the replay and the ROS nodes all use.
Also the T4 2D detector's class order and its COCO category ids (bottom of the file).

The numbers are those of Autoware's ``autoware_perception_msgs/ObjectClassification``, read from the constants
of ``awml_deploy_msgs/DetectedObject`` (its ``.msg`` text in :mod:`.data.msg_definitions`), so the table and
the message cannot drift apart. Names are matched case-insensitively; names Autoware does not know are
UNKNOWN (0). No ROS imports.
"""

from __future__ import annotations

import functools

import re
from collections.abc import Sequence

import numpy as np

from .data.msg_definitions import DETECTED_OBJECT_MSG


def _constants(text: str) -> dict[str, int]:
    """``uint8 NAME=value`` lines of a .msg text."""
    pattern = r"^\s*u?int\d+\s+([A-Z_][A-Z0-9_]*)\s*=\s*(\d+)"
    return {m.group(1): int(m.group(2)) for m in re.finditer(pattern, text, re.M)}


# "unknown" -> 0, "car" -> 1, ..., "pedestrian" -> 7 (Autoware's ObjectClassification numbers).
AUTOWARE_LABELS: dict[str, int] = {k.lower(): v for k, v in _constants(DETECTED_OBJECT_MSG).items()}
AUTOWARE_UNKNOWN = AUTOWARE_LABELS["unknown"]
# The known classes alone (what a class name can map to besides UNKNOWN).
CLASS_TO_AUTOWARE_LABEL: dict[str, int] = {k: v for k, v in AUTOWARE_LABELS.items() if v != AUTOWARE_UNKNOWN}
# Other spellings in use (Autoware's lidar_centerpoint calls motorcycles "MOTORBIKE").
LABEL_ALIASES = {"motorbike": "motorcycle"}


def autoware_label(class_name: str) -> int:
    """Autoware label of a class name, case-insensitive ("CAR", "car" -> 1); unknown names -> UNKNOWN (0)."""
    key = class_name.strip().lower()
    return AUTOWARE_LABELS.get(LABEL_ALIASES.get(key, key), AUTOWARE_UNKNOWN)


def autoware_labels(class_names: Sequence[str]) -> np.ndarray:
    """uint8 lookup table: class index -> Autoware label (read-only; made once per class list: the node asks for
    it every frame)."""
    return _autoware_labels(tuple(class_names))


@functools.lru_cache(maxsize=32)
def _autoware_labels(class_names: tuple[str, ...]) -> np.ndarray:
    lut = np.array([autoware_label(n) for n in class_names], dtype=np.uint8)
    lut.setflags(write=False)
    return lut


def labels_to_autoware(labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Class indices -> Autoware labels (uint8); indices outside ``class_names`` -> UNKNOWN, as Autoware does."""
    lut = autoware_labels(class_names)
    labels = np.asarray(labels)
    out = np.full(len(labels), AUTOWARE_UNKNOWN, dtype=np.uint8)
    ok = (labels >= 0) & (labels < len(lut))
    out[ok] = lut[labels[ok]]
    return out


def class_index_by_label(class_names: Sequence[str]) -> dict[int, int]:
    """Autoware label -> the first class index with that label (the way labels go back to class indices)."""
    reverse: dict[int, int] = {}
    for i, lab in enumerate(autoware_labels(class_names).tolist()):
        reverse.setdefault(lab, i)
    return reverse


# ------------------------------------------------------------------------------ T4 2D classes
# The output order of AWML's T4 2D detectors (YOLOX_opt_elan, Autoware's tensorrt_yolox): class index =
# position. Not Autoware's ObjectClassification numbers above: there bicycle is 6 and pedestrian 7.
T4_2D_CLASSES: tuple[str, ...] = (
    "unknown", "car", "truck", "bus", "trailer", "motorcycle", "pedestrian", "bicycle",
)
# COCO category id = T4 2D index + 1 (COCO keeps 0 free); only the two functions below use the offset.
_COCO_OFFSET = 1


def t4_2d_index(class_name: str) -> int:
    """T4 2D class index of a class name, case-insensitive ("car" -> 1, "bicycle" -> 7)."""
    key = class_name.strip().lower()
    key = LABEL_ALIASES.get(key, key)
    if key not in T4_2D_CLASSES:
        raise ValueError(f"class {class_name!r} is not a T4 2D class; known: {T4_2D_CLASSES}")
    return T4_2D_CLASSES.index(key)


def coco_category_id(t4_2d: int) -> int:
    """COCO category id of T4 2D class index ``t4_2d``."""
    if not 0 <= int(t4_2d) < len(T4_2D_CLASSES):
        raise ValueError(f"T4 2D class index {t4_2d} out of range 0..{len(T4_2D_CLASSES) - 1}")
    return int(t4_2d) + _COCO_OFFSET


def t4_2d_index_from_category(category_id: int) -> int:
    """Inverse of :func:`coco_category_id`."""
    t4 = int(category_id) - _COCO_OFFSET
    if not 0 <= t4 < len(T4_2D_CLASSES):
        raise ValueError(f"COCO category id {category_id} is not a T4 2D class (1..{len(T4_2D_CLASSES)})")
    return t4


def coco_categories() -> list[dict]:
    """The ``categories`` list of a COCO file: all T4 2D classes."""
    return [{"id": coco_category_id(i), "name": n, "supercategory": "object"} for i, n in enumerate(T4_2D_CLASSES)]


__all__ = ["AUTOWARE_LABELS", "AUTOWARE_UNKNOWN", "CLASS_TO_AUTOWARE_LABEL", "LABEL_ALIASES", "T4_2D_CLASSES",
           "autoware_label", "autoware_labels", "class_index_by_label", "coco_categories", "coco_category_id",
           "labels_to_autoware", "t4_2d_index", "t4_2d_index_from_category"]
