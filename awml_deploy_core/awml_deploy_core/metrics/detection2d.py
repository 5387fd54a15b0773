"""COCO 2D detection metrics through the real library (pycocotools): AP@[.5:.95], AP50, AP75, AP small/medium/large,
AR@100, per-class AP50 and precision/recall curves at IoU 0.5.

Ignore regions: pycocotools reads ``iscrowd`` (its ``ignore`` key is overwritten by ``iscrowd`` when it prepares
the ground truth), so an ignored object becomes a crowd annotation: a detection on it (IoU against a crowd region is
intersection over the detection's area) counts neither as a true nor as a false positive, and missing it costs no
recall. Only classes with at least one non-ignored ground-truth box are scored ("present classes"); the synthetic
world fills 5 of the 8 T4 classes.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAT_NAMES = ("map", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100", "ar_small",
              "ar_medium", "ar_large")
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass
class GroundTruth2D:
    """One image's ground truth: boxes [K, 4] xyxy pixels, labels [K] class indices, ignore [K] bool."""

    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    height: int
    width: int


@dataclass
class Detection2DMetrics:
    stats: dict[str, float]
    per_class_ap50: dict[str, float]
    per_class_ap: dict[str, float]
    # class -> precision at the 101 COCO recall points, IoU 0.5, all areas, 100 detections
    pr_curves: dict[str, list[float]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    num_images: int = 0
    num_gt: int = 0
    num_ignored: int = 0

    @property
    def map(self) -> float:
        return self.stats["map"]

    @property
    def ap50(self) -> float:
        return self.stats["ap50"]

    def to_dict(self) -> dict[str, Any]:
        return {"stats": self.stats, "per_class_ap50": self.per_class_ap50, "per_class_ap": self.per_class_ap,
                "pr_curves": self.pr_curves, "classes": self.classes, "num_images": self.num_images,
                "num_gt": self.num_gt, "num_ignored": self.num_ignored,
                "rules": "pycocotools COCOeval bbox, maxDets [1, 10, 100], ignore as iscrowd, present classes"}

    def table(self) -> str:
        lines = [f"{'class':<12} {'AP50':>7} {'AP':>7}"]
        lines += [f"{c:<12} {self.per_class_ap50[c]:>7.4f} {self.per_class_ap[c]:>7.4f}" for c in self.classes]
        lines.append(f"{'mean':<12} {self.stats['ap50']:>7.4f} {self.stats['map']:>7.4f}")
        lines.append("  ".join(f"{k}={v:.4f}" for k, v in self.stats.items()))
        return "\n".join(lines)


def _xywh(b: np.ndarray) -> list[float]:
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def coco_datasets(gts: Sequence[GroundTruth2D], dets: Sequence[Any], class_names: Sequence[str]
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ground-truth and detection datasets in COCO format (category id = class index + 1)."""
    images = [{"id": i + 1, "height": int(g.height), "width": int(g.width)} for i, g in enumerate(gts)]
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(class_names)]
    gt_anns, dt_anns = [], []
    for i, g in enumerate(gts):
        for b, lab, ign in zip(np.asarray(g.boxes, np.float64).reshape(-1, 4), g.labels, g.ignore):
            xywh = _xywh(b)
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": i + 1, "category_id": int(lab) + 1, "bbox": xywh,
                            "area": xywh[2] * xywh[3], "iscrowd": int(bool(ign)), "ignore": int(bool(ign))})
    for i, d in enumerate(dets):
        for b, s, lab in zip(np.asarray(d.boxes, np.float64).reshape(-1, 4), d.scores, d.labels):
            xywh = _xywh(b)
            dt_anns.append({"id": len(dt_anns) + 1, "image_id": i + 1, "category_id": int(lab) + 1, "bbox": xywh,
                            "area": xywh[2] * xywh[3], "score": float(s), "iscrowd": 0})
    return ({"images": images, "categories": cats, "annotations": gt_anns},
            {"images": images, "categories": cats, "annotations": dt_anns})


def _coco(dataset: dict[str, Any]) -> Any:
    from pycocotools.coco import COCO

    c = COCO()
    c.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        c.createIndex()
    return c


def _mean_valid(a: np.ndarray) -> float:
    v = a[a > -1]
    return float(v.mean()) if v.size else float("nan")


def evaluate_coco(gts: Sequence[GroundTruth2D], dets: Sequence[Any], class_names: Sequence[str]
                  ) -> Detection2DMetrics:
    """COCOeval (bbox) over the classes present in the ground truth; ``dets[i]`` has boxes/scores/labels."""
    from pycocotools.cocoeval import COCOeval

    if len(gts) != len(dets):
        raise ValueError(f"evaluate_coco: {len(gts)} ground-truth images but {len(dets)} detection sets")
    gt_ds, dt_ds = coco_datasets(gts, dets, class_names)
    present = sorted({a["category_id"] for a in gt_ds["annotations"] if not a["iscrowd"]})
    names = [class_names[c - 1] for c in present]
    num_ignored = sum(a["iscrowd"] for a in gt_ds["annotations"])
    base = Detection2DMetrics({k: float("nan") for k in STAT_NAMES}, {}, {}, {}, names, len(gts),
                              len(gt_ds["annotations"]) - num_ignored, num_ignored)
    if not present:
        return base
    ev = COCOeval(_coco(gt_ds), _coco(dt_ds), "bbox")
    ev.params.catIds = present
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    base.stats = {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}
    prec = ev.eval["precision"]  # [T IoU, R recall, K class, A area, M maxDets]
    for k, n in enumerate(names):
        base.per_class_ap50[n] = _mean_valid(prec[0, :, k, 0, -1])
        base.per_class_ap[n] = _mean_valid(prec[:, :, k, 0, -1])
        base.pr_curves[n] = [float(max(p, 0.0)) for p in prec[0, :, k, 0, -1]]
    return base
