"""Test process: publish PointCloud2 messages to a centerpoint_node, paced or free-running.

Paced (``--plan plan.json``): a list of {"case", "seed", "stamp": [sec, nanosec], "wait"}; each cloud is published
and the next one waits until the node has dealt with it:
  "wait": "output"     until every topic of --objects-topics has carried detections with this stamp;
  "wait": "diag:KEY"   until KEY in the "<node>: input" status on /diagnostics (--diag-node) has gone up.
A cloud not answered within --retry-s is published again (at most --tries times: the first sample after
discovery can be lost); the process fails (exit 1) when a cloud is never answered.

Free-running (``--rate HZ --duration S --seeds 1,2,3``): cycles the clouds of those seeds at HZ, each stamped with
the publish time; writes one JSON line per published cloud to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cloud_cases  # noqa: E402

from awml_deploy_msgs.msg import DetectedObjects  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--topic", required=True)
    ap.add_argument("--plan")
    ap.add_argument("--objects-topics", default="")
    ap.add_argument("--diag-node", default="", help="fully qualified node name, e.g. /cp_ort")
    ap.add_argument("--retry-s", type=float, default=15.0)
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--duration", type=float, default=0.0)
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--points", type=int, default=0, help="resize every cloud to this many points")
    ap.add_argument("--out", default="")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()

    rclpy.init()
    node = rclpy.create_node("publish_clouds")
    # Reliable writer: matches the node's best-effort reader and lets the middleware retransmit big fragments.
    pub = node.create_publisher(PointCloud2, args.topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    answered: dict[str, set[tuple[int, int]]] = {}
    diag: dict[str, str] = {}

    for topic in filter(None, args.objects_topics.split(",")):
        answered[topic] = set()

        def on_objects(msg: DetectedObjects, topic: str = topic) -> None:
            answered[topic].add((msg.header.stamp.sec, msg.header.stamp.nanosec))

        node.create_subscription(DetectedObjects, topic, on_objects, QoSProfile(depth=10))

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == f"{args.diag_node}: input":
                diag.update({kv.key: kv.value for kv in st.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=10))

    deadline = time.monotonic() + args.timeout
    waiting_for = max(1, len(answered))
    while pub.get_subscription_count() < waiting_for and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if pub.get_subscription_count() == 0:
        print("no subscriber matched", file=sys.stderr)
        return 1
    t_end = time.monotonic() + 1.0  # let the readers match this writer too
    while time.monotonic() < t_end:
        rclpy.spin_once(node, timeout_sec=0.05)
    out = open(args.out, "w") if args.out else None
    try:
        if args.plan:
            return run_plan(node, pub, json.loads(Path(args.plan).read_text()), answered, diag, args, out)
        return run_free(node, pub, args, out)
    finally:
        if out:
            out.close()
        node.destroy_node()
        rclpy.shutdown()


def run_plan(node, pub, plan, answered, diag, args, out) -> int:
    for item in plan:
        stamp = tuple(item["stamp"])
        msg = cloud_cases.build(item["case"], item["seed"], stamp)
        wait = item["wait"]
        key = wait.split(":", 1)[1] if wait.startswith("diag:") else None
        if key is not None:
            t0 = time.monotonic() + 5.0  # the current value first (diagnostics come at ~1 Hz)
            while key not in diag and time.monotonic() < t0:
                rclpy.spin_once(node, timeout_sec=0.05)
            before = int(diag.get(key, "0") or 0)
        done = False
        for attempt in range(args.tries):
            pub.publish(msg)
            print(f"published {item['case']} stamp {stamp} (try {attempt + 1})", flush=True)
            # a dropped cloud shows on /diagnostics within a period or two; detections may take a while
            t_retry = time.monotonic() + (min(args.retry_s, 4.0) if key is not None else args.retry_s)
            while time.monotonic() < t_retry:
                rclpy.spin_once(node, timeout_sec=0.02)
                if key is None:
                    done = all(stamp in seen for seen in answered.values())
                else:
                    done = int(diag.get(key, "0") or 0) > before
                if done:
                    break
            if done:
                break
        if out:
            out.write(json.dumps({**item, "answered": done, "time": time.time()}) + "\n")
            out.flush()
        if not done:
            print(f"no answer to {item['case']} stamp {stamp} (waited for {wait})", file=sys.stderr, flush=True)
            return 1
    print("plan done", flush=True)
    return 0


def run_free(node, pub, args, out) -> int:
    seeds = [int(s) for s in args.seeds.split(",")]
    clouds = []
    for s in seeds:
        pts = cloud_cases.synthetic_points(s)
        if args.points:
            pts = cloud_cases.resized(pts, args.points, s)
        clouds.append(cloud_cases.plain(pts))
    period = 1.0 / args.rate
    t_next = time.monotonic()
    t_stop = t_next + args.duration
    i = 0
    print("publishing", flush=True)
    while time.monotonic() < t_stop:
        msg = clouds[i % len(clouds)]
        now = node.get_clock().now()
        msg.header.stamp = now.to_msg()
        pub.publish(msg)
        if out:
            out.write(json.dumps({"i": i, "stamp_ns": now.nanoseconds, "seed": seeds[i % len(seeds)]}) + "\n")
        i += 1
        t_next += period
        while True:
            left = t_next - time.monotonic()
            if left <= 0:
                break
            rclpy.spin_once(node, timeout_sec=min(left, 0.05))
    print(f"published {i} clouds", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
