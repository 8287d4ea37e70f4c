#!/usr/bin/env bash
# Measures this machine's ceilings today (FMA peak, Eigen sgemm, copy bandwidth) with 1 thread
# and with --threads threads, so every ratio of a run is against the machine it ran on. Writes
# machine-1t.{txt,json} and machine-<N>t.{txt,json} under --out and prints both tables.
# bench/compare.sh calls it once per run.
#
# Usage: bench/machine.sh [--build build] [--out DIR] [--threads 2]
set -euo pipefail
build=build out=. threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
bench="$build/bench/med3d-bench"
[ -x "$bench" ] || { echo "no $bench: build it with cmake --build $build --target med3d-bench" >&2; exit 2; }
mkdir -p "$out"
for t in $(printf '%s\n' 1 "$threads" | sort -un); do
  "$bench" machine --threads "$t" --json "$out/machine-${t}t.json" | tee "$out/machine-${t}t.txt"
done
