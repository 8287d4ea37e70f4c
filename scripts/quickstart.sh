#!/usr/bin/env bash
# The README's main job: installs what is missing, builds med3d (Release), and on the sample
# data shipped in samples/ (a subset of MSD Hippocampus, CC-BY-SA 4.0):
#   1. pretrains a Med3D encoder by co-training on other data: the bundled spleen CT and a
#      synthetic MRI set written by `med3d synth` (one decoder branch per dataset);
#   2. trains a ResNet-10 segmentation net on 40 hippocampus cases from scratch, and once more
#      from the Med3D encoder (transfer);
#   3. predicts the 10 held-out cases with both and prints their Dice (anterior, posterior).
# About 10 minutes on 2 CPU cores. Environment: RUNS (output folder, default runs/sample),
# EPOCHS (default 20), PRETRAIN_EPOCHS (default 6).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2 --target med3d_cli
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
med3d=build/bin/med3d
runs=${RUNS:-runs/sample}
epochs=${EPOCHS:-20}
pretrain_epochs=${PRETRAIN_EPOCHS:-6}
mkdir -p "$runs"
net=(--arch resnet10 --head medicalnet --patch 32 48 32 --batch-size 2 --seed 1)

echo "== 1. Med3D pretraining on other data (spleen CT + synthetic MRI)"
"$med3d" synth --out "$runs/synth-mri" --kind mri-brain --cases 6 --shape 40 48 40 --isotropic --seed 7
"$med3d" pretrain --domains samples/spleen-ct,"$runs/synth-mri" --arch resnet10 --patch 32 48 32 \
  --batch-size 2 --seed 1 --epochs "$pretrain_epochs" --steps-per-epoch 20 --val-fraction 0 \
  --lr 0.01 --spacing 1.5,1.5,1.5 --out "$runs/pretrain"

echo "== 2a. hippocampus from scratch"
"$med3d" train --data samples/hippocampus "${net[@]}" --epochs "$epochs" --lr 0.01 --out "$runs/scratch"
echo "== 2b. hippocampus from the Med3D encoder"
"$med3d" train --data samples/hippocampus "${net[@]}" --epochs "$epochs" --lr 0.01 \
  --init "$runs/pretrain/encoder.safetensors" --out "$runs/transfer"

echo "== 3. held-out evaluation (10 cases never seen in training)"
for run in scratch transfer; do
  "$med3d" predict --model "$runs/$run/best.safetensors" --in samples/hippocampus-test/imagesTs \
    --out "$runs/$run/test-pred" > "$runs/$run/predict.log"
  echo "-- $run"
  "$med3d" eval --pred "$runs/$run/test-pred" --ref samples/hippocampus-test/labelsTs \
    --json "$runs/$run/test-eval.json" | tail -n 4
done
echo "pictures: $runs/*/curves.png and $runs/*/overlays/*.png; metrics: $runs/*/metrics.csv"
