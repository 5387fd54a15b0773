"""Offline replay evaluation: same numbers as the info-file evaluation, shared scoring, criteria, comparison,
and every bad-input path (one clear line, partial results kept)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from awml_deploy_core.config import CenterPointModelConfig, DataConfig, DeployConfig, EvaluateConfig, VerifyConfig
from awml_deploy_core.data.info_dataset import InfoDataset
from awml_deploy_core.data.msg_definitions import DETECTED_OBJECTS
from awml_deploy_core.data.rosbag_io import (
    DEFAULT_GT_TOPIC, DEFAULT_LIDAR_TOPIC, POINTCLOUD2, SYNTHETIC_START_S, BagWriter, cloud_message,
    detected_objects_message, seconds_to_ns, typestore, write_synthetic_bag)
from awml_deploy_core.data.synthetic import generate_sequence
from awml_deploy_core.errors import ArtifactError, ConfigError, DatasetError
from awml_deploy_core.evaluate import evaluate_backend
from awml_deploy_core.models.centerpoint import build_centerpoint
from awml_deploy_core.models.checkpoint import save_checkpoint
from awml_deploy_core.replay.criteria import ReplayCriteria, load_criteria
from awml_deploy_core.loader import load_pipeline
from awml_deploy_core.replay.offline import benchmark_overhead, replay_evaluate
from awml_deploy_core.replay.report import compare_runs
from awml_deploy_core.replay.scoring import FrameRecord, GroundTruth, detected_objects_to_boxes, score_frames

AWML = Path(sys.executable).parent / "awml-deploy"
LIDAR, GT = DEFAULT_LIDAR_TOPIC, DEFAULT_GT_TOPIC


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An untrained fixed-seed model on a coarse grid (fast on CPU), a 3 s drive, a config YAML."""
    root = tmp_path_factory.mktemp("replay")
    torch.manual_seed(0)
    # Untrained scores cluster just above 0.1; this threshold keeps ~10 boxes per frame instead of 100 (and NMS fast).
    # AP stays 0 (precision < min_precision) but matching, curves and counts are real.
    model = CenterPointModelConfig(voxel_size=[0.64, 0.64, 8.0], score_threshold=0.1008)
    ckpt = save_checkpoint(build_centerpoint(model), model, root / "model.pth", {})
    cfg = DeployConfig(model=model, checkpoint=str(ckpt), work_dir=str(root / "work"),
                       data=DataConfig(num_frames=1), verify=VerifyConfig(enabled=False),
                       evaluate=EvaluateConfig(warmup=0, enabled=False))
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    bag = write_synthetic_bag(root / "drive", 3.0, seed=11, progress=False)
    return cfg, bag, root


@pytest.fixture(scope="module")
def run_a(setup):
    cfg, bag, root = setup
    return replay_evaluate(bag.path, cfg, "pytorch", out_dir=root / "run_a", progress=False)


@pytest.fixture(scope="module")
def frames6():
    return list(generate_sequence(11, 6, start_time=SYNTHETIC_START_S))


def custom_bag(path: Path, frames, *, cloud_stamp=lambda i, s: s, gt_frames=None, corrupt: int | None = None,
               lidar_type: str = POINTCLOUD2) -> Path:
    """Clouds (and ground truth for `gt_frames`, all by default; () for none) of `frames`, with faults."""
    gt_frames = range(len(frames)) if gt_frames is None else gt_frames
    with BagWriter(path) as w:
        w.add_topic(LIDAR, lidar_type)
        if gt_frames:
            w.add_topic(GT, DETECTED_OBJECTS)
        for i, f in enumerate(frames):
            s = seconds_to_ns(f.timestamp)
            if i == corrupt:
                raw = bytes(typestore().serialize_cdr(cloud_message(f.points, s), POINTCLOUD2))
                w.write_raw(LIDAR, s, raw[: len(raw) // 3])  # cut short: not a valid PointCloud2
            elif lidar_type == POINTCLOUD2:
                w.write(LIDAR, s, cloud_message(f.points, cloud_stamp(i, s), f.ring, f.time))
            else:
                w.write(LIDAR, s, detected_objects_message(f.gt, f.class_names, s))
            if i in gt_frames:
                w.write(GT, s, detected_objects_message(f.gt.select(f.num_lidar_points > 0), f.class_names, s))
    return path


def lines(out: Path) -> list[dict]:
    raw = (out / "frames.jsonl").read_text().splitlines()
    return [json.loads(t) for t in raw]  # every line must be valid JSON


# --------------------------------------------------------------------------------------------- numbers
def test_replay_equals_info_evaluation_and_recorded_scoring(setup, run_a):
    """Offline replay of the bag == `evaluate` on the same frames from the info file; and recorded outputs
    (DetectedObjects messages, as the real-time path records them) score exactly the same per frame."""
    cfg, bag, root = setup
    assert run_a.exit_code == 0
    s = run_a.summary
    assert s["complete"] and s["counts"] == {"frames": 30, "scored": 30, "skipped": 0, "dropped": 0, "out_of_order": 0}
    fr = lines(run_a.out_dir)
    assert len(fr) == 30 and all(f["status"] == "scored" and f["gt_dt_ms"] == 0 for f in fr)
    assert {"tp", "fp", "fn", "latency_ms", "num_detections", "stamp_ns", "recall", "precision"} <= set(fr[0])
    assert set(fr[0]["latency_ms"]) >= {"preprocess", "encoder", "head", "postprocess", "total"}
    assert (run_a.out_dir / "report.md").exists() and (run_a.out_dir / "plots" / "pr_curves.png").exists()
    assert set(s["metrics"]["band_ap"]) == {"0-20m", "20-40m", "40m+"}

    pipeline = load_pipeline(cfg, "pytorch").pipeline
    ds = InfoDataset(bag.info_path, class_names=cfg.model.class_names)
    samples = [ds[i] for i in range(len(ds))]
    ev = evaluate_backend("pytorch", pipeline, samples, cfg.evaluate, progress=False)
    assert [len(d) for d in ev.detections] == [f["num_detections"] for f in fr]
    assert s["metrics"] == json.loads(json.dumps(ev.metrics.to_dict())), "replay and info evaluation disagree"
    assert sum(s["frame_totals"]["tp"].values()) > 0

    store = typestore()
    records = []
    for f, det in zip(fr, ev.detections):  # what a recording node would have published, back through CDR
        raw = store.serialize_cdr(detected_objects_message(det, cfg.model.class_names, f["stamp_ns"]), DETECTED_OBJECTS)
        msg = store.deserialize_cdr(raw, DETECTED_OBJECTS)
        records.append(FrameRecord(f["stamp_ns"], detected_objects_to_boxes(msg, cfg.model.class_names),
                                   f["latency_ms"]))
    rec = score_frames(records, bag.info_path, cfg.model.class_names, 75.0)
    for a, b in zip(rec.frames, fr):
        assert (a["tp"], a["fp"], a["fn"], a["status"]) == (b["tp"], b["fp"], b["fn"], b["status"])
    for key in ("ap", "pr_curves", "num_pred", "num_gt", "map_by_threshold"):
        assert rec.to_dict()["metrics"][key] == s["metrics"][key], key


def test_onnxruntime_without_a_bundle_runs_from_the_onnx_cache(setup, tmp_path, monkeypatch):
    """No bundle in work_dir: the loader exports the graphs once into the ONNX cache (keyed by the export's input
    hash); a config of another geometry gets its own graphs, never a mismatching bundle's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg, bag, _ = setup
    fresh = cfg.model_copy(update={"work_dir": str(tmp_path / "nobundle")})
    out = replay_evaluate(bag.path, fresh, "onnxruntime", out_dir=tmp_path / "ort", progress=False, max_frames=3)
    assert out.summary["counts"]["scored"] == 3 and out.summary["backend"] == "onnxruntime"
    onnx = out.summary["checkpoint"]["onnx"]
    assert all(p.startswith(str(tmp_path / "cache")) for p in onnx.values()), onnx
    other = fresh.model_copy(update={"model": fresh.model.model_copy(update={"max_points_per_voxel": 8})})
    out = replay_evaluate(bag.path, other, "onnxruntime", out_dir=tmp_path / "o8", progress=False, max_frames=2)
    assert out.summary["counts"]["scored"] == 2
    assert set(out.summary["checkpoint"]["onnx"].values()).isdisjoint(onnx.values())


def test_criteria_gate_exit_codes(setup, run_a, tmp_path):
    cfg, bag, _ = setup
    ok = ReplayCriteria(min_ap={"car": 0.0}, latency={"max_p99_ms": 1e6},
                        frames={"min_recall": 0.0, "min_precision": 0.0, "min_pass_rate_percent": 100})
    res = replay_evaluate(bag.path, cfg, "pytorch", criteria=ok, out_dir=tmp_path / "ok", progress=False, max_frames=3)
    assert res.exit_code == 0 and res.summary["passed"] and len(res.summary["gates"]) == 4
    bad = ReplayCriteria(min_map=0.99, frames={"min_recall": 1.0, "min_precision": 1.0, "min_pass_rate_percent": 50})
    res = replay_evaluate(bag.path, cfg, "pytorch", criteria=bad, out_dir=tmp_path / "bad", progress=False,
                          max_frames=3)
    assert res.exit_code == 1 and [g["passed"] for g in res.summary["gates"]] == [True, False, False]
    assert "**NO**" in (tmp_path / "bad" / "report.md").read_text()
    with pytest.raises(ConfigError, match="unknown classes \\['cyclist'\\]"):
        replay_evaluate(bag.path, cfg, "pytorch", criteria=ReplayCriteria(min_ap={"cyclist": 0.5}),
                        out_dir=tmp_path / "x", progress=False)
    (tmp_path / "c.yaml").write_text("frames:\n  min_recal: 0.5\n  min_pass_rate_percent: 90\n")
    with pytest.raises(ConfigError, match="frames.min_recal"):
        load_criteria(tmp_path / "c.yaml")


def test_skipped_and_duplicate_frames_are_listed_never_scored(setup, frames6, tmp_path):
    cfg, _, _ = setup
    # ground truth for frames 0-3 only; cloud 4 carries cloud 3's stamp again
    bag = custom_bag(tmp_path / "b", frames6, gt_frames=(0, 1, 2, 3),
                     cloud_stamp=lambda i, s: s - 100_000_000 if i == 4 else s)
    res = replay_evaluate(bag, cfg, "pytorch", out_dir=tmp_path / "o", progress=False)
    c = res.summary["counts"]
    assert (c["scored"], c["skipped"]) == (4, 2) and res.exit_code == 0
    reasons = {s["index"]: s["reason"] for s in res.summary["skipped_frames"]}
    assert "duplicate stamp" in reasons[4] and "no ground truth within 75 ms (nearest 200.0 ms away)" == reasons[5]
    assert sum(res.summary["metrics"]["num_gt"].values()) == sum(f.get("num_gt", 0) for f in lines(res.out_dir))
    assert "Skipped frames (2; never scored)" in (res.out_dir / "report.md").read_text()
    # the same ground truth from the info file; a 0 ms tolerance still matches exact stamps
    info = tmp_path / "info"
    from awml_deploy_core.data.info_dataset import write_info_dataset

    path = write_info_dataset(frames6[:4], info)
    res = replay_evaluate(bag, cfg, "pytorch", gt_info=path, tolerance_ms=0, out_dir=tmp_path / "i", progress=False)
    assert (res.summary["counts"]["scored"], res.summary["counts"]["skipped"]) == (4, 2)


def test_recorded_outputs_with_drops(frames6, tmp_path):
    """The real-time path's input: a bag of played clouds + recorded outputs + InferenceStats, scored by the
    same code; an input without output is a drop (not in AP, fails per-frame criteria)."""
    from awml_deploy_core.data.msg_definitions import INFERENCE_STATS
    from awml_deploy_core.data.rosbag_io import BagReader
    from awml_deploy_core.replay.criteria import apply_criteria
    from awml_deploy_core.replay.scoring import records_from_bag

    T = typestore().types
    names = frames6[0].class_names
    path = tmp_path / "rec"
    with BagWriter(path) as w:
        for topic, t in ((LIDAR, POINTCLOUD2), ("/det", DETECTED_OBJECTS), ("/stats", INFERENCE_STATS)):
            w.add_topic(topic, t)
        for i, f in enumerate(frames6):
            s = seconds_to_ns(f.timestamp)
            w.write(LIDAR, s, cloud_message(f.points[:10], s))
            if i == 2:
                continue  # dropped by the node
            perfect = f.gt.select(f.num_lidar_points > 0)
            w.write("/det", s + 90_000_000, detected_objects_message(perfect, names, s))
            hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=s // 10**9, nanosec=s % 10**9),
                                          frame_id="base_link")
            w.write("/stats", s + 90_000_000, T[INFERENCE_STATS](
                header=hdr, backend="onnxruntime", precision="fp32", preprocess_ms=5.0, inference_ms=50.0 + i,
                postprocess_ms=3.0, total_ms=60.0 + i, queue_ms=0.5, pipeline_latency_ms=90.0, input_size=10,
                output_count=len(perfect)))
    with BagReader(path) as r:
        records = records_from_bag(r, "/det", names, input_topic=LIDAR, stats_topic="/stats")
        gt = GroundTruth.from_topic(r, "/det", names)  # the perfect outputs double as ground truth here
    assert [rec.detections is None for rec in records] == [False, False, True, False, False, False]
    assert records[1].latency_ms == {"preprocess": 5.0, "inference": 51.0, "postprocess": 3.0, "total": 61.0,
                                     "queue": 0.5, "pipeline": 90.0}
    scores = score_frames(records, gt, names)
    d = scores.to_dict()
    assert d["counts"] == {"frames": 6, "scored": 5, "skipped": 0, "dropped": 1, "out_of_order": 0}
    assert d["drop_rate"] == pytest.approx(1 / 6) and d["latency_ms"]["total"]["count"] == 5
    assert all(v is None or v == pytest.approx(1.0) for v in d["ap_at_2m"].values()), d["ap_at_2m"]
    assert d["map_at_2m"] == pytest.approx(1.0)
    crit = ReplayCriteria(frames={"min_recall": 1.0, "min_precision": 1.0, "min_pass_rate_percent": 80},
                          max_dropped_percent=10)
    gates = apply_criteria(crit, d, scores.frames)
    assert [g["passed"] for g in gates] == [True, True, False]  # 5/6 frames pass (83%); 16.7% dropped > 10%


# --------------------------------------------------------------------------------------------- bad input
def _one_line(e: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg


def test_missing_topic_wrong_type_no_ground_truth(setup, frames6, tmp_path):
    cfg, bag, _ = setup
    with pytest.raises(DatasetError) as e:
        replay_evaluate(bag.path, cfg, "pytorch", lidar_topic="/lidar/points", out_dir=tmp_path / "o", progress=False)
    _one_line(e, str(bag.path), "'/lidar/points'", f"topics in the bag: {GT}", LIDAR)
    wrong = custom_bag(tmp_path / "wrong", frames6[:2], lidar_type=DETECTED_OBJECTS)
    with pytest.raises(DatasetError) as e:
        replay_evaluate(wrong, cfg, "pytorch", out_dir=tmp_path / "o", progress=False)
    _one_line(e, str(wrong), LIDAR, "carries awml_deploy_msgs/msg/DetectedObjects",
              "expected sensor_msgs/msg/PointCloud2")
    nogt = custom_bag(tmp_path / "nogt", frames6[:2], gt_frames=())
    with pytest.raises(DatasetError) as e:
        replay_evaluate(nogt, cfg, "pytorch", out_dir=tmp_path / "o", progress=False)
    _one_line(e, str(nogt), "no ground truth", "--gt-topic")
    with pytest.raises(DatasetError) as e:
        replay_evaluate(nogt, cfg, "pytorch", gt_topic="/gt", out_dir=tmp_path / "o", progress=False)
    _one_line(e, "no ground-truth topic '/gt'")
    assert not (tmp_path / "o").exists(), "nothing to keep: outputs appear only once frames are processed"
    # ground truth exists but never within the tolerance: the run is written, then one line says why
    late = custom_bag(tmp_path / "late", frames6[:2], cloud_stamp=lambda i, s: s + 500_000_000)
    with pytest.raises(DatasetError) as e:
        replay_evaluate(late, cfg, "pytorch", out_dir=tmp_path / "late_o", progress=False)
    _one_line(e, "none of the 2 clouds", "within 75 ms", "--tolerance-ms")
    assert json.loads((tmp_path / "late_o" / "summary.json").read_text())["counts"]["skipped"] == 2


def test_truncated_bag(setup, tmp_path):
    cfg, bag, _ = setup
    cut = tmp_path / "cut"
    shutil.copytree(bag.path, cut, ignore=shutil.ignore_patterns("awml_info"))
    mcap = next(cut.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size * 2 // 3])
    with pytest.raises(DatasetError) as e:
        replay_evaluate(cut, cfg, "pytorch", out_dir=tmp_path / "o", progress=False)
    _one_line(e, f"bag {cut}", "truncated", "mcap recover")


def test_corrupt_message_keeps_frames_before_it(setup, frames6, tmp_path):
    cfg, _, _ = setup
    bag = custom_bag(tmp_path / "b", frames6, corrupt=3)
    with pytest.raises(DatasetError) as e:
        replay_evaluate(bag, cfg, "pytorch", out_dir=tmp_path / "o", progress=False)
    _one_line(e, f"bag {bag}", "message 3 on topic", LIDAR, "PointCloud2")
    assert len(lines(tmp_path / "o")) == 3
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert not s["complete"] and s["stopped"] == "error" and "message 3" in s["error"]
    assert s["counts"]["scored"] == 3 and s["metrics"] is not None and s["passed"] is None
    assert "PARTIAL" in (tmp_path / "o" / "report.md").read_text()


def test_out_of_order_stamps_warn_or_fail(setup, frames6, tmp_path, caplog):
    cfg, _, _ = setup
    swap = {2: 3, 3: 2}
    bag = custom_bag(tmp_path / "b", frames6[:5],
                     cloud_stamp=lambda i, s: s + (swap[i] - i) * 100_000_000 if i in swap else s)
    with caplog.at_level(logging.WARNING):
        res = replay_evaluate(bag, cfg, "pytorch", out_dir=tmp_path / "o", progress=False)
    assert res.exit_code == 0 and res.summary["counts"]["scored"] == 5
    assert res.summary["out_of_order_frames"] == [3] and lines(res.out_dir)[3]["out_of_order"] is True
    assert any("older than an earlier cloud" in r.getMessage() for r in caplog.records)
    with pytest.raises(DatasetError, match=r"bag .*/b: topic .*: frame 3: .* \(stamps out of order\)"):
        replay_evaluate(bag, cfg, "pytorch", out_dir=tmp_path / "strict", progress=False, strict_order=True)
    assert len(lines(tmp_path / "strict")) == 3
    assert json.loads((tmp_path / "strict" / "summary.json").read_text())["complete"] is False


def test_sigint_leaves_valid_partial_results(setup, tmp_path):
    _, bag, root = setup
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([str(AWML), "replay-eval", str(bag.path), "--config", str(root / "cfg.yaml"),
                             "--backend", "pytorch", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            f = out / "frames.jsonl"
            if f.exists() and len(f.read_text().splitlines()) >= 2:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    fr = lines(out)
    s = json.loads((out / "summary.json").read_text())
    assert 2 <= len(fr) < 30 and s["counts"]["frames"] == len(fr)
    assert s["complete"] is False and s["stopped"] == "interrupted"
    assert "Traceback" not in err and "interrupted" in err


# --------------------------------------------------------------------------------------------- compare, CLI
def test_compare_runs_gate(run_a, tmp_path):
    code, res = compare_runs(run_a.out_dir, run_a.out_dir, tmp_path / "same")
    assert code == 0 and res["passed"] and (tmp_path / "same" / "plots" / "ap_bars.png").exists()
    b = tmp_path / "b"
    shutil.copytree(run_a.out_dir, b)
    s = json.loads((b / "summary.json").read_text())
    s["map_at_2m"] -= 0.05
    s["ap_at_2m"]["car"] -= 0.2
    (b / "summary.json").write_text(json.dumps(s))
    code, res = compare_runs(run_a.out_dir, b, tmp_path / "cmp", max_map_drop=0.01)
    assert code == 1 and not res["passed"]
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "**-0.0500 ↓**" in md and "**-0.2000 ↓**" in md and "REGRESSION" in md
    code, _ = compare_runs(run_a.out_dir, b, tmp_path / "cmp2", max_map_drop=0.06)
    assert code == 0
    with pytest.raises(ArtifactError, match="no summary.json"):
        compare_runs(tmp_path / "nothing", b)


def test_cli_make_bag_compare_and_config_errors(setup, run_a, tmp_path):
    def run(*argv):
        return subprocess.run([str(AWML), *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path)

    r = run("make-bag", "small", "--seconds", "0.3", "--seed", "4", "--storage", "sqlite3")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "small" / "metadata.yaml").exists() and (tmp_path / "small" / "awml_info" / "infos.pkl").exists()
    r = run("make-bag", "small", "--seconds", "0.3")
    assert r.returncode == 2 and "exists already" in r.stderr
    r = run("replay-eval", "small", "--config", str(setup[2] / "cfg.yaml"), "--backend", "pytorch", "--benchmark")
    assert r.returncode == 0 and "replay overhead on 3 clouds" in r.stdout, r.stderr
    r = run("replay-compare", str(run_a.out_dir), str(run_a.out_dir), "--out", "cmp")
    assert r.returncode == 0 and "mAP @2m" in r.stdout and (tmp_path / "cmp" / "compare.md").exists(), r.stderr
    (tmp_path / "crit.yaml").write_text("min_ap: {car: 2}\n")
    (tmp_path / "cfg.yaml").write_text("{}\n")
    r = run("replay-eval", "small", "--config", "cfg.yaml", "--criteria", "crit.yaml")
    assert r.returncode == 2 and "crit.yaml: min_ap" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_benchmark_overhead(setup):
    cfg, bag, _ = setup
    r = benchmark_overhead(bag.path, cfg, "pytorch", max_frames=6)
    assert r["frames"] == 6 and r["bare_median_ms"] > 0 and r["replay_median_ms"] > 0
    # The ratio is computed from the two medians; its bar (>= 0.9) is a benchmark number, measured on the full
    # drive and reported, not asserted here: six frames on a shared 2-core machine gave 0.41 once.
    assert r["ratio"] == pytest.approx(r["bare_median_ms"] / r["replay_median_ms"], rel=1e-6), r
