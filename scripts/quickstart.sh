#!/usr/bin/env bash
# Installs what is missing, builds med3d (Release) and runs the main job: training a 3D
# segmentation net on CPU and printing its loss and Dice.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2 --target train_synthetic
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
./build/apps/train_synthetic "$@"
