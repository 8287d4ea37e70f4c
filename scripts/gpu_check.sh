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
# Usage: scripts/gpu_check.sh OUT_DIR [--quick] [--prebuilt]
#   --quick     halved shapes, 3 runs; a smoke run
#   --prebuilt  skip the build and run build-gpu/tests/med3d_gpu_tests and build-gpu/bench/med3d-bench
#               as they are (built elsewhere with the same command, then copied here)
# Exit status: non-zero when the build or any gpu test fails; the bench still runs after a
# failed test so its numbers come back. Each stage has a time limit (MED3D_GPU_STAGE_LIMIT seconds,
# default 300) so a hung kernel costs one stage, not the whole lease.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [--quick]}
shift
quick=()
prebuilt=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=(--quick) ;;
    --prebuilt) prebuilt=1 ;;
    *) echo "gpu_check: unknown option $arg (expected --quick or --prebuilt)" >&2; exit 2 ;;
  esac
done
limit=${MED3D_GPU_STAGE_LIMIT:-300}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log="$out/gpu_check.log"
: > "$log"
say() { echo "$@" | tee -a "$log"; }
run() { say "\$ $*"; "$@" 2>&1 | tee -a "$log"; return "${PIPESTATUS[0]}"; }
# A stage past its limit is killed (exit 124) and reported as a failure.
staged() { run timeout -k 10 "$limit" "$@"; }

say "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit ${MED3D_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
command -v nvidia-smi > /dev/null && run nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
if [ "$prebuilt" = 0 ]; then
  run cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMED3D_CUDA=ON -DMED3D_REQUIRE_GPU=1 \
    -DMED3D_BUILD_APPS=OFF || exit 1
  run cmake --build build-gpu -j"$(nproc)" --target med3d_gpu_tests med3d-bench || exit 1
fi

status=0
MED3D_REQUIRE_GPU=1 staged build-gpu/tests/med3d_gpu_tests --durations yes || status=1

bench=build-gpu/bench/med3d-bench
# The layer table at both scales of the issue: N=2 (small) and N=1 at 1x1x64x128x128 (large).
for scale in small large; do
  name=gpu_conv; [ "$scale" = large ] && name=gpu_conv_large
  staged "$bench" gpu-conv --scale "$scale" "${quick[@]}" --json "$out/$name.json" \
    --plot "$out/$name.png" --csv > /dev/null || status=1
  [ -s "$out/$name.json" ] || continue
  python3 - "$out/$name.json" > "$out/$name.md" <<'PY'
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
  tee -a "$log" < "$out/$name.md"
done
for input in 2x1x32x64x64 1x1x64x128x128; do
  staged "$bench" step --device cuda --arch resnet18 --input "$input" "${quick[@]}" --csv || status=1
done > "$out/gpu_step.md" 2>&1  # not a pipe: status must survive the loop
cat "$out/gpu_step.md"

commit=${MED3D_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
{
  echo "# GPU check, $(date -u +%Y-%m-%d)"
  echo
  echo "commit $commit, command: scripts/gpu_check.sh OUT_DIR $*"
  echo
  echo '```'
  grep -E "nvidia-smi|NVIDIA|^med3d_gpu_tests on|test cases|assertions|All tests passed" "$log" | head -8
  echo '```'
  for name in gpu_conv gpu_conv_large; do
    echo
    echo "## Conv passes vs cuDNN ($name)"
    cat "$out/$name.md" 2>/dev/null || echo "(no table: see gpu_check.log)"
  done
  echo
  echo "## Training step (ResNet-18 + MedicalNet head, SGD)"
  echo '```'
  cat "$out/gpu_step.md"
  echo '```'
} > "$out/summary.md"
say "gpu_check: status $status, results in $out"
exit $status
