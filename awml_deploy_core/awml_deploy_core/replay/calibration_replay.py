"""Replay of a calibration drive (``awml-deploy make-bag --calibration-drive``): the classifier's decisions scored against the
drive's labels, offline (the pipeline directly on the bag's pairs) and from a real-time run (the node's recorded
CalibrationStatus messages), and the two compared pair by pair.

Scoring: every decided pair is joined by stamp to its label; ambiguous pairs are counted apart and left out of
the metrics. "positive" = miscalibrated. ``accuracy``, ``recall_miscalibrated`` (miscalibrated pairs flagged),
``false_alarm_rate`` (calibrated pairs flagged), and the counts per label and decision.

Agreement: the node publishes float32 scores; a real-time decision agrees with the offline one when the verdict is
the same and both scores equal the offline float64 scores rounded to float32 (the node runs the same pipeline on
the same bytes, so nothing looser is needed).

    python -m awml_deploy_core.replay.calibration_replay BAG --checkpoint CKPT [--backend pytorch]
        [--recording STATUSES.jsonl] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..bundle import atomic_write_json
from ..data.calibration_bag import read_drive_pairs, read_labels


def offline_decisions(bag: str | Path, pipeline: Any, labels: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The pipeline on every pair of the drive with the NOMINAL extrinsic (what the vehicle believes)."""
    labels = labels or read_labels(bag)
    T = np.asarray(labels["nominal_extrinsic"], np.float64).reshape(4, 4)
    out = []
    for pair in read_drive_pairs(bag, labels):
        r = pipeline(pair.image, pair.points, pair.K, T)
        out.append({"stamp_ns": pair.stamp_ns, "is_calibrated": bool(r.is_calibrated),
                    "calibrated_score": float(r.calibrated_score), "miscalibrated_score": float(r.miscalibrated_score),
                    "projected_points": int(r.projected_points)})
    return out


def recorded_decisions(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """CalibrationStatus messages as dicts (msg_dict form, as the recorder writes them) -> decisions."""
    out = []
    for m in messages:
        st = m["header"]["stamp"]
        out.append({"stamp_ns": int(st["sec"]) * 1_000_000_000 + int(st["nanosec"]),
                    "is_calibrated": bool(m["is_calibrated"]), "calibrated_score": float(m["calibrated_score"]),
                    "miscalibrated_score": float(m["miscalibrated_score"])})
    return out


def score(decisions: list[dict[str, Any]], labels: dict[str, Any]) -> dict[str, Any]:
    """Metrics of the decisions against the drive's labels (ambiguous pairs counted apart)."""
    label_of = {f["stamp_ns"]: f["label"] for f in labels["frames"]}
    counts = {"miscalibrated": {"flagged": 0, "passed": 0}, "calibrated": {"flagged": 0, "passed": 0},
              "ambiguous": {"flagged": 0, "passed": 0}}
    unknown = 0
    for d in decisions:
        label = label_of.get(d["stamp_ns"])
        if label is None:
            unknown += 1
            continue
        counts[label]["passed" if d["is_calibrated"] else "flagged"] += 1
    mis, cal = counts["miscalibrated"], counts["calibrated"]
    n_mis, n_cal = mis["flagged"] + mis["passed"], cal["flagged"] + cal["passed"]
    scored = n_mis + n_cal
    return {
        "pairs_decided": len(decisions), "pairs_in_drive": len(label_of), "pairs_scored": scored,
        "pairs_ambiguous": sum(counts["ambiguous"].values()), "decisions_without_label": unknown,
        "accuracy": (mis["flagged"] + cal["passed"]) / scored if scored else None,
        "recall_miscalibrated": mis["flagged"] / n_mis if n_mis else None,
        "false_alarm_rate": cal["flagged"] / n_cal if n_cal else None,
        "counts": counts,
    }


def compare(offline: list[dict[str, Any]], realtime: list[dict[str, Any]]) -> dict[str, Any]:
    """Every real-time decision against the offline one of the same stamp; pairs the node did not decide listed."""
    by_stamp = {d["stamp_ns"]: d for d in offline}
    mismatches, unknown = [], []
    for d in realtime:
        ref = by_stamp.get(d["stamp_ns"])
        if ref is None:
            unknown.append(d["stamp_ns"])
            continue
        same = (d["is_calibrated"] == ref["is_calibrated"]
                and d["calibrated_score"] == float(np.float32(ref["calibrated_score"]))
                and d["miscalibrated_score"] == float(np.float32(ref["miscalibrated_score"])))
        if not same:
            mismatches.append({"stamp_ns": d["stamp_ns"], "offline": ref, "realtime": d})
    decided = {d["stamp_ns"] for d in realtime}
    return {"compared": len(realtime) - len(unknown), "agree": not mismatches and not unknown,
            "mismatches": mismatches, "stamps_not_in_drive": unknown,
            "not_processed": sorted(s for s in by_stamp if s not in decided)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m awml_deploy_core.replay.calibration_replay",
                                 description="score a calibration drive offline (and a real-time recording)")
    ap.add_argument("bag")
    ap.add_argument("--checkpoint", help="checkpoint (default: the shipped calibration_status model)")
    ap.add_argument("--config", help="deploy config (config/calibration_status.yaml) or a bundle folder")
    ap.add_argument("--backend", default="pytorch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--recording", help="the node's CalibrationStatus messages, one JSON line each (record_topics)")
    ap.add_argument("--out", help="folder for summary.json (default: print only)")
    args = ap.parse_args(argv)

    from ..families import get_family
    from ..loader import load_pipeline

    source = args.config or args.checkpoint or get_family("calibration_status").default_checkpoint
    labels = read_labels(args.bag)
    with load_pipeline(source, args.backend, args.device, checkpoint=args.checkpoint) as loaded:
        offline = offline_decisions(args.bag, loaded.pipeline, labels)
    summary: dict[str, Any] = {"bag": str(args.bag), "offline": score(offline, labels)}
    ok = True
    if args.recording:
        lines = [json.loads(l) for l in Path(args.recording).read_text().splitlines() if l.strip()]
        realtime = recorded_decisions(lines)
        summary["realtime"] = score(realtime, labels)
        summary["agreement"] = compare(offline, realtime)
        ok = summary["agreement"]["agree"]
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "summary.json", summary)
        atomic_write_json(out / "offline_decisions.json", offline)
    print(json.dumps({k: v for k, v in summary.items()}, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
