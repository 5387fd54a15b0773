#!/usr/bin/env bash
# The main job on the embedded default, one export per model family: the shipped small checkpoints (CenterPoint
# lidar 3D, YOLOX camera 2D, and every other config under config/ that names a shipped family) exported to ONNX,
# verified against PyTorch and evaluated on generated synthetic frames with both backends. Prints each comparison
# table and where each report is. Extra arguments go to every `awml-deploy export` (e.g. --log-level DEBUG).
# DEMO_FAMILIES="centerpoint yolox" picks a subset.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
families="${DEMO_FAMILIES:-centerpoint yolox calibration_status}"
start=$(date +%s)
worst=0
summary=()
for fam in $families; do
  cfg="config/$fam.yaml"
  if [ ! -f "$cfg" ]; then echo "[demo] $fam: no $cfg, skipped"; continue; fi
  dir="work_dirs/demo"; [ "$fam" = centerpoint ] || dir="work_dirs/demo_$fam"
  t0=$(date +%s)
  set +e
  "$ROOT/.venv/bin/awml-deploy" export "$cfg" --work-dir "$dir" "$@"
  rc=$?
  set -e
  summary+=("$fam: exit $rc in $(( $(date +%s) - t0 )) s, report $dir/report.md")
  [ "$rc" -gt "$worst" ] && worst=$rc
done
for line in "${summary[@]}"; do echo "[demo] $line"; done
echo "[demo] finished in $(( $(date +%s) - start )) s with exit code $worst (0 ok, 1 gate failed, 2 config, 3 runtime)"
exit "$worst"
