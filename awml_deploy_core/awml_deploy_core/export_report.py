"""The export job's report: report.json, report.md with plots, and the console summary. Family-specific sections
come from the family's ``report_sections`` and ``metric_columns``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console as _RichConsole
from rich.table import Table

from .bundle import Bundle, sha256_file
from .config import DeployConfig
from .families import ModelFamily
from .report import markdown_table, plot_latency, plot_verification, write_report


def Console(width: int | None = None) -> _RichConsole:  # noqa: N802 - a factory standing in for the class
    """Rich console; in logs and CI (no terminal) no wrapping at 80 columns."""
    return _RichConsole(width=width if width is not None or sys.stdout.isatty() else 160)


def comparison_rows(family: ModelFamily, evaluations: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, e in evaluations.items():
        row: dict[str, Any] = {"backend": name, **family.metric_columns(e),
                               "latency_p50_ms": e.latency["total"].p50, "latency_p99_ms": e.latency["total"].p99}
        row.update({f"{stage}_p50_ms": s.p50 for stage, s in e.latency.items() if stage != "total"})
        rows.append(row)
    return rows


def build_report(family: ModelFamily, cfg: DeployConfig, bundle: Bundle, checkpoint: dict[str, str],
                 dataset: dict[str, Any], onnx: dict[str, Path], verification: list, evaluations: dict,
                 gates: list, quantization: dict[str, Any] | None = None) -> dict[str, Any]:
    plots = bundle.root / "plots"
    comparison = comparison_rows(family, evaluations)
    passed = all(g["passed"] for g in gates)
    report = {
        "kind": f"{family.name}_export",
        "family": family.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": cfg.model.name,
        "config": cfg.model_dump(mode="json"),
        "checkpoint": checkpoint,
        "dataset": dataset,
        "artifacts": {k: {"file": p.name, "sha256": sha256_file(p)} for k, p in onnx.items()},
        "verification": [v.to_dict() for v in verification],
        "evaluation": {k: e.to_dict() for k, e in evaluations.items()},
        "comparison": comparison,
        "gates": gates,
        "passed": passed,
        **({"quantization": quantization} if quantization is not None else {}),
    }
    md = [f"# {cfg.model.name}: export report", "",
          f"Result: **{'PASSED' if passed else 'FAILED'}** — {dataset['frames']} frames from {dataset['description']}",
          ""]
    if comparison:
        cols = [c for c in comparison[0] if c != "backend"]
        md += ["## Backends side by side", "",
               markdown_table(["backend", *cols], [[r["backend"], *(r[c] for c in cols)] for r in comparison]), ""]
    md += ["## Gates", "", markdown_table(["gate", "passed", "detail"],
                                           [[g["name"], "yes" if g["passed"] else "NO", g["detail"]] for g in gates]), ""]
    if quantization is not None:
        md += quantization_section(quantization)
    if evaluations:
        plot_latency({k: e.timings for k, e in evaluations.items()}, plots / "latency.png")
        md += ["## Latency", "", "![latency](plots/latency.png)", ""]
        for name, e in evaluations.items():
            md += [f"### {name}", "", markdown_table(
                ["stage", "p50", "p90", "p95", "p99", "mean", "std", "max"],
                [[s, v.p50, v.p90, v.p95, v.p99, v.mean, v.std, v.max] for s, v in e.latency.items()]), ""]
        md += family.report_sections(evaluations, plots)
    if verification:
        plot_verification(report["verification"], plots / "verification.png")
        md += ["## Verification", "", "![verification](plots/verification.png)", ""]
        for v in report["verification"]:
            md += [f"### {v['reference']} -> {v['candidate']} ({v['precision']}, atol {v['atol']:g}, "
                   f"rtol {v['rtol']:g}): {'passed' if v['passed'] else 'FAILED'}", "",
                   markdown_table(["output", "max abs", "p99 abs", "max rel", "out of tolerance"],
                                  [[k, s["max_abs"], s["p99_abs"], s["max_rel"], s["out_of_tolerance"]]
                                   for k, s in v["summary"].items()]), ""]
    write_report(bundle.root, report, "\n".join(md) + "\n")
    return report


def quantization_section(q: dict[str, Any], most_sensitive: int = 8) -> list[str]:
    """INT8 Q/DQ in report.md: the guard's verdict, the recipe, every layer kept in float and why, and (when the
    guard ranked them) the most sensitive layers."""
    g = q["guard"]
    md = ["## INT8 quantization (Q/DQ)", "", f"Guard: **{'passed' if g['ok'] else 'FAILED'}** — {g['reason']}", "",
          f"{g['metric']}: fp32 {g['fp32_metric']:.4f}, INT8 {g['int8_metric']:.4f} (all layers INT8: drop "
          f"{g['initial_drop']:.4f}; budget {g['budget']:g}) on {len(g['frames'].get('guard', []))} guard frames, "
          f"calibrated on {len(g['frames'].get('calibration', []))} frames", ""]
    if q.get("recipe_sha256"):
        r = q["recipe"]
        md += [f"Recipe `{q['recipe_sha256'][:12]}`: {r['method']} calibration, {r['tool']} {r['tool_version']}, "
               f"calibration fingerprint `{str(q['calibration_fingerprint'])[:12]}`; files: "
               + ", ".join(f"{k} `{v}`" for k, v in q.get("files", {}).items()), ""]
    md += ["### Layers kept in float", ""]
    kept = g["kept_float"]
    md += [markdown_table(["graph", "layer", "nodes", "sensitivity", "why"],
                          [[k["graph"], k["name"], ", ".join(k["nodes"]),
                            "" if k["sensitivity"] is None else f"{k['sensitivity']:.3g}", k["reason"]]
                           for k in kept]) if kept else "none: every quantizable layer runs in INT8", ""]
    if g.get("sensitivity"):
        md += [f"### Most sensitive layers (head-output rel. error with the layer alone in INT8; top "
               f"{most_sensitive} of {len(g['sensitivity'])})", "",
               markdown_table(["graph", "layer", "op", "output error"],
                              [[r["graph"], r["layer"], r["op_type"], f"{r['output_error']:.3g}"]
                               for r in g["sensitivity"][:most_sensitive]]), ""]
    return md


def print_summary(console: _RichConsole, family: ModelFamily, evaluations: dict, gates: list, work: Path) -> None:
    rows = comparison_rows(family, evaluations)
    if rows:
        table = Table(title="Backends on the same frames")
        metric_cols = list(family.metric_columns(next(iter(evaluations.values()))))
        cols = [*metric_cols, "latency_p50_ms", "latency_p99_ms"]
        table.add_column("backend")
        for c in cols:
            table.add_column(c.replace("latency_", "total ").replace("_ms", " ms").replace("_", " "), justify="right")
        for r in rows:
            table.add_row(r["backend"], *(f"{r[c]:.4f}" if c in metric_cols else f"{r[c]:.1f}" for c in cols))
        console.print(table)
    for g in gates:
        console.print(f"[{'green' if g['passed'] else 'red'}]{'PASS' if g['passed'] else 'FAIL'}[/] {g['name']}: "
                      f"{g['detail']}")
    console.print(f"report: {work / 'report.md'} (JSON: {work / 'report.json'}); bundle manifest: "
                  f"{work / 'manifest.json'}")
