"""Accuracy and latency metrics; plain numpy, no ROS."""
