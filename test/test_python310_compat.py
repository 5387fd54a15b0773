"""Everything that ships or tests runs on Python 3.10 (ROS 2 Humble's Python): checked with vermin.

No syntax or standard-library API newer than 3.10 in awml_deploy_core, awml_deploy_nodes, launch, tools, test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("awml_deploy_core", "awml_deploy_nodes", "launch", "tools", "test")


def test_nothing_newer_than_python_310():
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    if not Path(vermin).exists():
        pytest.fail("vermin is not installed; pip install -r requirements.txt")
    # --eval-annotations: annotations count too (they are evaluated by pydantic and dataclasses);
    res = subprocess.run([vermin, "-t=3.10-", "--no-tips", "--violations", "--eval-annotations",
                          "--no-parse-comments", *FOLDERS], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"vermin found code needing Python > 3.10:\n{res.stdout}{res.stderr}"
    assert "Minimum required versions" in res.stdout or res.stdout.strip() == "", res.stdout
