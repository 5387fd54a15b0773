"""Offline replay evaluation: every input of a bag through the pipeline, scored against ground truth. No ROS.

The input is the replay task's (:mod:`.task`, named by the config's family): lidar clouds for a 3D model
(``--lidar-topic``), a camera's images for a 2D one (``--image-topic``, default ``/sensing/camera/camera0/image_raw``).

Outputs in the run folder (default ``<work_dir>/replay/<bag>_<backend>``):

* ``frames.jsonl`` - one JSON line per cloud, appended and flushed as it is processed (see
  :mod:`.scoring` for the fields), so an interrupted or failed run keeps everything done so far;
* ``summary.json`` - counts, skipped frames, 3D metrics (per class, per distance band), latency percentiles,
  criteria gates; written at the end, and also when the run stops early (``"complete": false`` with
  ``"stopped": "interrupted" | "error"`` and the error line);
* ``report.md`` + ``plots/`` - the same for people (:mod:`.report`).

Exit codes (:func:`replay_evaluate` returns them, errors raise): 0 complete and every criterion met (or no
criteria), 1 a criterion failed, 2 configuration error, 3 data/runtime error (a partial summary is written
first), 130 interrupted (SIGINT: the current frame finishes, then the partial summary is written).
"""

from __future__ import annotations

import json
import logging
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..bundle import atomic_write_json, ensure_writable_dir
from ..config import DeployConfig
from ..loader import load_pipeline
from ..data.rosbag_io import BagReader, stamp_to_ns
from ..errors import AwmlDeployError, DatasetError
from .criteria import ReplayCriteria, check_criteria
from .scoring import DEFAULT_TOLERANCE_MS, SCORED, FrameRecord, FrameScorer, GroundTruth
from .summary import EXIT_INTERRUPTED, ReplaySummary
from .task import ReplayTask, task_of

log = logging.getLogger(__name__)


@dataclass
class ReplayOutcome:
    exit_code: int
    out_dir: Path
    summary: dict[str, Any]


# --------------------------------------------------------------------------------------------- plumbing
class _StopFlag:
    def __init__(self) -> None:
        self.requested = False


@contextmanager
def sigint_stops(then: str) -> Iterator[_StopFlag]:
    """First SIGINT sets the flag (the caller stops at its next safe point, ``then`` says what happens); a second
    one raises KeyboardInterrupt at once. Outside the main thread signals cannot be caught: the flag stays unset."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        log.warning("interrupted: %s (press Ctrl-C again to stop at once)", then)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class _FrameLog:
    """frames.jsonl: one line per frame, flushed at once; a line is written with a single write call."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._f: TextIO | None = open(path, "w", encoding="utf-8") if path is not None else None

    def write(self, line: dict[str, Any]) -> None:
        if self._f is not None:
            self._f.write(json.dumps(line, allow_nan=False) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _replay_loop(reader: BagReader, topic: str, pipeline: Any, scorer: FrameScorer,
                 frame_log: _FrameLog, warmup: int, stop: _StopFlag, progress: bool = True,
                 max_frames: int | None = None, after_frame: Callable[[Any], None] | None = None) -> list[float]:
    """The per-frame work of a replay: read + decode an input (the scorer's task says which), run the pipeline,
    score, log. Returns the wall time of every frame (ms, from asking the bag for the message to the flushed
    line). ``after_frame(input)`` runs after each frame, outside its timing (the benchmark times the bare
    pipeline there)."""
    task = scorer.task
    msgtype = reader.require(topic, (task.input_msgtype,), task.input_role)
    total = reader.topics[topic].count if max_frames is None else min(max_frames, reader.topics[topic].count)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"replay {reader.path.name}", unit=task.input_unit)
    walls: list[float] = []
    messages = reader.messages(topic)
    decode = task.decoder(reader, topic)
    try:
        for i in range(total):
            t0 = time.perf_counter()
            item = next(messages, None)
            if item is None:
                break
            log_ns, raw = item
            msg = reader.deserialize(raw, msgtype, topic, i)
            try:
                data, fields = decode(msg)
            except ValueError as e:
                raise DatasetError(f"bag {reader.path}: {task.input_unit} {i} on topic {topic!r} is malformed "
                                   f"({e})") from None
            stamp = stamp_to_ns(msg.header.stamp)
            io_ms = (time.perf_counter() - t0) * 1e3
            if i == 0 and warmup:
                for _ in range(warmup):  # untimed: first calls pay for lazy initialisation
                    task.infer(pipeline, data)
                t0 = time.perf_counter() - io_ms / 1e3
            detections, timings_ms = task.infer(pipeline, data)
            try:
                line = scorer.add(FrameRecord(stamp, detections, timings_ms,
                                              {"log_time_ns": log_ns, **fields, "io_ms": io_ms}))
            except DatasetError as e:
                raise DatasetError(f"bag {reader.path}: topic {topic!r}: {e}") from None
            frame_log.write(line)
            walls.append((time.perf_counter() - t0) * 1e3)
            if after_frame is not None:
                after_frame(data)
            if bar is not None:
                bar.update()
            if stop.requested:
                break
    finally:
        if bar is not None:
            bar.close()
    return walls


# --------------------------------------------------------------------------------------------- evaluation
def default_out_dir(cfg: DeployConfig, bag: Path, backend: str) -> Path:
    return Path(cfg.work_dir) / "replay" / f"{Path(bag).name}_{backend}"


@contextmanager
def open_replay(bag: str | Path, cfg: DeployConfig, input_topic: str | None = None,
                gt_topic: str | None = None, gt_info: str | Path | None = None,
                tolerance_ms: float = DEFAULT_TOLERANCE_MS,
                strict_order: bool = False) -> Iterator[tuple[BagReader, FrameScorer]]:
    """The bag open with its input topic (the task's default when None) checked and its ground truth read, and the
    scorer of its frames: what one bag's replay starts from (the single-bag command and each task of the fleet
    replay alike). The scorer's ``task`` is the config family's replay task."""
    task = task_of(cfg)
    topic = input_topic or task.default_input_topic
    with BagReader(bag) as reader:
        reader.require(topic, (task.input_msgtype,), task.input_role)
        gt = task.open_ground_truth(reader, cfg.model.class_names, gt_topic, gt_info, topic)
        log.info("bag %s: %d %ss on %s; ground truth: %s (%s)", bag, reader.topics[topic].count, task.input_unit,
                 topic, gt.source, gt.span())
        yield reader, FrameScorer(gt, cfg.model.class_names, tolerance_ms,
                                  task.metric_config(cfg, cfg.model.class_names), strict_order, task)


def node_thresholds(cfg: DeployConfig) -> DeployConfig:
    """``cfg`` with the post-processing its family's node runs with (2D: ``node_score_threshold`` and
    ``node_nms_iou``; 3D: unchanged): an offline replay of it scores exactly what the node publishes."""
    overrides = task_of(cfg).node_overrides(cfg.model)
    return cfg.model_copy(update={"model": cfg.model.model_copy(update=overrides)}) if overrides else cfg


def replay_evaluate(bag: str | Path, cfg: DeployConfig, backend: str = "onnxruntime", *,
                    lidar_topic: str | None = None, input_topic: str | None = None, gt_topic: str | None = None,
                    gt_info: str | Path | None = None, tolerance_ms: float = DEFAULT_TOLERANCE_MS,
                    criteria: ReplayCriteria | None = None, criteria_source: str = "criteria",
                    out_dir: str | Path | None = None, progress: bool = True, strict_order: bool = False,
                    max_frames: int | None = None) -> ReplayOutcome:
    """Replay ``bag`` through the ``backend`` pipeline and score it; see the module doc for outputs and exit codes.
    ``input_topic`` (or its older name ``lidar_topic``): the task's default when neither is given."""
    from ..loader import check_backend

    check_backend(backend)  # one line when the backend's runtime is missing, before the bag is read
    bag = Path(bag)
    task = task_of(cfg)
    topic = input_topic or lidar_topic or task.default_input_topic
    if criteria is not None:
        check_criteria(criteria, cfg, criteria_source)
    if not tolerance_ms >= 0:
        from ..errors import UsageError

        raise UsageError(f"--tolerance-ms must be >= 0, got {tolerance_ms}")
    with open_replay(bag, cfg, topic, gt_topic, gt_info, tolerance_ms, strict_order) as (reader, scorer):
        gt = scorer.gt
        loaded = load_pipeline(cfg, backend)
        pipeline, ckpt = loaded.pipeline, loaded.provenance()
        out = ensure_writable_dir(Path(out_dir) if out_dir is not None else default_out_dir(cfg, bag, backend))
        for stale in ("summary.json", "report.md"):
            (out / stale).unlink(missing_ok=True)
        frame_log = _FrameLog(out / "frames.jsonl")
        stopped, error, failure = None, None, None
        t0 = time.perf_counter()
        try:
            with sigint_stops("finishing the current frame, then writing the partial summary") as stop:
                _replay_loop(reader, topic, pipeline, scorer, frame_log, cfg.evaluate.warmup, stop, progress,
                             max_frames)
            if stop.requested:
                stopped = "interrupted"
        except KeyboardInterrupt:
            stopped = "interrupted"
        except AwmlDeployError as e:
            stopped, error, failure = "error", str(e), e
        except Exception as e:  # a pipeline or backend crash: keep what was done, then let the CLI report it
            stopped, error, failure = "error", f"unexpected {type(e).__name__}: {e}", e
        finally:
            frame_log.close()
            loaded.close()
        wall = time.perf_counter() - t0

    scores = scorer.result()
    result = ReplaySummary(
        mode="offline", bag=str(bag), lidar_topic=topic, backend=backend, model=cfg.model.name, checkpoint=ckpt,
        device=cfg.device, scores=scores, stopped=stopped, error=error, max_frames=max_frames, wall_s=wall,
        throughput_fps=len(scores.frames) / wall if wall > 0 and scores.frames else None, criteria=criteria)
    result.judge()
    summary = result.to_dict()
    counts = summary["counts"]
    _finish(out, summary, scores.frames)
    if scores.out_of_order:
        log.warning("%d %ss have a header stamp older than an earlier %s's (first: frame %d); they were "
                    "scored by stamp as usual and are listed in summary.json (out_of_order_frames)",
                    len(scores.out_of_order), task.input_unit, task.input_unit, scores.out_of_order[0])
    if failure is not None:
        log.info("partial results of %d frames kept in %s", counts["frames"], out)
        raise failure
    if stopped == "interrupted":
        log.warning("interrupted after %d frames; partial results in %s", counts["frames"], out)
        return ReplayOutcome(EXIT_INTERRUPTED, out, summary)
    if counts[SCORED] == 0:
        raise DatasetError(_nothing_scored(bag, topic, scores.frames, gt, tolerance_ms, task))
    return ReplayOutcome(0 if summary["passed"] else 1, out, summary)


def _nothing_scored(bag: Path, topic: str, frames: list[dict[str, Any]], gt: GroundTruth, tol: float,
                    task: ReplayTask) -> str:
    if not frames:
        return f"bag {bag}: topic {topic!r} yielded no {task.input_unit}s"
    stamps = [f["stamp_ns"] for f in frames]
    return (f"bag {bag}: none of the {len(frames)} {task.input_unit}s on {topic!r} (stamps {min(stamps) / 1e9:.3f}.."
            f"{max(stamps) / 1e9:.3f} s) has ground truth within {tol:g} ms ({gt.source}: {gt.span()}); check "
            "--tolerance-ms, --gt-topic / --gt-info, or the clocks")


def _finish(out: Path, summary: dict[str, Any], frames: list[dict[str, Any]]) -> None:
    from .report import write_run_report

    atomic_write_json(out / "summary.json", summary)
    try:
        write_run_report(out, summary, frames)
    except Exception as e:  # noqa: BLE001 - the numbers are safe in summary.json; a plot must not hide them
        log.warning("report.md could not be written (%s: %s); summary.json is complete", type(e).__name__, e)


# --------------------------------------------------------------------------------------------- throughput
def benchmark_overhead(bag: str | Path, cfg: DeployConfig, backend: str = "onnxruntime", *,
                       lidar_topic: str | None = None, gt_topic: str | None = None,
                       gt_info: str | Path | None = None, max_frames: int | None = None) -> dict[str, Any]:
    """Replay throughput against the bare pipeline on the same clouds, side by side in one run.

    Bare: ``pipeline(points)`` on the clouds decoded into memory beforehand. Replay: the replay loop itself (bag
    read, decode, pipeline, scoring, frames.jsonl into a temporary folder). They alternate frame by frame (after
    replay frame i, the bare pipeline runs on cloud i, timed on its own), which keeps the two comparable on a
    machine shared with other work. Result: median per-frame times,
    ``ratio = bare median / replay median`` (replay throughput as a fraction of the bare pipeline's),
    ``ratio_paired`` (median of the per-frame ratios), and the time to read + decode every cloud of the bag alone.
    """
    bag = Path(bag)
    task = task_of(cfg)
    lidar_topic = lidar_topic or task.default_input_topic  # the input topic, whatever the task
    loaded = load_pipeline(cfg, backend)
    pipeline = loaded.pipeline
    bare: list[float] = []
    clouds: list[Any] = []

    def time_bare(_: np.ndarray) -> None:
        points = clouds[len(bare)]
        t = time.perf_counter()
        task.infer(pipeline, points)
        bare.append((time.perf_counter() - t) * 1e3)

    with BagReader(bag) as reader:
        msgtype = reader.require(lidar_topic, (task.input_msgtype,), task.input_role)
        gt = task.open_ground_truth(reader, cfg.model.class_names, gt_topic, gt_info, lidar_topic)
        t = time.perf_counter()
        decode = task.decoder(reader, lidar_topic)
        for i, (_, raw) in enumerate(reader.messages(lidar_topic)):
            if max_frames is not None and i >= max_frames:
                break
            clouds.append(decode(reader.deserialize(raw, msgtype, lidar_topic, i))[0])
        read_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp, BagReader(bag) as reader:
        frame_log = _FrameLog(Path(tmp) / "frames.jsonl")
        replay = _replay_loop(reader, lidar_topic, pipeline, FrameScorer(gt, cfg.model.class_names, task=task), frame_log,
                              max(cfg.evaluate.warmup, 1), _StopFlag(), False, len(clouds), time_bare)
        frame_log.close()
    loaded.close()
    med_bare, med_replay = statistics.median(bare), statistics.median(replay)
    return {
        "bag": str(bag), "backend": backend, "frames": len(replay),
        "points_per_cloud": float(np.mean([len(getattr(c, "points", c)) for c in clouds])),  # rows per input (image: its height)
        "bag_read_decode_s": read_s,
        "bare_median_ms": med_bare, "replay_median_ms": med_replay,
        "ratio": med_bare / med_replay,
        "ratio_paired": statistics.median(b / r for b, r in zip(bare, replay)),
        "bare_fps": 1e3 * len(bare) / sum(bare), "replay_fps": 1e3 * len(replay) / sum(replay),
    }


__all__ = ["ReplayOutcome", "benchmark_overhead", "default_out_dir", "node_thresholds", "open_replay", "replay_evaluate"]
