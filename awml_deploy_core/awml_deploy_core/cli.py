"""Console entry points: `awml-deploy <verb> ...` and `export <config>` (for `ros2 run awml_deploy_core export`).

Exit codes: 0 ok, 1 a verification or evaluation gate failed, 2 usage or config error, 3 runtime error.
A user error prints one line; the traceback only with --log-level DEBUG.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import AwmlDeployError, UsageError

log = logging.getLogger("awml_deploy")

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share the one error path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging verbosity; DEBUG also prints tracebacks (default: INFO)")


def _add_export(sub: argparse._SubParsersAction) -> None:
    from .replay.arguments import add_config_overrides

    p = sub.add_parser("export", help="export + verify + evaluate a model into a deployment bundle")
    p.add_argument("config", help="deploy config YAML (see config/centerpoint.yaml)")
    add_config_overrides(p)
    p.add_argument("--mode", choices=["onnx", "trt", "both", "none"], help="export mode (overrides export.mode)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be built (TensorRT builder plan) and exit without building")
    _common(p)
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from .config import load_deploy_config

    overrides = {"work_dir": args.work_dir, "device": args.device, "export.mode": args.mode,
                 "checkpoint": args.checkpoint}
    cfg = load_deploy_config(args.config, overrides)
    from .deploy import run_deploy

    return run_deploy(cfg, dry_run=args.dry_run)


def _add_make_bag(sub: argparse._SubParsersAction) -> None:
    from .data.rosbag_io import DEFAULT_GT_TOPIC, DEFAULT_LIDAR_TOPIC, STORAGES

    p = sub.add_parser("make-bag", help="write a synthetic drive as a rosbag2 (clouds + ground truth + info file)")
    p.add_argument("out", help="bag folder to create (must not exist)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of the drive at 10 Hz (default: 30)")
    p.add_argument("--seed", type=int, default=10_000, help="scene seed (default: 10000, held out from training)")
    p.add_argument("--storage", choices=STORAGES, default="mcap", help="rosbag2 storage (default: mcap)")
    p.add_argument("--lidar-topic", default=DEFAULT_LIDAR_TOPIC, help=f"default: {DEFAULT_LIDAR_TOPIC}")
    p.add_argument("--gt-topic", default=DEFAULT_GT_TOPIC, help=f"default: {DEFAULT_GT_TOPIC}")
    cams = p.add_mutually_exclusive_group()
    cams.add_argument("--cameras", type=int, default=0,
                      help="add N synthetic cameras (camera0 looks ahead, camera i at azimuth 360 i / N): per frame "
                           "sensor_msgs/Image bgr8 on /sensing/camera/<name>/image_raw, CameraInfo on "
                           "/sensing/camera/<name>/camera_info, 2D ground truth (Detections2D, score 0 = ignore "
                           "region) on /awml/ground_truth/camera/<name>/objects, and awml_info/camera_infos.json "
                           "(default: 0, no camera)")
    cams.add_argument("--camera", action="store_const", dest="cameras", const=1, help="same as --cameras 1")
    p.add_argument("--miscalibrated-frames", metavar="A:B",
                   help="a calibration-status drive: in frames [A, B) camera0 has moved away from its nominal "
                        "extrinsic (its images are the moved camera's view; CameraInfo and the sidecar's lidar2cam stay "
                        "nominal); every image's label (calibrated / ambiguous / miscalibrated) in "
                        "awml_info/camera_infos.json. Needs --cameras (default: no miscalibrated segment)")
    p.add_argument("--miscalibration", default="3.0,0.1", metavar="DEG,M",
                   help="how far camera0 moved in that segment: rotation degrees, translation metres (default: 3.0,0.1)")
    p.add_argument("--calibration-drive", action="store_true",
                   help="short for --cameras 1 (when no camera is asked for) with --miscalibrated-frames")
    _common(p)
    p.set_defaults(func=_run_make_bag)


def _run_make_bag(args: argparse.Namespace) -> int:
    from .data.rosbag_io import write_synthetic_bag

    mis, rot_trans = None, (3.0, 0.1)
    if args.calibration_drive and args.miscalibrated_frames is None:
        raise UsageError("--calibration-drive: give --miscalibrated-frames A:B (the frames seen by the moved camera)")
    if args.miscalibrated_frames is not None:
        try:
            mis = tuple(int(v) for v in args.miscalibrated_frames.split(":"))
            rot_trans = tuple(float(v) for v in args.miscalibration.split(","))
            if len(mis) != 2 or len(rot_trans) != 2:
                raise ValueError
        except ValueError:
            raise UsageError(f"--miscalibrated-frames A:B (integers) and --miscalibration DEG,M (numbers); got "
                             f"{args.miscalibrated_frames!r}, {args.miscalibration!r}") from None
    cameras = max(args.cameras, 1) if args.calibration_drive else args.cameras
    bag = write_synthetic_bag(args.out, args.seconds, args.seed, args.storage, args.lidar_topic, args.gt_topic,
                              cameras=cameras, miscalibrated_frames=mis,  # type: ignore[arg-type]
                              miscalibration=rot_trans)  # type: ignore[arg-type]
    print(f"{bag.path}: {bag.frames} clouds on {bag.lidar_topic}, ground truth on {bag.gt_topic} ({bag.storage}); "
          f"AWML info file {bag.info_path}")
    if bag.cameras:
        from .data.rosbag_camera import image_topic

        print(f"cameras: {', '.join(bag.cameras)} ({bag.frames} images each on "
              f"{', '.join(image_topic(n) for n in bag.cameras)}); 2D info file {bag.camera_info_path}")
    if mis is not None:
        print(f"calibration drive: frames [{mis[0]}, {mis[1]}) of {bag.cameras[0]} seen by a camera off by "
              f"{rot_trans[0]:g} deg / {rot_trans[1]:g} m; labels in {bag.camera_info_path}")
    return EXIT_OK


def _add_replay_eval(sub: argparse._SubParsersAction) -> None:
    from .replay.arguments import add_fleet_arguments, add_replay_arguments

    p = sub.add_parser("replay-eval", help="replay a rosbag (or a set of them: a folder of bags, a glob or a list "
                                          "file) through the pipeline (no ROS) and score it against ground truth, "
                                          "with pass/fail criteria")
    add_replay_arguments(p, "<work_dir>/replay/<bag>_<backend>, for a set <work_dir>/replay/fleet_<set>_<backend>")
    add_fleet_arguments(p)
    p.add_argument("--strict-order", action="store_true",
                   help="fail on cloud stamps that go backwards (default: warn, score by stamp, list them)")
    p.add_argument("--max-frames", type=int, help="stop after this many clouds")
    p.add_argument("--benchmark", action="store_true",
                   help="measure replay throughput against the bare pipeline on the same clouds, then exit")
    p.add_argument("--node-thresholds", action="store_true",
                   help="post-process as the family's node does (2D: node_score_threshold / node_nms_iou instead of "
                        "the evaluation thresholds; 3D: no change): frame for frame what real-time replay scores")
    _common(p)
    p.set_defaults(func=_run_replay_eval)


def _run_replay_eval(args: argparse.Namespace) -> int:
    from .config import load_deploy_config

    overrides = {"work_dir": args.work_dir, "device": args.device, "checkpoint": args.checkpoint}
    cfg = load_deploy_config(args.config, overrides)
    from .replay.arguments import input_topic_arg
    from .replay.offline import node_thresholds
    from .replay.task import task_of

    task = task_of(cfg)
    args.input_topic = input_topic_arg(args, task)
    if args.node_thresholds:
        cfg = node_thresholds(cfg)
    criteria = None
    if args.criteria:
        from .replay.criteria import load_criteria

        criteria = load_criteria(args.criteria)
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1, got {args.max_frames}")
    from .replay.fleet import is_bag

    bag = Path(args.bag)
    if args.workers is not None or args.address is not None or (
            not is_bag(bag) and (bag.exists() or any(ch in args.bag for ch in "*?["))):
        return _run_fleet(args, cfg, criteria)
    from .replay.offline import benchmark_overhead, replay_evaluate

    if args.benchmark:
        r = benchmark_overhead(args.bag, cfg, args.backend, lidar_topic=args.input_topic, gt_topic=args.gt_topic,
                               gt_info=args.gt_info, max_frames=args.max_frames)
        print(f"replay overhead on {r['frames']} {task.input_unit}s ({r['points_per_cloud']:.0f} rows, {r['backend']}): "
              f"bare pipeline median {r['bare_median_ms']:.1f} ms/frame, replay median {r['replay_median_ms']:.1f} "
              f"ms/frame -> replay throughput {100 * r['ratio']:.1f}% of bare (median per-frame ratio "
              f"{100 * r['ratio_paired']:.1f}%); "
              f"reading + decoding all {task.input_unit}s: {r['bag_read_decode_s']:.3f} s")
        return EXIT_OK
    outcome = replay_evaluate(args.bag, cfg, args.backend, input_topic=args.input_topic, gt_topic=args.gt_topic,
                              gt_info=args.gt_info, tolerance_ms=args.tolerance_ms, criteria=criteria,
                              criteria_source=args.criteria or "criteria", out_dir=args.out,
                              strict_order=args.strict_order, max_frames=args.max_frames)
    s = outcome.summary
    c = s["counts"]
    h = task.headline(s)
    print(f"{c['frames']} frames: {c['scored']} scored, {c['skipped']} skipped; {h.label.replace(' ', '')} "
          f"{h.value if h.value is None else round(h.value, 4)}; latency total p50/p99 "
          f"{(s['latency_ms'].get('total') or {}).get('p50') or float('nan'):.1f}/"
          f"{(s['latency_ms'].get('total') or {}).get('p99') or float('nan'):.1f} ms")
    for g in s["gates"]:
        print(f"{'PASS' if g['passed'] else 'FAIL'} {g['name']}: {g['detail']}")
    print(f"report: {outcome.out_dir / 'report.md'} (summary.json, frames.jsonl)")
    return outcome.exit_code


def _run_fleet(args: argparse.Namespace, cfg: Any, criteria: Any) -> int:
    from .replay.fleet import FleetSettings, fleet_evaluate

    if args.benchmark:
        raise UsageError("--benchmark measures one bag; give a single bag without --workers / --address")
    settings = FleetSettings(backend=args.backend, lidar_topic=args.input_topic, gt_topic=args.gt_topic,
                             gt_info=args.gt_info, tolerance_ms=args.tolerance_ms, strict_order=args.strict_order,
                             max_frames=args.max_frames, threads=args.threads)
    outcome = fleet_evaluate(args.bag, cfg, settings, workers=args.workers, address=args.address, out_dir=args.out,
                             criteria=criteria, criteria_source=args.criteria or "criteria", force=args.force)
    s = outcome.summary
    c, f = s["counts"], s["fleet"]
    from .replay.task import task_of_summary

    h = task_of_summary(s).headline(s)
    ok = sum(1 for r in f["bags"] if r["status"] == "ok")
    print(f"{ok}/{len(f['bags'])} bags ({f['resumed']} resumed), {c['frames']} frames: {c['scored']} scored, "
          f"{c['skipped']} skipped; set {h.label.replace(' ', '')} "
          f"{h.value if h.value is None else round(h.value, 4)} (all frames at once)")
    for r in f["failures"]:
        print(f"FAILED {r['bag']}: {r['error']}")
    for g in s["gates"]:
        print(f"{'PASS' if g['passed'] else 'FAIL'} {g['name']}: {g['detail']}")
    print(f"report: {outcome.out_dir / 'report.md'} (summary.json, frames.jsonl, bags/)")
    return outcome.exit_code


def _add_replay_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay-compare", help="two replay-eval runs side by side, with a regression gate")
    p.add_argument("run_a", help="reference run folder (replay-eval --out)")
    p.add_argument("run_b", help="candidate run folder")
    p.add_argument("--max-map-drop", type=float, default=0.01, help="allowed mAP@2m drop of B (default: 0.01)")
    p.add_argument("--max-ap-drop", type=float, help="allowed per-class AP@2m drop of B (default: not gated)")
    p.add_argument("--out", help="output folder (default: <run_b>/compare)")
    _common(p)
    p.set_defaults(func=_run_replay_compare)


def _run_replay_compare(args: argparse.Namespace) -> int:
    from .replay.report import compare_runs

    for name in ("max_map_drop", "max_ap_drop"):
        v = getattr(args, name)
        if v is not None and not v >= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {v}")
    code, result = compare_runs(args.run_a, args.run_b, args.out, args.max_map_drop, args.max_ap_drop)
    for row in result["rows"]:
        print(f"{row[0]:<58} {row[1]:>10} {row[2]:>10}  {row[3].replace('**', '')}")
    for g in result["gates"]:
        print(f"{'PASS' if g['passed'] else 'FAIL'} {g['name']}: {g['detail']}")
    print(f"report: {Path(result['out']) / 'compare.md'}")
    return code


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a small model on fresh synthetic data (--family centerpoint (default) "
                                     "or yolox)",
                       add_help=False)
    p.set_defaults(func=None, passthrough="train")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: data generation, voxelization, model, metrics, backends",
                       add_help=False)
    p.set_defaults(func=None, passthrough="bench")


def _passthrough(name: str) -> Callable[[Sequence[str]], int]:
    if name == "train":
        from .training import train_entry

        return train_entry
    if name == "bench":
        from .bench import main as bench_main

        return bench_main
    raise UsageError(f"unknown verb {name}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="awml-deploy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", parser_class=_Parser)
    sub.required = True
    _add_export(sub)
    _add_train(sub)
    _add_bench(sub)
    _add_make_bag(sub)
    _add_replay_eval(sub)
    _add_replay_compare(sub)
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)


def _run(argv: Sequence[str]) -> int:
    argv = list(argv)
    debug = "DEBUG" in argv and "--log-level" in argv
    try:
        if argv and argv[0] in ("train", "bench"):
            _configure_logging("DEBUG" if debug else "INFO")
            return _passthrough(argv[0])(argv[1:])
        args = build_parser().parse_args(argv)
        _configure_logging(args.log_level)
        return int(args.func(args))
    except AwmlDeployError as e:
        if debug:
            log.exception("failed")
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line unless DEBUG, never swallowed silently
        if debug:
            raise
        print(f"error: unexpected {type(e).__name__}: {e} (rerun with --log-level DEBUG for the traceback)",
              file=sys.stderr)
        return EXIT_RUNTIME


def main(argv: Sequence[str] | None = None) -> int:
    """`awml-deploy <verb> ...`"""
    code = _run(sys.argv[1:] if argv is None else argv)
    if argv is None:
        sys.exit(code)
    return code


def export_main(argv: Sequence[str] | None = None) -> int:
    """`export <config> ...` — the executable behind `ros2 run awml_deploy_core export`."""
    code = _run(["export", *(sys.argv[1:] if argv is None else argv)])
    if argv is None:
        sys.exit(code)
    return code
