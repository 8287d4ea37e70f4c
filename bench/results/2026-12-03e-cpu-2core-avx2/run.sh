#!/usr/bin/env bash
# Session 13's issue-7 measurements on the AVX2-only VM (Zen 3), one after the other, nothing else
# running: the session's starting code (8880549; its med3d-bench built in a worktree with this
# commit's bench timing, alternating warm runs, into /tmp/bench-base8880549) against this commit
# (conv table and ResNet-18 step, alternated twice), then bench/compare.sh for the step and tables
# against PyTorch and oneDNN.
set -euo pipefail
cd /work/main
out=/tmp/bench_out13
base=${BASE_BENCH:-/tmp/bench-base8880549}
rm -rf $out && mkdir -p $out
uptime > $out/uptime-start.txt
lscpu > $out/lscpu.txt
for round in 1 2; do
  for bin in $base build/bench/med3d-bench; do
    [ $bin = build/bench/med3d-bench ] && name=new-$round || name=base-$round
    nice -n -15 $bin conv --threads 2 --runs 20 > $out/conv-$name.txt
    nice -n -15 $bin step --threads 2 --runs 5 --arch resnet18 --input 2x1x32x64x64 > $out/step-$name.txt
  done
done
nice -n -15 bench/compare.sh --rounds 2 --out $out/resnet18-small > $out/resnet18-small.log 2>&1
uptime > $out/uptime-end.txt
echo done
