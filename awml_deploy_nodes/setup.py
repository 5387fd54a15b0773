from glob import glob

from setuptools import find_packages, setup

PACKAGE = "awml_deploy_nodes"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="ROS 2 nodes running the awml_deploy pipelines.",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # The workspace-level launch/ and config/ folders are installed into this package's share.
        (f"share/{PACKAGE}/launch", sorted(glob("../launch/*.launch.py"))),
        (f"share/{PACKAGE}/config", sorted(glob("../config/*.yaml") + glob("../config/*.xml"))),
    ],
    zip_safe=False,
    entry_points={"console_scripts": [
        "centerpoint_node = awml_deploy_nodes.centerpoint_node:main",
        "centerpoint_node_bench = awml_deploy_nodes.bench_node:main",
        "yolox_node = awml_deploy_nodes.yolox_node:main",
        "calibration_status_node = awml_deploy_nodes.calibration_status_node:main",
        "bag_player = awml_deploy_nodes.bag_player:main",
        "output_recorder = awml_deploy_nodes.output_recorder:main",
        "replay_evaluation = awml_deploy_nodes.replay_evaluation:main",
    ]},
)
