"""numpy -> torch without a copy, for read-only inputs too."""

from __future__ import annotations

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
