#!/usr/bin/env bash
# The whole test suite, in the DDS environment of tools/ros_env.sh (set here, not by the caller's shell).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
. tools/ros_env.sh
echo "[test] ROS_DOMAIN_ID=$ROS_DOMAIN_ID ROS_AUTOMATIC_DISCOVERY_RANGE=$ROS_AUTOMATIC_DISCOVERY_RANGE FASTDDS_DEFAULT_PROFILES_FILE=$FASTDDS_DEFAULT_PROFILES_FILE"
set +e
python -m pytest "$@"   # folders: testpaths in pytest.ini
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "[test] pytest collected no tests: that is a failure here" >&2; exit 1; fi
exit "$rc"
