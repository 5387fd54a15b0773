"""Rosbag replay: offline evaluation (:mod:`.offline`: pipeline on every cloud of a bag), real-time scoring of a
node's recorded outputs (:mod:`.realtime`), one scorer (:mod:`.scoring`), one summary schema (:mod:`.summary`),
the command-line arguments both replays share (:mod:`.arguments`), pass/fail criteria and reports. No ROS
imports: bags are read with the pure-Python ``rosbags``. What depends on the kind of model (lidar 3D, camera 2D, calibration
status) is the family's replay task (:mod:`.task`, :mod:`.lidar3d`, :mod:`.camera2d`, :mod:`.calibration`)."""

from .criteria import ReplayCriteria, apply_criteria, load_criteria
from .scoring import (FrameRecord, FrameScorer, GroundTruth, ReplayScores, detected_objects_to_boxes, records_from_bag,
                      score_frames)
from .summary import ReplaySummary
from .task import ReplayTask, task_of

__all__ = [
    "FrameRecord", "FrameScorer", "GroundTruth", "ReplayCriteria", "ReplayScores", "ReplaySummary", "ReplayTask", "apply_criteria",
    "detected_objects_to_boxes", "load_criteria", "records_from_bag", "score_frames", "task_of",
]
