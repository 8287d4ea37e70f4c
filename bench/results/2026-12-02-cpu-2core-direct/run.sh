#!/usr/bin/env bash
# Session 7's issue-7 measurements (direct convolution), one after the other, nothing else running, at the commit named in the summary.
set -euo pipefail
cd /work/main
out=/tmp/bench_out7
rm -rf $out && mkdir -p $out
uptime > $out/uptime-start.txt
nice -n -15 bench/compare.sh --rounds 1 --out $out/resnet18-small > $out/resnet18-small.log 2>&1
for cfg in "resnet18 1x1x64x128x128 --runs 5" "resnet10 2x1x32x64x64" "resnet50 2x1x32x64x64 --runs 5"; do
  set -- $cfg
  nice -n -15 bench/compare.sh --rounds 1 --only step --arch $1 --input $2 ${3:-} ${4:-} --out $out/$1-$2 > $out/$1-$2.log 2>&1
done
uptime > $out/uptime-end.txt
echo done
