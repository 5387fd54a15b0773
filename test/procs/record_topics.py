"""Test process: record several topics, one JSON line per message, into <out-dir>/<topic with / -> _>.jsonl.

    record_topics.py --out-dir D --topic /cp/output/objects=awml_deploy_msgs/msg/DetectedObjects --topic ...

Prints "ready" once subscribed; runs until --duration has passed or it is terminated (every line is flushed).
Each line is the message as a dict (msg_dict.message_to_dict) plus "_receive_time_ns".
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import rclpy
from rclpy.qos import QoSProfile

from awml_deploy_nodes.msg_dict import message_to_dict, message_type


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--topic", action="append", required=True, help="TOPIC=pkg/msg/Type")
    ap.add_argument("--duration", type=float, default=600.0)
    args = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    rclpy.init()
    node = rclpy.create_node("record_topics")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for spec in args.topic:
        topic, type_name = spec.split("=", 1)
        f = open(out_dir / (topic.strip("/").replace("/", "_") + ".jsonl"), "w")
        files.append(f)

        def on_msg(msg, f=f) -> None:
            d = message_to_dict(msg)
            d["_receive_time_ns"] = time.time_ns()
            f.write(json.dumps(d) + "\n")
            f.flush()

        node.create_subscription(message_type(type_name), topic, on_msg, QoSProfile(depth=100))
    print("ready", flush=True)
    deadline = time.monotonic() + args.duration
    try:
        while not stop and time.monotonic() < deadline and rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.1)
    except Exception:  # noqa: BLE001 - the context may be shut down by a signal: the files are complete anyway
        pass
    for f in files:
        f.close()
    node.destroy_node()
    if rclpy.ok():
        rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
