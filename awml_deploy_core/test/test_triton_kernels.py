"""The hand-written Triton kernels (``features_triton``, ``voxelize_triton``) checked without a GPU: Triton's
interpreter runs them on CPU tensors against the torch code, bit for bit (``triton_interpreter_cases.py``).

Runs where ``triton`` imports (it is in requirements.txt for this test); a GPU run of ``test_gpu_paths.py`` holds
the compiled kernels to the same results.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (pip install triton)")
def test_triton_kernels_in_the_interpreter_equal_the_torch_code():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          "--rootdir", str(HERE), "-c", os.devnull, str(HERE / "triton_interpreter_cases.py")],
                         env=env, capture_output=True, text=True, timeout=600)
    tail = (run.stdout + run.stderr)[-6000:]
    assert run.returncode == 0, tail
    assert " passed" in run.stdout and "skipped" not in run.stdout, tail
