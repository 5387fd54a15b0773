"""Test process: subscribe to one topic and write each message as a JSON line; exit after --count."""

from __future__ import annotations

import argparse
import json
import sys
import time

import rclpy
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from awml_deploy_nodes.msg_dict import message_to_dict, message_type


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--topic", required=True)
    ap.add_argument("--type", required=True, help="e.g. awml_deploy_msgs/msg/DetectedObjects")
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--sensor-qos", action="store_true")
    args = ap.parse_args()

    rclpy.init()
    node = rclpy.create_node("echo_topic")
    received: list[dict] = []
    out = open(args.out, "w")

    def on_msg(msg) -> None:
        d = message_to_dict(msg)
        d["_receive_time_ns"] = time.time_ns()
        received.append(d)
        out.write(json.dumps(d) + "\n")
        out.flush()

    qos = qos_profile_sensor_data if args.sensor_qos else QoSProfile(depth=100)
    node.create_subscription(message_type(args.type), args.topic, on_msg, qos)
    print("ready", flush=True)
    deadline = time.monotonic() + args.timeout
    while len(received) < args.count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    out.close()
    node.destroy_node()
    rclpy.shutdown()
    return 0 if len(received) >= args.count else 1


if __name__ == "__main__":
    sys.exit(main())
