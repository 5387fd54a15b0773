"""Test process: run one launch file with `launch`'s LaunchService (what `ros2 launch` does), until SIGINT.

    run_launch.py PATH/TO/file.launch.py name:=value ...
"""

from __future__ import annotations

import sys

from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource


def main() -> int:
    path, *pairs = sys.argv[1:]
    arguments = [tuple(p.split(":=", 1)) for p in pairs]
    service = LaunchService()
    service.include_launch_description(LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(path), launch_arguments=arguments),
    ]))
    return service.run()


if __name__ == "__main__":
    sys.exit(main())
