"""Calibration-status report sections: the classification table per backend (labelled pairs), the ambiguous band,
the confusion matrix, and accuracy against the rotation and the translation error (plotted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..report import markdown_table


def plot_accuracy_vs_error(evaluations: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, unit, scale in ((axes[0], "by_rotation", "rotation error (deg)", 1.0),
                                 (axes[1], "by_translation", "translation error (cm)", 100.0)):
        for name, e in evaluations.items():
            rows = getattr(e, key)
            mid = [(r["lo"] + r["hi"]) / 2 * scale for r in rows]
            acc = [float("nan") if r["accuracy"] is None else r["accuracy"] for r in rows]
            flag = [float("nan") if r["flagged"] is None else r["flagged"] for r in rows]
            ax.plot(mid, acc, "o-", label=f"{name} accuracy (labelled)")
            ax.plot(mid, flag, "x--", label=f"{name} called miscalibrated (all)")
        ax.set_xlabel(unit)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    rot, trans = next(iter(evaluations.values())).thresholds
    axes[0].axvspan(rot / 2, rot, color="0.85", label="ambiguous band")
    axes[1].axvspan(trans * 50, trans * 100, color="0.85")
    axes[0].legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _bins(rows: list[dict[str, Any]], scale: float, unit: str) -> str:
    return markdown_table([f"error ({unit})", "pairs", "labelled", "accuracy", "called miscalibrated"],
                          [[f"{r['lo'] * scale:g}-{r['hi'] * scale:g}", r["pairs"], r["labelled"],
                            "-" if r["accuracy"] is None else r["accuracy"],
                            "-" if r["flagged"] is None else r["flagged"]] for r in rows])


def report_sections(evaluations: dict[str, Any], plots: Path) -> list[str]:
    if not evaluations:
        return []
    md = ["## Calibration status (scikit-learn metrics; positive class: miscalibrated)", ""]
    rows = []
    for name, e in evaluations.items():
        m = e.metrics
        rows.append([name, m.count, m.positives, m.accuracy, m.precision, m.recall, m.f1, m.roc_auc,
                     m.false_alarm_rate, e.large_error_recall, e.large_error_pairs])
    md += [markdown_table(["backend", "labelled pairs", "miscalibrated", "accuracy", "precision", "recall", "F1",
                           "ROC-AUC", "false alarms", "recall >= 2 deg or >= 10 cm", "such pairs"], rows), ""]
    for name, e in evaluations.items():
        cm = e.metrics.confusion
        a = e.ambiguous
        md += [f"### {name}: confusion matrix (rows truth, columns prediction)", "",
               markdown_table(["", "pred miscalibrated", "pred calibrated"],
                              [["miscalibrated", cm[0][0], cm[0][1]], ["calibrated", cm[1][0], cm[1][1]]]), "",
               f"Ambiguous band (between half the thresholds and the thresholds; not scored): {a['pairs']} pairs, "
               f"{a['flagged_miscalibrated']} called miscalibrated, mean P(miscalibrated) "
               f"{'-' if a['mean_miscalibrated_score'] is None else format(a['mean_miscalibrated_score'], '.3f')}.",
               ""]
    plot_accuracy_vs_error(evaluations, plots / "accuracy_vs_error.png")
    md += ["## Accuracy against the perturbation magnitude", "", "![accuracy](plots/accuracy_vs_error.png)", ""]
    name, first = next(iter(evaluations.items()))
    md += [f"### {name}: by rotation error", "", _bins(first.by_rotation, 1.0, "deg"), "",
           f"### {name}: by translation error", "", _bins(first.by_translation, 100.0, "cm"), ""]
    return md
