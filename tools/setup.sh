#!/usr/bin/env bash
# One-command set-up: .venv (Python 3.11) with pinned dependencies, the ROS 2 wheels' CMake exports
# repaired, and the colcon workspace built into install/. Idempotent: each step keeps a stamp holding
# the hash of its inputs and is skipped when they did not change.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"

step() { printf '[setup] %s\n' "$*"; }
fail() { printf '[setup] FAILED at step "%s": %s\n' "$CURRENT" "$*" >&2; exit 1; }
trap 'rc=$?; [ $rc -ne 0 ] && printf "[setup] FAILED at step \"%s\" (exit %s); see the output above\n" "$CURRENT" "$rc" >&2' EXIT

hash_of() { # hash of the named files' contents and paths (missing files hash as their names)
  local f
  for f in "$@"; do
    printf '%s\n' "$f"
    [ -f "$f" ] && cat "$f"
  done | sha256sum | cut -c1-16
}
stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# 1. Python ---------------------------------------------------------------------------------------
CURRENT="python"
if ! command -v "$PY" >/dev/null 2>&1; then
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PY=python3
  else
    fail "Python 3.11 not found (tried python3.11 and python3); install it or set PYTHON=/path/to/python3.11"
  fi
fi

# 2. venv -----------------------------------------------------------------------------------------
CURRENT="venv"
if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV"
  "$PY" -m venv "$VENV" || fail "python -m venv failed (on Debian: apt-get install python3.11-venv)"
fi

# 3. pinned dependencies --------------------------------------------------------------------------
CURRENT="dependencies"
DEPS_HASH=$(hash_of requirements.txt constraints.txt awml_deploy_core/setup.py awml_deploy_core/setup.cfg)
if ! stamp_ok "$VENV/.stamp-deps" "$DEPS_HASH"; then
  step "installing pinned dependencies (first run: about a minute)"
  # (this machine's pip config names local mirrors that may be absent: drop those warnings)
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) \
    || fail "pip install failed; is the package registry reachable?"
  # The core package without ROS, importable and with its `awml-deploy` command on the venv's PATH.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
    -e awml_deploy_core || fail "pip install -e awml_deploy_core failed"
  echo "$DEPS_HASH" >"$VENV/.stamp-deps"
  rm -f "$VENV/.stamp-cmake"
else
  step "dependencies up to date"
fi

# 4. repair the wheels' exported CMake paths ------------------------------------------------------
CURRENT="cmake-exports"
if [ ! -f "$VENV/.stamp-cmake" ]; then
  step "repairing the ROS wheels' exported Python/numpy include paths"
  "$VENV/bin/python" "$ROOT/tools/fix_cmake_exports.py" "$VENV" || fail "could not rewrite the CMake exports"
  touch "$VENV/.stamp-cmake"
fi

# 5. colcon build ---------------------------------------------------------------------------------
CURRENT="colcon-build"
BUILD_INPUTS=$(find awml_deploy_msgs awml_deploy_core awml_deploy_nodes launch config \
  \( -name '*.msg' -o -name 'CMakeLists.txt' -o -name 'package.xml' -o -name 'setup.py' -o -name 'setup.cfg' \
     -o -name '*.launch.py' -o -path '*/resource/*' -o -path 'config/*' \) -type f 2>/dev/null | LC_ALL=C sort \
  || true)
# shellcheck disable=SC2086
BUILD_HASH=$(hash_of $BUILD_INPUTS)
if ! stamp_ok "$ROOT/install/.stamp-build" "$BUILD_HASH" || [ ! -f "$ROOT/install/local_setup.bash" ]; then
  step "building the workspace with colcon (about 30 s)"
  export AMENT_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
  unset CMAKE_PREFIX_PATH
  "$VENV/bin/colcon" --log-base "$ROOT/log" build --symlink-install --base-paths "$ROOT" \
    --build-base "$ROOT/build" --install-base "$ROOT/install" \
    --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF \
    --event-handlers console_direct- summary+ \
    || fail "colcon build failed; the log is under $ROOT/log/latest_build"
  echo "$BUILD_HASH" >"$ROOT/install/.stamp-build"
else
  step "workspace build up to date"
fi
CURRENT="done"
step "ready"
