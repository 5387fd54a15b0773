"""Reports: `report.json` (stable schema, see README) and `report.md` with PNG plots, written atomically.

Schema (version 1) top-level keys: schema_version, kind, created, model, config, dataset, artifacts,
verification (list of scenarios), evaluation ({backend: metrics + latency}), comparison (rows), gates (list of
{name, passed, detail}), passed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bundle import atomic_write, atomic_write_json, atomic_write_text

REPORT_SCHEMA_VERSION = 1


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _save_figure(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=90, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_latency(timings: dict[str, list[dict[str, float]]], path: Path) -> Path:
    """Histogram of total latency per backend, and per-stage medians side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for backend, frames in timings.items():
        ax1.hist([f["total"] for f in frames], bins=20, alpha=0.6, label=backend)
    ax1.set_xlabel("total latency per frame [ms]")
    ax1.set_ylabel("frames")
    ax1.legend()
    stages = [s for s in next(iter(timings.values()))[0] if s != "total"] if timings else []
    width = 0.8 / max(1, len(timings))
    for i, (backend, frames) in enumerate(timings.items()):
        med = [sorted(f[s] for f in frames)[len(frames) // 2] for s in stages]
        ax2.bar([j + i * width for j in range(len(stages))], med, width, label=backend)
    ax2.set_xticks([j + width * (len(timings) - 1) / 2 for j in range(len(stages))], stages)
    ax2.set_ylabel("median [ms]")
    ax2.legend()
    return _save_figure(fig, path)


def plot_pr_curves(curves: dict[str, dict[str, Any]], class_names: Sequence[str], threshold: str,
                   path: Path, unit: str = " m") -> Path:
    """Precision/recall per class at one matching threshold (``unit``: " m" centre distance, " IoU"); one line
    per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for ax, cls in zip(axes[0], class_names):
        for backend, per_class in curves.items():
            curve = per_class.get(cls, {}).get(threshold)
            if curve is not None:
                ax.plot(curve[0], curve[1], label=backend)
        ax.set_title(f"{cls} @ {threshold}{unit}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
    axes[0][0].set_ylabel("precision")
    axes[0][0].legend(fontsize=8)
    return _save_figure(fig, path)


def plot_verification(scenarios: list[dict[str, Any]], path: Path) -> Path:
    """Worst absolute error per output and scenario (log scale), with the tolerance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, sc in enumerate(scenarios):
        names = list(sc["summary"])
        vals = [max(sc["summary"][n]["max_abs"], 1e-12) for n in names]
        xs = [j + i * 0.35 for j in range(len(names))]
        ax.bar(xs, vals, 0.35, label=f"{sc['reference']}->{sc['candidate']}")
        ax.axhline(sc["atol"], linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(names)), names)
    ax.set_yscale("log")
    ax.set_ylabel("max |a-b|")
    ax.legend(fontsize=8)
    return _save_figure(fig, path)


def write_report(out_dir: Path, report: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    report = {"schema_version": REPORT_SCHEMA_VERSION, **report}
    json_path = atomic_write_json(Path(out_dir) / "report.json", _json_safe(report))
    md_path = atomic_write_text(Path(out_dir) / "report.md", markdown)
    return json_path, md_path


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _json_safe(obj.tolist())
    return obj
