"""The box container every stage agrees on: the pipeline emits it, metrics and nodes consume it.

Conventions (the same in the dataset, the model, the metrics and the ROS messages):
- boxes are ``[x, y, z, length, width, height, yaw]`` in the lidar frame, metres and radians;
- ``z`` is the box's gravity centre (as in AWML/mmdet3d v2 info files, origin (0.5, 0.5, 0.5));
- ``length`` runs along the heading, ``yaw`` is counter-clockwise about +z from +x;
- ``labels`` index into the model's ``class_names``;
- ``velocities`` are ``[vx, vy]`` in m/s in the lidar frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _empty(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


@dataclass
class Boxes3D:
    boxes: np.ndarray = field(default_factory=lambda: _empty((0, 7), np.float32))
    scores: np.ndarray = field(default_factory=lambda: _empty((0,), np.float32))
    labels: np.ndarray = field(default_factory=lambda: _empty((0,), np.int64))
    velocities: np.ndarray = field(default_factory=lambda: _empty((0, 2), np.float32))

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 7)
        n = len(self.boxes)
        # Scores and velocities may be left out (ground truth): they default to 1 and 0.
        scores = None if self.scores is None else np.asarray(self.scores, np.float32).reshape(-1)
        self.scores = np.ones(n, np.float32) if scores is None or (len(scores) == 0 and n) else scores
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        vel = None if self.velocities is None else np.asarray(self.velocities, np.float32).reshape(-1, 2)
        self.velocities = np.zeros((n, 2), np.float32) if vel is None or (len(vel) == 0 and n) else vel
        lengths = {len(self.scores), len(self.labels), len(self.velocities)}
        if lengths != {n}:
            raise ValueError(
                f"Boxes3D fields disagree in length: boxes {n}, scores {len(self.scores)}, "
                f"labels {len(self.labels)}, velocities {len(self.velocities)}"
            )

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, index: np.ndarray) -> "Boxes3D":
        """Subset by boolean mask or integer index, keeping all fields aligned."""
        return Boxes3D(self.boxes[index], self.scores[index], self.labels[index], self.velocities[index])

    @staticmethod
    def concatenate(parts: list["Boxes3D"]) -> "Boxes3D":
        if not parts:
            return Boxes3D()
        return Boxes3D(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.velocities for p in parts]),
        )
