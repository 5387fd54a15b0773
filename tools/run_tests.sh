#!/usr/bin/env bash
# The whole test suite, in the DDS environment of tools/ros_env.sh (set here, not by the caller's shell).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
. tools/ros_env.sh
echo "[test] ROS_DOMAIN_ID=$ROS_DOMAIN_ID ROS_AUTOMATIC_DISCOVERY_RANGE=$ROS_AUTOMATIC_DISCOVERY_RANGE FASTDDS_DEFAULT_PROFILES_FILE=$FASTDDS_DEFAULT_PROFILES_FILE"
# Two workers by default (AWML_TEST_WORKERS=0 runs in one process): most multi-process ROS tests wait on DDS and
# timers, so two of them share 2 cores well. loadfile keeps each file on one worker (its module-wide node sessions
# start once); conftest gives every worker its own ROS domains.
workers="${AWML_TEST_WORKERS:-2}"
xdist=()
if [ "$workers" != 0 ]; then xdist=(-n "$workers" --dist loadfile); fi
set +e
python -m pytest "${xdist[@]}" "$@"   # folders: testpaths in pytest.ini
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "[test] pytest collected no tests: that is a failure here" >&2; exit 1; fi
exit "$rc"
