"""YOLOX camera 2D detection with any backend (pytorch, onnxruntime, tensorrt): yolox_node, one camera.

    ros2 launch awml_deploy_nodes yolox.launch.py backend:=onnxruntime bundle_dir:=/path/to/work_dir \\
        input_topic:=/sensing/camera/camera0/image_rect_color

Arguments: input_topic (sensor_msgs/Image), output_topic (awml_deploy_msgs/Detections2D), backend, bundle_dir (an
export work_dir), config (a deploy config YAML, when there is no bundle), checkpoint (overrides the bundle's/config's;
alone, its stored model config is used; all three empty: the shipped YOLOX), param_file (defaults to the installed
config/yolox_node.param.yaml; set camera_names and compressed there for several cameras or JPEG/PNG input).
Arguments that set parameters override the parameter file (their defaults are the file's values).

Without `launch` (not installable everywhere), the same node starts with this one command, from the workspace
root (`ros2 run awml_deploy_nodes yolox_node --ros-args ...` on a ROS install):

$ install/awml_deploy_nodes/lib/awml_deploy_nodes/yolox_node --ros-args --params-file config/yolox_node.param.yaml -p backend:=onnxruntime -r '~/input/image:=/sensing/camera/camera0/image_rect_color' -r '~/output/detections:=/perception/object_recognition/detection/awml/camera0/detections'
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    param_file = PathJoinSubstitution([FindPackageShare("awml_deploy_nodes"), "config", "yolox_node.param.yaml"])

    def text(name: str) -> ParameterValue:  # an empty argument stays an empty string (not YAML null)
        return ParameterValue(LaunchConfiguration(name), value_type=str)

    return LaunchDescription([
        DeclareLaunchArgument("input_topic", default_value="/sensing/camera/camera0/image_rect_color",
                              description="sensor_msgs/Image input"),
        DeclareLaunchArgument("output_topic",
                              default_value="/perception/object_recognition/detection/awml/camera0/detections",
                              description="awml_deploy_msgs/Detections2D output"),
        DeclareLaunchArgument("backend", default_value="onnxruntime",
                              description="pytorch, onnxruntime, onnxruntime_int8 or tensorrt"),
        DeclareLaunchArgument("bundle_dir", default_value="", description="export bundle (work_dir); may be empty"),
        DeclareLaunchArgument("config", default_value="", description="deploy config YAML; may be empty"),
        DeclareLaunchArgument("checkpoint", default_value="", description="checkpoint path or package:// URI"),
        DeclareLaunchArgument("param_file", default_value=param_file,
                              description="node parameter file (ros__parameters)"),
        Node(
            package="awml_deploy_nodes",
            executable="yolox_node",
            name="yolox_node",
            output="screen",
            parameters=[
                LaunchConfiguration("param_file"),
                {
                    "backend": text("backend"),
                    "bundle_dir": text("bundle_dir"),
                    "config": text("config"),
                    "checkpoint": text("checkpoint"),
                },
            ],
            remappings=[
                ("~/input/image", LaunchConfiguration("input_topic")),
                ("~/output/detections", LaunchConfiguration("output_topic")),
            ],
        ),
    ])
