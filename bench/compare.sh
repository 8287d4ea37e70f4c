#!/usr/bin/env bash
# Runs med3d-bench and its PyTorch twins alternately (ours, PyTorch, ours, PyTorch, ... per
# subcommand, --rounds times) with the same thread count, then prints the ratios and writes a
# markdown summary plus every JSON under --out (with the ceilings from bench/machine.sh). Per row, each side's reported time is the
# smallest of its per-round medians: on a shared machine the least disturbed round.
#
# Usage: bench/compare.sh [--build build] [--out DIR] [--threads 2] [--rounds 2] [--scale small|large]
#          [--arch resnet18] [--input 2x1x32x64x64] [--head medicalnet] [--runs N] [--quick]
#          [--only conv,ops,step]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=build out= threads=2 rounds=2 scale=small arch=resnet18 input=2x1x32x64x64 head=medicalnet
runs= quick= only=conv,ops,step
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --input) input=$2; shift 2 ;;
    --head) head=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --quick) quick=--quick; shift ;;
    --only) only=$2; shift 2 ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
bench="$build/bench/med3d-bench"
[ -x "$bench" ] || { echo "no $bench: build it with cmake --build $build --target med3d-bench" >&2; exit 2; }
py=/usr/bin/python3
$py -c 'import torch' 2>/dev/null || { echo "PyTorch missing: apt-get install python3-torch" >&2; exit 2; }
out=${out:-$(mktemp -d /tmp/med3d-compare.XXXXXX)}
mkdir -p "$out"
ours_runs=${runs:+--runs $runs}
torch_runs=${runs:+--runs $runs}
[ -n "$quick" ] && torch_runs="--runs 3 --warmup 1"
echo "results in $out; commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown); $(date -u +%FT%TZ)"
"$here/machine.sh" --build "$build" --out "$out" --threads "$threads" > /dev/null
for r in $(seq 1 "$rounds"); do
  if [[ ,$only, == *,conv,* ]]; then
    "$bench" conv --threads "$threads" --scale "$scale" $ours_runs $quick --json "$out/conv-ours-$r.json" \
      --plot "$out/conv-ours-$r.png" > "$out/conv-ours-$r.txt"
    $py "$here/torch_ops.py" "$out/conv-ours-$r.json" --threads "$threads" $torch_runs \
      --json "$out/conv-torch-$r.json" > /dev/null
  fi
  if [[ ,$only, == *,ops,* ]]; then
    "$bench" ops --threads "$threads" --scale "$scale" $ours_runs $quick --json "$out/ops-ours-$r.json" \
      > "$out/ops-ours-$r.txt"
    $py "$here/torch_ops.py" "$out/ops-ours-$r.json" --threads "$threads" $torch_runs \
      --json "$out/ops-torch-$r.json" > /dev/null
  fi
  if [[ ,$only, == *,step,* ]]; then
    "$bench" step --threads "$threads" --arch "$arch" --input "$input" --head "$head" $ours_runs $quick \
      --json "$out/step-ours-$r.json" > "$out/step-ours-$r.txt"
    step_input=$input
    # --quick shrinks our input; PyTorch runs the shape ours reports.
    [ -n "$quick" ] && step_input=$($py -c "import json;print(json.load(open('$out/step-ours-$r.json'))['rows'][0]['input'])")
    $py "$here/torch_step.py" --threads "$threads" --arch "$arch" --input "$step_input" --head "$head" \
      $torch_runs --json "$out/step-torch-$r.json" > /dev/null
  fi
  echo "round $r done; load average $(cut -d' ' -f1-3 /proc/loadavg)"
done
$py "$here/merge_results.py" "$out" --rounds "$rounds" | tee "$out/summary.md"
