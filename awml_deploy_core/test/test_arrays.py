"""tensor_view: no copy, no warning, for writable and read-only arrays alike."""

from __future__ import annotations

import warnings

import numpy as np

from awml_deploy_core.arrays import tensor_view


def test_read_only_array_is_viewed_without_a_warning():
    buf = bytearray(np.arange(12, dtype=np.float32).tobytes())
    a = np.frombuffer(bytes(buf), np.float32).reshape(3, 4)  # read-only, like a message's bytes
    assert not a.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = tensor_view(a)
    assert t.data_ptr() == a.ctypes.data and t.tolist() == a.tolist()


def test_writable_array_shares_memory():
    a = np.zeros((2, 3), np.float32)
    tensor_view(a)[0, 1] = 5.0
    assert a[0, 1] == 5.0
