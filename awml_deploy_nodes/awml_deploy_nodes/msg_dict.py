"""Generic ROS message <-> plain dict, for recording outputs as JSON (rosidl_runtime_py is not on PyPI)."""

from __future__ import annotations

import array
from typing import Any

import numpy as np


def message_to_dict(msg: Any) -> Any:
    """Recursively turn a ROS message into dicts, lists and scalars (field order kept)."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {name: message_to_dict(getattr(msg, name)) for name in msg.get_fields_and_field_types()}
    if isinstance(msg, (list, tuple)):
        return [message_to_dict(v) for v in msg]
    if isinstance(msg, (array.array, np.ndarray)):
        return msg.tolist()
    if isinstance(msg, (bytes, bytearray)):
        return list(msg)
    if isinstance(msg, np.generic):
        return msg.item()
    return msg
