"""Real-time replay evaluation, the ROS way: bag_player -> centerpoint_node -> output_recorder, then score.

    ros2 launch awml_deploy_nodes replay_evaluation.launch.py bag:=/data/drive output_bag:=/tmp/drive_rec \\
        bundle_dir:=/path/to/work_dir rate:=1.0
    ros2 run awml_deploy_nodes replay_evaluation /data/drive --config config/centerpoint.yaml \\
        --recording /tmp/drive_rec --out /tmp/drive_rec_eval [--criteria config/replay_criteria.yaml]

The launch file starts three nodes: output_recorder (records the node's DetectedObjects and InferenceStats and
the input clouds' headers, each with its receive time, into the mcap bag output_bag, which must not exist);
centerpoint_node (the same node and parameters as centerpoint.launch.py); bag_player (plays the lidar topic of
`bag` at `rate`, header stamps unchanged, once two subscribers matched: the node, whose subscription exists once
its model is loaded, and the recorder). When the player has played the bag, the launch shuts down `grace_s`
later (SIGINT: the recorder closes its bag). The second command scores the recording exactly like the offline
replay (`awml-deploy replay-eval`): drops listed and kept out of AP, end-to-end latency from the input's arrival
at the recorder to the output's, output rate; give it the deploy config whose model the node ran.

Arguments: bag, output_bag, rate, input_topic (the lidar topic in the bag), output_topic, backend, bundle_dir,
config, checkpoint, param_file (as in centerpoint.launch.py), grace_s.

This launch file replays lidar drives through centerpoint_node. A camera (2D) model's replay runs through
yolox_node with the one command below and `--config config/yolox.yaml` (it picks the node, the image topic and the
recorder's message types from the config's family).

Without `launch` (not installable everywhere), one command starts the same three processes, stops them and
scores (from the workspace root; `ros2 run awml_deploy_nodes replay_evaluation ...` on a ROS install):

$ install/awml_deploy_nodes/lib/awml_deploy_nodes/replay_evaluation /data/drive --config config/centerpoint.yaml --backend onnxruntime --rate 1.0 --out /tmp/drive_eval
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, RegisterEventHandler, Shutdown, TimerAction
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

STATS_TOPIC = "/centerpoint/debug/inference_stats"  # centerpoint_node's ~/debug/inference_stats, node name centerpoint


def generate_launch_description() -> LaunchDescription:
    param_file = PathJoinSubstitution([FindPackageShare("awml_deploy_nodes"), "config", "centerpoint_node.param.yaml"])

    def text(name: str) -> ParameterValue:  # an empty argument stays an empty string (not YAML null)
        return ParameterValue(LaunchConfiguration(name), value_type=str)

    player = Node(
        package="awml_deploy_nodes",
        executable="bag_player",
        name="bag_player",
        output="screen",
        parameters=[{
            "bag": text("bag"),
            "topics": [[LaunchConfiguration("input_topic")]],  # a list of one string
            "rate": ParameterValue(LaunchConfiguration("rate"), value_type=float),
            "wait_for_subscribers": 2,  # the node and the recorder
        }],
    )
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 to play (folder, or a .mcap / .db3 file)"),
        DeclareLaunchArgument("output_bag", description="recording to create (mcap rosbag2 folder; must not exist)"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
        DeclareLaunchArgument("input_topic", default_value="/sensing/lidar/concatenated/pointcloud",
                              description="sensor_msgs/PointCloud2 topic of the bag, played to the node"),
        DeclareLaunchArgument("output_topic", default_value="/perception/object_recognition/detection/awml/objects",
                              description="awml_deploy_msgs/DetectedObjects output of the node"),
        DeclareLaunchArgument("backend", default_value="onnxruntime", description="pytorch, onnxruntime or tensorrt"),
        DeclareLaunchArgument("bundle_dir", default_value="", description="export bundle (work_dir); may be empty"),
        DeclareLaunchArgument("config", default_value="", description="deploy config YAML; may be empty"),
        DeclareLaunchArgument("checkpoint", default_value="", description="checkpoint path or package:// URI"),
        DeclareLaunchArgument("param_file", default_value=param_file,
                              description="centerpoint_node parameter file (ros__parameters)"),
        DeclareLaunchArgument("grace_s", default_value="3.0",
                              description="seconds between the end of the bag and the shutdown (last outputs)"),
        Node(
            package="awml_deploy_nodes",
            executable="output_recorder",
            name="output_recorder",
            output="screen",
            parameters=[{
                "output_bag": text("output_bag"),
                "input_topic": text("input_topic"),
                "objects_topic": text("output_topic"),
                "stats_topic": STATS_TOPIC,
            }],
        ),
        Node(
            package="awml_deploy_nodes",
            executable="centerpoint_node",
            name="centerpoint",
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
                ("~/input/pointcloud", LaunchConfiguration("input_topic")),
                ("~/output/objects", LaunchConfiguration("output_topic")),
            ],
        ),
        player,
        RegisterEventHandler(OnProcessExit(
            target_action=player,
            on_exit=[TimerAction(period=LaunchConfiguration("grace_s"),
                                 actions=[Shutdown(reason="the bag was played")])],
        )),
    ])
