"""The T4 2D class table and its one mapping to COCO category ids.

Autoware/AWML's T4 2D detectors (YOLOX_opt_elan) predict 8 classes in this order; the synthetic world
fills 5 of them. ``labels.py`` does not exist in core yet, so the table lives here; move it there if a
shared labels module appears.

COCO category ids are ``T4 index + 1`` (1..8): COCO keeps 0 free, and pycocotools treats every id the
same, so the model's class index ``c`` is category ``c + 1`` everywhere, through :func:`coco_category_id`
and :func:`t4_index_from_category` only.
"""

from __future__ import annotations

from ..errors import ConfigError

#: T4 2D classes in the model's output order (class index = position).
T4_CLASSES: tuple[str, ...] = (
    "unknown",
    "car",
    "truck",
    "bus",
    "trailer",
    "motorcycle",
    "pedestrian",
    "bicycle",
)

#: Synthetic (CenterPoint) class name -> T4 2D class index.
SYNTHETIC_TO_T4: dict[str, int] = {"car": 1, "truck": 2, "bus": 3, "bicycle": 7, "pedestrian": 6}

#: T4 indices the synthetic world can produce, ascending.
PRESENT_T4: tuple[int, ...] = tuple(sorted(SYNTHETIC_TO_T4.values()))

_COCO_OFFSET = 1


def t4_index(class_name: str) -> int:
    """T4 index of a synthetic class name (``car`` -> 1)."""
    try:
        return SYNTHETIC_TO_T4[class_name]
    except KeyError:
        raise ConfigError(f"class {class_name!r} has no T4 2D class; known: {sorted(SYNTHETIC_TO_T4)}") from None


def coco_category_id(t4: int) -> int:
    """COCO category id of T4 class index ``t4`` (the one place the offset lives)."""
    if not 0 <= int(t4) < len(T4_CLASSES):
        raise ConfigError(f"T4 class index {t4} out of range 0..{len(T4_CLASSES) - 1}")
    return int(t4) + _COCO_OFFSET


def t4_index_from_category(category_id: int) -> int:
    """Inverse of :func:`coco_category_id`."""
    t4 = int(category_id) - _COCO_OFFSET
    if not 0 <= t4 < len(T4_CLASSES):
        raise ConfigError(f"COCO category id {category_id} is not a T4 class (1..{len(T4_CLASSES)})")
    return t4


def coco_categories() -> list[dict]:
    """The ``categories`` list of a COCO file: all 8 T4 classes."""
    return [{"id": coco_category_id(i), "name": n, "supercategory": "object"} for i, n in enumerate(T4_CLASSES)]
