#!/usr/bin/env bash
# Device-machine wrapper (not committed): binaries built on the CPU machine with the same CUDA 13
# toolkit, Debian libraries the image lacks, then scripts/gpu_check.sh --prebuilt.
set -u
cd "$(dirname "$0")/.."
root=$PWD
out=${1:?out dir}
t0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
cat /etc/os-release | head -2; ldd --version | head -1; which g++ gcc cmake nvcc python3
# The golden fixtures' directory is compiled in as /work/main/tests/golden.
mkdir -p /work; [ -e /work/main ] || ln -s "$root" /work/main
mkdir -p /tmp/deps /tmp/deplibs
for f in .gpu-carry/debs/*.deb; do dpkg -x "$f" /tmp/deps; done
for lib in libpng16.so.16 libnifti2.so.2 libznz.so.3 libgomp.so.1 libz.so.1; do
  ldconfig -p | grep -q "$lib " || cp -a /tmp/deps/usr/lib/x86_64-linux-gnu/$lib* /tmp/deps/lib/x86_64-linux-gnu/$lib* /tmp/deplibs/ 2>/dev/null
done
cudnn=$(find /usr/local /usr/lib /opt -name 'libcudnn.so.9' 2>/dev/null | head -3)
echo "cudnn: $cudnn"
extra=""
for c in $cudnn; do extra="$extra:$(dirname "$c")"; done
export LD_LIBRARY_PATH="/tmp/deplibs$extra:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
rm -rf build-gpu; mkdir -p build-gpu/tests build-gpu/bench
cp .gpu-carry/bin/med3d_gpu_tests build-gpu/tests/; cp .gpu-carry/bin/med3d-bench build-gpu/bench/
missing=$(ldd build-gpu/tests/med3d_gpu_tests build-gpu/bench/med3d-bench | grep "not found")
mode=--prebuilt
if [ -n "$missing" ] || ! build-gpu/bench/med3d-bench --help > /dev/null 2>&1; then
  echo "prebuilt binaries do not run here: $missing; building here"
  rm -rf build-gpu
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMED3D_CUDA=ON -DMED3D_REQUIRE_GPU=1 \
    -DMED3D_BUILD_APPS=OFF -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH=/tmp/deps/usr \
    -DCMAKE_DISABLE_FIND_PACKAGE_dnnl=ON > "$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
  cmake --build build-gpu -j16 --target med3d_gpu_tests med3d-bench > "$out/build.log" 2>&1 \
    || { grep -B2 -A6 -E "error" "$out/build.log" | head -80; exit 1; }
fi
echo "setup took $(( $(date +%s) - t0 )) s"
MED3D_GPU_STAGE_LIMIT=${STAGE:-180} bash scripts/gpu_check.sh "$out" $mode > /dev/null 2>&1
echo "gpu_check exit $?, at $(( $(date +%s) - t0 )) s"
grep -E "test cases|assertions|FAILED|failed|geometric|gpu_check:" "$out/gpu_check.log" | head -40
if [ -n "${SANITIZE:-}" ]; then
  timeout -k 5 "${SANITIZE}" compute-sanitizer --tool memcheck --error-exitcode 9 \
    build-gpu/tests/med3d_gpu_tests "~[step]~[train]~[cudnn]" > "$out/memcheck.log" 2>&1
  echo "memcheck exit $?, at $(( $(date +%s) - t0 )) s"; tail -5 "$out/memcheck.log"
fi
# At most 8 files come back: the tables are inside summary.md.
rm -f "$out"/gpu_conv.md "$out"/gpu_conv_large.md "$out"/gpu_step.md "$out"/cmake.log
