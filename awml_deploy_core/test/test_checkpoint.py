"""Checkpoint save/load and its one-line errors."""

from __future__ import annotations

import json
import os

import pytest
import torch

from awml_deploy_core.config import CenterPointModelConfig
from awml_deploy_core.errors import CheckpointError
from awml_deploy_core.models.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, save_checkpoint
from awml_deploy_core.models.centerpoint import build_centerpoint


@pytest.fixture(scope="module")
def model_cfg():
    torch.manual_seed(0)
    cfg = CenterPointModelConfig()
    return build_centerpoint(cfg).eval(), cfg


def _one_line_error(path, **kw) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_round_trip(tmp_path, model_cfg):
    model, cfg = model_cfg
    path = save_checkpoint(model, cfg, tmp_path / "sub" / "m.pth", {"seed": 3})
    assert sorted(os.listdir(path.parent)) == ["m.pth"]  # no temp file left
    assert (path.stat().st_mode & 0o044) == 0o044  # readable by others, like any file written here
    loaded, cfg2 = load_checkpoint(path)
    assert cfg2 == cfg and loaded.checkpoint_meta == {"seed": 3}
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"state_dict", "model_config", "meta"}


def test_mmdet3d_style_dict_with_module_prefix(tmp_path, model_cfg):
    model, cfg = model_cfg
    sd = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"meta": {"epoch": 50, "mmengine_version": "0.10"}, "state_dict": sd}, tmp_path / "awml.pth")
    loaded, _ = load_checkpoint(tmp_path / "awml.pth", cfg=cfg)
    key = "pts_bbox_head.task_heads.0.heatmap.1.weight"
    assert torch.equal(loaded.state_dict()[key], model.state_dict()[key])
    assert "model_config" in _one_line_error(tmp_path / "awml.pth")  # no cfg given, none stored


def test_missing_and_unexpected_keys_are_named(tmp_path, model_cfg):
    model, cfg = model_cfg
    sd = dict(model.state_dict())
    for k in [k for k in sd if k.startswith("pts_bbox_head.task_heads.0.vel")]:
        del sd[k]
    sd["pts_bbox_head.task_heads.0.iou.1.weight"] = torch.zeros(1)
    torch.save({"state_dict": sd}, tmp_path / "bad.pth")
    msg = _one_line_error(tmp_path / "bad.pth", cfg=cfg)
    # 7 = conv + 4 BN tensors + conv weight and bias (num_batches_tracked may be absent)
    assert "missing 7 keys [pts_bbox_head.task_heads.0.vel.0.conv.weight" in msg and "..." in msg
    assert "unexpected 1 keys [pts_bbox_head.task_heads.0.iou.1.weight]" in msg


def test_wrong_shapes_are_named_with_both_shapes(tmp_path, model_cfg):
    model, cfg = model_cfg
    sd = dict(model.state_dict())
    sd["pts_bbox_head.task_heads.0.heatmap.1.weight"] = torch.zeros(10, 64, 1, 1)
    torch.save({"state_dict": sd, "model_config": cfg.model_dump()}, tmp_path / "shape.pth")
    msg = _one_line_error(tmp_path / "shape.pth")
    assert "wrong shape for 1 keys [pts_bbox_head.task_heads.0.heatmap.1.weight: checkpoint (10, 64, 1, 1) vs model (5, 64, 1, 1)]" in msg


def test_corrupt_truncated_and_missing_files(tmp_path, model_cfg):
    model, cfg = model_cfg
    (tmp_path / "garbage.pth").write_bytes(b"\x00not a checkpoint" * 10)
    assert "cannot read checkpoint" in _one_line_error(tmp_path / "garbage.pth")
    good = save_checkpoint(model, cfg, tmp_path / "good.pth")
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:5000])
    assert "cannot read checkpoint" in _one_line_error(tmp_path / "cut.pth")
    assert "not found" in _one_line_error(tmp_path / "nope.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    assert "expected a dict" in _one_line_error(tmp_path / "list.pth")


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="shipped checkpoint not present")
def test_shipped_checkpoint_loads_and_is_small():
    assert DEFAULT_CHECKPOINT.stat().st_size < 10 * 1024 * 1024
    model, cfg = load_checkpoint(DEFAULT_CHECKPOINT)
    assert cfg.name == "centerpoint_small"
    assert all(v.dtype in (torch.float32, torch.int64) for v in model.state_dict().values())
    report = json.loads(DEFAULT_CHECKPOINT.with_suffix(".json").read_text())
    assert report["seed"] < 10_000 <= report["eval_seed"] and "command" in report


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="shipped checkpoint not present")
def test_shipped_checkpoint_settings_that_differ_from_the_deploy_config_are_named_in_one_warning(caplog):
    """The shipped checkpoint was trained with 20 points per pillar and wider NMS radii than the deploy config."""
    stored = torch.load(DEFAULT_CHECKPOINT, weights_only=True)["model_config"]
    cfg = CenterPointModelConfig()
    assert stored["max_points_per_voxel"] != cfg.max_points_per_voxel  # the premise of this test
    with caplog.at_level("WARNING", logger="awml_deploy_core.models.checkpoint"):
        model, used = load_checkpoint(DEFAULT_CHECKPOINT, cfg)
    assert used is cfg
    lines = [r.getMessage() for r in caplog.records if r.name == "awml_deploy_core.models.checkpoint"]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    line = lines[0]
    assert str(DEFAULT_CHECKPOINT) in line
    assert f"max_points_per_voxel: checkpoint {stored['max_points_per_voxel']}, config {cfg.max_points_per_voxel}" in line
    assert (f"nms.circle_radius: checkpoint {stored['nms']['circle_radius']!r}, "
            f"config {cfg.nms.circle_radius!r}") in line
    expected = [k for k in cfg.model_dump() if k not in ("name", "nms") and stored.get(k) != cfg.model_dump()[k]]
    expected += [f"nms.{k}" for k, v in cfg.nms.model_dump().items() if k in stored["nms"] and stored["nms"][k] != v]
    assert [d.split(":")[0] for d in model.checkpoint_config_differences] == expected
    assert line.count("checkpoint ") == len(expected) + 1  # "checkpoint settings differ" + one per difference


def test_no_warning_when_the_config_matches_or_comes_from_the_checkpoint(tmp_path, model_cfg, caplog):
    model, cfg = model_cfg
    path = save_checkpoint(model, cfg, tmp_path / "m.pth")
    with caplog.at_level("WARNING", logger="awml_deploy_core.models.checkpoint"):
        a, _ = load_checkpoint(path, cfg)
        b, _ = load_checkpoint(path)
    assert not caplog.records and a.checkpoint_config_differences == b.checkpoint_config_differences == []
    post = cfg.model_copy(update={"score_threshold": 0.3})
    with caplog.at_level("WARNING", logger="awml_deploy_core.models.checkpoint"):
        c, _ = load_checkpoint(path, post)
    assert c.checkpoint_config_differences == ["score_threshold: checkpoint 0.1, config 0.3"]
    assert len(caplog.records) == 1
