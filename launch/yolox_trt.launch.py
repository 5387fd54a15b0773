"""YOLOX on TensorRT: yolox_node running the engine of an export bundle, one camera.

    ros2 launch awml_deploy_nodes yolox_trt.launch.py bundle_dir:=/path/to/work_dir precision:=fp16 \\
        input_topic:=/sensing/camera/camera0/image_rect_color

Arguments: input_topic, output_topic, bundle_dir (export work_dir with manifest.json and the trt_* engine, from
`awml-deploy export config/yolox.yaml --mode both --device cuda`), precision (the engine's export.tensorrt.precision;
the node refuses an engine built with another), param_file (defaults to the installed
config/yolox_node_trt.param.yaml). Arguments that set parameters override the parameter file (their defaults are
the file's values).

Without `launch` (not installable everywhere), the same node starts with this one command, from the workspace
root (`ros2 run awml_deploy_nodes yolox_node --ros-args ...` on a ROS install):

$ install/awml_deploy_nodes/lib/awml_deploy_nodes/yolox_node --ros-args --params-file config/yolox_node_trt.param.yaml -p bundle_dir:=work_dirs/yolox -p precision:=fp16 -r '~/input/image:=/sensing/camera/camera0/image_rect_color' -r '~/output/detections:=/perception/object_recognition/detection/awml/camera0/detections'
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    param_file = PathJoinSubstitution([FindPackageShare("awml_deploy_nodes"), "config", "yolox_node_trt.param.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("input_topic", default_value="/sensing/camera/camera0/image_rect_color",
                              description="sensor_msgs/Image input"),
        DeclareLaunchArgument("output_topic",
                              default_value="/perception/object_recognition/detection/awml/camera0/detections",
                              description="awml_deploy_msgs/Detections2D output"),
        DeclareLaunchArgument("bundle_dir", default_value="work_dirs/yolox",
                              description="export bundle (work_dir) holding manifest.json and the TensorRT engine"),
        DeclareLaunchArgument("precision", default_value="fp16",
                              description="precision policy the engine was built with: auto, fp16, fp32_tf32, "
                                          "strongly_typed or int8"),
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
                    "backend": "tensorrt",
                    "bundle_dir": ParameterValue(LaunchConfiguration("bundle_dir"), value_type=str),
                    "precision": ParameterValue(LaunchConfiguration("precision"), value_type=str),
                },
            ],
            remappings=[
                ("~/input/image", LaunchConfiguration("input_topic")),
                ("~/output/detections", LaunchConfiguration("output_topic")),
            ],
        ),
    ])
