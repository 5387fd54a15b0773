"""YOLOX report sections: COCO tables per backend, PR curves at IoU 0.5 and a few images with boxes drawn
(ground truth green, ignore regions grey dashed, predictions above the node's score threshold red)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..metrics.detection2d import RECALL_POINTS
from ..report import markdown_table


def plot_pr_2d(evaluations: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(evaluations.values()))
    classes = first.metrics.classes or ["(none)"]
    fig, axes = plt.subplots(1, len(classes), figsize=(3.2 * len(classes), 3.2), squeeze=False)
    for ax, cls in zip(axes[0], classes):
        for backend, e in evaluations.items():
            curve = e.metrics.pr_curves.get(cls)
            if curve is not None:
                ax.plot(RECALL_POINTS, curve, label=backend)
        ax.set_title(f"{cls} @ IoU 0.5")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
    axes[0][0].set_ylabel("precision")
    axes[0][0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def draw_examples(e: Any, class_names: list[str], score_threshold: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = max(len(e.examples), 1)
    fig, axes = plt.subplots(n, 1, figsize=(8, 4.5 * n), squeeze=False)
    for ax, (image, gt, det) in zip(axes[:, 0], e.examples):
        ax.imshow(np.ascontiguousarray(image[..., ::-1]))  # BGR -> RGB
        for b, ign in zip(gt.boxes, gt.ignore):
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, lw=1.2,
                                   ec="0.6" if ign else "lime", ls="--" if ign else "-"))
        for b, s, lab in zip(det.boxes, det.scores, det.labels):
            if s < score_threshold:
                continue
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, lw=1.0, ec="red"))
            ax.text(b[0], b[1] - 2, f"{class_names[lab]} {s:.2f}", color="red", fontsize=6)
        ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def report_sections(evaluations: dict[str, Any], plots: Path, class_names: list[str],
                    score_threshold: float) -> list[str]:
    if not evaluations:
        return []
    md: list[str] = []
    for name, e in evaluations.items():
        m = e.metrics
        md += [f"### {name}: COCO 2D detection metrics (pycocotools, {m.num_images} images, {m.num_gt} boxes, "
               f"{m.num_ignored} ignore regions)", "",
               markdown_table(["class", "AP50", "AP@[.5:.95]"],
                              [[c, m.per_class_ap50[c], m.per_class_ap[c]] for c in m.classes]), "",
               markdown_table(list(m.stats), [list(m.stats.values())]), ""]
    plot_pr_2d(evaluations, plots / "pr_curves.png")
    md += ["## Precision / recall at IoU 0.5", "", "![pr](plots/pr_curves.png)", ""]
    name, first = next(iter(evaluations.items()))
    draw_examples(first, class_names, score_threshold, plots / "examples.png")
    md += [f"## Examples ({name}; green: ground truth, grey dashed: ignore, red: score >= {score_threshold:g})", "",
           "![examples](plots/examples.png)", ""]
    return md
