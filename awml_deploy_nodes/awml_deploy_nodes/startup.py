"""Start-up of every node of the package: ROS arguments checked, rclpy initialised, errors turned into one line.

Why this exists: ``rclpy.init`` raises rclpy's own exceptions (a 16-line traceback for a missing params file or
an unknown ROS argument), and rcl silently keeps a params file's value when a ``-p name:=value`` of another type
names the same parameter (``-p max_points:=lots`` with the shipped params file started the node with the
defaults). Here the ROS arguments are read once (:func:`init_ros`); :func:`cli_overrides` gives the ``-p``
values as rcl would parse them (YAML), so that :func:`awml_deploy_nodes.node_params.declare_read_only` can refuse
a ``-p`` value rcl dropped, by name.

Exit codes follow awml_deploy_core.errors: 2 for configuration (arguments, parameters, params files), 3 for
artifacts and backends.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from awml_deploy_core.errors import AwmlDeployError, ConfigError

_ARGV: list[str] = []  # the argument vector given to init_ros (the process's ROS arguments)
_PARAM_FLAGS = ("-p", "--param")
_PARAMS_FILE_FLAG = "--params-file"


class RosArgumentError(ConfigError):
    """A ROS argument (``--ros-args ...``) or a params file is wrong; the message is one line."""


def ros_arguments(argv: Sequence[str]) -> list[str]:
    """The arguments inside ``--ros-args ... [--]`` sections, in order."""
    out: list[str] = []
    inside = False
    for a in argv:
        if a == "--ros-args":
            inside = True
        elif a == "--" and inside:
            inside = False
        elif inside:
            out.append(a)
    return out


def _flag_values(ros_args: Sequence[str], flags: Sequence[str]) -> list[str]:
    values = []
    for i, a in enumerate(ros_args):
        if a in flags and i + 1 < len(ros_args):
            values.append(ros_args[i + 1])
    return values


def check_params_files(argv: Sequence[str]) -> None:
    """Every ``--params-file`` names a readable YAML mapping; else RosArgumentError with one line."""
    import yaml

    for f in _flag_values(ros_arguments(argv), (_PARAMS_FILE_FLAG,)):
        path = Path(f)
        if not path.exists():
            raise RosArgumentError(f"--params-file {f}: no such file")
        if not path.is_file():
            raise RosArgumentError(f"--params-file {f}: not a file")
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as e:
            raise RosArgumentError(f"--params-file {f}: cannot read it ({e.strerror})") from None
        except UnicodeDecodeError:
            raise RosArgumentError(f"--params-file {f}: not a text (YAML) file") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or type(e).__name__
            raise RosArgumentError(f"--params-file {f}: invalid YAML{where} ({problem})") from None
        if not isinstance(data, dict):
            raise RosArgumentError(f"--params-file {f}: must be a mapping of node names to "
                                   f"'ros__parameters' (got {type(data).__name__})")


def _parse_value(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text
    if value is None or not isinstance(value, (str, int, float, bool, list)):
        return text  # dates, null, mappings: rcl keeps such values as strings (or refuses them itself)
    return value


def cli_overrides(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``-p name:=value`` of the ROS arguments as {name: value} (the value parsed as YAML, like rcl does).

    Only parameters for every node (no ``node:`` prefix); the last one of a name wins.
    """
    out: dict[str, Any] = {}
    for rule in _flag_values(ros_arguments(_ARGV if argv is None else argv), _PARAM_FLAGS):
        name, sep, value = rule.partition(":=")
        if sep and name and ":" not in name:
            out[name] = _parse_value(value)
    return out


def _one_line(text: str) -> str:
    first = " ".join(str(text).split())
    # rcl appends ", at /path/file.c:LINE" locations: not the user's concern.
    return first.split(", at /")[0]


def init_ros(args: Sequence[str] | None, *, signal_handlers: bool = True, context: Any = None) -> None:
    """rclpy.init with the ROS arguments checked first; failures raise RosArgumentError (one line, exit 2)."""
    import rclpy
    from rclpy.impl.implementation_singleton import rclpy_implementation as _impl

    argv = list(sys.argv if args is None else args)
    check_params_files(argv)
    _ARGV[:] = argv
    kwargs: dict[str, Any] = {"args": argv}
    if context is not None:
        kwargs["context"] = context
    errors = (_impl.RCLError, _impl.UnknownROSArgsError)
    try:
        with _stderr_held() as held:
            _init(rclpy, kwargs, signal_handlers)
            held.keep = True  # success: whatever rcl printed goes out; on failure our one line replaces it
    except errors as e:
        if isinstance(e, _impl.UnknownROSArgsError):
            raise RosArgumentError(f"unknown ROS argument(s) {_one_line(e)} after --ros-args") from None
        raise RosArgumentError(f"ROS arguments {ros_arguments(argv)}: {_one_line(e)}") from None


class _Held:
    keep = False


@contextlib.contextmanager
def _stderr_held() -> Iterator[_Held]:
    """Hold what C code writes to fd 2 (rcl logs 'Failed to parse global arguments' before raising)."""
    held = _Held()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield held
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if held.keep:
                tmp.seek(0)
                text = tmp.read()
                if text:
                    os.write(2, text)


def _init(rclpy: Any, kwargs: dict[str, Any], signal_handlers: bool) -> None:
    if signal_handlers:
        rclpy.init(**kwargs)
        return
    try:
        from rclpy.signals import SignalHandlerOptions
    except ImportError:  # an rclpy without the option
        rclpy.init(**kwargs)
        return
    rclpy.init(**kwargs, signal_handler_options=SignalHandlerOptions.NO)


def run_main(prog: str, body: Callable[[], int]) -> int:
    """Run a node's main body; an AwmlDeployError becomes ONE line on stderr and its exit code (2 or 3).

    rclpy's parameter exceptions (a wrongly typed value rclpy refused itself) count as configuration errors.
    ``AWML_DEPLOY_TRACEBACK=1`` re-raises instead, for debugging.
    """
    from rclpy.exceptions import ParameterException

    try:
        return body()
    except (AwmlDeployError, ParameterException) as e:
        if os.environ.get("AWML_DEPLOY_TRACEBACK") == "1":
            raise
        code = e.exit_code if isinstance(e, AwmlDeployError) else 2
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr, flush=True)
        import rclpy

        if rclpy.ok():
            rclpy.shutdown()
        return code
