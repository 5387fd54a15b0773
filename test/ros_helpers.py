"""Start and stop test processes (separate interpreters) that talk over real DDS."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

PROCS = Path(__file__).resolve().parent / "procs"


def start_proc(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start `python <args>` with its output in `log`; args[0] may be a script name under test/procs."""
    script = PROCS / args[0]
    argv = [sys.executable, str(script) if script.exists() else args[0], *args[1:]]
    return subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for_line(log: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{log.name}: no line containing {text!r} within {timeout} s:\n{log.read_text()}")


def stop(*procs: subprocess.Popen, timeout: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
