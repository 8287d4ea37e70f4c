#!/usr/bin/env bash
# A/B on the device: the committed med3d-bench against a variant, gpu-conv at both scales.
set -u
cd "$(dirname "$0")/.."
out=$1
mkdir -p /tmp/deps /tmp/deplibs
for f in .gpu-carry/debs/*.deb; do dpkg -x "$f" /tmp/deps; done
for lib in libpng16.so.16 libnifti2.so.2 libznz.so.3 libgomp.so.1 libz.so.1; do
  ldconfig -p | grep -q "$lib " || cp -a /tmp/deps/usr/lib/x86_64-linux-gnu/$lib* /tmp/deps/lib/x86_64-linux-gnu/$lib* /tmp/deplibs/ 2>/dev/null
done
export LD_LIBRARY_PATH="/tmp/deplibs:/usr/lib/x86_64-linux-gnu:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
for round in 1 2; do
  for v in med3d-bench med3d-bench-f1024; do
    for scale in small large; do
      timeout 120 .gpu-carry/bin/$v gpu-conv --scale $scale --csv > "$out/$v-$scale-$round.csv" 2>&1
    done
  done
done
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $ncu"
for spec in "small layer3_d2"; do
  set -- $spec
  timeout 90 "$ncu" --clock-control none --kernel-name regex:"tiled" --launch-skip 0 --launch-count 3 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis \
    .gpu-carry/bin/med3d-bench gpu-conv --scale $1 --only $2 --runs 1 --warmup 0 > "$out/ncu-$1-$2.txt" 2>&1
  echo "ncu $spec exit $?"
done
cd "$out" && tar czf ab.tgz *.csv *.txt && rm *.csv *.txt
