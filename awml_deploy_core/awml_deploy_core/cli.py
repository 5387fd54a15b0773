"""Console entry points: `awml-deploy <verb> ...` and `export <config>` (for `ros2 run awml_deploy_core export`).

Exit codes: 0 ok, 1 a verification or evaluation gate failed, 2 usage or config error, 3 runtime error.
A user error prints one line; the traceback only with --log-level DEBUG.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .errors import AwmlDeployError, UsageError

log = logging.getLogger("awml_deploy")

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share the one error path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging verbosity; DEBUG also prints tracebacks (default: INFO)")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export + verify + evaluate a model into a deployment bundle")
    p.add_argument("config", help="deploy config YAML (see config/centerpoint.yaml)")
    p.add_argument("--work-dir", help="bundle folder (overrides the config's work_dir)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (overrides the config's device)")
    p.add_argument("--checkpoint", help="PyTorch checkpoint (overrides the config's checkpoint)")
    p.add_argument("--mode", choices=["onnx", "trt", "both", "none"], help="export mode (overrides export.mode)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be built (TensorRT builder plan) and exit without building")
    _common(p)
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from .config import load_deploy_config

    overrides = {k: v for k, v in {"work_dir": args.work_dir, "device": args.device, "export.mode": args.mode,
                                          "checkpoint": args.checkpoint}.items()
                 if v is not None}
    cfg = load_deploy_config(args.config, overrides)
    from .deploy import run_deploy

    return run_deploy(cfg, dry_run=args.dry_run)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the small CenterPoint on fresh synthetic scenes",
                       add_help=False)
    p.set_defaults(func=None, passthrough="train")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: data generation, voxelization, model, metrics, backends",
                       add_help=False)
    p.set_defaults(func=None, passthrough="bench")


def _passthrough(name: str) -> Callable[[Sequence[str]], int]:
    if name == "train":
        from .training.train import main as train_main

        return train_main
    if name == "bench":
        from .bench import main as bench_main

        return bench_main
    raise UsageError(f"unknown verb {name}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="awml-deploy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", parser_class=_Parser)
    sub.required = True
    _add_export(sub)
    _add_train(sub)
    _add_bench(sub)
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)


def _run(argv: Sequence[str]) -> int:
    argv = list(argv)
    debug = "DEBUG" in argv and "--log-level" in argv
    try:
        if argv and argv[0] in ("train", "bench"):
            _configure_logging("DEBUG" if debug else "INFO")
            return _passthrough(argv[0])(argv[1:])
        args = build_parser().parse_args(argv)
        _configure_logging(args.log_level)
        return int(args.func(args))
    except AwmlDeployError as e:
        if debug:
            log.exception("failed")
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line unless DEBUG, never swallowed silently
        if debug:
            raise
        print(f"error: unexpected {type(e).__name__}: {e} (rerun with --log-level DEBUG for the traceback)",
              file=sys.stderr)
        return EXIT_RUNTIME


def main(argv: Sequence[str] | None = None) -> int:
    """`awml-deploy <verb> ...`"""
    code = _run(sys.argv[1:] if argv is None else argv)
    if argv is None:
        sys.exit(code)
    return code


def export_main(argv: Sequence[str] | None = None) -> int:
    """`export <config> ...` — the executable behind `ros2 run awml_deploy_core export`."""
    code = _run(["export", *(sys.argv[1:] if argv is None else argv)])
    if argv is None:
        sys.exit(code)
    return code
