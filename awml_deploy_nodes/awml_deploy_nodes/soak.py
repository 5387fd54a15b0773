"""Soak run of centerpoint_node: memory slope, latency drift and drops over minutes of steady input.

    . tools/ros_env.sh && python -m awml_deploy_nodes.soak --minutes 30 [--rate 5] [--points 100000]
        [--backend onnxruntime] [--model small|shipped] [--warmup-s 30] [--json out.json]

Starts the node and a cloud publisher as two processes of their own (this process only listens): the publisher
sends synthetic clouds of exactly --points points at --rate Hz, stamped at publish time, for --minutes. This
process samples the node's RSS every second and takes the detections (stamp -> arrival latency) and the node's
/diagnostics. After the warm-up it reports:

  rss        MiB at the start and the end of the measured part, and the least-squares slope (MiB per minute);
  latency    median and p99, the median of the first and of the last quarter, and the least-squares slope
             (ms per minute): a growing backlog or leak shows as drift;
  drops      clouds sent vs answered, and the node's own counters (dropped_inputs, input_gaps, transport_lost,
             malformed, internal_error).

Exit 0 when the node ran to the end with no internal error, 1 otherwise, 2 for a usage error (including a
missing DDS environment: it refuses to run without ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a shared-memory
only Fast DDS profile, as tools/ros_env.sh sets them, so no DDS traffic leaves the machine).
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

NODE = "soak_cp"
TOPIC = "/soak/pointcloud"


class SoakError(Exception):
    """Usage or environment problem; one line."""


def check_dds_environment(env: dict[str, str]) -> None:
    """Localhost discovery and a shared-memory-only Fast DDS profile, or SoakError."""
    if env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        raise SoakError("ROS_AUTOMATIC_DISCOVERY_RANGE must be LOCALHOST (source tools/ros_env.sh first); "
                        f"got {env.get('ROS_AUTOMATIC_DISCOVERY_RANGE')!r}")
    profile = env.get("FASTDDS_DEFAULT_PROFILES_FILE", "")
    if not profile or not Path(profile).is_file():
        raise SoakError("FASTDDS_DEFAULT_PROFILES_FILE must name the shared-memory-only profile "
                        f"(config/fastdds_localhost_shm.xml; source tools/ros_env.sh); got {profile!r}")
    text = Path(profile).read_text()
    compact = "".join(text.split())
    if "<type>SHM</type>" not in compact or "<useBuiltinTransports>false</useBuiltinTransports>" not in compact:
        raise SoakError(f"{profile}: not a shared-memory-only Fast DDS profile (needs an SHM transport descriptor "
                        f"and useBuiltinTransports false); use config/fastdds_localhost_shm.xml")
    if env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        raise SoakError(f"RMW_IMPLEMENTATION must be rmw_fastrtps_cpp (got {env['RMW_IMPLEMENTATION']!r})")


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _slope_per_min(t_s: list[float], y: list[float]) -> float:
    if len(t_s) < 3:
        return float("nan")
    return float(np.polyfit(np.asarray(t_s) / 60.0, np.asarray(y), 1)[0])


# ------------------------------------------------------------------------------------------------ publisher
def run_publisher(rate: float, seconds: float, points: int, out: Path) -> int:
    """The publisher process: clouds at `rate` for `seconds`; writes the number sent to `out`."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from .bench_node import _clouds

    clouds = _clouds(points, 3, seed=11)
    rclpy.init()
    node = rclpy.create_node("soak_publisher")
    pub = node.create_publisher(PointCloud2, TOPIC, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    deadline = time.monotonic() + 60
    while pub.get_subscription_count() < 2 and time.monotonic() < deadline:  # the node and the listener
        rclpy.spin_once(node, timeout_sec=0.05)
    print("publishing", flush=True)
    sent = 0
    t0 = time.monotonic()
    period = 1.0 / rate
    while time.monotonic() - t0 < seconds:
        msg = clouds[sent % len(clouds)]
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
        sent += 1
        next_t = t0 + sent * period
        while time.monotonic() < next_t:
            rclpy.spin_once(node, timeout_sec=max(0.0, min(0.01, next_t - time.monotonic())))
    out.write_text(json.dumps({"sent": sent}))
    node.destroy_node()
    rclpy.shutdown()
    return 0


# ------------------------------------------------------------------------------------------------ main
def _summary(rss: list[tuple[float, float]], lat: list[tuple[float, float]], warmup_s: float, sent: int,
             answered: int, diag: dict[str, str], node_alive: bool) -> dict[str, Any]:
    rss_m = [(t, v) for t, v in rss if t >= warmup_s]
    lat_m = [(t, v) for t, v in lat if t >= warmup_s]
    res: dict[str, Any] = {"sent": sent, "answered": answered, "node_alive": node_alive,
                           "measured_s": (rss_m[-1][0] - rss_m[0][0]) if len(rss_m) > 1 else 0.0}
    if rss_m:
        res["rss_mib"] = {"start": rss_m[0][1], "end": rss_m[-1][1], "max": max(v for _, v in rss_m),
                          "slope_mib_per_min": _slope_per_min([t for t, _ in rss_m], [v for _, v in rss_m])}
    if lat_m:
        vals = np.asarray([v for _, v in lat_m])
        q = max(1, len(vals) // 4)
        res["latency_ms"] = {"median": float(np.median(vals)), "p99": float(np.percentile(vals, 99)),
                             "median_first_quarter": float(np.median(vals[:q])),
                             "median_last_quarter": float(np.median(vals[-q:])),
                             "slope_ms_per_min": _slope_per_min([t for t, _ in lat_m], list(vals))}
    keys = ("received", "frames_processed", "dropped_inputs", "input_gaps", "transport_lost", "malformed_total",
            "internal_error")
    res["node"] = {k: diag.get(k) for k in keys}
    return res


def _print(res: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\nsoak: {args.minutes:g} min at {args.rate:g} Hz, {args.points} points, {args.backend}; measured "
          f"{res['measured_s']:.0f} s after a {args.warmup_s:g} s warm-up")
    r = res.get("rss_mib")
    if r:
        print(f"  rss      {r['start']:.1f} -> {r['end']:.1f} MiB (max {r['max']:.1f}), slope "
              f"{r['slope_mib_per_min']:+.3f} MiB/min")
    lat = res.get("latency_ms")
    if lat:
        print(f"  latency  median {lat['median']:.1f} ms, p99 {lat['p99']:.1f} ms; first quarter "
              f"{lat['median_first_quarter']:.1f} -> last quarter {lat['median_last_quarter']:.1f} ms; slope "
              f"{lat['slope_ms_per_min']:+.3f} ms/min")
    n = res["node"]
    print(f"  drops    sent {res['sent']}, answered {res['answered']}; node: received {n['received']}, processed "
          f"{n['frames_processed']}, dropped_inputs {n['dropped_inputs']}, input_gaps {n['input_gaps']}, "
          f"transport_lost {n['transport_lost']}, malformed {n['malformed_total']}, internal_error "
          f"{n['internal_error']}")
    print(f"  node     {'alive to the end' if res['node_alive'] else 'DIED'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m awml_deploy_nodes.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--rate", type=float, default=5.0, help="clouds per second")
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--backend", default="onnxruntime", choices=("pytorch", "onnxruntime"))
    ap.add_argument("--model", default="small", choices=("small", "shipped"))
    ap.add_argument("--warmup-s", type=float, default=30.0, help="not measured (default 30 s)")
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--publisher", nargs=4, metavar=("RATE", "SECONDS", "POINTS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.publisher:
        rate, seconds, points, out = args.publisher
        return run_publisher(float(rate), float(seconds), int(points), Path(out))
    try:
        if args.minutes <= 0 or args.rate <= 0 or args.points < 1:
            raise SoakError("--minutes, --rate and --points must be > 0")
        check_dds_environment(dict(os.environ))
    except SoakError as e:
        print(f"soak: error: {e}", file=sys.stderr)
        return 2
    return _soak(args)


def _soak(args: argparse.Namespace) -> int:
    import rclpy
    import yaml
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile

    from awml_deploy_msgs.msg import DetectedObjects

    from .bench_node import _shipped_checkpoint, small_checkpoint, stop_process

    tmp = Path(tempfile.mkdtemp(prefix="cp_soak_"))
    ckpt = _shipped_checkpoint() if args.model == "shipped" else None
    params = {"backend": args.backend, "checkpoint": str(ckpt or small_checkpoint(tmp / "small.pth")),
              "onnx_cache_dir": str(tmp / "onnx"), "processing_time_budget_ms": 10_000.0, "diagnostics_period_s": 1.0}
    (tmp / "params.yaml").write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    env = dict(os.environ)
    node_log = tmp / "node.log"
    node = subprocess.Popen([sys.executable, "-m", "awml_deploy_nodes.centerpoint_node", "--ros-args", "-r",
                             f"__node:={NODE}", "--params-file", str(tmp / "params.yaml"), "-r",
                             f"~/input/pointcloud:={TOPIC}"], stdout=node_log.open("w"), stderr=subprocess.STDOUT,
                            env=env)
    publisher = None
    rclpy.init()
    listener = rclpy.create_node("soak_listener")
    lat: list[tuple[float, float]] = []
    diag: dict[str, str] = {}
    rss: list[tuple[float, float]] = []
    t_start = [0.0]

    def on_objects(m: DetectedObjects) -> None:
        stamp_ns = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
        lat.append((time.monotonic() - t_start[0], (time.time_ns() - stamp_ns) / 1e6))

    def on_diag(m: DiagnosticArray) -> None:
        for st in m.status:
            if st.name in (f"/{NODE}: input", f"/{NODE}: inference"):
                diag.update({kv.key: kv.value for kv in st.values})

    listener.create_subscription(DetectedObjects, f"/{NODE}/output/objects", on_objects, QoSProfile(depth=50))
    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=10))
    code = 1
    try:
        deadline = time.monotonic() + 300
        while "ready:" not in node_log.read_text():
            if node.poll() is not None or time.monotonic() > deadline:
                print(f"soak: error: centerpoint_node did not start:\n{node_log.read_text()[-2000:]}", file=sys.stderr)
                return 1
            rclpy.spin_once(listener, timeout_sec=0.2)
        seconds = args.minutes * 60.0
        pub_log = tmp / "publisher.log"
        publisher = subprocess.Popen([sys.executable, "-m", "awml_deploy_nodes.soak", "--minutes", "1", "--publisher",
                                      str(args.rate), str(seconds), str(args.points), str(tmp / "sent.json")],
                                     stdout=pub_log.open("w"), stderr=subprocess.STDOUT, env=env)
        while "publishing" not in pub_log.read_text():
            if publisher.poll() is not None:
                print(f"soak: error: the publisher failed:\n{pub_log.read_text()[-2000:]}", file=sys.stderr)
                return 1
            rclpy.spin_once(listener, timeout_sec=0.05)
        t_start[0] = time.monotonic()
        next_sample, next_line = t_start[0], t_start[0] + 60.0
        print(f"soak: {args.minutes:g} min; node pid {node.pid}; logs in {tmp}", flush=True)
        while publisher.poll() is None and node.poll() is None:
            rclpy.spin_once(listener, timeout_sec=0.05)
            now = time.monotonic()
            if now >= next_sample:
                v = _rss_mib(node.pid)
                if v is not None:
                    rss.append((now - t_start[0], v))
                next_sample += 1.0
            if now >= next_line:
                next_line += 60.0
                recent = [v for t, v in lat if t >= now - t_start[0] - 60.0]
                print(f"  {(now - t_start[0]) / 60:.0f} min: rss {rss[-1][1] if rss else float('nan'):.1f} MiB, "
                      f"latency median {np.median(recent) if recent else float('nan'):.1f} ms, answered {len(lat)}",
                      flush=True)
        end = time.monotonic() + 3.0  # the last detections and one more diagnostics period
        while time.monotonic() < end:
            rclpy.spin_once(listener, timeout_sec=0.05)
        alive = node.poll() is None
        sent = json.loads((tmp / "sent.json").read_text())["sent"] if (tmp / "sent.json").exists() else 0
        res = _summary(rss, lat, args.warmup_s, sent, len(lat), diag, alive)
        _print(res, args)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        code = 0 if alive and diag.get("internal_error") == "0" else 1
        if not alive:
            print(node_log.read_text()[-3000:], file=sys.stderr)
        return code
    finally:
        for p in (publisher, node):
            if p is not None and p.poll() is None:
                stop_process(p)
        listener.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        if code == 0:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
