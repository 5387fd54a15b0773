"""`awml-deploy export --dry-run`: the TensorRT build plan printed as tables; nothing is built.

Rendering only: the plan itself (`build_plan`) is computed in `tensorrt_plan`, which knows nothing of consoles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..bundle import Bundle
from ..config import DeployConfig
from ..errors import ConfigError
from .tensorrt_plan import GraphPlan, TrtPlan, build_plan, format_profiles

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def print_dry_run(cfg: DeployConfig, bundle: Bundle, console: "Console") -> int:
    """Print the build plan (works without TensorRT); 0, or ConfigError after printing when the plan is invalid."""
    plan = build_plan(cfg, bundle)
    print_plan(plan, console)
    if plan.problems:
        raise ConfigError(plan.problems[0])
    return 0


def print_plan(plan: TrtPlan, console: "Console") -> None:
    console.print("[bold]TensorRT build plan[/] (dry run: nothing is built)")
    console.print(f"TensorRT: {plan.tensorrt_version}   GPU: {plan.gpu} (compute capability "
                  f"{plan.compute_capability})")
    console.print(f"export.mode: {plan.mode}   precision: {plan.precision}   ONNX: {plan.onnx_source}")
    if not plan.builds_engines and not plan.reuses_engines:
        console.print(f"export.mode '{plan.mode}' builds no TensorRT engines; the plan below is what modes "
                      f"'trt'/'both' would build.")
    console.print(f"API: {plan.api}")
    for g in plan.graphs.values():
        console.print(graph_table(g))
    for p in plan.problems:
        console.print(f"[red]problem[/]: {p}")


def graph_table(g: GraphPlan) -> "Table":
    from rich.table import Table

    table = Table(title=f"{g.key}: {g.onnx.name} -> {g.engine.name}", show_header=False, title_justify="left")
    table.add_column("item", style="bold")
    table.add_column("value")
    table.add_row("onnx sha256", (g.onnx_sha256 or g.onnx_status)[:64])
    for label, b in g.builder.items():
        if b is None:
            table.add_row(f"builder ({label})", "[red]precision not available (see note)[/]")
            continue
        flags = ", ".join(b.builder_flags) or "none"
        net = ", ".join(b.network_flags) or "none"
        table.add_row(f"builder ({label})" if len(g.builder) > 1 else "builder flags",
                      f"{flags}; network: {net}; workspace via {b.workspace_api}; device {b.default_device_type}")
        for n in b.notes:
            table.add_row("", f"note: {n}")
    table.add_row("quantization", g.quantization)
    table.add_row("profiles", format_profiles(g.profiles))
    table.add_row("profile check", g.profile_check)
    table.add_row("workspace", f"{g.workspace_mb} MiB")
    table.add_row("DLA", "off (GPU)" if g.dla_core is None else f"core {g.dla_core} + GPU_FALLBACK")
    table.add_row("timing cache", str(g.timing_cache) if g.timing_cache else
                  "pending (named after TensorRT version and GPU)")
    c = g.calibration.to_dict() if g.calibration else None
    table.add_row("INT8 calibration", "none" if c is None else
                  f"{c['calibrator']}, {c['frames']} frames of {c['batch_shape']}; {c['data']}; cache {c['cache']}")
    table.add_row("verify tolerance", str(g.tolerance))
    table.add_row("cache key", g.cache_key.digest() if g.cache_key else "n/a")
    table.add_row("cached engine", ("[green]reusable[/]: " if g.reusable else "[yellow]rebuild[/]: ") + g.reason)
    for n in g.notes:
        table.add_row("note", n)
    return table
