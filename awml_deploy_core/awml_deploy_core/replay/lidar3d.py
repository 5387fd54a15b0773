"""The 3D replay task: lidar clouds (PointCloud2) -> DetectedObjects, scored by BEV centre distance (2 m per
frame, AP per threshold over the run); see :mod:`.scoring` for the rules and :mod:`.task` for the interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..data.rosbag_io import DEFAULT_LIDAR_TOPIC, POINTCLOUD2, cloud_to_points, read_detected_objects
from ..structures import Boxes3D
from .task import Headline, NodeSpec, ReplayTask

MATCH_THRESHOLD_M = 2.0
DETECTED_OBJECTS = "awml_deploy_msgs/msg/DetectedObjects"


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def _finite(v: Any) -> float | None:
    import math

    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


def _decode(msg: Any) -> tuple[np.ndarray, dict[str, Any]]:
    points = cloud_to_points(msg)
    return points, {"num_points": len(points)}


def _open_gt(reader: Any, class_names: Sequence[str], gt_topic: str | None, gt_info: Any, input_topic: str) -> Any:
    from .scoring import open_ground_truth

    return open_ground_truth(reader, class_names, gt_topic, gt_info)


def _metric_config(cfg: Any, class_names: Sequence[str]) -> Any:
    from ..evaluate import metric_config

    if cfg is None:  # the default deploy config's model and evaluation, with these class names
        from ..config import CenterPointModelConfig, EvaluateConfig

        model = CenterPointModelConfig().model_copy(update={"class_names": list(class_names)})
        return metric_config(model, EvaluateConfig())
    return metric_config(cfg.model, cfg.evaluate)


def _score_frame(dets: Boxes3D, all_gt: Boxes3D, metric_cfg: Any, class_names: Sequence[str]
                 ) -> tuple[dict[str, Any], Boxes3D, Boxes3D]:
    from ..metrics.detection3d import match_frame, select_in_range

    gt, gt_out = select_in_range(all_gt, metric_cfg)  # the metric's own range rule, for both
    d, det_out = select_in_range(dets, metric_cfg)
    fm = match_frame(d, gt, len(class_names), MATCH_THRESHOLD_M)
    tp, fp, fn = (int(fm.tp.sum()), int(fm.fp.sum()), int(fm.fn.sum()))
    line: dict[str, Any] = {}
    if gt_out.any():
        line["num_gt_out_of_range"] = int(gt_out.sum())
    if det_out.any():
        line["num_detections_out_of_range"] = int(det_out.sum())
    line.update(num_gt=len(gt), tp=dict(zip(class_names, fm.tp.tolist())), fp=dict(zip(class_names, fm.fp.tolist())),
                fn=dict(zip(class_names, fm.fn.tolist())), recall=_ratio(tp, tp + fn), precision=_ratio(tp, tp + fp))
    # evaluate_detection3d applies the same range rule and counts what it leaves out: it gets all the GT
    return line, dets, all_gt


def _aggregate(dets: Sequence[Boxes3D], gts: Sequence[Boxes3D], metric_cfg: Any) -> Any:
    from ..metrics.detection3d import evaluate_detection3d

    return evaluate_detection3d(dets, gts, metric_cfg) if dets else None


def _gt_summary(metrics: Any, no_points: int) -> dict[str, Any]:
    from ..evaluate import GT_RULE, ground_truth_summary

    if metrics is None:
        return {"scored": 0, "excluded_out_of_range": 0, "excluded_no_points": no_points, "rule": GT_RULE}
    return ground_truth_summary(metrics, no_points)


def _headline_fields(m: Any, class_names: Sequence[str]) -> dict[str, Any]:
    at = m.map_by_threshold.get(MATCH_THRESHOLD_M) if m is not None else None
    return {"map_at_2m": _finite(at),
            "ap_at_2m": {c: _finite(m.ap[c].get(MATCH_THRESHOLD_M)) for c in class_names} if m else None}


def _headline(s: Mapping[str, Any]) -> Headline:
    return Headline("mAP @2m", s.get("map_at_2m"), "AP @2m", s.get("ap_at_2m"))


def _check_criteria(c: Any, class_names: Sequence[str], cfg: Any, source: str) -> None:
    from ..errors import ConfigError

    thresholds = cfg.evaluate.distance_thresholds
    if c.ap_metric is not None:
        raise ConfigError(f"{source}: ap_metric is a 2D criterion (ap50 | ap); 3D gates on AP at ap_threshold_m")
    if (c.min_ap or c.min_map is not None) and float(c.ap_threshold_m) not in {float(t) for t in thresholds}:
        raise ConfigError(f"{source}: ap_threshold_m {c.ap_threshold_m:g} is not among the evaluated distance "
                          f"thresholds {list(thresholds)} (config evaluate.distance_thresholds)")


def _criteria_ap(c: Any, s: Mapping[str, Any]) -> tuple[str, dict[str, float | None], float | None, dict[str, int]]:
    from ..metrics.detection3d import threshold_key

    metrics = s.get("metrics") or {}
    key = threshold_key(c.ap_threshold_m)
    per = {cls: (metrics.get("ap") or {}).get(cls, {}).get(key) for cls in s["class_names"]}
    return (f"@{c.ap_threshold_m:g}m", per, (metrics.get("map_by_threshold") or {}).get(key),
            dict(metrics.get("num_gt") or {}))


def _report_section(s: Mapping[str, Any]) -> list[str]:
    from ..report import markdown_table
    from .report import _f

    m = s.get("metrics")
    if not m:
        return []
    names, c, tot, thr = s["class_names"], s["counts"], s["frame_totals"], m["thresholds"]
    return [f"## 3D detection ({c['scored']} scored frames)", "",
            f"mAP@2m **{_f(s.get('map_at_2m'))}** - mAP (all thresholds) {_f(m['map'])} - mAPH {_f(m['maph'])}", "",
            markdown_table(["class", "#gt", "#pred", *[f"AP@{t}" for t in thr], "APH@2.0", "TP", "FP", "FN"],
                           [[n, m["num_gt"][n], m["num_pred"][n], *[_f(m["ap"][n].get(t)) for t in thr],
                             _f(m["aph_at_tp"].get(n)), tot["tp"][n], tot["fp"][n], tot["fn"][n]] for n in names]),
            "", "### By distance (AP at 2 m; ground truth and detections filtered by their own range)", "",
            markdown_table(["band", "mAP", *names], [[b, _f(m["band_map"].get(b)), *[_f(v.get(n)) for n in names]]
                                                     for b, v in m["band_ap"].items()]), ""]


def _pr_curves(s: Mapping[str, Any]) -> tuple[dict[str, dict[str, tuple[list[float], list[float]]]], str]:
    import math

    curves = ((s.get("metrics") or {}).get("pr_curves")) or {}
    return ({c: {t: (v["recall"], [math.nan if p is None else p for p in v["precision"]]) for t, v in per.items()}
             for c, per in curves.items()}, "2.0")


def _node_params(cfg: Any, backend: str) -> dict[str, Any]:
    params: dict[str, Any] = {"class_names": list(cfg.model.class_names), "score_threshold": -1.0}
    if backend == "tensorrt":
        params["precision"] = cfg.export.tensorrt.precision
    return params


def _boxes_json(b: Boxes3D) -> dict[str, list]:
    return {"boxes": b.boxes.tolist(), "scores": b.scores.tolist(), "labels": b.labels.tolist(),
            "velocities": b.velocities.tolist()}


def _boxes_from_json(d: dict[str, list]) -> Boxes3D:
    # float32 -> Python float -> JSON (shortest repr of the double) -> float -> float32 is exact
    return Boxes3D(np.asarray(d["boxes"], np.float32).reshape(-1, 7), np.asarray(d["scores"], np.float32),
                   np.asarray(d["labels"], np.int64), np.asarray(d["velocities"], np.float32).reshape(-1, 2))


TASK = ReplayTask(
    name="detection3d", input_role="lidar", input_unit="cloud", input_msgtype=POINTCLOUD2,
    default_input_topic=DEFAULT_LIDAR_TOPIC, topic_key="lidar_topic", output_msgtype=DETECTED_OBJECTS,
    decode=_decode, read_outputs=read_detected_objects, open_ground_truth=_open_gt, metric_config=_metric_config,
    score_frame=_score_frame, aggregate=_aggregate, ground_truth_summary=_gt_summary,
    match_fields=lambda mc: {"match_threshold_m": MATCH_THRESHOLD_M}, headline_fields=_headline_fields, headline=_headline,
    check_criteria=_check_criteria, criteria_ap=_criteria_ap, report_section=_report_section, pr_curves=_pr_curves,
    node_overrides=lambda model: {},
    node=NodeSpec("centerpoint_node", "centerpoint", "~/input/pointcloud", "~/output/objects",
                  "/perception/object_recognition/detection/awml/objects", "centerpoint_node.param.yaml",
                  _node_params, accepts_onnx_cache_dir=True),
    dets_to_json=_boxes_json, dets_from_json=_boxes_from_json, gt_to_json=_boxes_json, gt_from_json=_boxes_from_json,
)

__all__ = ["MATCH_THRESHOLD_M", "TASK"]
