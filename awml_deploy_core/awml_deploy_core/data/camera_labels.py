"""Compatibility names for the T4 2D class table, which lives in :mod:`awml_deploy_core.labels`.

Kept because branch ``wt/yolox`` may import these names from here; new code imports from ``labels``.
Errors here are ``ConfigError`` (the table's own functions raise ``ValueError``).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..labels import T4_2D_CLASSES, coco_categories, coco_category_id, t4_2d_index, t4_2d_index_from_category

#: T4 2D classes in the model's output order (class index = position).
T4_CLASSES = T4_2D_CLASSES
#: Synthetic (CenterPoint) class name -> T4 2D class index.
SYNTHETIC_TO_T4: dict[str, int] = {c: t4_2d_index(c) for c in ("car", "truck", "bus", "bicycle", "pedestrian")}
#: T4 indices the synthetic world can produce, ascending.
PRESENT_T4: tuple[int, ...] = tuple(sorted(SYNTHETIC_TO_T4.values()))


def t4_index(class_name: str) -> int:
    """T4 2D index of a synthetic class name (``car`` -> 1)."""
    try:
        return SYNTHETIC_TO_T4[class_name]
    except KeyError:
        raise ConfigError(f"class {class_name!r} has no T4 2D class; known: {sorted(SYNTHETIC_TO_T4)}") from None


t4_index_from_category = t4_2d_index_from_category

__all__ = ["PRESENT_T4", "SYNTHETIC_TO_T4", "T4_CLASSES", "coco_categories", "coco_category_id", "t4_index",
           "t4_index_from_category"]
