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

_domains = itertools.count()


@pytest.fixture
def ros_env() -> dict[str, str]:
    """Environment for processes that start nodes: local-only DDS and a domain of this test's own."""
    env = dict(os.environ)
    base = int(os.environ["ROS_DOMAIN_ID"])
    env["ROS_DOMAIN_ID"] = str(1 + (base + next(_domains)) % 100)
    env["PYTHONUNBUFFERED"] = "1"
    return env


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
