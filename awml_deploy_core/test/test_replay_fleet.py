"""Fleet replay (issue 15): a set of bags on Ray workers gives exactly the in-process result and the metrics of all
frames at once; failing bags are listed and the rest go on; a killed worker is retried; re-runs resume; an
interrupt leaves a valid partial report; without Ray the in-process path works and --workers names the extra.

Small clouds (16 beams) keep the pipeline and bag generation cheap; one local Ray cluster serves the module."""

from __future__ import annotations

import builtins
import json
import logging
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from awml_deploy_core.cli import main as cli_main
from awml_deploy_core.config import CenterPointModelConfig, DataConfig, DeployConfig, EvaluateConfig, VerifyConfig
from awml_deploy_core.data.lidar import LidarSpec
from awml_deploy_core.data.msg_definitions import DETECTED_OBJECTS
from awml_deploy_core.data.rosbag_io import (DEFAULT_GT_TOPIC, DEFAULT_LIDAR_TOPIC, POINTCLOUD2, SYNTHETIC_START_S,
                                             BagReader, BagWriter, cloud_message, detected_objects_message,
                                             read_detected_objects, seconds_to_ns)
from awml_deploy_core.data.synthetic import generate_sequence
from awml_deploy_core.errors import BackendUnavailableError
from awml_deploy_core.evaluate import metric_config
from awml_deploy_core.metrics.detection3d import evaluate_detection3d
from awml_deploy_core.models.centerpoint import build_centerpoint
from awml_deploy_core.models.checkpoint import save_checkpoint
from awml_deploy_core.replay.fleet import (FLEET_EXTRA, TIMING_KEYS, FleetSettings, _finish_set, evidence_from_json,
                                           evidence_to_json, fleet_evaluate, import_ray, resolve_bags)
from awml_deploy_core.replay.report import compare_runs
from awml_deploy_core.replay.scoring import FrameRecord, FrameScorer, GroundTruth, scores_from_evidence
from awml_deploy_core.structures import Boxes3D

AWML = Path(sys.executable).parent / "awml-deploy"
SMALL_LIDAR = LidarSpec(beams=16, azimuth_resolution_deg=0.48)  # ~8k points instead of ~130k
SETTINGS = FleetSettings(backend="pytorch")


def small_bag(path: Path, seed: int, seconds: float, with_gt: bool = True) -> Path:
    """A synthetic drive like `make-bag`'s, with small clouds: clouds + ground truth (boxes with points)."""
    with BagWriter(path) as w:
        w.add_topic(DEFAULT_LIDAR_TOPIC, POINTCLOUD2)
        if with_gt:
            w.add_topic(DEFAULT_GT_TOPIC, DETECTED_OBJECTS)
        for f in generate_sequence(seed, int(round(seconds * 10)), lidar=SMALL_LIDAR, start_time=SYNTHETIC_START_S):
            s = seconds_to_ns(f.timestamp)
            w.write(DEFAULT_LIDAR_TOPIC, s, cloud_message(f.points, s, f.ring, f.time))
            if with_gt:
                w.write(DEFAULT_GT_TOPIC, s, detected_objects_message(f.gt.select(f.num_lidar_points > 0),
                                                                      f.class_names, s))
    return path


@pytest.fixture(autouse=True)
def _keep_logging():
    """cli_main points the root logger at the (captured) stderr of its test; give the next test its own back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An untrained fixed-seed model on a coarse grid (fast on CPU), six 3 s drives, a config YAML."""
    root = tmp_path_factory.mktemp("fleet")
    torch.manual_seed(0)
    model = CenterPointModelConfig(voxel_size=[0.64, 0.64, 8.0], score_threshold=0.1008)
    ckpt = save_checkpoint(build_centerpoint(model), model, root / "model.pth", {})
    cfg = DeployConfig(model=model, checkpoint=str(ckpt), work_dir=str(root / "work"),
                       data=DataConfig(num_frames=1), verify=VerifyConfig(enabled=False),
                       evaluate=EvaluateConfig(warmup=0, enabled=False))
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    bags = [small_bag(root / "set" / f"drive_{i}", seed=500 + i, seconds=3.0) for i in range(6)]
    return cfg, bags, root


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray cluster (2 CPUs, loopback only) for the module; fleet_evaluate reuses it; shut down after."""
    ray = import_ray()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def in_process(setup):
    cfg, bags, root = setup
    return fleet_evaluate(root / "set", cfg, SETTINGS, out_dir=root / "inproc", progress=False)


def _frames(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "frames.jsonl").read_text().splitlines()]


def _untimed(frames: list[dict]) -> list[dict]:
    return [{k: v for k, v in f.items() if k not in TIMING_KEYS} for f in frames]


# --------------------------------------------------------------------------------------------- exactness
def test_workers_equal_in_process_and_all_frames(setup, in_process, ray_local):
    cfg, bags, root = setup
    ours = fleet_evaluate(root / "set", cfg, SETTINGS, workers=2, out_dir=root / "ray", progress=False)
    a, b = in_process.summary, ours.summary
    assert in_process.exit_code == ours.exit_code == 0
    assert a["counts"]["frames"] == 180 and a["counts"]["scored"] == 180
    # Bit-identical: the set's metrics, every frame's record and every bag's evidence (detections, GT).
    assert b["metrics"] == a["metrics"] and b["map_at_2m"] == a["map_at_2m"]
    assert b["frame_totals"] == a["frame_totals"]
    assert _untimed(_frames(root / "ray")) == _untimed(_frames(root / "inproc"))
    for r_ray, r_in in zip(ours.results, in_process.results):
        assert _untimed(r_ray["frames"]) == _untimed(r_in["frames"])
        e_ray, e_in = evidence_to_json(r_ray["evidence"]), evidence_to_json(r_in["evidence"])
        assert e_ray["detections"] == e_in["detections"] and e_ray["ground_truth"] == e_in["ground_truth"]
    assert len({r["pid"] for r in ours.results}) == 2  # both workers took bags
    # The metrics function on all frames directly: the workers' detections, ground truth read from the bags here.
    dets, gts = [], []
    for bag, r in zip(bags, ours.results):
        with BagReader(bag) as reader:
            gt_by_stamp = dict(read_detected_objects(reader, DEFAULT_GT_TOPIC, cfg.model.class_names))
        dets += r["evidence"].detections
        gts += [gt_by_stamp[f["stamp_ns"]] for f in r["frames"]]
    direct = evaluate_detection3d(dets, gts, metric_config(cfg.model, cfg.evaluate)).to_dict()
    assert direct == b["metrics"]
    assert a["fleet"]["bags"][0]["status"] == "ok" and "Bags (6)" in (root / "ray" / "report.md").read_text()
    code, cmp = compare_runs(root / "inproc", root / "ray")  # the single-bag comparison and gate, on sets
    assert code == 0 and all(g["passed"] for g in cmp["gates"])


def _evidence(class_names, stamp, gt_xy, det_xy_score):
    gt = GroundTruth([stamp], [Boxes3D([[x, y, 0, 4, 2, 1.5, 0] for x, y in gt_xy], None, [0] * len(gt_xy))], "made")
    scorer = FrameScorer(gt, class_names)
    dets = Boxes3D([[x, y, 0, 4, 2, 1.5, 0] for x, y, _ in det_xy_score], [s for *_, s in det_xy_score],
                   [0] * len(det_xy_score))
    scorer.add(FrameRecord(stamp, dets))
    return scorer


def test_set_ap_is_all_frames_not_mean_of_bags(setup, tmp_path):
    """Bag A: a confident TP. Bag B: a confident FP ranked above a TP. Per bag AP 1.0 and 0.5-ish; over the set
    the FP outranks A's TP too, so the set's AP is neither their mean nor either of them."""
    cfg = setup[0]
    names = cfg.model.class_names
    bag_a = _evidence(names, 1, [(10, 0)], [(10.2, 0, 0.6)])
    bag_b = _evidence(names, 2, [(20, 5)], [(-30, 5, 0.9), (20.1, 5, 0.5)])
    results = []
    for name, sc in (("a", bag_a), ("b", bag_b)):
        results.append({"status": "ok", "frames": sc.frames, "out_of_order": [], "gt_source": "made", "key": name,
                        "evidence": evidence_from_json(json.loads(json.dumps(evidence_to_json(sc.evidence()))))})
    out = _finish_set(tmp_path, "made", [Path("a"), Path("b")], results, cfg, SETTINGS, None, False, 1.0, 2, None,
                      None)
    set_ap = out.summary["metrics"]["ap"]["car"]["2.0"]
    per_bag = [r["map_at_2m"] for r in out.summary["fleet"]["bags"]]
    mcfg = metric_config(cfg.model, cfg.evaluate)
    direct = evaluate_detection3d(bag_a.evidence().detections + bag_b.evidence().detections,
                                  bag_a.evidence().ground_truth + bag_b.evidence().ground_truth, mcfg)
    assert set_ap == direct.ap["car"][2.0]
    alone = [scores_from_evidence(names, 75.0, "made", s.frames, s.evidence(), [], mcfg) for s in (bag_a, bag_b)]
    assert per_bag == [a.to_dict()["map_at_2m"] for a in alone] and per_bag[0] != per_bag[1]
    assert not math.isclose(set_ap, float(np.mean(per_bag)), abs_tol=1e-3)
    assert out.exit_code == 0 and out.summary["counts"]["scored"] == 2


# --------------------------------------------------------------------------------------------- faults
def test_corrupt_and_no_ground_truth_bags_fail_alone(setup, ray_local, tmp_path, capsys):
    cfg, bags, root = setup
    s = tmp_path / "set"
    shutil.copytree(bags[0], s / "a_good")
    shutil.copytree(bags[1], s / "b_corrupt")
    data = next((s / "b_corrupt").glob("*.mcap"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    small_bag(s / "c_no_gt", seed=900, seconds=0.3, with_gt=False)
    code = cli_main(["replay-eval", str(s), "--config", str(root / "cfg.yaml"), "--backend", "pytorch",
                     "--workers", "2", "--max-frames", "3", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {Path(r["bag"]).name: r["status"] for r in summary["fleet"]["bags"]}
    assert status == {"a_good": "ok", "b_corrupt": "failed", "c_no_gt": "failed"}
    reasons = {Path(f["bag"]).name: f["error"] for f in summary["fleet"]["failures"]}
    assert "no ground truth" in reasons["c_no_gt"] and "b_corrupt" in reasons["b_corrupt"]
    assert all("\n" not in r for r in reasons.values())
    assert f"FAILED {s / 'b_corrupt'}" in printed and f"FAILED {s / 'c_no_gt'}" in printed
    assert summary["counts"]["scored"] == 3 and summary["passed"] is False


def test_killed_worker_is_retried_and_exact(setup, in_process, ray_local, tmp_path):
    cfg, bags, root = setup
    marker = tmp_path / "die_once"
    marker.write_text("")
    out = fleet_evaluate(bags[:2], cfg, SETTINGS, workers=2, out_dir=tmp_path / "killed", progress=False,
                         die_once_marker=str(marker))
    assert not marker.exists()  # a task found it and killed its own worker process mid-bag
    assert out.exit_code == 0 and [r["status"] for r in out.results] == ["ok", "ok"]
    for r, ref in zip(out.results, in_process.results[:2]):
        assert _untimed(r["frames"]) == _untimed(ref["frames"])
        ours, theirs = evidence_to_json(r["evidence"]), evidence_to_json(ref["evidence"])
        for k in ("detections", "ground_truth", "no_points"):  # all but the latency timings
            assert ours[k] == theirs[k]
    # The same two bags' set aggregate from the in-process results (resumed, nothing re-run) is identical.
    shutil.copytree(root / "inproc" / "bags", tmp_path / "ref" / "bags")
    ref = fleet_evaluate(bags[:2], cfg, SETTINGS, out_dir=tmp_path / "ref", progress=False)
    assert ref.summary["fleet"]["resumed"] == 2 and ref.summary["metrics"] == out.summary["metrics"]


# --------------------------------------------------------------------------------------------- resume, interrupt
def test_interrupt_leaves_partial_report_and_rerun_resumes(setup, tmp_path, capsys):
    cfg, bags, root = setup
    s = tmp_path / "set"
    for b in bags[:3]:
        shutil.copytree(b, s / b.name)
    out = tmp_path / "out"
    cmd = [str(AWML), "replay-eval", str(s), "--config", str(root / "cfg.yaml"), "--backend", "pytorch",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((out / "bags").glob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["stopped"] == "interrupted" and summary["passed"] is None
    done = [r for r in summary["fleet"]["bags"] if r["status"] == "ok"]
    assert 1 <= len(done) < 3
    assert len(_frames(out)) == summary["counts"]["frames"] == sum(r["frames"] for r in done)
    assert "PARTIAL" in (out / "report.md").read_text()
    # Re-run: the finished bags are skipped (the log says so), the rest evaluated, the set complete.
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    skipped = [ln for ln in rerun.stderr.splitlines() if "skipping finished bag" in ln]
    assert len(skipped) == len(done)
    full = json.loads((out / "summary.json").read_text())
    assert full["complete"] and full["fleet"]["resumed"] == len(done) and full["counts"]["frames"] == 90
    # A third run skips every bag; other settings are other keys (nothing reused); --force evaluates again.
    args = cmd[1:]
    assert cli_main(args) == 0 and capsys.readouterr().err.count("skipping finished bag") == 3
    assert json.loads((out / "summary.json").read_text())["fleet"]["frames_evaluated_now"] == 0
    assert cli_main(args + ["--max-frames", "1"]) == 0 and "skipping" not in capsys.readouterr().err
    assert cli_main(args + ["--force", "--max-frames", "1"]) == 0
    assert "skipping" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- without Ray
def test_without_ray_in_process_works_and_workers_names_the_extra(setup, monkeypatch, tmp_path, capsys):
    cfg, bags, root = setup
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(BackendUnavailableError) as e:
        fleet_evaluate(bags[:1], cfg, SETTINGS, workers=2, out_dir=tmp_path / "w", progress=False)
    assert FLEET_EXTRA in str(e.value) and "\n" not in str(e.value)
    code = cli_main(["replay-eval", str(bags[0]), "--config", str(root / "cfg.yaml"), "--workers", "2"])
    assert code == 3 and capsys.readouterr().err.strip().splitlines() == [f"error: {e.value}"]
    ok = fleet_evaluate(bags[:2], cfg, FleetSettings(backend="pytorch", max_frames=1), out_dir=tmp_path / "in",
                        progress=False)
    assert ok.exit_code == 0 and ok.summary["counts"]["scored"] == 2


def test_resolve_bags_folder_glob_list(setup, tmp_path):
    bags = setup[1]
    assert resolve_bags(bags[0].parent) == sorted(bags)
    assert resolve_bags(str(bags[0].parent / "drive_[12]")) == bags[1:3]
    lst = tmp_path / "bags.txt"
    lst.write_text(f"# two drives\n{bags[3]}\n\n{bags[0]}  # first\nmissing_drive\n")
    assert resolve_bags(lst) == [bags[3], bags[0], tmp_path / "missing_drive"]
    assert resolve_bags(bags[2]) == [bags[2]]
