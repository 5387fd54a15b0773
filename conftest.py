"""Test-wide guard: nothing a test starts may send DDS traffic off this machine.

tools/run_tests.sh already exports the DDS environment; this also covers a bare `pytest` run.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
DDS_PROFILE = ROOT / "config" / "fastdds_localhost_shm.xml"

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(DDS_PROFILE)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))

# Under pytest-xdist (tools/run_tests.sh runs two workers) each worker takes its own residue class of domains, so
# two tests running at once never share one: worker w of n uses base + k * n + w, modulo a multiple of n. Slot
# k = 0 is the worker's own (in-process nodes, processes started without ros_env); each ros_env takes the next.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_WORKERS = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
_DOMAIN_SPAN = 100 - 100 % _WORKERS
_BASE = int(os.environ["ROS_DOMAIN_ID"])
_domains = itertools.count()


def _domain() -> str:
    return str(1 + (_BASE + next(_domains) * _WORKERS + _WORKER) % _DOMAIN_SPAN)


os.environ["ROS_DOMAIN_ID"] = _domain()


def fresh_ros_env() -> dict[str, str]:
    """Environment for processes that start nodes: local-only DDS and a domain no other running test uses."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = _domain()
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def ros_env() -> dict[str, str]:
    """A domain of this test's own (see fresh_ros_env)."""
    return fresh_ros_env()


@pytest.fixture(scope="session")
def ros_env_factory():
    """fresh_ros_env itself, for module-scoped sessions of nodes (a function-scoped fixture cannot serve them)."""
    return fresh_ros_env


@pytest.fixture(autouse=True)
def _torch_threads_unchanged():
    """A test that changes torch's global thread count would change float results of every later test in this
    process (reductions split differently), e.g. an in-process pipeline compared bit for bit with a node process."""
    import sys

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


def pytest_configure(config: pytest.Config) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "test"))  # test helpers (ros_helpers) importable from every test folder
