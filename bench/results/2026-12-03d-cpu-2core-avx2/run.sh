#!/usr/bin/env bash
# Session 12's issue-7 measurements on the AVX2-only VM (Zen 3), one after the other, nothing else
# running: the session's starting code (271672e; its med3d-bench built in the same tree into
# /tmp/bench-base) against this commit (conv table, ops table, ResNet-18 step, alternated twice),
# then bench/compare.sh for the steps and tables against PyTorch and oneDNN.
set -euo pipefail
cd /work/main
out=/tmp/bench_out12
base=${BASE_BENCH:-/tmp/bench-base}
rm -rf $out && mkdir -p $out
uptime > $out/uptime-start.txt
lscpu > $out/lscpu.txt
for round in 1 2; do
  for bin in $base build/bench/med3d-bench; do
    [ $bin = build/bench/med3d-bench ] && name=new-$round || name=base-$round
    nice -n -15 $bin conv --threads 2 --runs 10 > $out/conv-$name.txt
    nice -n -15 $bin step --threads 2 --runs 5 --arch resnet18 --input 2x1x32x64x64 > $out/step-$name.txt
    nice -n -15 $bin step --threads 2 --runs 3 --arch resnet50 --input 2x1x32x64x64 > $out/step50-$name.txt
  done
done
nice -n -15 bench/compare.sh --rounds 2 --out $out/resnet18-small > $out/resnet18-small.log 2>&1
for cfg in "resnet18 1x1x64x128x128 --runs 5" "resnet10 2x1x32x64x64" "resnet50 2x1x32x64x64 --runs 5"; do
  set -- $cfg
  nice -n -15 bench/compare.sh --rounds 1 --only step --arch $1 --input $2 ${3:-} ${4:-} --out $out/$1-$2 > $out/$1-$2.log 2>&1
done
uptime > $out/uptime-end.txt
echo done
