"""CenterPoint on TensorRT: centerpoint_node running the engines of an export bundle.

    ros2 launch awml_deploy_nodes centerpoint_trt.launch.py bundle_dir:=/path/to/work_dir precision:=fp16 \\
        input_topic:=/sensing/lidar/concatenated/pointcloud

Arguments: input_topic, output_topic, bundle_dir (export work_dir with manifest.json and the trt_* engines, from
`awml-deploy export CONFIG --mode both --device cuda`), precision (the engines' export.tensorrt.precision; the
node refuses engines built with another), param_file (defaults to the installed config/centerpoint_trt.param.yaml).
Arguments that set parameters override the parameter file (their defaults are the file's values).

Without `launch` (not installable everywhere), the same node starts with this one command, from the workspace
root (`ros2 run awml_deploy_nodes centerpoint_node --ros-args ...` on a ROS install):

$ install/awml_deploy_nodes/lib/awml_deploy_nodes/centerpoint_node --ros-args --params-file config/centerpoint_trt.param.yaml -p bundle_dir:=work_dirs/centerpoint -p precision:=fp16 -r '~/input/pointcloud:=/sensing/lidar/pointcloud' -r '~/output/objects:=/perception/object_recognition/detection/awml/objects'
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    param_file = PathJoinSubstitution([FindPackageShare("awml_deploy_nodes"), "config", "centerpoint_trt.param.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("input_topic", default_value="/sensing/lidar/pointcloud",
                              description="sensor_msgs/PointCloud2 input"),
        DeclareLaunchArgument("output_topic", default_value="/perception/object_recognition/detection/awml/objects",
                              description="awml_deploy_msgs/DetectedObjects output"),
        DeclareLaunchArgument("bundle_dir", default_value="work_dirs/centerpoint",
                              description="export bundle (work_dir) holding manifest.json and the TensorRT engines"),
        DeclareLaunchArgument("precision", default_value="fp16",
                              description="precision policy the engines were built with: auto, fp16, fp32_tf32, "
                                          "strongly_typed or int8"),
        DeclareLaunchArgument("param_file", default_value=param_file,
                              description="node parameter file (ros__parameters)"),
        Node(
            package="awml_deploy_nodes",
            executable="centerpoint_node",
            name="centerpoint",
            output="screen",
            parameters=[
                LaunchConfiguration("param_file"),
                {
                    "backend": "tensorrt",
                    "bundle_dir": ParameterValue(LaunchConfiguration("bundle_dir"), value_type=str),
                    "precision": ParameterValue(LaunchConfiguration("precision"), value_type=str),
                },
            ],
            remappings=[
                ("~/input/pointcloud", LaunchConfiguration("input_topic")),
                ("~/output/objects", LaunchConfiguration("output_topic")),
            ],
        ),
    ])
