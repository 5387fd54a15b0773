"""Test process: publish a DetectedObjects built from a JSON spec until a subscriber has matched, then N times."""

from __future__ import annotations

import argparse
import json
import sys
import time

import rclpy
from geometry_msgs.msg import Pose, Quaternion, Vector3

from awml_deploy_msgs.msg import DetectedObject, DetectedObjects


def build(spec: dict) -> DetectedObjects:
    msg = DetectedObjects()
    msg.header.frame_id = spec["frame_id"]
    msg.header.stamp.sec, msg.header.stamp.nanosec = spec["stamp"]
    for o in spec["objects"]:
        obj = DetectedObject()
        obj.label = o["label"]
        obj.score = o["score"]
        obj.pose = Pose()
        obj.pose.position.x, obj.pose.position.y, obj.pose.position.z = o["position"]
        obj.pose.orientation = Quaternion(x=0.0, y=0.0, z=o["quat_zw"][0], w=o["quat_zw"][1])
        obj.dimensions = Vector3(x=o["dims"][0], y=o["dims"][1], z=o["dims"][2])
        obj.velocity = Vector3(x=o["velocity"][0], y=o["velocity"][1], z=0.0)
        obj.has_velocity = o["has_velocity"]
        msg.objects.append(obj)
    return msg


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--topic", default="/test/objects")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    spec = json.load(open(args.spec))

    rclpy.init()
    node = rclpy.create_node("publish_detected_objects")
    pub = node.create_publisher(DetectedObjects, args.topic, 10)
    msg = build(spec)
    deadline = time.monotonic() + args.timeout
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if pub.get_subscription_count() == 0:
        print("no subscriber matched", file=sys.stderr)
        return 1
    for _ in range(args.repeat):
        pub.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.2)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
