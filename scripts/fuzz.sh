#!/usr/bin/env bash
# Fuzzes the NIfTI reader with libFuzzer + AddressSanitizer (clang from Debian).
#   scripts/fuzz.sh [SECONDS]   default 60 (CI); the build lives in build-fuzz/
# Seeds: tests/fuzz/seeds/ (committed, tiny) plus 8x8x8 crops of every file in
# ../shared/data when that folder exists. New inputs go to build-fuzz/corpus/ and crash
# reproducers to build-fuzz/artifacts/; the script fails when the fuzzer finds a bug.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
bash scripts/bootstrap.sh
# clang, libFuzzer (libclang-rt-14-dev) and clang's OpenMP runtime (libomp-14-dev).
packages=(clang libclang-rt-14-dev libomp-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build=build-fuzz
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMED3D_CUDA=OFF -DMED3D_BUILD_APPS=OFF \
  -DMED3D_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined"
cmake --build "$build" -j2 --target med3d_fuzz_nifti med3d_fuzz_nifti_seeds

corpus="$build/corpus"
mkdir -p "$corpus" "$build/artifacts"
if [ -d ../shared/data ]; then
  "$build/tests/med3d_fuzz_nifti_seeds" crops ../shared/data "$corpus"
else
  echo "fuzz: ../shared/data not found; fuzzing from the committed seeds only"
fi
# One worker, bounded memory; inputs are temporary files, kept in memory when possible.
export TMPDIR=${TMPDIR:-/dev/shm}
[ -d "$TMPDIR" ] && [ -w "$TMPDIR" ] || export TMPDIR=/tmp
export OMP_NUM_THREADS=1
"$build/tests/med3d_fuzz_nifti" "$corpus" tests/fuzz/seeds \
  -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
  -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/artifacts/"
