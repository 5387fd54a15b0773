# Source me: the environment in which tests and demos run nodes.
#  - the workspace overlay (install/) on top of the venv that holds the ROS 2 wheels;
#  - DDS kept on this machine: localhost discovery + the shared-memory-only Fast DDS profile
#    (64 MB segment: also what makes 100k-200k point clouds arrive intact);
#  - a ROS_DOMAIN_ID of this run's own, unless one is given, so concurrent runs don't cross-talk.
_awml_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
. "$_awml_root/.venv/bin/activate"
export AMENT_PREFIX_PATH="$_awml_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
set +u
# shellcheck disable=SC1091
. "$_awml_root/install/local_setup.bash"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="$_awml_root/config/fastdds_localhost_shm.xml"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_DOMAIN_ID="${AWML_ROS_DOMAIN_ID:-$(( 1 + $$ % 100 ))}"
unset _awml_root
