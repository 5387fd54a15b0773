"""Test process: publish camera images to yolox_node(s), paced by a plan.

    publish_images.py --plan plan.json --images images.npz [--out result.json]

plan.json: a list of {"stamp": [sec, nanosec], "msgs": [{"topic", "case", "image"}], "wait", "topics"/"diag_node"}.
Every message of an item is published (image_cases.build(case, images[image], stamp)), then:
  "wait": "output"    until every topic in "topics" (Detections2D) has carried this stamp;
  "wait": "diag:KEY"  until KEY of "<diag_node>: input" on /diagnostics has gone up.
An item not answered within --retry-s is published again (at most --tries times: the first sample after discovery
can be lost); the process fails (exit 1) when an item is never answered. --out gets {"tries": [...], "diag": {...}}:
the tries per item and the last "<node>: input" values seen per node.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import image_cases  # noqa: E402

from awml_deploy_msgs.msg import Detections2D  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", default="")
    ap.add_argument("--retry-s", type=float, default=15.0)
    ap.add_argument("--tries", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    plan = json.loads(Path(args.plan).read_text())
    images = np.load(args.images)["images"]

    rclpy.init()
    node = rclpy.create_node("publish_images")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {}
    for item in plan:
        for m in item["msgs"]:
            kind = CompressedImage if image_cases.is_compressed(m["case"]) else Image
            if m["topic"] not in pubs:
                pubs[m["topic"]] = node.create_publisher(kind, m["topic"], qos)
    answered: dict[str, set] = {}
    for topic in sorted({t for item in plan for t in item.get("topics", [])}):
        answered[topic] = set()

        def on_dets(msg: Detections2D, topic: str = topic) -> None:
            answered[topic].add((msg.header.stamp.sec, msg.header.stamp.nanosec))

        node.create_subscription(Detections2D, topic, on_dets, QoSProfile(depth=10))
    diag: dict[str, dict[str, str]] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name.endswith(": input"):
                diag[st.name[: -len(": input")]] = {kv.key: kv.value for kv in st.values}

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=10))

    deadline = time.monotonic() + args.timeout
    while any(p.get_subscription_count() == 0 for p in pubs.values()) and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if any(p.get_subscription_count() == 0 for p in pubs.values()):
        print("no subscriber matched", file=sys.stderr)
        return 1
    t_end = time.monotonic() + 1.0  # let the readers match this writer too
    while time.monotonic() < t_end:
        rclpy.spin_once(node, timeout_sec=0.05)

    tries = []
    try:
        for item in plan:
            n = run_item(node, pubs, images, item, answered, diag, args)
            tries.append(n)
            if n < 0:
                return 1
        t_end = time.monotonic() + 1.5  # one more diagnostics period
        while time.monotonic() < t_end:
            rclpy.spin_once(node, timeout_sec=0.05)
        print("plan done", flush=True)
        return 0
    finally:
        if args.out:
            Path(args.out).write_text(json.dumps({"tries": tries, "diag": diag}))
        node.destroy_node()
        rclpy.shutdown()


def run_item(node, pubs, images, item, answered, diag, args) -> int:
    """Publish one item until answered; the number of tries, or -1 when never answered."""
    stamp = tuple(item["stamp"])
    msgs = [(m["topic"], image_cases.build(m["case"], images[m["image"]], stamp)[0]) for m in item["msgs"]]
    wait = item["wait"]
    key = wait.split(":", 1)[1] if wait.startswith("diag:") else None
    name = item.get("diag_node", "")
    if key is not None:
        t0 = time.monotonic() + 5.0  # the current value first (diagnostics come every period)
        while key not in diag.get(name, {}) and time.monotonic() < t0:
            rclpy.spin_once(node, timeout_sec=0.05)
        before = int(diag.get(name, {}).get(key, "0") or 0)
    for attempt in range(args.tries):
        for topic, msg in msgs:
            pubs[topic].publish(msg)
        print(f"published {[m['case'] for m in item['msgs']]} stamp {stamp} (try {attempt + 1})", flush=True)
        t_retry = time.monotonic() + (min(args.retry_s, 4.0) if key is not None else args.retry_s)
        while time.monotonic() < t_retry:
            rclpy.spin_once(node, timeout_sec=0.02)
            if key is None:
                done = all(stamp in answered[t] for t in item["topics"])
            else:
                done = int(diag.get(name, {}).get(key, "0") or 0) > before
            if done:
                return attempt + 1
    print(f"no answer to {item['msgs']} stamp {stamp} (waited for {wait})", file=sys.stderr, flush=True)
    return -1


if __name__ == "__main__":
    sys.exit(main())
