"""Camera-lidar calibration status: calibration_status_node (any backend).

    ros2 launch awml_deploy_nodes calibration_status.launch.py mode:=periodic \\
        pointcloud_topic:=/sensing/lidar/concatenated/pointcloud \\
        image_topic:=/sensing/camera/camera0/image_rect_color camera_info_topic:=/sensing/camera/camera0/camera_info

Arguments: pointcloud_topic, image_topic, camera_info_topic, odometry_topic, output_topic, backend, mode, bundle_dir
(an export work_dir of config/calibration_status.yaml), config, checkpoint (all three empty: the shipped
checkpoint), param_file (defaults to the installed config/calibration_status_node.param.yaml). Arguments that set
parameters override the parameter file (their defaults are the file's values).

Without `launch` (not installable everywhere), the same node starts with this one command, from the workspace
root (`ros2 run awml_deploy_nodes calibration_status_node --ros-args ...` on a ROS install):

$ install/awml_deploy_nodes/lib/awml_deploy_nodes/calibration_status_node --ros-args --params-file config/calibration_status_node.param.yaml -p backend:=onnxruntime -p mode:=periodic -r '~/input/pointcloud:=/sensing/lidar/concatenated/pointcloud' -r '~/input/image:=/sensing/camera/camera0/image_rect_color' -r '~/input/camera_info:=/sensing/camera/camera0/camera_info' -r '~/input/odometry:=/localization/kinematic_state' -r '~/output/calibration_status:=/sensing/calibration_status'
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    param_file = PathJoinSubstitution([FindPackageShare("awml_deploy_nodes"), "config",
                                       "calibration_status_node.param.yaml"])

    def text(name: str) -> ParameterValue:  # an empty argument stays an empty string (not YAML null)
        return ParameterValue(LaunchConfiguration(name), value_type=str)

    return LaunchDescription([
        DeclareLaunchArgument("pointcloud_topic", default_value="/sensing/lidar/concatenated/pointcloud",
                              description="sensor_msgs/PointCloud2 input"),
        DeclareLaunchArgument("image_topic", default_value="/sensing/camera/camera0/image_rect_color",
                              description="sensor_msgs/Image input"),
        DeclareLaunchArgument("camera_info_topic", default_value="/sensing/camera/camera0/camera_info",
                              description="sensor_msgs/CameraInfo input"),
        DeclareLaunchArgument("odometry_topic", default_value="/localization/kinematic_state",
                              description="nav_msgs/Odometry input (used with use_odometry in the param file)"),
        DeclareLaunchArgument("output_topic", default_value="/sensing/calibration_status",
                              description="awml_deploy_msgs/CalibrationStatus output"),
        DeclareLaunchArgument("backend", default_value="onnxruntime",
                              description="pytorch, onnxruntime, onnxruntime_int8 or tensorrt"),
        DeclareLaunchArgument("mode", default_value="periodic", description="periodic, manual or active"),
        DeclareLaunchArgument("bundle_dir", default_value="", description="export bundle (work_dir); may be empty"),
        DeclareLaunchArgument("config", default_value="", description="deploy config YAML; may be empty"),
        DeclareLaunchArgument("checkpoint", default_value="", description="checkpoint path or package:// URI"),
        DeclareLaunchArgument("param_file", default_value=param_file,
                              description="node parameter file (ros__parameters)"),
        Node(
            package="awml_deploy_nodes",
            executable="calibration_status_node",
            name="calibration_status_node",
            output="screen",
            parameters=[
                LaunchConfiguration("param_file"),
                {
                    "backend": text("backend"),
                    "mode": text("mode"),
                    "bundle_dir": text("bundle_dir"),
                    "config": text("config"),
                    "checkpoint": text("checkpoint"),
                },
            ],
            remappings=[
                ("~/input/pointcloud", LaunchConfiguration("pointcloud_topic")),
                ("~/input/image", LaunchConfiguration("image_topic")),
                ("~/input/camera_info", LaunchConfiguration("camera_info_topic")),
                ("~/input/odometry", LaunchConfiguration("odometry_topic")),
                ("~/output/calibration_status", LaunchConfiguration("output_topic")),
            ],
        ),
    ])
