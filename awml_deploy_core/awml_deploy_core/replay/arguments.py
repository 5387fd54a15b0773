"""The command-line arguments both replays share, defined once: ``awml-deploy replay-eval`` (offline, in
:mod:`awml_deploy_core.cli`) and ``replay_evaluation`` (real time, in ``awml_deploy_nodes``) add them with
:func:`add_replay_arguments`; every default comes from the constant that the code uses too."""

from __future__ import annotations

import argparse

from ..data.rosbag_io import DEFAULT_GT_TOPIC, DEFAULT_LIDAR_TOPIC
from .scoring import DEFAULT_TOLERANCE_MS

REPLAY_BACKENDS = ("onnxruntime", "pytorch", "tensorrt")
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
                        help=f"backend (default: {DEFAULT_BACKEND}, from the bundle in the config's work_dir)")
    gt = parser.add_mutually_exclusive_group()
    gt.add_argument("--gt-topic", help=f"ground-truth topic (awml_deploy_msgs/msg/DetectedObjects; default: "
                                       f"{DEFAULT_GT_TOPIC} if the bag has it)")
    gt.add_argument("--gt-info", help="ground truth as an AWML info file, matched by timestamp")
    parser.add_argument("--lidar-topic", default=DEFAULT_LIDAR_TOPIC, help=f"default: {DEFAULT_LIDAR_TOPIC}")
    parser.add_argument("--tolerance-ms", type=float, default=DEFAULT_TOLERANCE_MS,
                        help=f"max |cloud stamp - ground-truth stamp| for a frame to be scored "
                             f"(default: {DEFAULT_TOLERANCE_MS:g})")
    parser.add_argument("--criteria", help="pass/fail criteria YAML (see config/replay_criteria.yaml)")
    parser.add_argument("--out", help=f"output folder (default: {out_default})")
    add_config_overrides(parser)


__all__ = ["DEFAULT_BACKEND", "REPLAY_BACKENDS", "add_config_overrides", "add_replay_arguments"]
