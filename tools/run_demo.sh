#!/usr/bin/env bash
# The main job on the embedded default: the shipped small CenterPoint checkpoint, exported to ONNX, verified
# against PyTorch and evaluated on generated synthetic frames with both backends. Prints the comparison table
# and where the report is. Extra arguments go to `awml-deploy export` (e.g. --work-dir, --log-level DEBUG).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
start=$(date +%s)
set +e
"$ROOT/.venv/bin/awml-deploy" export config/centerpoint.yaml --work-dir work_dirs/demo "$@"
rc=$?
set -e
echo "[demo] finished in $(( $(date +%s) - start )) s with exit code $rc (0 ok, 1 gate failed, 2 config, 3 runtime)"
exit "$rc"
