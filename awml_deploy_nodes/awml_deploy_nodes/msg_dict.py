"""Generic ROS message <-> plain dict, for recording outputs as JSON (rosidl_runtime_py is not on PyPI)."""

from __future__ import annotations

import array
import importlib
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


def message_type(name: str) -> type:
    """`pkg/msg/Type` (as `ros2 topic` spells it) -> the message class."""
    try:
        pkg, kind, cls = name.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), cls)
    except (ValueError, ImportError, AttributeError):
        raise ValueError(f"unknown message type {name!r}: expected pkg/msg/Type of an installed package") from None
