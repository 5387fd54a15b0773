"""numpy -> torch without a copy, for read-only inputs too."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch


def tensor_view(array: np.ndarray) -> torch.Tensor:
    """A tensor on ``array``'s memory. The pipelines never write to their inputs, which are often read-only (a ROS
    message's bytes, a bag reader's buffer); torch warns about those once per process, so the warning is silenced
    here instead of paying a copy per frame."""
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return torch.from_numpy(array)


@functools.lru_cache(maxsize=256)
def device_table(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor on ``device``, made once: per-column constants, thresholds, radii.

    A device tensor, not a Python scalar: CUDA kernels may turn division by a CPU scalar into a multiplication
    by its reciprocal, which would break CPU/CUDA bit-equality; and made once per device because a host-to-device
    copy per frame would synchronize (and cannot be captured in a CUDA graph), a fill per use would be a graph node.
    """
    return torch.tensor(values, dtype=dtype, device=device)
