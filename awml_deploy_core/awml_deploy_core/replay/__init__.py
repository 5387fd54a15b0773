"""Rosbag replay: offline evaluation (pipeline on every cloud of a bag), scoring shared with the real-time path,
pass/fail criteria and reports. No ROS imports: bags are read with the pure-Python ``rosbags``."""

from .criteria import ReplayCriteria, apply_criteria, load_criteria
from .scoring import (FrameRecord, FrameScorer, GroundTruth, ReplayScores, detected_objects_to_boxes, records_from_bag,
                      score_frames)

__all__ = [
    "FrameRecord", "FrameScorer", "GroundTruth", "ReplayCriteria", "ReplayScores", "apply_criteria",
    "detected_objects_to_boxes", "load_criteria", "records_from_bag", "score_frames",
]
