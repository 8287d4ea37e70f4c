#!/usr/bin/env bash
# The one command for a machine with an NVIDIA GPU: builds med3d with the CUDA backend
# (-DMED3D_CUDA=ON -DMED3D_REQUIRE_GPU=1), runs the gpu suite (every CUDA op and a ResNet-18
# training step against the CPU, every conv pass of the Med3D layer table against cuDNN), then
# med3d-bench gpu-conv (our conv kernels vs cuDNN) and the GPU training step, and writes into
# OUT_DIR:
#   gpu_check.log          everything printed, in order
#   gpu_conv.md/.json/.png the conv table (markdown), its JSON and the ratio chart
#   gpu_step.md            training-step times and the device memory high-water mark
#   summary.md             device, commit, commands and the tables, for bench/results/
# Usage: scripts/gpu_check.sh OUT_DIR [--quick]   (--quick: halved shapes, 3 runs; a smoke run)
# Exit status: non-zero when the build or any gpu test fails; the bench still runs after a
# failed test so its numbers come back.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [--quick]}
quick=()
[ "${2:-}" = "--quick" ] && quick=(--quick)
mkdir -p "$out"
out=$(cd "$out" && pwd)
log="$out/gpu_check.log"
: > "$log"
say() { echo "$@" | tee -a "$log"; }
run() { say "\$ $*"; "$@" 2>&1 | tee -a "$log"; return "${PIPESTATUS[0]}"; }

say "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
command -v nvidia-smi > /dev/null && run nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
jobs=$(nproc)
run cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMED3D_CUDA=ON -DMED3D_REQUIRE_GPU=1 \
  -DMED3D_BUILD_APPS=OFF || exit 1
run cmake --build build-gpu -j"$jobs" --target med3d_gpu_tests med3d-bench || exit 1

status=0
MED3D_REQUIRE_GPU=1 run build-gpu/tests/med3d_gpu_tests --durations yes || status=1

bench=build-gpu/bench/med3d-bench
run "$bench" gpu-conv "${quick[@]}" --json "$out/gpu_conv.json" --plot "$out/gpu_conv.png" --csv \
  > /dev/null || status=1
python3 - "$out/gpu_conv.json" > "$out/gpu_conv.md" <<'PY'
import json, math, sys
doc = json.load(open(sys.argv[1]))
rows = doc["rows"]
cols = list(rows[0].keys()) if rows else []
print(f"device: {doc.get('device')}; reference: {doc.get('reference')}; scale {doc.get('scale')}, "
      f"{doc.get('runs')} runs\n")
print("| " + " | ".join(cols) + " |")
print("|" + "---|" * len(cols))
for r in rows:
    print("| " + " | ".join("" if r[c] is None else (f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])) for c in cols) + " |")
ratios = [r["speed_vs_ref"] for r in rows if isinstance(r.get("speed_vs_ref"), (int, float)) and r["speed_vs_ref"] > 0]
if ratios:
    print(f"\ngeometric mean speed vs reference: {math.exp(sum(map(math.log, ratios)) / len(ratios)):.3f} "
          f"over {len(ratios)} passes")
PY
cat "$out/gpu_conv.md" | tee -a "$log"
{
  for input in 2x1x32x64x64 1x1x64x128x128; do
    "$bench" step --device cuda --arch resnet18 --input "$input" "${quick[@]}" --csv || status=1
  done
} 2>&1 | tee "$out/gpu_step.md" | tee -a "$log"

{
  echo "# GPU check, $(date -u +%Y-%m-%d)"
  echo
  echo "commit $(git rev-parse HEAD 2>/dev/null), command: scripts/gpu_check.sh OUT_DIR ${quick[*]}"
  echo
  echo '```'
  grep -E "^med3d_gpu_tests on|test cases|assertions|All tests passed" "$log" | head -5
  echo '```'
  echo
  echo "## Conv passes vs cuDNN"
  cat "$out/gpu_conv.md"
  echo
  echo "## Training step (ResNet-18 + MedicalNet head, SGD)"
  echo '```'
  cat "$out/gpu_step.md"
  echo '```'
} > "$out/summary.md"
say "gpu_check: status $status, results in $out"
exit $status
