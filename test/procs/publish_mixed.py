"""Test process: good clouds, each followed at once by bad ones, to a centerpoint_node; what came back, as JSON.

  --mode kinds   after each good cloud, one cloud of each malformed kind of cloud_cases (K = --bad-per-good
                 of them, cycling through the kinds);
  --mode fuzz    after each good cloud, K random messages (random fields, datatypes, offsets, steps, sizes,
                 byte order and bytes; most are malformed, some are valid).

Good clouds have stamps (1000 + i, 0), bad ones (1, j). At the end one more good cloud is sent alone and
waited for (the node is alive and answers), then the node's last "<node>: input" diagnostics are taken.
Writes {"good": [...], "answered": [[sec, nanosec], ...], "bad_sent": {kind: n}, "input": {...}} to --out
(input: the values of the "input" and "inference" statuses together).
"""

from __future__ import annotations

import argparse
import array
import json
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cloud_cases  # noqa: E402

from awml_deploy_msgs.msg import DetectedObjects  # noqa: E402

MALFORMED = [k for k, c in cloud_cases.CASES.items() if c.expect == "malformed"]


def fuzz_cloud(rng: np.random.Generator) -> PointCloud2:
    msg = PointCloud2()
    fields = []
    plausible = rng.random() < 0.5
    offset = 0
    for i in range(int(rng.integers(0, 6))):
        name = ["x", "y", "z"][i] if i < 3 else str(rng.choice(["intensity", "t", "x", "ring"]))
        if plausible:
            fields.append(PointField(name=name, offset=offset, datatype=PointField.FLOAT32, count=1))
            offset += 4
        else:
            fields.append(PointField(name=name, offset=int(rng.integers(0, 40)), datatype=int(rng.integers(0, 11)),
                                     count=int(rng.integers(0, 4))))
    msg.fields = fields
    msg.height = int(rng.integers(0, 4))
    msg.width = int(rng.integers(0, 3000))
    msg.point_step = offset if plausible else int(rng.choice([0, 1, 4, 12, 16, 20, 32]))
    msg.row_step = max(0, msg.width * msg.point_step + int(rng.choice([0, 0, 4, -4])))
    msg.is_bigendian = bool(rng.random() < 0.3)
    size = max(0, msg.row_step * msg.height + int(rng.choice([0, 0, 0, -1, 5])))
    if rng.random() < 0.5:
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    else:
        vals = rng.uniform(-60, 60, (size + 3) // 4).astype(np.float32)
        vals[rng.random(len(vals)) < 0.05] = np.nan
        data = vals.astype(">f4" if msg.is_bigendian else "<f4").tobytes()[:size]
    buf = array.array("B")
    buf.frombytes(data)
    msg.data = buf
    return msg


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--topic", required=True)
    ap.add_argument("--node", required=True, help="fully qualified node name, e.g. /cp_mixed")
    ap.add_argument("--mode", choices=("kinds", "fuzz"), default="kinds")
    ap.add_argument("--good", type=int, default=10)
    ap.add_argument("--bad-per-good", type=int, default=11)
    ap.add_argument("--rate", type=float, default=3.0, help="good clouds per second")
    ap.add_argument("--points", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--max-points", type=int, default=30000, help="the node's max_points parameter")
    ap.add_argument("--separate-writer", action="store_true", help="bad messages from a second publisher")
    args = ap.parse_args()

    rclpy.init()
    node = rclpy.create_node("publish_mixed")
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(PointCloud2, args.topic, qos)
    # The bad messages come from a writer of their own (a faulty second source). From the same writer they would
    # also be behind the good cloud, but a best-effort reader then drops the good (fragmented) cloud whenever a
    # newer sample of that writer completes first: that loss is the middleware's, before any node code runs.
    bad_pub = node.create_publisher(PointCloud2, args.topic, qos) if args.separate_writer else pub
    answered: list[tuple[int, int]] = []
    last_input: dict[str, str] = {}
    node.create_subscription(DetectedObjects, f"{args.node}/output/objects",
                             lambda m: answered.append((m.header.stamp.sec, m.header.stamp.nanosec)),
                             QoSProfile(depth=100))

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name in (f"{args.node}: input", f"{args.node}: inference"):
                last_input.update({kv.key: kv.value for kv in st.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=10))

    def spin_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.01)

    deadline = time.monotonic() + args.timeout
    while pub.get_subscription_count() < 1 or bad_pub.get_subscription_count() < 1 or not last_input:
        if time.monotonic() > deadline:
            print("no node", file=sys.stderr)
            return 1
        spin_for(0.1)

    points = cloud_cases.resized(cloud_cases.synthetic_points(args.seed), args.points)
    small = cloud_cases.resized(points, 2000)
    over = cloud_cases.resized(points, args.max_points + 1)
    rng = np.random.default_rng(args.seed)
    good_msgs = [cloud_cases.build("plain", args.seed, (1000 + i, 0), points) for i in range(args.good + 1)]
    bad_sent: dict[str, int] = {}
    good: list[tuple[int, int]] = []
    j = 0
    for i in range(args.good):
        t0 = time.monotonic()
        pub.publish(good_msgs[i])
        good.append((1000 + i, 0))
        for _ in range(args.bad_per_good):
            if args.mode == "kinds":
                kind = MALFORMED[j % len(MALFORMED)]
                if kind == "too_many_points":  # cloud_cases' 36 MB one floods a 64 MB shared-memory segment
                    msg = cloud_cases.build("plain", args.seed, (1, j), over)
                else:
                    msg = cloud_cases.build(kind, args.seed, (1, j), small)
            else:
                kind = "fuzz"
                msg = fuzz_cloud(rng)
                msg.header.stamp = cloud_cases.stamp_of(1, j)
            bad_pub.publish(msg)
            bad_sent[kind] = bad_sent.get(kind, 0) + 1
            j += 1
        spin_for(max(0.0, 1.0 / args.rate - (time.monotonic() - t0)))

    # The last good cloud alone, waited for: the node is still alive and answering.
    final = (1000 + args.good, 0)
    for _ in range(3):
        pub.publish(good_msgs[args.good])
        end = time.monotonic() + args.timeout / 3
        while final not in answered and time.monotonic() < end:
            spin_for(0.05)
        if final in answered:
            break
    good.append(final)
    spin_for(3.0)  # the next diagnostics (period 0.5 s in the tests) carry the final counts
    Path(args.out).write_text(json.dumps({"good": good, "answered": sorted(set(answered)), "answers": len(answered),
                                          "bad_sent": bad_sent, "input": last_input}))
    node.destroy_node()
    rclpy.shutdown()
    return 0 if final in answered else 1


if __name__ == "__main__":
    sys.exit(main())
