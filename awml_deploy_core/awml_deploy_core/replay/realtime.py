"""Real-time replay scoring: a recording of a node's outputs -> frames, summary and report like the offline replay.

The processes (player, node, recorder) are started by ``awml_deploy_nodes.replay_evaluation``; everything after
the recording is here, without ROS: the recorded outputs become :class:`~.scoring.FrameRecord` s, one per input
sent (:func:`realtime_records`), and go through the offline replay's :class:`~.scoring.FrameScorer`, metric
configuration, criteria and report, with the real-time additions: dropped frames (an input without output: listed,
counted in the drop rate, never scored, not part of AP), end-to-end latency (stage ``end_to_end``, from the
player's publish time of a cloud to the arrival of the node's output at the recorder), output and input rates, the
player's lateness, and optionally the frame-by-frame agreement with an offline run of the same bag
(:func:`offline_agreement`, a gate). The node's own ``pipeline`` latency (publish time minus header stamp) is
left out: the stamps are the recording's, not this run's clock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle import atomic_write_json, atomic_write_text
from ..data.msg_definitions import INFERENCE_STATS
from ..data.rosbag_io import BagReader, stamp_to_ns
from ..errors import DatasetError
from ..metrics.latency import LatencyStats
from ..report import markdown_table
from .report import load_run, write_run_report
from .lidar3d import TASK as LIDAR3D
from .scoring import DROPPED, SCORED, FrameRecord, FrameScorer, records_from_bag
from .summary import EXIT_INTERRUPTED, ReplaySummary
from .task import DEFAULT_AGREEMENT_KEYS, ReplayTask, task_of

log = logging.getLogger(__name__)

END_TO_END = "end_to_end"


@dataclass
class RunInfo:
    """What the processes did, for the summary."""

    rate: float
    recording: Path
    sent_log: Path | None
    node_source: str = ""
    stopped: str | None = None
    error: str | None = None
    play_wall_s: float | None = None
    logs: dict[str, str] = field(default_factory=dict)


def _topic_of(reader: BagReader, msgtype: str, role: str, required: bool) -> str | None:
    names = sorted(t for t, s in reader.topics.items() if s.msgtype == msgtype)
    if len(names) > 1:
        raise DatasetError(f"recording {reader.path}: {len(names)} {role} topics ({names}); expected one")
    if not names and required:
        raise DatasetError(f"recording {reader.path}: no {role} topic ({msgtype}); {reader.describe_topics()}")
    return names[0] if names else None


def _arrivals(reader: BagReader, topic: str | None, msgtype: str) -> dict[int, int]:
    """{header stamp: first receive (log) time} of a recorded topic."""
    out: dict[int, int] = {}
    if topic is None:
        return out
    for i, (log_ns, raw) in enumerate(reader.messages(topic)):
        out.setdefault(stamp_to_ns(reader.deserialize(raw, msgtype, topic, i).header.stamp), log_ns)
    return out


def _read_sent(path: Path | None, topic: str) -> list[dict[str, Any]]:
    if path is None or not path.exists():
        return []
    rows = []
    for text in path.read_text().splitlines():
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            break  # a last line cut short by a kill
        if row.get("topic") == topic and row.get("stamp_ns") is not None:
            rows.append(row)
    return rows


def realtime_records(recording: Path, class_names: Sequence[str], lidar_topic: str,
                     sent_log: Path | None, task: ReplayTask | None = None) -> tuple[list[Any], dict[str, Any]]:
    """FrameRecords, one per input sent (in sending order), from a recording; and real-time facts.

    Outputs and per-stage latencies come from ``records_from_bag``. The inputs: the player's sent log when there
    is one (the exact list), else the inputs the recorder saw; an input seen by only one of them is kept (and
    counted); an output whose input neither saw is kept too (``input_not_seen``), never dropped silently.
    """
    task = task or LIDAR3D
    with BagReader(recording) as rec:
        objects_topic = _topic_of(rec, task.output_msgtype, "detections", True)
        stats_topic = _topic_of(rec, INFERENCE_STATS, "inference-stats", False)
        input_topic = _topic_of(rec, task.input_msgtype, "input", False)
        if stats_topic is not None and rec.topics[stats_topic].count == 0:
            stats_topic = None
        outputs = {r.stamp_ns: r for r in records_from_bag(rec, objects_topic, class_names, None, stats_topic, task)
                   } if rec.topics[objects_topic].count else {}
        out_arrival = _arrivals(rec, objects_topic, task.output_msgtype)
        in_arrival = _arrivals(rec, input_topic, task.input_msgtype)
    sent = _read_sent(sent_log, lidar_topic)
    published = {int(r["stamp_ns"]): int(r["publish_ns"]) for r in sent}
    order = [int(r["stamp_ns"]) for r in sent] if sent else sorted(in_arrival, key=in_arrival.get)
    seen = set(order)
    recorder_only = [s for s in sorted(in_arrival, key=in_arrival.get) if s not in seen]
    order += recorder_only
    seen.update(recorder_only)
    unmatched = [s for s in sorted(out_arrival, key=out_arrival.get) if s not in seen]
    order += unmatched

    records, e2e = [], []
    for s in order:
        out = outputs.get(s)
        latency = None
        extra: dict[str, Any] = {}
        if s in published:
            extra["publish_ns"] = published[s]
        if s in in_arrival:
            extra["input_arrival_ns"] = in_arrival[s]
        if s in unmatched:
            extra["input_not_seen"] = True
        if out is not None:
            latency = {k: v for k, v in (out.latency_ms or {}).items() if k != "pipeline"}
            extra["output_arrival_ns"] = out_arrival[s]
            start = published.get(s, in_arrival.get(s))
            if start is not None:
                latency[END_TO_END] = (out_arrival[s] - start) / 1e6
                e2e.append(latency[END_TO_END])
        records.append(FrameRecord(s, out.detections if out is not None else None, latency, extra))

    arrivals = sorted(out_arrival.values())
    span = (arrivals[-1] - arrivals[0]) / 1e9 if len(arrivals) > 1 else 0.0
    pubs = sorted(published.values())
    in_span = (pubs[-1] - pubs[0]) / 1e9 if len(pubs) > 1 else 0.0
    facts = {
        "recording": str(recording),
        "topics": {"input": input_topic, "objects": objects_topic, "stats": stats_topic},
        "inputs_sent": len(sent) if sent else None,
        "inputs_recorded": len(in_arrival),
        "outputs": len(outputs),
        "inputs_missed_by_recorder": len([s for s in published if s not in in_arrival]) if input_topic else None,
        "inputs_not_in_sent_log": len(recorder_only) if sent else 0,
        "outputs_without_input": len(unmatched),
        "end_to_end_reference": ("player publish time" if sent else "input arrival at the recorder"),
        "output_rate_hz": (len(arrivals) - 1) / span if span > 0 else None,
        "input_rate_hz": (len(pubs) - 1) / in_span if in_span > 0 else None,
        "player_late_ms": _stats([float(r.get("late_ms", 0.0)) for r in sent]) if sent else None,
    }
    return records, facts


def _stats(values: list[float]) -> dict[str, Any] | None:
    return LatencyStats.from_samples(values).to_dict() if values else None


def _checkpoint_info(cfg: Any, backend: str) -> dict[str, Any]:
    from ..bundle import sha256_file
    from ..errors import AwmlDeployError
    from ..loader import resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(cfg.checkpoint)
        return {"path": str(ckpt), "sha256": sha256_file(ckpt)}
    except (AwmlDeployError, OSError):  # informational only (the node reports its own model source)
        return {"path": str(cfg.checkpoint), "sha256": None}


def offline_agreement(frames: Sequence[dict[str, Any]], offline_dir: Path,
                      keys: Sequence[str] = DEFAULT_AGREEMENT_KEYS) -> dict[str, Any]:
    """Frame-by-frame comparison with an offline replay-eval run of the same bag (matched by stamp): the frame
    lines' ``keys`` (the task's ``agreement_keys``) must be equal."""
    _, off_summary, off_frames = load_run(offline_dir)
    off = {f["stamp_ns"]: f for f in off_frames}
    compared, mismatched, dropped = 0, [], []
    for f in frames:
        o = off.get(f["stamp_ns"])
        if f["status"] == DROPPED:
            dropped.append(f["stamp_ns"])
            continue
        if o is None or o["status"] != SCORED or f["status"] != SCORED:
            continue
        compared += 1
        diff = {k: {"offline": o.get(k), "realtime": f.get(k)} for k in keys if o.get(k) != f.get(k)}
        if diff:
            mismatched.append({"stamp_ns": f["stamp_ns"], "index": f["index"], "diff": diff})
    rt_stamps = {f["stamp_ns"] for f in frames}
    return {"offline_run": str(offline_dir), "offline_backend": off_summary.get("backend"),
            "keys": list(keys), "compared": compared, "identical": compared - len(mismatched),
            "mismatched": mismatched,
            "dropped_in_realtime": len(dropped), "offline_only": len([s for s in off if s not in rt_stamps])}


def agreement_gate(agreement: dict[str, Any]) -> dict[str, Any]:
    """The --check-offline gate: every frame processed in both runs is identical."""
    a = agreement
    return {"name": "identical to offline on every frame processed in both",
            "passed": a["compared"] > 0 and not a["mismatched"],
            "detail": f"{a['identical']}/{a['compared']} frames identical "
                      f"({', '.join(a.get('keys') or DEFAULT_AGREEMENT_KEYS)}); "
                      f"{a['dropped_in_realtime']} dropped in real time, not compared"}


def score(recording: Path, bag: Path, cfg: Any, backend: str, *, lidar_topic: str, gt_topic: str | None,
          gt_info: str | None, tolerance_ms: float, criteria: Any, out: Path, info: RunInfo,
          check_offline: Path | None = None) -> tuple[int, dict[str, Any]]:
    """Score a recording exactly as the offline replay scores its frames; write frames.jsonl, summary.json,
    report.md. Returns (exit code, summary)."""
    names = cfg.model.class_names
    task = task_of(cfg)
    with BagReader(bag) as reader:
        gt = task.open_ground_truth(reader, names, gt_topic, gt_info, lidar_topic)
    records, facts = realtime_records(recording, names, lidar_topic, info.sent_log, task)
    scorer = FrameScorer(gt, names, tolerance_ms, task.metric_config(cfg, names), task=task)
    with (out / "frames.jsonl").open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(scorer.add(rec), allow_nan=False) + "\n")
    scores = scorer.result()
    counts = scores.counts()
    dropped = [{"index": fr["index"], "stamp_ns": fr["stamp_ns"]} for fr in scores.frames if fr["status"] == DROPPED]
    e2e = scores.latency.get(END_TO_END)
    facts.update(rate=info.rate, play_wall_s=info.play_wall_s, node_source=info.node_source, logs=info.logs,
                 dropped=counts[DROPPED], drop_rate=counts[DROPPED] / counts["frames"] if counts["frames"] else None,
                 end_to_end_ms=e2e.to_dict() if e2e is not None else None)
    result = ReplaySummary(
        mode="realtime", bag=str(bag), lidar_topic=lidar_topic, backend=backend, model=cfg.model.name,
        checkpoint=_checkpoint_info(cfg, backend), device=cfg.device, scores=scores, stopped=info.stopped,
        error=info.error, wall_s=info.play_wall_s, throughput_fps=facts["output_rate_hz"], criteria=criteria,
        dropped_frames=dropped, realtime=facts)
    if check_offline is not None:
        result.offline_agreement = offline_agreement(scores.frames, check_offline, task.agreement_keys)
    result.judge([agreement_gate(result.offline_agreement)] if result.offline_agreement is not None else [])
    summary = result.to_dict()
    atomic_write_json(out / "summary.json", summary)
    try:
        write_run_report(out, summary, scores.frames)
        _append_realtime_report(out / "report.md", summary)
    except Exception as e:  # noqa: BLE001 - the numbers are safe in summary.json
        log.warning("report.md could not be written (%s: %s); summary.json is complete", type(e).__name__, e)
    if info.stopped == "interrupted":
        return EXIT_INTERRUPTED, summary
    if info.stopped == "error":
        return 3, summary
    if counts[SCORED] == 0:
        raise DatasetError(f"nothing scored: {counts['frames']} inputs, {facts['outputs']} outputs recorded in "
                           f"{recording} ({counts[DROPPED]} dropped, {counts['skipped']} without ground truth within "
                           f"{tolerance_ms:g} ms); see {out / 'summary.json'}")
    return (0 if summary["passed"] else 1), summary


def fmt(v: Any, digits: int = 1) -> str:
    """A number for a report line; "-" for None."""
    return "-" if v is None else f"{v:.{digits}f}"


def _append_realtime_report(path: Path, s: dict[str, Any]) -> None:
    rt = s["realtime"]
    e2e = rt.get("end_to_end_ms") or {}
    late = rt.get("player_late_ms") or {}
    md = [path.read_text().rstrip("\n"), "", f"## Real time (rate {rt['rate']:g})", "",
          markdown_table(["", ""], [
              ["inputs sent / recorded / outputs", f"{rt['inputs_sent']} / {rt['inputs_recorded']} / {rt['outputs']}"],
              ["dropped (input without output)", f"{rt['dropped']} ({fmt(100 * (rt['drop_rate'] or 0))}%): "
                                                  "listed below, excluded from AP, failed frames for frame criteria"],
              ["end-to-end latency p50 / p90 / p99 / max [ms]",
               f"{fmt(e2e.get('p50'))} / {fmt(e2e.get('p90'))} / {fmt(e2e.get('p99'))} / {fmt(e2e.get('max'))} "
               f"(from the {rt['end_to_end_reference']} to the output's arrival)"],
              ["output rate [Hz]", fmt(rt.get("output_rate_hz"), 2)],
              ["input rate played [Hz]", fmt(rt.get("input_rate_hz"), 2)],
              ["player lateness p99 / max [ms]", f"{fmt(late.get('p99'))} / {fmt(late.get('max'))}"],
              ["inputs the recorder missed / outputs without a sent input",
               f"{rt.get('inputs_missed_by_recorder')} / {rt['outputs_without_input']}"],
              ["node", rt.get("node_source")], ["recording", rt["recording"]],
          ]), ""]
    a = s.get("offline_agreement")
    if a:
        md += ["### Agreement with the offline replay", "",
               f"{a['identical']}/{a['compared']} frames processed in both are identical "
               f"({', '.join(a.get('keys') or DEFAULT_AGREEMENT_KEYS)}); {a['dropped_in_realtime']} dropped in real time (not compared). Offline run: "
               f"{a['offline_run']}.", ""]
        if a["mismatched"]:
            md += [markdown_table(["frame", "stamp [s]", "differs in"], [
                [m["index"], f"{m['stamp_ns'] / 1e9:.3f}", ", ".join(m["diff"])] for m in a["mismatched"][:50]]), ""]
    dropped = s.get("dropped_frames") or []
    if dropped:
        md += [f"### Dropped frames ({len(dropped)}; no output, never scored)", "",
               markdown_table(["frame", "stamp [s]"], [[d["index"], f"{d['stamp_ns'] / 1e9:.3f}"]
                                                       for d in dropped[:100]])]
        if len(dropped) > 100:
            md.append(f"... and {len(dropped) - 100} more (summary.json: dropped_frames)")
        md.append("")
    atomic_write_text(path, "\n".join(md) + "\n")




__all__ = ["END_TO_END", "RunInfo", "agreement_gate", "fmt", "offline_agreement", "realtime_records", "score"]
