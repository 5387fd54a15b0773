"""Test process: drive calibration_status_node(s) from a plan (JSON list of steps), printing one JSON line per
trigger answer.

Steps: {"op": "wait_subs", "count": N} (every input topic has N readers), {"op": "tf"} (static transforms,
transient local), {"op": "odom", "speed": v, "yaw_rate": w} (from now on, odometry at 20 Hz on --odom-topic),
{"op": "triple", "seed": s, "ns": t}, {"op": "cloud_only", ...}, {"op": "bad_image" | "bad_cloud" | "bad_info",
"ns": t}, {"op": "sleep", "s": x}, {"op": "trigger", "service": NAME}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_srvs.srv import Trigger

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calib_cases  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", required=True)
    ap.add_argument("--prefix", default="/test/calib")
    ap.add_argument("--odom-topic", default="/test/calib/odometry")
    ap.add_argument("--tf-topic", default="/tf_static")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    plan = json.loads(Path(args.plan).read_text())

    rclpy.init()
    node = rclpy.create_node("publish_calib")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {"cloud": node.create_publisher(PointCloud2, f"{args.prefix}/pointcloud", qos),
            "image": node.create_publisher(Image, f"{args.prefix}/image", qos),
            "info": node.create_publisher(CameraInfo, f"{args.prefix}/camera_info", qos)}
    tf_pub = node.create_publisher(TransformStamped, args.tf_topic, QoSProfile(
        depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    odom_pub = node.create_publisher(Odometry, args.odom_topic, qos)
    odom: dict[str, float] = {}

    def send_odom() -> None:
        if odom:
            m = Odometry()
            m.header.stamp = node.get_clock().now().to_msg()
            m.twist.twist.linear.x = odom["speed"]
            m.twist.twist.angular.z = odom["yaw_rate"]
            odom_pub.publish(m)

    node.create_timer(0.05, send_odom)

    def spin_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=min(0.01, max(0.0, end - time.monotonic())))

    deadline = time.monotonic() + args.timeout
    for step in plan:
        op = step["op"]
        if op == "wait_subs":
            while min(p.get_subscription_count() for p in pubs.values()) < step["count"]:
                if time.monotonic() > deadline:
                    print(f"only {[p.get_subscription_count() for p in pubs.values()]} readers", file=sys.stderr)
                    return 1
                spin_for(0.05)
            spin_for(1.0)  # let the readers match this writer too
        elif op == "tf":
            for m in calib_cases.transforms():
                tf_pub.publish(m)
        elif op == "odom":
            odom.update(speed=float(step["speed"]), yaw_rate=float(step["yaw_rate"]))
            send_odom()
        elif op == "triple":
            cloud, image, info = calib_cases.triple(step["seed"], step["ns"])
            pubs["cloud"].publish(cloud)
            pubs["image"].publish(image)
            pubs["info"].publish(info)
        elif op == "cloud_only":
            pubs["cloud"].publish(calib_cases.triple(step["seed"], step["ns"])[0])
        elif op == "bad_image":
            _, image, _ = calib_cases.triple(1, step["ns"])
            image.encoding = "yuv422"
            pubs["image"].publish(image)
        elif op == "bad_cloud":
            cloud = calib_cases.triple(1, step["ns"])[0]
            cloud.fields = [f for f in cloud.fields if f.name != "z"]
            pubs["cloud"].publish(cloud)
        elif op == "bad_info":
            pubs["info"].publish(calib_cases.camera_info(step["ns"], np.zeros((3, 3))))
        elif op == "sleep":
            spin_for(float(step["s"]))
        elif op == "trigger":
            client = node.create_client(Trigger, step["service"])
            while not client.wait_for_service(timeout_sec=0.1):
                if time.monotonic() > deadline:
                    print(f"service {step['service']} never appeared", file=sys.stderr)
                    return 1
                spin_for(0.01)
            future = client.call_async(Trigger.Request())
            while not future.done():
                if time.monotonic() > deadline:
                    print("trigger never answered", file=sys.stderr)
                    return 1
                rclpy.spin_once(node, timeout_sec=0.05)
            r = future.result()
            print(json.dumps({"trigger": step["service"], "success": r.success, "message": r.message}), flush=True)
        else:
            raise ValueError(f"unknown step {step}")
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
