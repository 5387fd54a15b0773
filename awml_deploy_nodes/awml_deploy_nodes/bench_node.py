"""Benchmark of centerpoint_node's overhead over real DDS: what the node adds on top of the pipeline.

    . tools/ros_env.sh && python -m awml_deploy_nodes.bench_node [--sizes 100000,200000] [--frames 20] \
        [--backend onnxruntime] [--score-threshold T]
    (the same: install/awml_deploy_nodes/lib/awml_deploy_nodes/centerpoint_node_bench ...;
     on a ROS install: ros2 run awml_deploy_nodes centerpoint_node_bench ...)

Starts the node in its own process, publishes synthetic clouds of exactly N points one at a time (the next one
after the previous one's detections arrived: nothing is dropped, nothing waits in the mailbox), and reports per
cloud size, median and p99 over the frames:

  boxes      detections per frame (the node serializes them in one numpy pass: a few us per frame, not per box);
  pipeline   the pipeline's own stage times (preprocess + encoder/scatter/head + postprocess, from
             ~/debug/inference_stats);
  latency    header stamp (set at publish) -> detections received by this process;
  overhead   latency - pipeline: everything that is not the model: DDS transport of the cloud and of the
             detections, deserialisation, the hand-over to the worker thread, PointCloud2 -> array, Boxes3D ->
             message;
  transport  header stamp -> the same cloud received by a plain subscriber in this process (the middleware's
             floor for that cloud size; the node cannot be faster than this);
  node       publish time - stamp - pipeline - transport (InferenceStats.pipeline_latency_ms is taken just
             before publishing): the node's own part: taking the cloud, the hand-over to the worker thread,
             conversions and message building;
  output     detections published -> received here (serialisation, transport, deserialisation);
  in-node    the node's total_ms - pipeline: conversions in and out plus message building alone, measured inside
             the node (from taking the cloud off the mailbox to just before publishing).

The model does not change the overhead (only the box count does); by default the shipped checkpoint when installed,
else a small fixed-seed untrained CenterPoint (``--model small``, 100 boxes per frame at its own threshold; 0.1010
gives about 10), which keeps the run short.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def small_model_config(name: str = "cp_node_small") -> Any:
    """A small CenterPoint (0.64 m pillars, narrow layers): fast on 2 CPU cores; for benchmarks and tests."""
    from awml_deploy_core.config import CenterPointModelConfig

    return CenterPointModelConfig(name=name, voxel_size=[0.64, 0.64, 8.0], max_voxels=12000,
                                  backbone_out_channels=[16, 32, 64], neck_out_channels=[16, 16, 16],
                                  head_shared_channels=32, head_conv_channels=32)


def small_checkpoint(path: Path, seed: int = 0) -> Path:
    """An untrained, fixed-seed checkpoint of small_model_config() (its scores sit near 0.101)."""
    import torch

    from awml_deploy_core.models.centerpoint import build_centerpoint
    from awml_deploy_core.models.checkpoint import save_checkpoint

    cfg = small_model_config()
    torch.manual_seed(seed)
    return save_checkpoint(build_centerpoint(cfg), cfg, path, {"note": f"untrained, torch.manual_seed({seed})"})


def _shipped_checkpoint() -> Path | None:
    import importlib.resources

    try:
        p = Path(str(importlib.resources.files("awml_deploy_core") / "checkpoints" / "centerpoint_small.pth"))
    except ModuleNotFoundError:
        return None
    return p if p.is_file() else None


COLUMNS = {"boxes": "boxes", "pipeline": "pipeline", "latency": "latency", "overhead": "overhead", "transport": "cloud transport",
           "node": "node", "output": "output", "in_node": "in-node"}


def _stats(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(np.median(a)), float(np.percentile(a, 99))


def _clouds(n: int, count: int, seed: int) -> list:
    from awml_deploy_core.data.synthetic import generate_frames
    from awml_deploy_nodes.conversions import array_to_pointcloud2

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        pts = next(iter(generate_frames(seed + i, 1))).points.astype(np.float32)
        if n <= len(pts):
            pts = pts[np.sort(rng.choice(len(pts), n, replace=False))]
        else:  # denser than one synthetic sweep: repeat points with a little jitter
            extra = pts[rng.integers(0, len(pts), n - len(pts))].copy()
            extra[:, :3] += rng.normal(0.0, 0.05, (len(extra), 3)).astype(np.float32)
            pts = np.concatenate([pts, extra])
        out.append(array_to_pointcloud2(pts, "lidar"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,200000", help="comma-separated cloud sizes (points)")
    ap.add_argument("--frames", type=int, default=20, help="measured frames per size")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured frames per size")
    ap.add_argument("--backend", default="onnxruntime", choices=("pytorch", "onnxruntime", "tensorrt"))
    ap.add_argument("--checkpoint", default="", help="default: the shipped checkpoint, else --model small")
    ap.add_argument("--bundle-dir", default="", help="run the node from an export bundle instead")
    ap.add_argument("--model", default="auto", choices=("auto", "small"))
    ap.add_argument("--score-threshold", type=float, default=-1.0,
                    help="node parameter score_threshold (default: the model's); sets how many boxes are converted")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one frame's detections")
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--external", default="", metavar="NODE",
                    help="measure an already running centerpoint_node of this name (its topics ~/input/pointcloud, "
                         "~/output/objects, ~/debug/inference_stats not remapped) instead of starting one")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    import rclpy
    import yaml
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from awml_deploy_msgs.msg import DetectedObjects, InferenceStats

    tmp = Path(tempfile.mkdtemp(prefix="cp_bench_"))
    params = {"backend": args.backend, "processing_time_budget_ms": 10_000.0, "onnx_cache_dir": str(tmp / "onnx"),
              "score_threshold": args.score_threshold}
    if args.bundle_dir:
        params["bundle_dir"] = args.bundle_dir
    else:
        ckpt = args.checkpoint or (None if args.model == "small" else _shipped_checkpoint())
        params["checkpoint"] = str(ckpt or small_checkpoint(tmp / "small.pth"))
    (tmp / "params.yaml").write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    log_path = tmp / "node.log"
    name = args.external.strip("/") or "cp_bench"
    node_proc = None
    if not args.external:
        node_proc = subprocess.Popen([sys.executable, "-m", "awml_deploy_nodes.centerpoint_node", "--ros-args",
                                      "-r", f"__node:={name}", "--params-file", str(tmp / "params.yaml")],
                                     stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=dict(os.environ))
    rclpy.init()
    driver = rclpy.create_node("cp_bench_driver")
    try:
        deadline = time.monotonic() + 300
        while node_proc is not None and "ready:" not in log_path.read_text():
            if node_proc.poll() is not None or time.monotonic() > deadline:
                print(f"centerpoint_node did not start:\n{log_path.read_text()}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        if node_proc is not None:
            print(log_path.read_text().strip().splitlines()[-1], flush=True)

        topic = f"/{name}/input/pointcloud"
        pub = driver.create_publisher(PointCloud2, topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        out_recv: dict[tuple[int, int], int] = {}
        stats: dict[tuple[int, int], InferenceStats] = {}
        probe: dict[tuple[int, int], int] = {}

        def key(h) -> tuple[int, int]:
            return h.stamp.sec, h.stamp.nanosec

        driver.create_subscription(DetectedObjects, f"/{name}/output/objects",
                                   lambda m: out_recv.setdefault(key(m.header), time.time_ns()), QoSProfile(depth=10))
        driver.create_subscription(InferenceStats, f"/{name}/debug/inference_stats",
                                   lambda m: stats.setdefault(key(m.header), m), QoSProfile(depth=10))
        driver.create_subscription(PointCloud2, topic, lambda m: probe.setdefault(key(m.header), time.time_ns()),
                                   QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        t_match = time.monotonic() + 30
        while pub.get_subscription_count() < 2 and time.monotonic() < t_match:
            rclpy.spin_once(driver, timeout_sec=0.05)
        t_settle = time.monotonic() + 1.0
        while time.monotonic() < t_settle:
            rclpy.spin_once(driver, timeout_sec=0.05)

        results = []
        for n in sizes:
            clouds = _clouds(n, 3, seed=7)
            rows = []
            for i in range(args.warmup + args.frames):
                msg = clouds[i % len(clouds)]
                stamp = driver.get_clock().now()
                msg.header.stamp = stamp.to_msg()
                k = key(msg.header)
                pub.publish(msg)
                t_end = time.monotonic() + args.timeout
                while (k not in out_recv or k not in stats) and time.monotonic() < t_end:
                    rclpy.spin_once(driver, timeout_sec=0.01)
                if k not in out_recv or k not in stats:
                    print(f"{n} points, frame {i}: no detections within {args.timeout:g} s; node log:\n"
                          f"{log_path.read_text()[-2000:]}", file=sys.stderr)
                    return 1
                t_idle = time.monotonic() + 0.05  # let the probe's copy arrive too
                while time.monotonic() < t_idle:
                    rclpy.spin_once(driver, timeout_sec=0.01)
                if i < args.warmup:
                    continue
                s = stats[k]
                pipe = s.preprocess_ms + s.inference_ms + s.postprocess_ms
                latency = (out_recv[k] - stamp.nanoseconds) / 1e6
                transport = (probe[k] - stamp.nanoseconds) / 1e6 if k in probe else float("nan")
                rows.append({"boxes": float(s.output_count), "pipeline": pipe, "latency": latency, "overhead": latency - pipe,
                             "transport": transport,
                             "node": s.pipeline_latency_ms - pipe - transport,
                             "output": latency - s.pipeline_latency_ms,
                             "in_node": s.total_ms - pipe})
            res = {"points": n, "frames": len(rows)}
            for col in COLUMNS:
                vals = [r[col] for r in rows if not np.isnan(r[col])]
                res[col] = dict(zip(("median_ms", "p99_ms"), _stats(vals))) if vals else None
            results.append(res)

        print(f"\ncenterpoint_node overhead ({args.backend}; {args.frames} frames per size, one at a time; "
              f"median / p99 ms)")
        print(f"{'points':>8} | " + " | ".join(f"{COLUMNS[c]:>15}" for c in COLUMNS))
        for r in results:
            cells = [f"{r[c]['median_ms']:6.2f} / {r[c]['p99_ms']:6.2f}" if r[c] else f"{'n/a':>15}" for c in COLUMNS]
            print(f"{r['points']:>8} | " + " | ".join(cells))
        print("overhead = latency - pipeline; its parts (medians do not add up exactly): cloud transport (stamp -> "
              "a plain subscriber), node (taking the cloud, conversions, message building: publish time - stamp - "
              "pipeline - transport), output (detections: publish -> received); in-node = conversions + message "
              "building alone (total_ms - pipeline)")
        if args.json:
            Path(args.json).write_text(json.dumps({"backend": args.backend, "results": results}, indent=2) + "\n")
        return 0
    finally:
        if node_proc is not None:
            node_proc.send_signal(2)  # SIGINT: the node shuts down cleanly
            try:
                node_proc.wait(15)
            except subprocess.TimeoutExpired:
                node_proc.kill()
                node_proc.wait()
        driver.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
