"""Training of the small CenterPoint on synthetic scenes (targets, augmentation, the train command)."""


# Training command per model family (``awml-deploy train --family NAME ...``); CenterPoint's stays the default.
TRAINERS: dict[str, str] = {
    "centerpoint": "awml_deploy_core.training.train:main",
    "yolox": "awml_deploy_core.training.yolox_train:main",
    "calibration_status": "awml_deploy_core.training.calibration_train:main",
}


def train_entry(argv: list[str]) -> int:
    """Dispatch ``--family`` (default centerpoint) to that family's training command; the rest of argv is its own."""
    import importlib

    from ..errors import UsageError

    argv = list(argv)
    family = "centerpoint"
    if "--family" in argv:
        i = argv.index("--family")
        if i + 1 >= len(argv):
            raise UsageError("train: --family needs a value (" + ", ".join(sorted(TRAINERS)) + ")")
        family = argv[i + 1]
        if family == "centerpoint":
            del argv[i:i + 2]  # the CenterPoint trainer takes no --family
    target = TRAINERS.get(family)
    if target is None:
        raise UsageError(f"train: no training command for family {family!r}; known: {', '.join(sorted(TRAINERS))}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)(argv)
