#!/usr/bin/env bash
# Installs dependencies, configures, builds (Release, -j2) and runs the whole test suite.
#   scripts/test.sh             the normal build in build/
#   scripts/test.sh --sanitize  the CPU tests under AddressSanitizer + UBSan in build-sanitize/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

build=build
extra=()
ctest_filter=()
if [ "${1:-}" = "--sanitize" ]; then
  build=build-sanitize
  # RelWithDebInfo keeps the sanitizer run fast enough for CI while giving line numbers.
  # Baseline ISA: GCC 12 wrongly flags its own AVX-512 headers under ASan (GCC bug 105593),
  # and this build checks correctness, not speed.
  # nvcc-compiled code does not take the host sanitizers, so this build compiles the CUDA
  # backend with g++ under the emulator (MED3D_CUDA=EMULATE): the gpu suite then runs every
  # CUDA op, its launcher and its memory handling on the CPU, under ASan + UBSan.
  extra=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DMED3D_SANITIZE=ON -DMED3D_NATIVE_ARCH=OFF -DMED3D_CUDA=EMULATE)
  # Tests labelled `long` (the whole pretrain/transfer pipeline) run in the normal build only:
  # under ASan they would add five minutes to CI's 45-minute budget for little new coverage.
  ctest_filter=(-LE long)
else
  extra=(-DCMAKE_BUILD_TYPE=Release)
fi
cmake -S . -B "$build" "${extra[@]}"
cmake --build "$build" -j2
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cd "$build"
ctest --output-on-failure -j2 "${ctest_filter[@]}"
