"""Class name <-> Autoware label: the one table the bag code, the replay and the ROS nodes all use.

The numbers are those of Autoware's ``autoware_perception_msgs/ObjectClassification``, read from the constants
of ``awml_deploy_msgs/DetectedObject`` (its ``.msg`` text in :mod:`.data.msg_definitions`), so the table and
the message cannot drift apart. Names are matched case-insensitively; names Autoware does not know are
UNKNOWN (0). No ROS imports.
"""

from __future__ import annotations

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
    """uint8 lookup table: class index -> Autoware label."""
    return np.array([autoware_label(n) for n in class_names], dtype=np.uint8)


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


__all__ = ["AUTOWARE_LABELS", "AUTOWARE_UNKNOWN", "CLASS_TO_AUTOWARE_LABEL", "LABEL_ALIASES", "autoware_label",
           "autoware_labels", "class_index_by_label", "labels_to_autoware"]
