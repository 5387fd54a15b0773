"""Autoware lidar_centerpoint post-processing parity: yaw norm thresholds, Autoware's circle NMS, its IoU NMS
stage, and the parameter files its C++ node reads.

Head outputs are built by hand in the export (Autoware) convention: rot = (-cos t, -sin t) for our yaw t, so
rot = (-1, 0) is a box along +x with rot norm 1. The tiny grid has 1 m output cells: x = xi + reg[0] - 4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from awml_deploy_core.config import CenterPointModelConfig, DeployConfig, validate
from awml_deploy_core.errors import ConfigError
from awml_deploy_core.export.autoware_params import autoware_class_name, parity_gaps, write_autoware_params
from awml_deploy_core.pipelines.centerpoint.decode import decode
from awml_deploy_core.pipelines.centerpoint.nms import autoware_iou_nms, nms, rotated_iou_bev

CAR, TRUCK, BUS, BICYCLE, PEDESTRIAN = range(5)


def tiny_cfg(**nms_kw) -> CenterPointModelConfig:
    return CenterPointModelConfig(point_cloud_range=[-4.0, -4.0, -2.0, 4.0, 4.0, 2.0], voxel_size=[0.5, 0.5, 4.0],
                                  score_threshold=0.1, nms=nms_kw)


def empty_outputs(cfg: CenterPointModelConfig) -> dict[str, torch.Tensor]:
    gx, gy = cfg.grid_size
    h, w = gy // cfg.out_size_factor, gx // cfg.out_size_factor
    ch = {"heatmap": len(cfg.class_names), "reg": 2, "height": 1, "dim": 3, "rot": 2, "vel": 2}
    out = {k: torch.zeros(1, c, h, w) for k, c in ch.items()}
    out["heatmap"][:] = -20.0
    out["rot"][:, 0] = -1.0
    return out


def put(out, cls: int, xi: int, yi: int, score: float, size=(4.5, 2.0), reg=(0.5, 0.5), rot=(-1.0, 0.0)):
    """One candidate: class `cls`, centre (xi + reg0 - 4, yi + reg1 - 4), length x width `size` along +x."""
    out["heatmap"][0, cls, yi, xi] = math.log(score / (1 - score))
    out["reg"][0, :, yi, xi] = torch.tensor(reg)
    out["dim"][0, :, yi, xi] = torch.tensor([math.log(size[1]), math.log(size[0]), math.log(1.5)])  # w, l, h
    out["rot"][0, :, yi, xi] = torch.tensor(rot)


def run(out, cfg):
    d = nms(decode(out, cfg), cfg)
    return sorted(zip(np.round(d.scores.astype(np.float64), 3).tolist(), d.labels.tolist()), reverse=True)


# --------------------------------------------------------------------------------------------- yaw norm
def test_yaw_norm_threshold_drops_candidates_below_it_per_class():
    cfg = tiny_cfg(yaw_norm_thresholds=[0.3, 0.3, 0.3, 0.3, 0.0], circle_nms_dist_threshold=0.5)
    out = empty_outputs(cfg)
    put(out, CAR, 1, 1, 0.9, rot=(-0.29, 0.0))  # norm 0.29 < 0.3: scored 0, gone
    put(out, CAR, 5, 1, 0.8, rot=(-0.2, -0.22))  # norm 0.297 < 0.3: gone
    put(out, TRUCK, 1, 5, 0.7, rot=(-0.31, 0.0))  # norm 0.31 >= 0.3: kept
    put(out, PEDESTRIAN, 5, 5, 0.6, rot=(-0.05, 0.0))  # pedestrian threshold 0: kept
    assert run(out, cfg) == [(0.7, TRUCK), (0.6, PEDESTRIAN)]
    # Unset (the default): nothing is dropped for its rot norm, today's behaviour.
    cfg_off = tiny_cfg(circle_nms_dist_threshold=0.5)
    assert [lab for _, lab in run(out, cfg_off)] == [CAR, CAR, TRUCK, PEDESTRIAN]


def test_yaw_norm_zeroed_score_is_not_kept_by_a_lower_class_threshold():
    """Autoware zeroes the score, then keeps score > threshold: a zero never passes, even at threshold 0."""
    cfg = CenterPointModelConfig(point_cloud_range=[-4.0, -4.0, -2.0, 4.0, 4.0, 2.0], voxel_size=[0.5, 0.5, 4.0],
                                 score_threshold=0.0, nms={"yaw_norm_thresholds": [0.5, 0, 0, 0, 0]})
    out = empty_outputs(cfg)
    put(out, CAR, 3, 3, 0.9, rot=(-0.4, 0.0))
    assert len(decode(out, cfg)) == (8 * 8 - 1)  # every other cell (score sigmoid(-20) > 0) passes, the car not
    assert not np.any(np.isclose(decode(out, cfg).scores, 0.9))


# --------------------------------------------------------------------------------------------- circle NMS
def test_autoware_circle_nms_is_one_radius_across_classes_and_strict():
    cfg = tiny_cfg(circle_nms_dist_threshold=0.5)
    out = empty_outputs(cfg)
    put(out, CAR, 2, 2, 0.9, reg=(0.9, 0.5))  # x = -1.1
    put(out, PEDESTRIAN, 3, 2, 0.8, reg=(0.2, 0.5), size=(0.6, 0.6))  # x = -0.8: 0.3 m from the car, suppressed
    put(out, CAR, 2, 5, 0.7, reg=(0.75, 0.5))  # x = -1.25
    put(out, CAR, 3, 5, 0.6, reg=(0.25, 0.5))  # x = -0.75: exactly 0.5 m away: kept (squared distance < 0.25 only)
    assert run(out, cfg) == [(0.9, CAR), (0.7, CAR), (0.6, CAR)]
    # Our per-class rule (the default) never suppresses across classes: the pedestrian stays.
    per_class = tiny_cfg()
    assert (0.8, PEDESTRIAN) in run(out, per_class)


# --------------------------------------------------------------------------------------------- IoU NMS
def three_cars(out):
    """Cars 4.5 x 2 along x, centres 1 m apart on one row: IoU(A,B) = IoU(B,C) = 7/11, IoU(A,C) = 5/13."""
    put(out, CAR, 2, 4, 0.9)
    put(out, CAR, 3, 4, 0.8)
    put(out, CAR, 4, 4, 0.7)


def test_overlapping_cars_above_the_threshold_within_reach_keep_the_highest():
    cfg = tiny_cfg(circle_nms_dist_threshold=0.5, iou_nms="autoware", iou_nms_threshold=0.1)
    out = empty_outputs(cfg)
    put(out, CAR, 2, 4, 0.9)
    put(out, CAR, 3, 4, 0.8)  # 1 m away, IoU 7/11: removed
    put(out, CAR, 6, 0, 0.7)  # (2.5, -3.5)
    put(out, CAR, 6, 2, 0.6, reg=(0.5, 0.4))  # (2.5, -1.6): 1.9 m across, IoU 0.45/17.55 = 0.026 <= 0.1: kept
    assert run(out, cfg) == [(0.9, CAR), (0.7, CAR), (0.6, CAR)]
    # iou_nms off (the default): the second stage does nothing.
    assert len(run(out, tiny_cfg(circle_nms_dist_threshold=0.5))) == 4


def test_pairs_beyond_the_search_distance_are_not_compared():
    out = empty_outputs(tiny_cfg())
    put(out, CAR, 2, 4, 0.9)
    put(out, CAR, 3, 4, 0.8)  # 1 m apart, IoU 0.64
    near = tiny_cfg(circle_nms_dist_threshold=0.5, iou_nms="autoware", iou_nms_search_distance_2d=1.0)
    far = tiny_cfg(circle_nms_dist_threshold=0.5, iou_nms="autoware", iou_nms_search_distance_2d=0.99)
    assert run(out, near) == [(0.9, CAR)]  # squared distance 1 <= 1: compared
    assert run(out, far) == [(0.9, CAR), (0.8, CAR)]


def test_autoware_iou_nms_is_not_greedy():
    """B is removed by A; C overlaps only B (IoU(A,C) 0.38 <= 0.5) and is removed all the same, as in Autoware."""
    cfg = tiny_cfg(circle_nms_dist_threshold=0.5, iou_nms="autoware", iou_nms_threshold=0.5)
    out = empty_outputs(cfg)
    three_cars(out)
    assert run(out, cfg) == [(0.9, CAR)]


def test_pedestrian_is_never_compared_with_another_class():
    out = empty_outputs(tiny_cfg())
    put(out, CAR, 2, 4, 0.9)
    put(out, PEDESTRIAN, 3, 4, 0.8, size=(1.2, 1.2))  # centre 1 m away, inside the car: IoU 1.44 / 9 = 0.16
    put(out, CAR, 2, 1, 0.7)
    put(out, BICYCLE, 3, 1, 0.6, size=(1.2, 1.2))  # the same geometry with a bicycle
    cfg = tiny_cfg(circle_nms_dist_threshold=0.5, iou_nms="autoware", iou_nms_threshold=0.1)
    assert run(out, cfg) == [(0.9, CAR), (0.8, PEDESTRIAN), (0.7, CAR)]


def test_target_class_rule_of_autoware_0_39():
    """<= 0.39: a pair is compared when both are targets (any distance) or when within the search distance."""
    out = empty_outputs(tiny_cfg())
    put(out, CAR, 2, 4, 0.9)
    put(out, CAR, 3, 4, 0.8)  # target pair, 1 m apart: compared even beyond the search distance
    put(out, TRUCK, 2, 1, 0.7)
    put(out, TRUCK, 3, 1, 0.6)  # non-target pair beyond the search distance: untouched
    cfg = tiny_cfg(circle_nms_dist_threshold=0.5, iou_nms="autoware_target_classes",
                   iou_nms_target_class_names=["car"], iou_nms_search_distance_2d=0.5)
    assert run(out, cfg) == [(0.9, CAR), (0.7, TRUCK), (0.6, TRUCK)]
    # Within the search distance the non-target trucks are compared too (Autoware's OR).
    within = cfg.model_copy(update={"nms": cfg.nms.model_copy(update={"iou_nms_search_distance_2d": 1.5})})
    assert run(out, within) == [(0.9, CAR), (0.7, TRUCK)]


def reference_autoware_iou_nms(boxes, names, mode, search, thr, targets):
    """Line-by-line the C++ loop: lower-triangular IoU rows, a row is dropped when its maximum exceeds thr."""
    n = len(boxes)
    iou = np.zeros((n, n))
    for t in range(n):
        for s in range(t):
            a, b = names[t], names[s]
            d2 = (boxes[t, 0] - boxes[s, 0]) ** 2 + (boxes[t, 1] - boxes[s, 1]) ** 2
            if mode == "autoware":
                ok = not (a != b and "PEDESTRIAN" in (a, b)) and d2 <= search**2
            else:
                ok = (a in targets and b in targets) or d2 <= search**2
            if not ok:
                continue
            iou[t, s] = rotated_iou_bev(boxes[t : t + 1], boxes[s : s + 1])[0, 0]
            if iou[t, s] > thr:
                break
    return np.array([n == 0 or iou[i].max() <= thr for i in range(n)])


@pytest.mark.parametrize("mode", ["autoware", "autoware_target_classes"])
def test_vectorised_iou_nms_matches_the_loop_transcription(mode):
    rng = np.random.default_rng(7)
    classes = ["car", "truck", "bus", "bicycle", "pedestrian"]
    for _ in range(20):
        n = 30
        boxes = np.zeros((n, 7))
        boxes[:, :2] = rng.uniform(-6, 6, (n, 2))
        boxes[:, 3:5] = rng.uniform(0.5, 5.0, (n, 2))
        boxes[:, 6] = rng.uniform(-math.pi, math.pi, n)
        labels = rng.integers(0, 5, n)
        names = [autoware_class_name(classes[k]) for k in labels]
        keep = autoware_iou_nms(boxes, labels, classes, mode, 3.0, 0.1, ["car", "bus"])
        ref = reference_autoware_iou_nms(boxes, names, mode, 3.0, 0.1, {"CAR", "BUS"})
        np.testing.assert_array_equal(keep, ref)


# --------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("nms", "field"),
    [
        ({"yaw_norm_thresholds": [0.3, 0.3, 0.3, 0.3, 1.0]}, "yaw_norm_thresholds"),
        ({"yaw_norm_thresholds": [0.3, 0.3]}, "yaw_norm_thresholds needs 5"),
        ({"circle_nms_dist_threshold": 0.0}, "circle_nms_dist_threshold"),
        ({"kind": "bev_iou", "circle_nms_dist_threshold": 0.5}, "circle_nms_dist_threshold is only read"),
        ({"iou_nms": "autoware", "iou_nms_target_class_names": ["car"]}, "iou_nms_target_class_names is only read"),
        ({"iou_nms": "autoware_target_classes", "iou_nms_target_class_names": ["CAR"]}, "['CAR'] not in class_names"),
        ({"iou_nms_threshold": 1.5}, "iou_nms_threshold"),
        ({"iou_nms": "greedy"}, "iou_nms"),
    ],
)
def test_bad_post_process_params_are_one_line_errors_naming_the_field(nms, field):
    with pytest.raises(ConfigError) as e:
        validate(DeployConfig, {"model": {"nms": nms}}, source="deploy.yaml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("deploy.yaml: model") and field in msg


# --------------------------------------------------------------------------------------------- param files
def load(path):
    text = path.read_text()
    return text, yaml.safe_load(text)["/**"]["ros__parameters"]


def test_param_files_parse_and_hold_the_deploy_config_values(tmp_path):
    cfg = validate(DeployConfig, {"model": {
        "class_score_thresholds": [0.35, 0.35, 0.35, 0.35, 0.35],
        "nms": {"yaw_norm_thresholds": [0.3, 0.3, 0.3, 0.3, 0.0], "circle_nms_dist_threshold": 0.5,
                "iou_nms": "autoware", "iou_nms_search_distance_2d": 10.0, "iou_nms_threshold": 0.1}}})
    paths = write_autoware_params(tmp_path, cfg)
    assert [p.name for p in paths] == ["centerpoint_small.param.yaml", "centerpoint_small_ml_package.param.yaml",
                                       "detection_class_remapper.param.yaml"]
    text, node = load(paths[0])
    assert "# Autoware parity: exact\n" in text
    m = cfg.model
    assert node["post_process_params"] == {
        "score_thresholds": m.class_score_thresholds,
        "yaw_norm_thresholds": m.nms.yaw_norm_thresholds,
        "circle_nms_dist_threshold": m.nms.circle_nms_dist_threshold,
        "iou_nms_search_distance_2d": m.nms.iou_nms_search_distance_2d,
        "iou_nms_threshold": m.nms.iou_nms_threshold,
    }
    assert node["densification_params"] == {"world_frame_id": "map", "num_past_frames": 0}
    assert node["encoder_onnx_path"] == "$(var model_path)/pts_voxel_encoder_centerpoint_small.onnx"
    assert node["head_engine_path"] == "$(var model_path)/pts_backbone_neck_head_centerpoint_small.engine"
    assert node["trt_precision"] == "fp16"
    _, ml = load(paths[1])
    assert ml["model_params"] == {
        "class_names": ["CAR", "TRUCK", "BUS", "BICYCLE", "PEDESTRIAN"],
        "point_feature_size": 5,
        "max_voxel_size": m.max_voxels,
        "point_cloud_range": m.point_cloud_range,
        "voxel_size": m.voxel_size,
        "downsample_factor": m.out_size_factor,
        "encoder_in_feature_size": m.encoder_in_features,
        "has_variance": False,
        "has_twist": m.with_velocity,
    }
    _, remap = load(paths[2])
    assert remap["allow_remapping_by_area_matrix"] == [0] * 64 and len(remap["max_area_matrix"]) == 64


def test_default_config_is_written_truthfully_as_not_exact(tmp_path):
    cfg = DeployConfig()
    gaps = parity_gaps(cfg)
    assert len(gaps) == 1 and "circle_radius" in gaps[0]
    text, node = load(write_autoware_params(tmp_path, cfg)[0])
    assert "# Autoware parity: NOT exact:\n" in text and "circle_radius" in text
    pp = node["post_process_params"]
    assert pp["circle_nms_dist_threshold"] == min(cfg.model.nms.circle_radius)
    assert pp["iou_nms_threshold"] == 1.0  # our IoU stage is off: an IoU never exceeds 1 in the node either
    assert pp["yaw_norm_thresholds"] == [0.0] * 5 and pp["score_thresholds"] == [0.1] * 5


def test_target_class_layout_for_autoware_0_39(tmp_path):
    model = {"score_threshold": 0.35, "nms": {"circle_nms_dist_threshold": 0.5, "iou_nms": "autoware_target_classes",
                                              "iou_nms_target_class_names": ["car"]}}
    _, node = load(write_autoware_params(tmp_path, validate(DeployConfig, {"model": model}))[0])
    pp = node["post_process_params"]
    assert pp["score_threshold"] == 0.35 and "score_thresholds" not in pp
    assert pp["iou_nms_target_class_names"] == ["CAR"]
    model["class_score_thresholds"] = [0.35, 0.4, 0.4, 0.4, 0.4]
    with pytest.raises(ConfigError, match="one score_threshold"):
        write_autoware_params(tmp_path, validate(DeployConfig, {"model": model}))


def test_bare_yaml_off_reads_as_off():
    data = yaml.safe_load("model:\n  nms:\n    iou_nms: off\n")  # YAML 1.1: a bare off is false
    assert data["model"]["nms"]["iou_nms"] is False
    assert validate(DeployConfig, data).model.nms.iou_nms == "off"
