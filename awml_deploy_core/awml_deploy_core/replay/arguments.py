"""The command-line arguments both replays share, defined once: ``awml-deploy replay-eval`` (offline, in
:mod:`awml_deploy_core.cli`) and ``replay_evaluation`` (real time, in ``awml_deploy_nodes``) add them with
:func:`add_replay_arguments`; every default comes from the constant that the code uses too."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import BACKENDS
from ..data.rosbag_io import DEFAULT_GT_TOPIC, DEFAULT_LIDAR_TOPIC
from ..errors import UsageError
from .scoring import DEFAULT_TOLERANCE_MS

DEFAULT_IMAGE_TOPIC = "/sensing/camera/camera0/image_raw"
CAMERA_GT_TOPIC = "/awml/ground_truth/camera/<name>/objects"
REPLAY_BACKENDS = BACKENDS
DEFAULT_BACKEND = "onnxruntime"


def add_config_overrides(parser: argparse.ArgumentParser) -> None:
    """--work-dir, --device, --checkpoint: the deploy-config overrides every command taking a config accepts."""
    parser.add_argument("--work-dir", help="bundle folder (overrides the config's work_dir)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (overrides the config's device)")
    parser.add_argument("--checkpoint", help="PyTorch checkpoint (overrides the config's checkpoint)")


def add_replay_arguments(parser: argparse.ArgumentParser, out_default: str) -> None:
    """bag, --config, --backend, --gt-topic | --gt-info, --lidar-topic, --tolerance-ms, --criteria, --out and the
    config overrides. ``out_default``: the default output folder, as the help text shows it."""
    parser.add_argument("bag", help="rosbag2 folder (or a single .mcap / .db3 file)")
    parser.add_argument("--config", required=True, help="deploy config YAML (see config/centerpoint.yaml)")
    parser.add_argument("--backend", choices=REPLAY_BACKENDS, default=DEFAULT_BACKEND,
                        help=f"backend (default: {DEFAULT_BACKEND}, from the bundle in the config's work_dir; "
                             "onnxruntime_int8: its INT8 Q/DQ graphs)")
    gt = parser.add_mutually_exclusive_group()
    gt.add_argument("--gt-topic", help=f"ground-truth topic (3D: awml_deploy_msgs/msg/DetectedObjects, default "
                                       f"{DEFAULT_GT_TOPIC} if the bag has it; 2D: Detections2D, default "
                                       f"{CAMERA_GT_TOPIC})")
    gt.add_argument("--gt-info", help="ground truth as an info file, matched by timestamp (3D: an AWML info file; "
                                      "2D: a bag's awml_info/camera_infos.json)")
    parser.add_argument("--lidar-topic", help=f"input of a 3D (lidar) model (default: {DEFAULT_LIDAR_TOPIC})")
    parser.add_argument("--image-topic", help=f"input of a 2D (camera) model (default: {DEFAULT_IMAGE_TOPIC})")
    parser.add_argument("--tolerance-ms", type=float, default=DEFAULT_TOLERANCE_MS,
                        help=f"max |cloud stamp - ground-truth stamp| for a frame to be scored "
                             f"(default: {DEFAULT_TOLERANCE_MS:g})")
    parser.add_argument("--criteria", help="pass/fail criteria YAML (see config/replay_criteria.yaml)")
    parser.add_argument("--out", help=f"output folder (default: {out_default})")
    add_config_overrides(parser)


def input_topic_arg(args: argparse.Namespace, task: Any) -> str:
    """The input topic of a replay: --lidar-topic for a lidar model, --image-topic for a camera model (the task's
    default when not given); the other option is a usage error, not silently ignored."""
    camera = task.input_role == "camera"
    wrong, given = (args.lidar_topic, args.image_topic) if camera else (args.image_topic, args.lidar_topic)
    if wrong is not None:
        raise UsageError(f"--{'lidar' if camera else 'image'}-topic: this config's model is a {task.input_role} model "
                         f"({task.name}); give --{'image' if camera else 'lidar'}-topic")
    return given or task.default_input_topic


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    """--workers, --address, --force: a set of bags (BAG a folder of bags, a glob or a list file) on Ray."""
    parser.add_argument("--workers", type=int,
                        help="evaluate the bags as tasks on a local Ray cluster of N workers (one per CPU core, or per "
                             "GPU with --device cuda); needs the [fleet] extra")
    parser.add_argument("--address", help="evaluate on an existing Ray cluster (e.g. ray://head:10001 or auto)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per bag task, in-process and on every worker alike (default: 1; the same "
                             "count everywhere keeps results bit-identical)")
    parser.add_argument("--force", action="store_true",
                        help="evaluate every bag of a set again, even those with a finished result in --out")


__all__ = ["DEFAULT_BACKEND", "REPLAY_BACKENDS", "add_config_overrides", "add_fleet_arguments", "add_replay_arguments",
           "input_topic_arg"]
