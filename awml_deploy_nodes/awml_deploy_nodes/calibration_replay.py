"""``calibration_replay``: real-time replay of a calibration drive through calibration_status_node, scored against
the drive's labels and compared pair by pair with the offline replay.

    ros2 run awml_deploy_nodes calibration_replay BAG [--checkpoint C | --config C | --bundle-dir D]
        [--backend pytorch] [--rate 0.2] [--out DIR] [--grace-s 20]

BAG comes from ``awml-deploy make-bag OUT --calibration-drive --miscalibrated-frames A:B``. Started, each its own
process over real DDS (the supervision of replay_evaluation: own sessions, die with this one, SIGINT -> SIGTERM ->
SIGKILL): ``calibration_status_node`` (mode active, the drive's NOMINAL extrinsic as its ``extrinsic`` parameter:
what the vehicle believes) and ``bag_player`` (lidar, image and camera info at ``--rate``, stamps unchanged). This
process records the node's CalibrationStatus messages itself. Then the offline replay
(:mod:`awml_deploy_core.replay.calibration_replay`: the same pipeline on the bag's pairs) scores the drive, the
recording is scored alike, and every pair the node decided must agree with the offline decision (verdict and the
float32 scores); pairs the node never decided (dropped while it was busy) are listed.

Outputs in ``--out`` (default ``<bag>_calibration_replay``): ``summary.json`` (offline, realtime, agreement),
``offline_decisions.json``, ``statuses.jsonl`` (the recording), ``node.param.yaml``, ``logs/``. Exit 0 when they
agree, 1 when not, 2 configuration, 3 runtime (a process did not start).
Needs the DDS environment of the site (here: ``tools/ros_env.sh``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

NODE_NAME = "calibration_replay_node"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="calibration_replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("bag")
    ap.add_argument("--checkpoint", default="")
    ap.add_argument("--config", default="")
    ap.add_argument("--bundle-dir", default="")
    ap.add_argument("--backend", default="pytorch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rate", type=float, default=0.2, help="playback speed (default 0.2: the node keeps up on CPU)")
    ap.add_argument("--out", default="")
    ap.add_argument("--grace-s", type=float, default=20.0, help="wait for statuses still in flight after the player")
    ap.add_argument("--start-timeout-s", type=float, default=180.0)
    return ap


class _Statuses:
    """This process's subscription to the node's CalibrationStatus (reliable, keep last 100)."""

    def __init__(self, topic: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from awml_deploy_msgs.msg import CalibrationStatus

        from .msg_dict import message_to_dict

        rclpy.init(args=[])
        self._node = rclpy.create_node("calibration_replay_recorder")
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()

        def on_status(msg: Any) -> None:
            d = message_to_dict(msg)
            d["_receive_time_ns"] = time.time_ns()
            with self._lock:
                self.messages.append(d)

        self._node.create_subscription(CalibrationStatus, topic, on_status,
                                       QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def close(self) -> None:
        import rclpy

        self._executor.shutdown()
        self._node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def run(args: argparse.Namespace) -> int:
    import yaml

    from awml_deploy_core.bundle import atomic_write_json, atomic_write_text
    from awml_deploy_core.data.calibration_bag import read_labels
    from awml_deploy_core.errors import UsageError
    from awml_deploy_core.families import get_family
    from awml_deploy_core.loader import load_pipeline
    from awml_deploy_core.replay.calibration_replay import compare, offline_decisions, recorded_decisions, score

    from .replay_evaluation import executable, spawn, stop_all, wait_for

    if not args.rate > 0:
        raise UsageError(f"--rate must be > 0, got {args.rate}")
    bag = Path(args.bag)
    labels = read_labels(bag)
    out = Path(args.out or f"{bag.resolve()}_calibration_replay")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    params = {"checkpoint": args.checkpoint, "config": args.config, "bundle_dir": args.bundle_dir,
              "backend": args.backend, "device": args.device, "mode": "active",
              "extrinsic": [float(v) for v in labels["nominal_extrinsic"]], "processing_time_budget_ms": 10000.0}
    pfile = out / "node.param.yaml"
    atomic_write_text(pfile, yaml.safe_dump({"/**": {"ros__parameters": params}}))
    topics = labels["topics"]
    env = dict(os.environ)
    statuses = _Statuses(f"/{NODE_NAME}/output/calibration_status")
    procs = []
    try:
        node = spawn("calibration_status_node", [
            str(executable("calibration_status_node")), "--ros-args", "-r", f"__node:={NODE_NAME}",
            "--params-file", str(pfile), "-r", f"~/input/pointcloud:={topics['lidar']}",
            "-r", f"~/input/image:={topics['image']}", "-r", f"~/input/camera_info:={topics['camera_info']}"],
            out / "logs", env)
        procs.append(node)
        wait_for(node, "ready:", args.start_timeout_s, "its ready line")
        player = spawn("bag_player", [
            str(executable("bag_player")), "--ros-args", "-p", f"bag:={bag}", "-p", f"rate:={args.rate}",
            "-p", f"topics:=[{','.join(topics[k] for k in ('lidar', 'image', 'camera_info'))}]",
            "-p", f"sent_log:={out / 'sent.jsonl'}"], out / "logs", env)
        procs.append(player)
        while player.alive():
            if not node.alive():
                raise RuntimeError(f"calibration_status_node exited during the replay; its log {node.log}:\n"
                                   f"{node.tail()}")
            time.sleep(0.2)
        if player.popen.returncode != 0:
            raise RuntimeError(f"bag_player failed (code {player.popen.returncode}); its log {player.log}:\n"
                               f"{player.tail()}")
        # Statuses still in flight: until every pair is decided, or nothing new came for 3 s, or grace_s.
        deadline, last, quiet_since = time.monotonic() + args.grace_s, -1, time.monotonic()
        while time.monotonic() < deadline and statuses.count() < len(labels["frames"]):
            n = statuses.count()
            if n != last:
                last, quiet_since = n, time.monotonic()
            elif time.monotonic() - quiet_since > 3.0:
                break
            time.sleep(0.1)
    finally:
        stop_all(procs)
        statuses.close()
    recording = list(statuses.messages)
    atomic_write_text(out / "statuses.jsonl", "".join(json.dumps(m) + "\n" for m in recording))

    source = args.bundle_dir or args.config or args.checkpoint or get_family("calibration_status").default_checkpoint
    with load_pipeline(source, args.backend, args.device, checkpoint=args.checkpoint or None) as loaded:
        offline = offline_decisions(bag, loaded.pipeline, labels)
    realtime = recorded_decisions(recording)
    summary = {"bag": str(bag), "rate": args.rate, "offline": score(offline, labels),
               "realtime": score(realtime, labels), "agreement": compare(offline, realtime)}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "offline_decisions.json", offline)
    a = summary["agreement"]
    for name in ("offline", "realtime"):
        s = summary[name]
        print(f"{name:8s}: {s['pairs_scored']} pairs scored ({s['pairs_ambiguous']} ambiguous apart), accuracy "
              f"{_f(s['accuracy'])}, recall(miscalibrated) {_f(s['recall_miscalibrated'])}, false alarms "
              f"{_f(s['false_alarm_rate'])}")
    print(f"agreement: {a['compared']} pairs compared, {len(a['mismatches'])} differ, {len(a['not_processed'])} not "
          f"processed in real time -> {'AGREE' if a['agree'] else 'DISAGREE'}; {out / 'summary.json'}")
    return 0 if a["agree"] else 1


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    from awml_deploy_core.errors import AwmlDeployError

    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except AwmlDeployError as e:
        print(f"calibration_replay: error: {e}", file=sys.stderr)
        return e.exit_code
    except RuntimeError as e:
        print(f"calibration_replay: error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
