"""``replay_evaluation``: real-time replay of a rosbag through the config's node, scored like the offline replay.

The node and the played topic come from the deploy config's family (its replay task,
``awml_deploy_core.replay.task``): ``centerpoint_node`` on the lidar topic for a 3D model, ``yolox_node`` on a
camera's image topic (``--image-topic``, default camera0) for a 2D one, whose Detections2D are scored with
pycocotools like ``awml-deploy replay-eval`` scores them, and ``calibration_status_node`` (mode active, the drive's
nominal extrinsic from the bag's camera sidecar) for the calibration-status classifier, played the camera's image,
its CameraInfo and the lidar cloud, whose CalibrationStatus decisions are scored against the drive's labels.

One command starts and stops the whole set, each as its own process over real DDS::

    ros2 run awml_deploy_nodes replay_evaluation BAG --config config/centerpoint.yaml --backend onnxruntime \\
        [--rate 1.0] [--criteria config/replay_criteria.yaml] [--out DIR] [--gt-topic T | --gt-info F]

1. ``output_recorder`` (records the node's DetectedObjects + InferenceStats and the inputs it was sent, each
   with its receive time, into ``<out>/recording``, an mcap rosbag2);
2. ``centerpoint_node`` (its installed console script; the parameters it gets are written to
   ``<out>/node.param.yaml``: the deploy config's bundle (onnxruntime/tensorrt, when it holds this config's
   model) or the config itself, its class names and device);
3. ``bag_player`` (the lidar topic at ``--rate``, header stamps unchanged; it starts its clock once the node and
   the recorder subscribed, and writes what it sent to ``<out>/sent.jsonl``).

When the player is done, the outputs still in flight get ``--grace-s``; then everything is stopped (SIGINT, then
SIGTERM, then SIGKILL, with timeouts). The processes run in their own sessions and die with this one (Linux
parent-death signal), so an interrupted or killed run leaves no orphans; Ctrl-C stops the set in order and
scores what was recorded (``"complete": false``, exit 130).

This module only supervises the processes and holds the command line (its shared arguments come from
``awml_deploy_core.replay.arguments``). Scoring is the offline replay's, not a copy of it:
``awml_deploy_core.replay.realtime`` turns the recording into frames (an input the node gave no output for is a
DROPPED frame: listed, counted in the drop rate, never scored, not part of AP), scores them with the offline
replay's scorer, criteria and report, adds the real-time facts (``summary.json: realtime``, stage ``end_to_end``
in ``latency_ms``) and writes the one summary schema (``awml_deploy_core.replay.summary``).

``--check-offline DIR`` also checks frame-by-frame agreement with an offline replay of the same bag and backend
(run into DIR first when DIR holds none): every frame processed by both must have identical TP/FP/FN per class
and detection count; the result is a gate. ``--recording DIR`` scores an existing recording (e.g. one made with
``launch/replay_evaluation.launch.py``) without starting anything.

Outputs in ``--out`` (default ``<work_dir>/replay/<bag>_<backend>_realtime``): ``frames.jsonl``, ``summary.json``,
``report.md`` + ``plots/`` (as offline), ``recording/``, ``sent.jsonl``, ``node.param.yaml``, ``logs/``.
Exit codes: 0 every criterion met (or none given), 1 a criterion failed, 2 configuration error, 3 data/runtime
error (e.g. the node did not start: the last lines of its log are shown), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from awml_deploy_core.replay.arguments import add_replay_arguments
from awml_deploy_core.replay.realtime import RunInfo, fmt, score
from awml_deploy_core.replay.summary import EXIT_INTERRUPTED

log = logging.getLogger("replay_evaluation")

PKG = "awml_deploy_nodes"
DEFAULT_OBJECTS_TOPIC = "/perception/object_recognition/detection/awml/objects"  # 3D; 2D: the task's
NODE_NAME = "centerpoint"  # the 3D node's name; every task's: awml_deploy_core.replay.task.NodeSpec.node_name
STATS_TOPIC = f"/{NODE_NAME}/debug/inference_stats"  # the 3D node's; a task's: /<node_name>/debug/inference_stats


# --------------------------------------------------------------------------------------------- processes
def executable(name: str) -> Path:
    """The installed console script ``lib/awml_deploy_nodes/<name>`` (what ``ros2 run`` starts)."""
    try:
        from ament_index_python.packages import get_package_prefix

        prefix = Path(get_package_prefix(PKG))
    except Exception:  # noqa: BLE001 - not on the ament index: next to this interpreter's install
        prefix = Path(__file__).resolve().parents[4]
    path = prefix / "lib" / PKG / name
    if not path.is_file():
        from awml_deploy_core.errors import ArtifactError

        raise ArtifactError(f"{path} not found: build and source the workspace (tools/setup.sh, install/setup.bash)")
    return path


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the finally block of the parent still stops it
        pass


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    _pos: int = 0

    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, n: int = 15) -> str:
        lines = self.text().splitlines()[-n:]
        return "\n".join(f"    | {line}" for line in lines)

    def new_lines(self) -> list[str]:
        """Lines written since the last call (for forwarding progress)."""
        with self.log.open("rb") as f:
            f.seek(self._pos)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self._pos += cut
        return data[:cut].decode(errors="replace").splitlines()


def spawn(name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> Proc:
    path = log_dir / f"{name}.log"
    with path.open("w") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                 start_new_session=True, preexec_fn=_die_with_parent)
    log.debug("started %s (pid %d): %s", name, popen.pid, " ".join(argv))
    return Proc(name, popen, path)


def wait_for(proc: Proc, text: str, timeout: float, what: str) -> None:
    from awml_deploy_core.errors import AwmlDeployError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.text():
            return
        if not proc.alive():
            raise AwmlDeployError(f"{proc.name} exited (code {proc.popen.returncode}) before {what}; its log "
                                  f"{proc.log}:\n{proc.tail()}")
        time.sleep(0.05)
    raise AwmlDeployError(f"{proc.name}: no {what} within {timeout:g} s; its log {proc.log}:\n{proc.tail()}")


def stop_all(procs: Sequence[Proc], sigint_s: float = 10.0, term_s: float = 5.0) -> None:
    """SIGINT, then SIGTERM, then SIGKILL, each after a timeout; returns once every process is gone."""
    for sig, timeout in ((signal.SIGINT, sigint_s), (signal.SIGTERM, term_s), (signal.SIGKILL, 5.0)):
        alive = [p for p in procs if p.alive()]
        if not alive:
            return
        if sig != signal.SIGINT:
            log.warning("%s still running after %s; sending %s", ", ".join(p.name for p in alive),
                        "SIGINT" if sig == signal.SIGTERM else "SIGTERM", sig.name)
        for p in alive:
            try:
                p.popen.send_signal(sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for p in alive:
            try:
                p.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise _Interrupted(signal.Signals(signum).name)


# --------------------------------------------------------------------------------------------- node parameters
def _base_node_params(file: str | None) -> dict[str, Any]:
    import yaml

    if file is None:
        return {}
    try:
        from ament_index_python.packages import get_package_share_directory

        path = Path(get_package_share_directory(PKG)) / "config" / file
        data = yaml.safe_load(path.read_text())
        return dict(next(iter(data.values()))["ros__parameters"])
    except Exception:  # noqa: BLE001 - the node's declared defaults then
        return {}


def node_parameters(cfg: Any, backend: str, out: Path) -> tuple[dict[str, Any], str]:
    """The node's parameters (centerpoint_node, yolox_node: the config's replay task says which) that run the very
    model ``replay-eval`` runs for ``backend``: (params, source).

    tensorrt: the bundle in ``cfg.work_dir``. Otherwise the effective config, written to
    ``<out>/deploy_config.yaml``: the node's loader then finds what ``replay-eval`` finds (the ``work_dir`` bundle's
    ONNX when exported from the same inputs, else graphs exported into ``<out>/onnx_cache``).
    """
    import yaml

    from awml_deploy_core.replay.task import task_of

    spec = task_of(cfg).node
    params = _base_node_params(spec.base_params_file)
    # tensorrt runs on CUDA: a cpu config device leaves the node's device empty (its default for tensorrt: cuda)
    device = "" if backend == "tensorrt" and cfg.device == "cpu" else cfg.device
    params.update(backend=backend, device=device, bundle_dir="", config="", checkpoint="")
    params.update(spec.params(cfg, backend))
    work = Path(cfg.work_dir).expanduser().resolve()
    if backend == "tensorrt":
        params.update(bundle_dir=str(work))
        return params, f"bundle {work}"
    path = out / "deploy_config.yaml"
    data = cfg.model_dump(mode="json")
    data["work_dir"] = str(work)  # the node runs from another folder
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    params["config"] = str(path)
    if spec.accepts_onnx_cache_dir:
        params["onnx_cache_dir"] = str(out / "onnx_cache")
    return params, f"config {path}"


def write_node_params(params: dict[str, Any], path: Path, node: str = "centerpoint_node") -> Path:
    import yaml

    path.write_text(f"# {node} parameters of this replay evaluation (written by replay_evaluation)\n"
                    + yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------- the run
def run_processes(bag: Path, lidar_topic: str, objects_topic: str, node_params: Path, out: Path, rate: float,
                  grace_s: float, start_timeout_s: float, record_input_data: bool, info: RunInfo,
                  task: Any = None) -> None:
    """Recorder, node, player as separate processes; returns once all are stopped (also when interrupted).
    ``task``: the replay task (its node, input and output types); None: the 3D one. ``lidar_topic``: the input."""
    from awml_deploy_core.errors import AwmlDeployError
    from awml_deploy_core.replay.lidar3d import TASK as LIDAR3D

    task = task or LIDAR3D
    spec = task.node
    stats_topic = f"/{spec.node_name}/debug/inference_stats"
    # inputs the node needs besides the played input (calibration: the cloud and the CameraInfo), played alongside
    companions = spec.companion_inputs(bag, lidar_topic) if spec.companion_inputs is not None else {}
    played = [lidar_topic, *companions.values()]
    remaps = [a for name, topic in companions.items() for a in ("-r", f"{name}:={topic}")]
    # the recorder subscribes the input only: the companions have the node alone as their subscriber
    subscribers = 1 if companions else 2

    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    procs: list[Proc] = []
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        recorder = spawn("output_recorder", [
            str(executable("output_recorder")), "--ros-args", "-p", f"output_bag:={info.recording}",
            "-p", f"input_topic:={lidar_topic}", "-p", f"input_type:={task.input_msgtype}",
            "-p", f"objects_topic:={objects_topic}", "-p", f"objects_type:={task.output_msgtype}",
            "-p", f"stats_topic:={stats_topic}", "-p", f"record_input_data:={str(record_input_data).lower()}",
            "-p", "progress_period_s:=0.5"], logs, env)
        procs.append(recorder)
        node = spawn(spec.executable, [
            str(executable(spec.executable)), "--ros-args", "--params-file", str(node_params),
            "-r", f"__node:={spec.node_name}", "-r", f"{spec.input_remap}:={lidar_topic}",
            "-r", f"{spec.output_remap}:={objects_topic}", *remaps], logs, env)
        procs.append(node)
        info.logs = {p.name: str(p.log) for p in procs}
        wait_for(recorder, "ready:", 60, "its 'ready' line")
        log.info("waiting for %s to load the model (%s)", spec.executable, info.node_source)
        wait_for(node, "ready:", start_timeout_s, "its 'ready:' line (model loaded)")
        wait_for(recorder, "matched:", 60, "a match with the node's output publishers")
        n_clouds = _count(bag, lidar_topic)
        play_timeout = 120.0 + n_clouds * 0.1 / rate * 1.5
        player = spawn("bag_player", [
            str(executable("bag_player")), "--ros-args", "-p", f"bag:={bag}", "-p", f"topics:=[{','.join(played)}]",
            "-p", f"rate:={float(rate)}", "-p", f"wait_for_subscribers:={subscribers}", "-p", f"sent_log:={info.sent_log}",
            "-p", "progress_period_s:=5.0"], logs, env)
        procs.append(player)
        info.logs[player.name] = str(player.log)
        t0 = time.monotonic()
        deadline = t0 + play_timeout
        while player.alive():
            for line in player.new_lines():
                print(f"[bag_player] {line.split(']: ', 1)[-1]}", flush=True)
            for p in (node, recorder):
                if not p.alive():
                    raise AwmlDeployError(f"{p.name} exited (code {p.popen.returncode}) during the replay; its log "
                                          f"{p.log}:\n{p.tail()}")
            if time.monotonic() > deadline:
                raise AwmlDeployError(f"bag_player did not finish within {play_timeout:.0f} s; its log {player.log}:"
                                      f"\n{player.tail()}")
            time.sleep(0.1)
        for line in player.new_lines():
            print(f"[bag_player] {line.split(']: ', 1)[-1]}", flush=True)
        info.play_wall_s = time.monotonic() - t0
        if player.popen.returncode != 0:
            raise AwmlDeployError(f"bag_player failed (exit code {player.popen.returncode}); its log {player.log}:\n"
                                  f"{player.tail()}")
        _grace(recorder, objects_topic, _sent_inputs(info.sent_log, lidar_topic), grace_s)
    except _Interrupted as e:
        info.stopped = "interrupted"
        log.warning("interrupted (%s): stopping the processes, then scoring what was recorded", e)
    except AwmlDeployError as e:
        info.stopped, info.error = "error", str(e)
    finally:
        for s in previous:  # a second Ctrl-C must not cut the orderly stop short
            signal.signal(s, lambda *_: log.warning("already stopping the processes (SIGKILL after the timeouts)"))
        try:
            # The player and the node first; the recorder last, so that it keeps what is still arriving.
            stop_all([p for p in procs if p.name != "output_recorder"])
            stop_all([p for p in procs if p.name == "output_recorder"])
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _count(bag: Path, topic: str) -> int:
    from awml_deploy_core.data.rosbag_io import BagReader

    with BagReader(bag) as r:
        return r.topics[topic].count


def _lines(path: Path | None) -> int:
    if path is None or not path.exists():
        return 0
    with path.open() as f:
        return sum(1 for _ in f)


def _sent_inputs(path: Path | None, topic: str) -> int:
    """Inputs the player sent on ``topic`` (its sent log also lists the companion topics' messages)."""
    import json

    if path is None or not path.exists():
        return 0
    n = 0
    for text in path.read_text().splitlines():
        try:
            n += json.loads(text).get("topic") == topic
        except json.JSONDecodeError:
            break  # a last line cut short by a kill
    return n


def _grace(recorder: Proc, objects_topic: str, sent: int, grace_s: float) -> None:
    """Wait up to grace_s for the last outputs; stop early once the recorder has one output per input sent."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        last = [ln for ln in recorder.text().splitlines() if "recorded:" in ln]
        if last:
            counts = dict(part.rsplit(" ", 1) for part in last[-1].split("recorded: ", 1)[1].split(", "))
            if int(counts.get(objects_topic, 0)) >= sent:
                return
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="replay_evaluation",
        description="Replay a rosbag in real time through the config's node (centerpoint_node for a lidar model, "
                    "yolox_node for a camera model; separate processes, real DDS) and score "
                    "the recorded outputs like `awml-deploy replay-eval`, with drops, end-to-end latency and output "
                    "rate.")
    add_replay_arguments(p, "<work_dir>/replay/<bag>_<backend>_realtime")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default: 1.0, the recorded rate)")
    p.add_argument("--objects-topic", help=f"node output (default: {DEFAULT_OBJECTS_TOPIC} for a lidar model, "
                                           "/perception/object_recognition/detection/awml/rois for a camera model)")
    p.add_argument("--grace-s", type=float, default=3.0,
                   help="after the last cloud, wait this long for outputs still in flight (default: 3)")
    p.add_argument("--start-timeout-s", type=float, default=300.0,
                   help="how long the node may take to load its model (default: 300)")
    p.add_argument("--record-input-data", action="store_true",
                   help="keep the input clouds' points in the recording (default: headers only)")
    p.add_argument("--check-offline", metavar="DIR",
                   help="compare frame by frame with the offline replay in DIR (run there first if DIR holds none)")
    p.add_argument("--recording", metavar="DIR",
                   help="score this existing recording (output_recorder's bag) instead of running the processes")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def run(args: argparse.Namespace) -> int:
    from awml_deploy_core.bundle import ensure_writable_dir
    from awml_deploy_core.config import load_deploy_config
    from awml_deploy_core.data.rosbag_io import BagReader
    from awml_deploy_core.errors import UsageError
    from awml_deploy_core.replay.arguments import input_topic_arg
    from awml_deploy_core.replay.criteria import check_criteria, load_criteria
    from awml_deploy_core.replay.task import task_of

    if not args.rate > 0:
        raise UsageError(f"--rate must be > 0, got {args.rate}")
    if not args.tolerance_ms >= 0:
        raise UsageError(f"--tolerance-ms must be >= 0, got {args.tolerance_ms}")
    if not args.grace_s >= 0:
        raise UsageError(f"--grace-s must be >= 0, got {args.grace_s}")
    overrides = {"work_dir": args.work_dir, "device": args.device, "checkpoint": args.checkpoint}
    cfg = load_deploy_config(args.config, overrides)
    task = task_of(cfg)
    topic = input_topic_arg(args, task)
    objects_topic = args.objects_topic or task.node.default_output_topic
    criteria = None
    if args.criteria:
        criteria = load_criteria(args.criteria)
        check_criteria(criteria, cfg, args.criteria)
    from awml_deploy_core.loader import check_backend

    check_backend(args.backend)  # the same one line as every entry point when the backend's runtime is missing
    bag = Path(args.bag).expanduser().resolve()
    with BagReader(bag) as reader:  # fail before starting anything: input topic and ground truth must be there
        reader.require(topic, (task.input_msgtype,), task.input_role)
        gt = task.open_ground_truth(reader, cfg.model.class_names, args.gt_topic, args.gt_info, topic)
        log.info("bag %s: %d %ss on %s; ground truth: %s (%s)", bag, reader.topics[topic].count, task.input_unit,
                 topic, gt.source, gt.span())
    out = Path(args.out) if args.out else Path(cfg.work_dir) / "replay" / f"{bag.name}_{args.backend}_realtime"
    out = ensure_writable_dir(out.expanduser().resolve())
    for stale in ("summary.json", "report.md", "frames.jsonl"):
        (out / stale).unlink(missing_ok=True)

    if args.recording:
        info = RunInfo(args.rate, Path(args.recording).expanduser().resolve(), None, node_source="(recording)")
        sent = info.recording.parent / "sent.jsonl"
        info.sent_log = sent if sent.is_file() else None
    else:
        info = RunInfo(args.rate, out / "recording", out / "sent.jsonl")
        if info.recording.exists():
            shutil.rmtree(info.recording)  # this command's own output of an earlier run
        params, info.node_source = node_parameters(cfg, args.backend, out)
        if task.node.bag_params is not None:  # calibration: the drive's nominal extrinsic
            params.update(task.node.bag_params(bag, topic))
        node_params = write_node_params(params, out / "node.param.yaml", task.node.executable)
        run_processes(bag, topic, objects_topic, node_params, out, args.rate, args.grace_s,
                      args.start_timeout_s, args.record_input_data, info, task)
        if not info.recording.exists() or (info.stopped and not _lines(info.sent_log)):
            # nothing was played: nothing to score (the recorder or the node did not start, or an early Ctrl-C)
            if info.stopped == "interrupted":
                return EXIT_INTERRUPTED
            from awml_deploy_core.errors import AwmlDeployError

            raise AwmlDeployError(info.error or f"no recording in {info.recording}")
        if info.stopped == "error":
            log.error("%s; scoring what was recorded", info.error)

    check = None
    if args.check_offline:
        check = Path(args.check_offline).expanduser().resolve()
        if not (check / "summary.json").is_file():
            from awml_deploy_core.replay.offline import node_thresholds, replay_evaluate

            log.info("offline replay of the same bag and backend into %s, for the agreement check (with the node's "
                     "post-processing thresholds)", check)
            replay_evaluate(bag, node_thresholds(cfg), args.backend, input_topic=topic, gt_topic=args.gt_topic,
                            gt_info=args.gt_info, tolerance_ms=args.tolerance_ms, out_dir=check)
    code, s = score(info.recording, bag, cfg, args.backend, lidar_topic=topic, gt_topic=args.gt_topic,
                    gt_info=args.gt_info, tolerance_ms=args.tolerance_ms, criteria=criteria, out=out, info=info,
                    check_offline=check)
    _print_summary(s, out)
    return code


def _print_summary(s: dict[str, Any], out: Path) -> None:
    c, rt = s["counts"], s["realtime"]
    e2e = rt.get("end_to_end_ms") or {}
    total = (s["latency_ms"].get("total") or {})
    from awml_deploy_core.replay.task import task_of_summary

    h = task_of_summary(s).headline(s)
    m = h.value
    print(f"{c['frames']} inputs: {c['scored']} scored, {c['skipped']} skipped, {c['dropped']} dropped (no output; "
          f"listed, not scored); {h.label.replace(' ', '')} {'-' if m is None else round(m, 4)}")
    print(f"end-to-end latency p50/p90/p99 {fmt(e2e.get('p50'))}/{fmt(e2e.get('p90'))}/{fmt(e2e.get('p99'))} ms; "
          f"node total p50/p99 {fmt(total.get('p50'))}/{fmt(total.get('p99'))} ms; output rate "
          f"{fmt(rt.get('output_rate_hz'), 2)} Hz (input {fmt(rt.get('input_rate_hz'), 2)} Hz, rate {rt['rate']:g})")
    a = s.get("offline_agreement")
    if a:
        print(f"offline agreement: {a['identical']}/{a['compared']} frames identical, {len(a['mismatched'])} differ, "
              f"{a['dropped_in_realtime']} dropped in real time")
    for g in s["gates"]:
        print(f"{'PASS' if g['passed'] else 'FAIL'} {g['name']}: {g['detail']}")
    if not s["complete"]:
        print(f"PARTIAL: {s['stopped']}" + (f" ({s['error']})" if s.get("error") else ""))
    print(f"report: {out / 'report.md'} (summary.json, frames.jsonl, recording/)")


def main(argv: Sequence[str] | None = None) -> int:
    from awml_deploy_core.errors import AwmlDeployError

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        code = run(args)
    except AwmlDeployError as e:
        print(f"replay_evaluation: error: {e}", file=sys.stderr, flush=True)
        if args.log_level == "DEBUG":
            raise
        code = e.exit_code
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
