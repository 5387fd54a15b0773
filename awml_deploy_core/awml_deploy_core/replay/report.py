"""Replay reports: one run (``report.md`` + plots) and two runs side by side (``replay-compare``).

Plots (PNG, in ``plots/``): per-class AP bars at 2 m, precision/recall curves at 2 m, total latency over the
drive, and skipped / dropped frames over the drive (cumulative; an offline replay drops none).

Comparison: B against A (A is the reference). Every row shows A, B and B - A; a change for the worse is
**bold** with a down arrow, a change for the better has an up arrow. The regression gate fails (exit 1) when
B's mAP at 2 m is lower than A's by more than ``max_map_drop``, when a class's AP drops by more than
``max_ap_drop`` (if given), or when either run is incomplete.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..bundle import atomic_write_json, atomic_write_text
from ..errors import ArtifactError
from ..report import _save_figure, markdown_table, plot_pr_curves
from .criteria import FrameCriteria, pass_rate
from .scoring import DROPPED, SKIPPED
from .task import task_of_summary


def _f(v: Any, digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------------------------- plots
def plot_ap_bars(runs: dict[str, dict[str, float | None]], class_names: Sequence[str], path: Path,
                 ylabel: str = "AP @ 2 m") -> Path:
    """The per-class AP of the headline (AP at 2 m, AP50) per class, one bar per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.6 * len(class_names) + 2, 3.5))
    width = 0.8 / max(1, len(runs))
    for i, (label, ap) in enumerate(runs.items()):
        vals = [(ap or {}).get(c) for c in class_names]
        xs = [j + i * width for j in range(len(class_names))]
        ax.bar(xs, [0.0 if v is None else v for v in vals], width, label=label)
        for x, v in zip(xs, vals):
            ax.text(x, (v or 0.0) + 0.01, "n/a" if v is None else f"{v:.2f}", ha="center", fontsize=7)
    ax.set_xticks([j + width * (len(runs) - 1) / 2 for j in range(len(class_names))], list(class_names))
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _save_figure(fig, path)


def _times(frames: list[dict[str, Any]]) -> list[float]:
    if not frames:
        return []
    t0 = min(f["stamp_ns"] for f in frames)
    return [(f["stamp_ns"] - t0) / 1e9 for f in frames]


def plot_latency_over_time(runs: dict[str, list[dict[str, Any]]], path: Path, stage: str = "total") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for label, frames in runs.items():
        pts = [(t, f["latency_ms"][stage]) for t, f in zip(_times(frames), frames)
               if stage in (f.get("latency_ms") or {})]
        if pts:
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", linewidth=0.8, label=label)
    ax.set_xlabel("time in the drive [s] (header stamp)")
    ax.set_ylabel(f"{stage} latency [ms]")
    ax.legend(fontsize=8)
    return _save_figure(fig, path)


def plot_drops_over_time(runs: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Cumulative skipped (no ground truth) and dropped (no output) frames over the drive."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for label, frames in runs.items():
        order = sorted(zip(_times(frames), frames), key=lambda p: p[0])
        xs = [t for t, _ in order]
        for status, style in ((DROPPED, "-"), (SKIPPED, "--")):
            acc, ys = 0, []
            for _, f in order:
                acc += f["status"] == status
                ys.append(acc)
            ax.plot(xs, ys, style, label=f"{label}: {status} ({acc})")
    ax.set_xlabel("time in the drive [s] (header stamp)")
    ax.set_ylabel("frames (cumulative)")
    ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1]))
    ax.set_title("dropped = input without output (none offline); skipped = no ground truth in tolerance", fontsize=9)
    ax.legend(fontsize=8)
    return _save_figure(fig, path)


def _plots(out: Path, summaries: dict[str, dict[str, Any]], frames: dict[str, list[dict[str, Any]]],
           class_names: Sequence[str]) -> list[tuple[str, str]]:
    plots = out / "plots"
    made = []
    task = task_of_summary(next(iter(summaries.values())))
    heads = {k: task.headline(s) for k, s in summaries.items()}
    per_label = next(iter(heads.values())).per_class_label
    if task.name != "detection3d":  # the 2D model keeps all 8 T4 classes; draw those the drive has
        class_names = [c for c in class_names if any((h.per_class or {}).get(c) is not None for h in heads.values())
                       ] or list(class_names)
    plot_ap_bars({k: h.per_class for k, h in heads.items()}, class_names, plots / "ap_bars.png", per_label)
    made.append((f"{per_label} per class", "plots/ap_bars.png"))
    curves = {k: task.pr_curves(s) for k, s in summaries.items() if s.get("metrics")}
    if any(c for c, _ in curves.values()):  # a classifier (calibration status) has none
        thr = next(iter(curves.values()))[1]
        unit = " m" if task.name == "detection3d" else " IoU"
        plot_pr_curves({k: c for k, (c, _) in curves.items()}, class_names, thr, plots / "pr_curves.png", unit)
        made.append((f"Precision / recall at {thr}{unit}", "plots/pr_curves.png"))
    plot_latency_over_time(frames, plots / "latency_over_time.png")
    made.append(("Total latency over the drive", "plots/latency_over_time.png"))
    plot_drops_over_time(frames, plots / "drops_over_time.png")
    made.append(("Skipped and dropped frames over the drive", "plots/drops_over_time.png"))
    return made


# --------------------------------------------------------------------------------------------- one run
def _status_line(s: dict[str, Any]) -> str:
    if not s.get("complete", True):
        return f"**PARTIAL** ({s.get('stopped')}{': ' + s['error'] if s.get('error') else ''})"
    if s.get("passed") is None or not s.get("gates"):
        return "complete (no criteria)"
    return "**PASSED**" if s["passed"] else "**FAILED**"


def write_run_report(out: Path, summary: dict[str, Any], frames: list[dict[str, Any]]) -> Path:
    names = summary["class_names"]
    c = summary["counts"]
    task = task_of_summary(summary)
    md = [f"# Replay evaluation: {Path(summary['bag']).name} ({summary.get('backend')})", "",
          f"Result: {_status_line(summary)}", "",
          markdown_table(["", ""], [
              ["bag", summary["bag"]], [task.topic_key.replace("_", " "), summary.get(task.topic_key)],
              ["ground truth", summary["gt_source"]], ["backend / device", f"{summary.get('backend')} / "
                                                                          f"{summary.get('device')}"],
              ["model", summary.get("model")],
              ["checkpoint", f"{(summary.get('checkpoint') or {}).get('path')} "
                             f"(sha256 {((summary.get('checkpoint') or {}).get('sha256') or '')[:12]})"],
              ["stamp tolerance", f"{summary['tolerance_ms']:g} ms"],
              ["frames", f"{c['frames']} ({c['scored']} scored, {c['skipped']} skipped, {c['dropped']} dropped, "
                         f"{c['out_of_order']} out of order)"],
              ["throughput", f"{_f(summary.get('throughput_fps'), 2)} frames/s over {_f(summary.get('wall_s'), 1)} s"],
          ]), ""]
    if summary.get("gates"):
        md += ["## Criteria", "", markdown_table(["gate", "passed", "detail"], [
            [g["name"], "yes" if g["passed"] else "**NO**", g["detail"]] for g in summary["gates"]]), ""]
    md += task.report_section(summary)
    lat = summary.get("latency_ms") or {}
    if lat:
        md += ["## Latency (ms, pipeline stages)", "", markdown_table(
            ["stage", "p50", "p90", "p99", "mean", "max"],
            [[s, _f(v.get("p50"), 1), _f(v.get("p90"), 1), _f(v.get("p99"), 1), _f(v.get("mean"), 1),
              _f(v.get("max"), 1)] for s, v in lat.items()]), ""]
    for title, rel in _plots(out, {"run": summary}, {"run": frames}, names):
        md += [f"### {title}", "", f"![{title}]({rel})", ""]
    skipped = summary.get("skipped_frames") or []
    if skipped:
        md += [f"## Skipped frames ({len(skipped)}; never scored)", "", markdown_table(
            ["frame", "stamp [s]", "reason"], [[s["index"], f"{s['stamp_ns'] / 1e9:.3f}", s["reason"]]
                                               for s in skipped[:50]])]
        if len(skipped) > 50:
            md.append(f"... and {len(skipped) - 50} more (summary.json: skipped_frames)")
        md.append("")
    return atomic_write_text(out / "report.md", "\n".join(md) + "\n")


# --------------------------------------------------------------------------------------------- compare
def read_frames(run_dir: str | Path) -> list[dict[str, Any]]:
    """The frame lines of a run folder; a last line cut short by a hard kill is ignored."""
    path = Path(run_dir) / "frames.jsonl"
    lines = []
    if not path.exists():
        return lines
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            break
    return lines


def load_run(run: str | Path) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    """(folder, summary, frame lines) of a replay-eval run folder (or of its summary.json)."""
    p = Path(run)
    folder = p.parent if p.name == "summary.json" else p
    path = folder / "summary.json"
    if not path.is_file():
        raise ArtifactError(f"{folder}: no summary.json; is this a replay-eval output folder?")
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from None
    if summary.get("kind") != "replay_eval":
        raise ArtifactError(f"{path}: not a replay-eval summary (kind {summary.get('kind')!r})")
    return folder, summary, read_frames(folder)


def _delta(a: float | None, b: float | None, higher_is_better: bool, digits: int, worse_beyond: float = 0.0) -> str:
    if a is None or b is None:
        return "-"
    d = b - a
    if abs(d) < 0.5 * 10 ** -digits:
        return "="
    better = d > 0 if higher_is_better else d < 0
    arrow = "↑" if d > 0 else "↓"
    text = f"{d:+.{digits}f} {arrow}"
    return text if better or abs(d) <= worse_beyond else f"**{text}**"


def compare_runs(run_a: str | Path, run_b: str | Path, out: str | Path | None = None, max_map_drop: float = 0.01,
                 max_ap_drop: float | None = None) -> tuple[int, dict[str, Any]]:
    """Two runs side by side, B against A; writes compare.md, compare.json and plots into ``out``
    (default ``<run_b>/compare``). Returns (exit code: 0 no regression, 1 regression, and the JSON)."""
    fa, sa, frames_a = load_run(run_a)
    fb, sb, frames_b = load_run(run_b)
    out = Path(out) if out is not None else fb / "compare"
    names = list(dict.fromkeys([*sa["class_names"], *sb["class_names"]]))
    la, lb = f"A: {fa.name}", f"B: {fb.name}"
    rows: list[list[Any]] = []
    gates = [{"name": "both runs complete", "passed": bool(sa.get("complete") and sb.get("complete")),
              "detail": f"A {'complete' if sa.get('complete') else 'partial'}, "
                        f"B {'complete' if sb.get('complete') else 'partial'}"}]
    task_a, task_b = task_of_summary(sa), task_of_summary(sb)
    if task_a.name != task_b.name:
        raise ArtifactError(f"{fa} is a {task_a.name} run and {fb} a {task_b.name} one: compare runs of one kind")
    ha, hb = task_a.headline(sa), task_b.headline(sb)
    ma, mb = ha.value, hb.value
    hl, pl = ha.label, ha.per_class_label
    rows.append([hl, _f(ma), _f(mb), _delta(ma, mb, True, 4, max_map_drop)])
    drop = None if ma is None or mb is None else ma - mb
    gates.append({"name": f"{hl} drop <= {max_map_drop:g}", "passed": drop is not None and drop <= max_map_drop,
                  "detail": f"A {_f(ma)}, B {_f(mb)}" + ("" if drop is None else f", drop {drop:+.4f}")})
    extra = ((("map", "mAP (all thresholds)"), ("maph", "mAPH")) if task_a.name == "detection3d" else ())
    for key, label in extra:
        a, b = (sa.get("metrics") or {}).get(key), (sb.get("metrics") or {}).get(key)
        rows.append([label, _f(a), _f(b), _delta(a, b, True, 4)])
    if task_a.name != "detection3d":
        a, b = sa.get("ap"), sb.get("ap")
        rows.append(["AP@[.5:.95]", _f(a), _f(b), _delta(a, b, True, 4)])
    for n in names:
        a, b = (ha.per_class or {}).get(n), (hb.per_class or {}).get(n)
        if task_a.name != "detection3d" and a is None and b is None:
            continue  # a class absent from the drive (the 2D model keeps all 8 T4 classes)
        rows.append([f"{pl} {n}", _f(a), _f(b), _delta(a, b, True, 4, max_ap_drop or 0.0)])
        if max_ap_drop is not None:
            d = None if a is None or b is None else a - b
            gates.append({"name": f"{pl} {n} drop <= {max_ap_drop:g}",
                          "passed": (a is None and b is None) or (d is not None and d <= max_ap_drop),
                          "detail": f"A {_f(a)}, B {_f(b)}"})
    for q in ("p50", "p99"):
        a = ((sa.get("latency_ms") or {}).get("total") or {}).get(q)
        b = ((sb.get("latency_ms") or {}).get("total") or {}).get(q)
        rows.append([f"latency total {q} [ms]", _f(a, 1), _f(b, 1), _delta(a, b, False, 1)])
    fc_src = (sb.get("criteria") or {}).get("frames") or (sa.get("criteria") or {}).get("frames")
    fc = FrameCriteria(**fc_src) if fc_src else FrameCriteria(min_recall=0.5, min_precision=0.5,
                                                              min_pass_rate_percent=0)
    rates = []
    for frames in (frames_a, frames_b):
        ok, n = pass_rate(frames, fc)
        rates.append(100.0 * ok / n if n else None)
    rows.append([f"frame pass rate % (recall >= {fc.min_recall:g}, precision >= {fc.min_precision:g})",
                 _f(rates[0], 1), _f(rates[1], 1), _delta(rates[0], rates[1], True, 1)])
    for key in ("scored", "skipped", "dropped"):
        a, b = sa["counts"][key], sb["counts"][key]
        rows.append([f"frames {key}", a, b, _delta(float(a), float(b), key == "scored", 0)])
    a, b = sa.get("throughput_fps"), sb.get("throughput_fps")
    rows.append(["throughput [frames/s]", _f(a, 2), _f(b, 2), _delta(a, b, True, 2)])
    passed = all(g["passed"] for g in gates)
    result = {"kind": "replay_compare", "a": str(fa), "b": str(fb), "max_map_drop": max_map_drop,
              "max_ap_drop": max_ap_drop, "rows": [[str(c) for c in r] for r in rows], "gates": gates,
              "passed": passed}
    md = ["# Replay comparison", "", f"Result: **{'NO REGRESSION' if passed else 'REGRESSION'}** (B against A)", "",
          markdown_table(["", "A (reference)", "B"], [
              ["run", fa, fb], ["bag", sa["bag"], sb["bag"]], ["backend", sa.get("backend"), sb.get("backend")],
              ["checkpoint", (sa.get("checkpoint") or {}).get("sha256", "")[:12],
               (sb.get("checkpoint") or {}).get("sha256", "")[:12]], ["status", _status_line(sa), _status_line(sb)]]),
          ""]
    if Path(sa["bag"]).name != Path(sb["bag"]).name:
        md += ["Note: the runs replayed different bags.", ""]
    md += ["## Side by side", "", "Worse in B: **bold** with an arrow; better: arrow only.", "",
           markdown_table(["metric", "A", "B", "B - A"], rows), "",
           "## Regression gate", "", markdown_table(["gate", "passed", "detail"], [
               [g["name"], "yes" if g["passed"] else "**NO**", g["detail"]] for g in gates]), ""]
    for title, rel in _plots(out, {la: sa, lb: sb}, {la: frames_a, lb: frames_b}, names):
        md += [f"### {title}", "", f"![{title}]({rel})", ""]
    atomic_write_text(out / "compare.md", "\n".join(md) + "\n")
    atomic_write_json(out / "compare.json", result)
    result["out"] = str(out)
    return (0 if passed else 1), result


__all__ = ["compare_runs", "load_run", "plot_ap_bars", "plot_drops_over_time", "plot_latency_over_time", "read_frames",
           "write_run_report"]
