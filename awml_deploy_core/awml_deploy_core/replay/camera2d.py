"""The 2D replay task: camera images (sensor_msgs/Image) -> Detections2D, scored with pycocotools over the run
and by IoU per frame; see :mod:`.task` for the interface.

Ground truth: the bag's Detections2D ground-truth topic of the camera (label = T4 2D class index, score 1 object /
0 ignore region: :mod:`~awml_deploy_core.data.rosbag_camera`), or the sidecar ``awml_info/camera_infos.json``
(``--gt-info``, the same boxes with ``ignore_flag``). Ignore regions are honoured in both scorings.

Per frame (``frames.jsonl``): detections with score >= the model's ``node_score_threshold`` (the on-vehicle
operating point, 0.35 for Autoware's tensorrt_yolox) are matched greedily by score, per class, to the unmatched
non-ignored ground truth of highest IoU >= 0.5 (TP); one that matches none but covers an ignore region (its
intersection over the detection's own area >= 0.5, COCO's crowd rule) counts neither way; the rest are FP; unmatched
non-ignored ground truth is FN. Over the run: COCO metrics of every detection given (AP50 headline, AP@[.5:.95],
per-class AP50 and AP), through :func:`~awml_deploy_core.metrics.detection2d.evaluate_coco`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.rosbag_camera import (CAMERA_INFO, CAMERA_INFO_FILE, DETECTIONS2D, GT_IGNORE_SCORE, IMAGE, Boxes2D,
                                  camera_info_topic, camera_name, camera_of_image_topic, gt2d_topic, image_to_bgr,
                                  image_topic, labels_to_model, read_detections2d)
from ..errors import DatasetError
from ..metrics.detection2d import RECALL_POINTS, GroundTruth2D
from .task import Headline, NodeSpec, ReplayTask

MATCH_IOU = 0.5
GT_RULE_2D = ("every ground-truth box of a class the model has is scored; an ignore box (heavily occluded or tiny, "
              "score 0 on the ground-truth topic / ignore_flag in the sidecar) is an ignore region: a detection on "
              "it is neither TP nor FP (pycocotools iscrowd), missing it costs nothing")
DEFAULT_OUTPUT_TOPIC = "/perception/object_recognition/detection/awml/rois"


@dataclass(frozen=True)
class Metric2DConfig:
    class_names: tuple[str, ...]
    frame_score_threshold: float  # per-frame counts: the operating point (the node's threshold)
    match_iou: float = MATCH_IOU


def _finite(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


def _decode(msg: Any) -> tuple[np.ndarray, dict[str, Any]]:
    img = image_to_bgr(msg)
    if not img.flags.writeable:  # a view of the bag's bytes; torch warns on (and must not write to) those
        img = img.copy()
    return img, {"width": int(img.shape[1]), "height": int(img.shape[0])}


def _read_outputs(reader: Any, topic: str, class_names: Sequence[str]) -> list[tuple[int, Boxes2D]]:
    return read_detections2d(reader, topic, "detections")


# --------------------------------------------------------------------------------------------- ground truth
def _camera_size(reader: Any, name: str) -> tuple[int, int]:
    """(height, width) from the camera's CameraInfo topic; (0, 0) when the bag has none (COCO needs no size)."""
    topic = camera_info_topic(name)
    if reader.topics.get(topic) is None or reader.topics[topic].msgtype != CAMERA_INFO:
        return 0, 0
    for i, (_, raw) in enumerate(reader.messages(topic)):
        m = reader.deserialize(raw, CAMERA_INFO, topic, i)
        return int(m.height), int(m.width)
    return 0, 0


def _gt_from_topic(reader: Any, topic: str, class_names: Sequence[str], name: str | None) -> Any:
    from ..labels import T4_2D_CLASSES
    from .scoring import GroundTruth

    h, w = _camera_size(reader, name) if name else (0, 0)
    stamps, items = [], []
    for stamp, b in read_detections2d(reader, topic):
        labels = labels_to_model(b.labels, T4_2D_CLASSES, class_names)
        keep = labels >= 0
        items.append(GroundTruth2D(b.boxes[keep], labels[keep], b.scores[keep] == GT_IGNORE_SCORE, h, w))
        stamps.append(stamp)
    return GroundTruth(stamps, items, f"bag {reader.path}: topic {topic!r}")


def gt_from_sidecar(path: str | Path, name: str, class_names: Sequence[str]) -> Any:
    """One camera's ground truth from a bag's ``awml_info/camera_infos.json``."""
    from .scoring import GroundTruth

    path = Path(path)
    try:
        info = json.loads(path.read_text())
        classes = list(info["metainfo"]["classes_2d"])
        stamps, items = [], []
        for e in info["data_list"]:
            if name not in e["images"]:
                raise DatasetError(f"{path}: no camera {name!r} (cameras: {sorted(e['images'])})")
            cam, inst = e["images"][name], e["cam_instances"][name]
            labels = labels_to_model(np.array([d["bbox_label"] for d in inst], np.int64), classes, class_names)
            keep = labels >= 0
            items.append(GroundTruth2D(np.array([d["bbox"] for d in inst], np.float32).reshape(-1, 4)[keep],
                                       labels[keep], np.array([d["ignore_flag"] for d in inst], bool)[keep],
                                       int(cam["height"]), int(cam["width"])))
            stamps.append(int(e["timestamp_ns"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: not a camera info sidecar ({type(e).__name__}: {e})") from None
    return GroundTruth(stamps, items, f"info file {path} ({name})")


def _open_gt(reader: Any, class_names: Sequence[str], gt_topic: str | None, gt_info: Any, input_topic: str) -> Any:
    """``gt_info`` (a camera_infos.json) if given, else ``gt_topic``, else the camera's ground-truth topic, else the
    bag's sidecar."""
    name = camera_of_image_topic(input_topic)
    if gt_info is not None and gt_topic is not None:
        raise DatasetError("give ground truth either as a topic (--gt-topic) or as an info file (--gt-info), not both")
    sidecar = reader.path / "awml_info" / CAMERA_INFO_FILE if reader.path.is_dir() else None
    if gt_info is not None or gt_topic is None and (name is None or gt2d_topic(name) not in reader.topics):
        path = gt_info if gt_info is not None else sidecar
        if path is None or not Path(path).is_file() or name is None:
            raise DatasetError(f"bag {reader.path}: no 2D ground truth for {input_topic!r}: no topic "
                               f"{gt2d_topic(name) if name else '/awml/ground_truth/camera/<name>/objects'!r}, no "
                               f"--gt-topic / --gt-info given ({reader.describe_topics()})")
        gt = gt_from_sidecar(path, name, class_names)
    else:
        gt = _gt_from_topic(reader, gt_topic or gt2d_topic(name), class_names, name)  # type: ignore[arg-type]
    if not len(gt):
        raise DatasetError(f"{gt.source}: holds no ground-truth frames")
    return gt


# --------------------------------------------------------------------------------------------- scoring
def _metric_config(cfg: Any, class_names: Sequence[str]) -> Metric2DConfig:
    if cfg is None:
        from ..config import YOLOXModelConfig

        return Metric2DConfig(tuple(class_names), YOLOXModelConfig().node_score_threshold)
    return Metric2DConfig(tuple(cfg.model.class_names), float(cfg.model.node_score_threshold))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from ..pipelines.yolox.postprocess import box_iou

    return box_iou(a.astype(np.float64), b.astype(np.float64))


def _cover(dets: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Intersection over the detection's own area (COCO's IoU against a crowd region), [K, M]."""
    lt = np.maximum(dets[:, None, :2], regions[None, :, :2])
    rb = np.minimum(dets[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clip(0).prod(-1)
    area = ((dets[:, 2] - dets[:, 0]).clip(0) * (dets[:, 3] - dets[:, 1]).clip(0))[:, None]
    return np.where(area > 0, inter / np.maximum(area, 1e-12), 0.0)


def match_frame_2d(dets: Any, gt: GroundTruth2D, num_classes: int, score_threshold: float, iou: float = MATCH_IOU
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(TP, FP, FN) per class of one image under the module's per-frame rule."""
    tp, fp, fn = (np.zeros(num_classes, np.int64) for _ in range(3))
    boxes = np.asarray(dets.boxes, np.float64).reshape(-1, 4)
    scores, labels = np.asarray(dets.scores, np.float64), np.asarray(dets.labels, np.int64)
    gb, gl, gi = np.asarray(gt.boxes, np.float64).reshape(-1, 4), np.asarray(gt.labels), np.asarray(gt.ignore, bool)
    for c in range(num_classes):
        d = np.flatnonzero((labels == c) & (scores >= score_threshold))
        d = d[np.argsort(-scores[d], kind="stable")]
        g, r = gb[(gl == c) & ~gi], gb[(gl == c) & gi]
        used = np.zeros(len(g), bool)
        ious = _iou(boxes[d], g) if len(d) and len(g) else np.zeros((len(d), len(g)))
        cover = _cover(boxes[d], r) if len(d) and len(r) else np.zeros((len(d), len(r)))
        for k in range(len(d)):
            cand = np.where(used, -1.0, ious[k]) if len(g) else np.zeros(0)
            j = int(np.argmax(cand)) if len(cand) else -1
            if j >= 0 and cand[j] >= iou:
                used[j] = True
                tp[c] += 1
            elif not (len(r) and cover[k].max() >= iou):
                fp[c] += 1
        fn[c] += int((~used).sum())
    return tp, fp, fn


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def _score_frame(dets: Any, gt: GroundTruth2D, mc: Metric2DConfig, class_names: Sequence[str]
                 ) -> tuple[dict[str, Any], Any, GroundTruth2D]:
    tp, fp, fn = match_frame_2d(dets, gt, len(class_names), mc.frame_score_threshold, mc.match_iou)
    t, f, n = int(tp.sum()), int(fp.sum()), int(fn.sum())
    ignored = int(np.asarray(gt.ignore, bool).sum())
    line: dict[str, Any] = {"num_gt": len(gt.labels) - ignored, "num_gt_ignored": ignored,
                            "num_detections_at_threshold": int((np.asarray(dets.scores) >= mc.frame_score_threshold)
                                                               .sum()),
                            "tp": dict(zip(class_names, tp.tolist())), "fp": dict(zip(class_names, fp.tolist())),
                            "fn": dict(zip(class_names, fn.tolist())), "recall": _ratio(t, t + n),
                            "precision": _ratio(t, t + f)}
    return line, dets, gt


def _aggregate(dets: Sequence[Any], gts: Sequence[GroundTruth2D], mc: Metric2DConfig) -> Any:
    from ..metrics.detection2d import evaluate_coco

    return evaluate_coco(gts, dets, mc.class_names) if dets else None


def _gt_summary(m: Any, no_points: int) -> dict[str, Any]:
    return {"scored": int(m.num_gt) if m is not None else 0, "ignore_regions": int(m.num_ignored) if m else 0,
            "rule": GT_RULE_2D}


def _headline_fields(m: Any, class_names: Sequence[str]) -> dict[str, Any]:
    if m is None:
        return {"ap50": None, "ap": None, "ap50_per_class": None}
    return {"ap50": _finite(m.stats["ap50"]), "ap": _finite(m.stats["map"]),
            "ap50_per_class": {c: _finite(m.per_class_ap50.get(c)) for c in m.classes}}


def _headline(s: Mapping[str, Any]) -> Headline:
    return Headline("AP50", s.get("ap50"), "AP50", s.get("ap50_per_class"))


# --------------------------------------------------------------------------------------------- criteria
AP_METRICS = {"ap50": ("AP50", "per_class_ap50", "ap50"), "ap": ("AP@[.5:.95]", "per_class_ap", "map")}


def _check_criteria(c: Any, class_names: Sequence[str], cfg: Any, source: str) -> None:
    from ..errors import ConfigError

    if "ap_threshold_m" in c.model_fields_set:
        raise ConfigError(f"{source}: ap_threshold_m is a 3D criterion; a 2D model gates on ap_metric (ap50 | ap)")
    if c.ap_metric is not None and c.ap_metric not in AP_METRICS:
        raise ConfigError(f"{source}: ap_metric {c.ap_metric!r}: choose one of {', '.join(AP_METRICS)}")


def _criteria_ap(c: Any, s: Mapping[str, Any]) -> tuple[str, dict[str, float | None], float | None, dict[str, int]]:
    label, per_key, stat = AP_METRICS[c.ap_metric or "ap50"]
    m = s.get("metrics") or {}
    per = {cls: _finite((m.get(per_key) or {}).get(cls)) for cls in s["class_names"]}
    tot = s.get("frame_totals") or {}
    num_gt = {cls: int((tot.get("tp") or {}).get(cls, 0) + (tot.get("fn") or {}).get(cls, 0))
              for cls in s["class_names"]}
    return f"({label})", per, _finite((m.get("stats") or {}).get(stat)), num_gt


# --------------------------------------------------------------------------------------------- report
def _report_section(s: Mapping[str, Any]) -> list[str]:
    from ..report import markdown_table
    from .report import _f

    m = s.get("metrics")
    if not m:
        return []
    c, tot, st = s["counts"], s["frame_totals"], m["stats"]
    return [f"## 2D detection ({c['scored']} scored images, pycocotools, ignore regions honoured)", "",
            f"AP50 **{_f(s.get('ap50'))}** - AP@[.5:.95] {_f(st.get('map'))} - AP75 {_f(st.get('ap75'))} - "
            f"AR@100 {_f(st.get('ar100'))}; {m['num_gt']} ground-truth boxes, {m['num_ignored']} ignore regions", "",
            markdown_table(["class", "AP50", "AP@[.5:.95]", "TP", "FP", "FN"],
                           [[n, _f(m["per_class_ap50"].get(n)), _f(m["per_class_ap"].get(n)), tot["tp"][n],
                             tot["fp"][n], tot["fn"][n]] for n in m["classes"]]), "",
            f"TP/FP/FN per frame at score >= {s.get('frame_score_threshold')} and IoU >= {MATCH_IOU} "
            "(the node's operating point); AP over every detection.", ""]


def _pr_curves(s: Mapping[str, Any]) -> tuple[dict[str, dict[str, tuple[list[float], list[float]]]], str]:
    curves = ((s.get("metrics") or {}).get("pr_curves")) or {}
    return {c: {"0.5": (RECALL_POINTS.tolist(), list(p))} for c, p in curves.items()}, "0.5"


# --------------------------------------------------------------------------------------------- node, fleet
def _node_params(cfg: Any, backend: str) -> dict[str, Any]:
    # -1: the model config's node_score_threshold (with its node_nms_iou): what node_thresholds() gives offline
    params: dict[str, Any] = {"score_threshold": -1.0}
    if backend == "tensorrt":
        params["precision"] = cfg.export.tensorrt.precision
    return params


def _node_overrides(model: Any) -> dict[str, Any]:
    return {"score_threshold": float(model.node_score_threshold), "nms_iou": float(model.node_nms_iou)}


def _dets_json(d: Any) -> dict[str, list]:
    return {"boxes": np.asarray(d.boxes).tolist(), "scores": np.asarray(d.scores).tolist(),
            "labels": np.asarray(d.labels).tolist()}


def _dets_from_json(d: dict[str, list]) -> Boxes2D:
    return Boxes2D(np.asarray(d["boxes"], np.float32).reshape(-1, 4), np.asarray(d["labels"], np.int64),
                   np.asarray(d["scores"], np.float32))


def _gt_json(g: GroundTruth2D) -> dict[str, Any]:
    return {"boxes": np.asarray(g.boxes).tolist(), "labels": np.asarray(g.labels).tolist(),
            "ignore": np.asarray(g.ignore, bool).tolist(), "height": int(g.height), "width": int(g.width)}


def _gt_from_json(d: dict[str, Any]) -> GroundTruth2D:
    return GroundTruth2D(np.asarray(d["boxes"], np.float32).reshape(-1, 4), np.asarray(d["labels"], np.int64),
                         np.asarray(d["ignore"], bool), int(d["height"]), int(d["width"]))


TASK = ReplayTask(
    name="detection2d", input_role="camera", input_unit="image", input_msgtype=IMAGE,
    default_input_topic=image_topic(camera_name(0)), topic_key="image_topic", output_msgtype=DETECTIONS2D,
    decode=_decode, read_outputs=_read_outputs, open_ground_truth=_open_gt, metric_config=_metric_config,
    score_frame=_score_frame, aggregate=_aggregate, ground_truth_summary=_gt_summary,
    match_fields=lambda mc: {"match_iou": mc.match_iou, "frame_score_threshold": mc.frame_score_threshold}, headline_fields=_headline_fields, headline=_headline,
    check_criteria=_check_criteria, criteria_ap=_criteria_ap, report_section=_report_section, pr_curves=_pr_curves,
    node_overrides=_node_overrides,
    node=NodeSpec("yolox_node", "yolox_node", "~/input/image", "~/output/detections", DEFAULT_OUTPUT_TOPIC,
                  "yolox_node.param.yaml", _node_params, accepts_onnx_cache_dir=True),
    dets_to_json=_dets_json, dets_from_json=_dets_from_json, gt_to_json=_gt_json, gt_from_json=_gt_from_json,
)

__all__ = ["GT_RULE_2D", "MATCH_IOU", "Metric2DConfig", "TASK", "gt_from_sidecar", "match_frame_2d"]
