"""Benchmark of centerpoint_node's overhead over real DDS: what the node adds on top of the pipeline.

    . tools/ros_env.sh && python -m awml_deploy_nodes.bench_node [--sizes 100000,200000] [--frames 40] \
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
  transport  header stamp -> the same cloud in the callback of a probe: a raw subscriber in a process of its
             own, with the node's QoS and executor (the floor for that cloud size: what any subscriber that
             receives the way the node does waits for it). Each cloud goes to the probe, on a topic of its own,
             right after the node has answered it: one receiver at a time, the two measurements interleaved;
  node       median of (publish time - stamp - pipeline) minus the transport median (InferenceStats'
             pipeline_latency_ms is taken just before publishing): the node's own part: its executor's extra
             work, the layout check, the hand-over to the worker thread, conversions and message building. A
             difference of medians of interleaved runs, so it has no p99;
  node (inside)  the same part measured inside the node, per frame: InferenceStats' queue_ms + total_ms -
             pipeline, from the subscription callback's first line to just before publishing (the layout check,
             the hand-over, conversions, message building). Only rclpy's wake-up and take of the cloud are not
             in it (the probe has those too); no other process's scheduling is in it;
  output     detections published -> received here (serialisation, transport, deserialisation);
  in-node    the node's total_ms - pipeline: conversions in and out plus message building alone, measured inside
             the node (from taking the cloud off the mailbox to just before publishing).

Below the table: the node's own stamp -> callback median next to the probe's (when they agree, the node takes
its clouds as fast as a bare subscriber, and "node (inside)" is all it adds), and the share of CPU time the
hypervisor gave to other machines during the run. On a shared VM that share decides the tails, and with them the
"node" column: it is a difference of medians of sums whose parts grow together under load, while "node (inside)"
and "in-node" stay near their quiet values until the steal is large (measured: 17% steal took in-node from 0.25
to 1.0 ms).

Why the probe is built this way (measured here, 200k points):
- A subscriber in the bench's own process gets Fast DDS's intraprocess delivery, a path the node never takes, and
  a plain (not raw) one deserialises the whole cloud while the node is receiving. Such a probe (this bench's
  until December 2026) had the cloud after the node in a third of the frames (cb - probe -3.3 to +3.7 ms, 10th
  to 90th percentile), so its "node" column was mostly the probe's own noise.
- A probe listening to the node's topic competes with the node for the two cores at the very moment both
  receive: per frame, which one got the cloud first was a coin toss (-5.0 to +3.0 ms), hence the topic of its own.
- A fresh process pays page faults for every cloud (see PROBE_MALLOC_ENV).

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


COLUMNS = {"boxes": "boxes", "pipeline": "pipeline", "latency": "latency", "overhead": "overhead",
           "transport": "cloud transport", "node": "node", "node_inside": "node (inside)", "output": "output",
           "in_node": "in-node"}


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


def probe_main(topic: str, out: Path) -> int:
    """The transport probe (run by main in a process of its own): records when each cloud reaches a raw
    subscription callback, with the node's QoS and executor, and writes [[sec, nanosec, time_ns], ...] to
    ``out`` when stopped (SIGINT)."""
    import rclpy
    from sensor_msgs.msg import PointCloud2

    try:
        from rclpy.executors import ExternalShutdownException
    except ImportError:  # very old rclpy
        ExternalShutdownException = KeyboardInterrupt  # noqa: N806

    from awml_deploy_core.bundle import atomic_write_json

    from .cloud_cdr import header_stamp
    from .node_runtime import CALLBACKS_WITH_INFO, INPUT_QOS

    rows: list[list[int]] = []

    def on_cloud(data: bytes, info: Any = None) -> None:
        t = time.time_ns()
        rows.append([*header_stamp(data), t])

    rclpy.init()
    node = rclpy.create_node("cp_bench_probe")
    # the node's callbacks take the message info where rclpy passes it (Iron+), and so does this one
    callback = on_cloud if CALLBACKS_WITH_INFO else (lambda data: on_cloud(data))
    node.create_subscription(PointCloud2, topic, callback, INPUT_QOS, raw=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        atomic_write_json(out, rows)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


# glibc keeps freed blocks below its mmap threshold in the heap, and raises that threshold (up to 32 MB) each time
# a larger mmapped block is freed: the node reaches that state in its warm-up (model load, first inference) and
# then receives a 2.4 MB cloud into pages it already has. A fresh process with only a subscriber does not: every
# cloud's receive buffers are new mappings, page-faulted in (measured here, 200k points: 12.2 ms median from stamp
# to callback, 6.2 ms with these settings). The probe starts in the node's state, so that its time is the floor.
PROBE_WAIT_S = 0.1  # after a probe cloud: it has arrived (tens of ms at most) before the node's next one
PROBE_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(16 << 20), "MALLOC_TRIM_THRESHOLD_": str(32 << 20)}


def _cpu_steal_and_total() -> tuple[int, int] | None:
    """Linux: CPU time stolen by the hypervisor and all CPU time so far (clock ticks), else None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def stop_process(proc: subprocess.Popen) -> None:
    """SIGINT (a node, the probe or a publisher shuts down cleanly), then kill after 15 s; soak uses it too."""
    proc.send_signal(2)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _stop_probe(proc: subprocess.Popen, path: Path) -> dict[tuple[int, int], int]:
    """Stop the probe and read what it saw: stamp -> time its callback had the cloud (ns)."""
    stop_process(proc)
    if not path.is_file():
        print("the transport probe wrote nothing: the transport and node columns are n/a", file=sys.stderr)
        return {}
    return {(sec, nanosec): t for sec, nanosec, t in json.loads(path.read_text())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,200000", help="comma-separated cloud sizes (points)")
    ap.add_argument("--frames", type=int, default=40,
                    help="measured frames per size (the node column is a difference of two medians: not too few)")
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
    ap.add_argument("--probe-for", default="", help=argparse.SUPPRESS)  # run as the transport probe (probe_main)
    ap.add_argument("--probe-out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe_for:
        return probe_main(args.probe_for, Path(args.probe_out))
    if args.frames < 1 or args.warmup < 0:
        ap.error(f"--frames must be >= 1 and --warmup >= 0 (got {args.frames}, {args.warmup})")
    sizes = [int(s) for s in args.sizes.split(",") if s]

    import rclpy
    import yaml
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from awml_deploy_core.bundle import atomic_write_json
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
    node_proc = probe_proc = None
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
        cloud_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        pub = driver.create_publisher(PointCloud2, topic, cloud_qos)
        out_recv: dict[tuple[int, int], int] = {}
        stats: dict[tuple[int, int], InferenceStats] = {}

        def key(h) -> tuple[int, int]:
            return h.stamp.sec, h.stamp.nanosec

        driver.create_subscription(DetectedObjects, f"/{name}/output/objects",
                                   lambda m: out_recv.setdefault(key(m.header), time.time_ns()), QoSProfile(depth=10))
        driver.create_subscription(InferenceStats, f"/{name}/debug/inference_stats",
                                   lambda m: stats.setdefault(key(m.header), m), QoSProfile(depth=10))
        # The transport probe listens on a topic of its own: each cloud goes to the node, and once the node has
        # answered, the same cloud goes to the probe. Each receiver has the machine to itself, as on a vehicle;
        # the two measurements interleave, so both see the same load.
        probe_topic = f"/{driver.get_name()}/transport_probe"
        probe_pub = driver.create_publisher(PointCloud2, probe_topic, cloud_qos)
        probe_path = tmp / "probe.json"
        probe_proc = subprocess.Popen([sys.executable, "-m", "awml_deploy_nodes.bench_node", "--probe-for",
                                       probe_topic, "--probe-out", str(probe_path)],
                                      stdout=(tmp / "probe.log").open("w"), stderr=subprocess.STDOUT,
                                      env={**os.environ, **PROBE_MALLOC_ENV})
        t_match = time.monotonic() + 60
        while (pub.get_subscription_count() < 1 or probe_pub.get_subscription_count() < 1) \
                and time.monotonic() < t_match:
            if probe_proc.poll() is not None:
                print(f"the transport probe stopped:\n{(tmp / 'probe.log').read_text()}", file=sys.stderr)
                return 1
            rclpy.spin_once(driver, timeout_sec=0.05)

        def pause(seconds: float) -> None:
            t_idle = time.monotonic() + seconds
            while time.monotonic() < t_idle:
                rclpy.spin_once(driver, timeout_sec=0.01)

        def send(publisher: Any, msg: Any) -> tuple[tuple[int, int], int]:
            stamp = driver.get_clock().now()
            msg.header.stamp = stamp.to_msg()
            publisher.publish(msg)
            return key(msg.header), stamp.nanoseconds

        pause(1.0)
        node_frames: list[tuple[int, tuple[int, int], int]] = []  # (points, stamp key, stamp ns), measured ones
        probe_frames: list[tuple[int, tuple[int, int], int]] = []
        steal: dict[int, float] = {}  # per size: % of CPU time the hypervisor gave to other machines meanwhile
        for n in sizes:
            clouds = _clouds(n, 3, seed=7)
            cpu_start = _cpu_steal_and_total()
            for i in range(args.warmup + args.frames):
                msg = clouds[i % len(clouds)]
                k, stamp_ns = send(pub, msg)
                t_end = time.monotonic() + args.timeout
                while (k not in out_recv or k not in stats) and time.monotonic() < t_end:
                    rclpy.spin_once(driver, timeout_sec=0.01)
                if k not in out_recv or k not in stats:
                    print(f"{n} points, frame {i}: no detections within {args.timeout:g} s; node log:\n"
                          f"{log_path.read_text()[-2000:]}", file=sys.stderr)
                    return 1
                pause(0.05)  # nothing of this frame still in flight
                pk, probe_ns = send(probe_pub, msg)
                pause(PROBE_WAIT_S)
                if i >= args.warmup:
                    node_frames.append((n, k, stamp_ns))
                    probe_frames.append((n, pk, probe_ns))
            cpu_end = _cpu_steal_and_total()
            if cpu_start and cpu_end and cpu_end[1] > cpu_start[1]:
                steal[n] = 100.0 * (cpu_end[0] - cpu_start[0]) / (cpu_end[1] - cpu_start[1])
        probe = _stop_probe(probe_proc, probe_path)
        results = []
        for n in sizes:
            rows = []
            for _, k, stamp_ns in (f for f in node_frames if f[0] == n):
                s = stats[k]
                pipe = s.preprocess_ms + s.inference_ms + s.postprocess_ms
                latency = (out_recv[k] - stamp_ns) / 1e6
                rows.append({"boxes": float(s.output_count), "pipeline": pipe, "latency": latency,
                             "overhead": latency - pipe, "to_publish": s.pipeline_latency_ms - pipe,
                             "node_inside": s.queue_ms + s.total_ms - pipe,
                             # stamp -> the node's callback: its own transport, to hold against the probe's
                             "node_receive": s.pipeline_latency_ms - (s.queue_ms + s.total_ms),
                             "output": latency - s.pipeline_latency_ms, "in_node": s.total_ms - pipe})
            res: dict[str, Any] = {"points": n, "frames": len(rows), "cpu_steal_percent": steal.get(n)}
            for col in rows[0]:
                res[col] = dict(zip(("median_ms", "p99_ms"), _stats([r[col] for r in rows])))
            per_probe = [(probe[k] - t) / 1e6 if k in probe else None for m, k, t in probe_frames if m == n]
            transport = [v for v in per_probe if v is not None]
            # every frame's values too (JSON; ms, boxes a count), e.g. to plot them or to pair them another way
            res["per_frame"] = {**{c: [r[c] for r in rows] for c in rows[0]}, "transport": per_probe}
            res["transport"] = res["node"] = None
            if transport:
                res["transport"] = {**dict(zip(("median_ms", "p99_ms"), _stats(transport))), "frames": len(transport)}
                # Different clouds, so not per frame: the difference of the two medians.
                res["node"] = {"median_ms": res["to_publish"]["median_ms"] - res["transport"]["median_ms"],
                               "p99_ms": None}
            results.append(res)

        print(f"\ncenterpoint_node overhead ({args.backend}; {args.frames} frames per size, one at a time; "
              f"median / p99 ms)")
        print(f"{'points':>8} | " + " | ".join(f"{COLUMNS[c]:>15}" for c in COLUMNS))
        for r in results:
            cells = [f"{'n/a':>15}" if not r[c] else f"{r[c]['median_ms']:6.2f} / {'-':>6}" if r[c]["p99_ms"] is None
                     else f"{r[c]['median_ms']:6.2f} / {r[c]['p99_ms']:6.2f}" for c in COLUMNS]
            print(f"{r['points']:>8} | " + " | ".join(cells))
        for r in results:
            if r["transport"]:
                print(f"{r['points']:>8} points: stamp -> the node's callback {r['node_receive']['median_ms']:.2f} ms "
                      f"median, stamp -> the probe's {r['transport']['median_ms']:.2f} ms (the node receives as fast "
                      f"as a bare subscriber when these agree)")
            if r["cpu_steal_percent"] is not None:
                print(f"{r['points']:>8} points: {r['cpu_steal_percent']:.1f}% of the CPU time was stolen by the "
                      f"hypervisor meanwhile (other machines' load; the tails and the 'node' column grow with it)")
        print("overhead = latency - pipeline; its parts (medians do not add up exactly): cloud transport (stamp -> "
              "the callback of a raw subscriber in another process, the node's QoS, the same clouds in between the "
              "node's), node (the node's own part: median of publish time - stamp - pipeline, minus the transport "
              "median), node (inside) (the same, measured in the node: callback -> publish - pipeline), output "
              "(detections: publish -> received); in-node = conversions + message building alone (total_ms - "
              "pipeline)")
        missing = len(probe_frames) - sum(1 for f in probe_frames if f[1] in probe)
        if missing:
            print(f"the probe missed {missing} of {len(probe_frames)} clouds (best effort, like the node); the "
                  f"transport medians are of the others", file=sys.stderr)
        if args.json:
            atomic_write_json(Path(args.json), {"backend": args.backend, "results": results})
        return 0
    finally:
        for proc in (probe_proc, node_proc):
            if proc is not None and proc.poll() is None:
                stop_process(proc)
        driver.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
