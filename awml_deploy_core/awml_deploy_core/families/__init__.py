"""Model families: one declaration per family, found by name (``DeployConfig.family``).

The registry holds import paths, so naming a family imports only that family's code. Adding a family is one line
here plus its declaration module (see the README, "Adding a model family").
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from .base import GraphSpec, ModelFamily, qdq_artifact, qdq_file_name

FAMILIES: dict[str, str] = {
    "centerpoint": "awml_deploy_core.families.centerpoint:FAMILY",
    "yolox": "awml_deploy_core.families.yolox:FAMILY",
    "calibration_status": "awml_deploy_core.families.calibration_status:FAMILY",
}


def get_family(name: str) -> ModelFamily:
    """The declaration of family ``name``; ConfigError naming the known ones otherwise."""
    target = FAMILIES.get(name)
    if target is None:
        raise ConfigError(f"family: unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["FAMILIES", "GraphSpec", "ModelFamily", "get_family", "qdq_artifact", "qdq_file_name"]
