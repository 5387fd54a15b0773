"""Point the ROS 2 wheels' exported CMake include paths at this venv's Python and numpy headers.

The wheels were built on a host whose Python lived under /opt/python/...; their
``*_rosidl_generator_pyExport.cmake`` files still name that host's include folders, so building an
interface package against them fails. Idempotent: files already pointing here are left alone.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy


def main(venv: str) -> int:
    include = sysconfig.get_paths()["include"]
    np_include = numpy.get_include()
    pattern = re.compile(r'INTERFACE_INCLUDE_DIRECTORIES "[^"]*"')
    wanted = f'INTERFACE_INCLUDE_DIRECTORIES "{include};{np_include}"'
    changed = 0
    for path in sorted(Path(venv, "share").glob("*/cmake/*rosidl_generator_pyExport.cmake")):
        text = path.read_text()
        if "/opt/python/" not in text:
            continue
        new = pattern.sub(lambda m: wanted if "/opt/python/" in m.group(0) else m.group(0), text)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(new)
        tmp.replace(path)
        changed += 1
    print(f"[setup] rewrote {changed} CMake export file(s) to {include} and {np_include}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
