#!/usr/bin/env bash
# One device check, run from the checkout root on a machine with an NVIDIA GPU:
#   bash bench/gpu_check.sh            (report in $OUT, or bench/out/gpu when OUT is unset)
# Installs the checkout, then ONE Python process (kernels compile once) runs the
# GPU tests, the golden parity on the GPU in float64 and single precision, the
# single-vs-double error table, the G1 benchmark and images/s through render_many (B5 and 1024x1024
# single shots, counter-based noise on the device); see bench/gpu_check.py.
# The golden data travels in ./golden_data (git-ignored; copy ../shared/golden there).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d golden_data ] && [ -z "${NANOBRAGG_GOLDEN:-}" ]; then export NANOBRAGG_GOLDEN="$PWD/golden_data"; fi
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.txt" 2>&1
python3 bench/gpu_check.py "$OUT" "$@" 2>&1 | tee "$OUT/gpu_check.log"
rc=$?
# Same-card anchors (bench/gpu_anchors.py): nanoBraggCUDA built here with nvcc and nanobrag_torch, both on
# G1, from ./gpu_carry (git-ignored; `python bench/gpu_anchors.py prepare` fills it). Each step has its own
# timeout, the whole part NB_ANCHORS_BUDGET_S (default 240 s); a failed anchor is reported, not fatal.
# Its markdown is appended to gpu_report.md.
case " $* " in
  *" --sim "*) ;;
  *) budget="${NB_ANCHORS_BUDGET_S:-240}"
     timeout -k 10 "$((budget + 60))" python3 bench/gpu_anchors.py run "$OUT" --budget-s "$budget" 2>&1 \
       | tee "$OUT/gpu_anchors.log"
     if [ -f "$OUT/gpu_anchors.md" ]; then { echo; cat "$OUT/gpu_anchors.md"; } >> "$OUT/gpu_report.md"; fi ;;
esac
exit $rc
