"""Checkpoint I/O: ``{"state_dict", "model_config", "meta"}``; also reads mmdet3d / AWML checkpoints.

Every failure is a ``CheckpointError`` with a one-line message naming the offending keys and shapes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from pydantic import ValidationError

from ..bundle import atomic_write
from ..config import CenterPointModelConfig, format_validation_error
from ..errors import CheckpointError
from .centerpoint import CenterPoint, build_centerpoint

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "centerpoint_small.pth"
_SHOW = 3  # keys named per category in an error message
log = logging.getLogger(__name__)


def save_checkpoint(model: CenterPoint, cfg: CenterPointModelConfig, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write atomically (:func:`awml_deploy_core.bundle.atomic_write`: temp file, fsync, rename)."""
    payload = {
        "state_dict": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "model_config": cfg.model_dump(),
        "meta": dict(meta or {}),
    }
    return atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return f"{shown}{', ...' if len(keys) > _SHOW else ''}"


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt, truncated, not a torch file, or pickles non-tensor objects
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint (corrupt or not a weights-only torch file): {first[:160]}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def extract_state_dict(obj: dict[str, Any], path: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(sd).__name__}, expected a mapping of tensors")
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue  # mmengine checkpoints may carry non-tensor entries next to the weights
        key = k[len("module.") :] if k.startswith("module.") else k
        out[key] = v
    if not out:
        raise CheckpointError(f"{path}: no tensors found in the checkpoint's state dict")
    return out


def check_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], path: Path | str, name: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys [{_names(missing)}]")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys [{_names(unexpected)}]")
    if wrong:
        shapes = ", ".join(
            f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong[:_SHOW]
        )
        parts.append(f"wrong shape for {len(wrong)} keys [{shapes}{', ...' if len(wrong) > _SHOW else ''}]")
    raise CheckpointError(f"{path}: state dict does not fit model {name!r}: " + "; ".join(parts))


def parse_stored_config(obj: dict[str, Any], path: Path, config_cls: type[Any]) -> Any:
    """The ``model_config`` a read checkpoint carries, validated as ``config_cls``; one-line CheckpointError else."""
    stored = obj.get("model_config")
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: checkpoint has no 'model_config'; pass the model config explicitly")
    try:
        return config_cls.model_validate(stored)
    except ValidationError as e:
        raise CheckpointError(f"{path}: stored model_config is invalid: "
                              f"{format_validation_error(e, 'model_config')}") from None


def stored_model_config(path: str | Path, config_cls: type[Any] = CenterPointModelConfig) -> Any:
    """The model config a checkpoint file carries (``model_config``), validated."""
    path = Path(path)
    return parse_stored_config(_read(path, "cpu"), path, config_cls)


def config_differences(stored: dict[str, Any], cfg: CenterPointModelConfig) -> list[str]:
    """Settings a checkpoint was trained/saved with (its ``model_config``) that differ from ``cfg``, one
    ``"key: checkpoint X, config Y"`` per difference (nested settings as ``nms.circle_radius``). Only keys both
    know are compared; ``name`` is not a setting."""
    now = cfg.model_dump(mode="json")
    out = []
    for key, value in now.items():
        if key == "name" or key not in stored:
            continue
        old = stored[key]
        if isinstance(value, dict) and isinstance(old, dict):
            out += [f"{key}.{k}: checkpoint {old[k]!r}, config {v!r}" for k, v in value.items()
                    if k in old and old[k] != v]
        elif old != value:
            out.append(f"{key}: checkpoint {old!r}, config {value!r}")
    return out


def warn_config_differences(path: Path | str, stored: Any, cfg: CenterPointModelConfig) -> list[str]:
    """Log ONE warning line naming every setting in which the checkpoint's stored ``model_config`` differs from
    the deploy config (the deploy config's values are the ones used). Returns the differences."""
    if not isinstance(stored, dict):
        return []
    diff = config_differences(stored, cfg)
    if diff:
        log.warning("%s: checkpoint settings differ from the deploy config, which is what runs: %s", path,
                    "; ".join(diff))
    return diff


def load_checkpoint(
    path: str | Path, cfg: CenterPointModelConfig | None = None, map_location: str | torch.device = "cpu"
) -> tuple[CenterPoint, CenterPointModelConfig]:
    """Build the model (from ``cfg`` or the checkpoint's ``model_config``) and load the weights strictly.

    The checkpoint's ``meta`` (if any) is attached as ``model.checkpoint_meta``. With ``cfg`` given and a stored
    ``model_config``, settings that differ (points per pillar, NMS radii, ...) are logged in one warning line
    and attached as ``model.checkpoint_config_differences``.
    """
    return load_weights(path, cfg, CenterPointModelConfig, build_centerpoint, map_location)


def load_weights(path: str | Path, cfg: Any, config_cls: type[Any], build: Callable[[Any], torch.nn.Module],
                 map_location: str | torch.device = "cpu",
                 rename: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
                 ) -> tuple[Any, Any]:
    """Every family's checkpoint loading: read, the config (given, else the stored ``model_config`` parsed as
    ``config_cls``), the state dict (``rename`` maps foreign keys to ours), ``build(cfg)``, the strict name check,
    then ``checkpoint_meta`` and ``checkpoint_config_differences`` attached to the model."""
    path = Path(path)
    obj = _read(path, map_location)
    cfg_given = cfg is not None
    if cfg is None:
        cfg = parse_stored_config(obj, path, config_cls)
    sd = extract_state_dict(obj, path)
    if rename is not None:
        sd = rename(sd)
    model = build(cfg)
    check_state_dict(model, sd, path, cfg.name)
    model.load_state_dict(sd, strict=False)  # strictness checked above (num_batches_tracked may be absent)
    model.checkpoint_meta = dict(obj.get("meta") or {})  # type: ignore[attr-defined]
    model.checkpoint_config_differences = (  # type: ignore[attr-defined]
        warn_config_differences(path, obj.get("model_config"), cfg) if cfg_given else [])
    return model.to(map_location).eval(), cfg
