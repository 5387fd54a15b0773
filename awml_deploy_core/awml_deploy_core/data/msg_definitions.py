"""The text of our ROS 2 message definitions (``awml_deploy_msgs/msg/*.msg``), kept here as constants.

The core package reads and writes bags with ``rosbags`` and must work pip-installed, without the
``awml_deploy_msgs`` package; the definitions are registered in a ``rosbags`` typestore from this text.
``awml_deploy_core/test/test_rosbag_io.py`` asserts that every constant equals its ``.msg`` file byte for
byte, so the two cannot drift: edit the ``.msg`` file, then paste it here.

Autoware's label numbers (``DetectedObject``'s constants) by class name are parsed from this text in
:mod:`awml_deploy_core.labels`.
"""

from __future__ import annotations

PACKAGE = "awml_deploy_msgs"

CALIBRATION_STATUS_MSG = """\
# Result of the camera-lidar calibration-status classifier for one image/cloud pair.
# header.stamp: stamp of the image that was classified; header.frame_id: camera_frame_id.
std_msgs/Header header
# True when calibrated_score >= the node's decision threshold.
bool is_calibrated
# Softmax probabilities in [0, 1] of the two classes; they sum to 1.
float32 calibrated_score
float32 miscalibrated_score
# Frames whose extrinsic calibration was judged.
string camera_frame_id
string lidar_frame_id
"""

DETECTED_OBJECT_MSG = """\
# One 3D detection in the frame of the enclosing DetectedObjects header.
# Labels follow Autoware's autoware_perception_msgs/ObjectClassification.
uint8 UNKNOWN=0
uint8 CAR=1
uint8 TRUCK=2
uint8 BUS=3
uint8 TRAILER=4
uint8 MOTORCYCLE=5
uint8 BICYCLE=6
uint8 PEDESTRIAN=7

# Autoware class label (one of the constants above).
uint8 label
# Detection confidence in [0, 1] (Autoware's existence_probability).
float32 score
# Box centre (gravity centre, metres) and orientation in header.frame_id.
# The orientation is a pure rotation about +z (yaw, counter-clockwise from +x); x and y of the
# quaternion are 0.
geometry_msgs/Pose pose
# Box size in metres: x = length (along the heading), y = width, z = height.
geometry_msgs/Vector3 dimensions
# Velocity of the object in header.frame_id, metres per second (x, y; z is 0).
# Valid only when has_velocity is true.
geometry_msgs/Vector3 velocity
bool has_velocity
"""

DETECTED_OBJECTS_MSG = """\
# All detections of one input frame.
# header.stamp is the stamp of the input point cloud; header.frame_id is its frame (or the
# node's frame_id override).
std_msgs/Header header
DetectedObject[] objects
"""

DETECTION2D_MSG = """\
# One 2D detection in image pixel coordinates (origin top-left, x right, y down).
# Label index into the model's class list (see the publishing node's class_names parameter).
uint8 label
# Detection confidence in [0, 1].
float32 score
# Box corners in pixels of the (undistorted) input image; x_max > x_min, y_max > y_min.
float32 x_min
float32 y_min
float32 x_max
float32 y_max
"""

DETECTIONS2D_MSG = """\
# All 2D detections of one image. header.stamp and header.frame_id are those of the input image
# (the camera optical frame).
std_msgs/Header header
Detection2D[] detections
"""

INFERENCE_STATS_MSG = """\
# Per-frame timing of one perception node, published on ~/debug/inference_stats.
# header.stamp: stamp of the input message that was processed; header.frame_id: its frame.
std_msgs/Header header
# Backend that ran the model: "pytorch", "onnxruntime" or "tensorrt".
string backend
# Numerical precision of that backend: "fp32", "tf32", "fp16" or "int8".
string precision
# Wall-clock durations in milliseconds, measured inside the node for this frame.
float64 preprocess_ms
float64 inference_ms
float64 postprocess_ms
# preprocess + inference + postprocess (+ message conversion), milliseconds.
float64 total_ms
# Input received (its subscription callback) -> its processing started, milliseconds: the input's check, the
# hand-over to the worker thread and any wait behind the previous input. queue_ms + total_ms minus the three
# stages above is the node's own share of pipeline_latency_ms.
float64 queue_ms
# Publish time minus the input header stamp, milliseconds (includes transport and queueing).
float64 pipeline_latency_ms
# Number of input elements (points for a cloud, pixels for an image).
uint32 input_size
# Number of outputs published (objects or detections).
uint32 output_count
"""

# Full type name ("awml_deploy_msgs/msg/DetectedObjects") -> .msg text.
MSG_DEFINITIONS: dict[str, str] = {
    f"{PACKAGE}/msg/CalibrationStatus": CALIBRATION_STATUS_MSG,
    f"{PACKAGE}/msg/DetectedObject": DETECTED_OBJECT_MSG,
    f"{PACKAGE}/msg/DetectedObjects": DETECTED_OBJECTS_MSG,
    f"{PACKAGE}/msg/Detection2D": DETECTION2D_MSG,
    f"{PACKAGE}/msg/Detections2D": DETECTIONS2D_MSG,
    f"{PACKAGE}/msg/InferenceStats": INFERENCE_STATS_MSG,
}


DETECTED_OBJECTS = f"{PACKAGE}/msg/DetectedObjects"
INFERENCE_STATS = f"{PACKAGE}/msg/InferenceStats"

