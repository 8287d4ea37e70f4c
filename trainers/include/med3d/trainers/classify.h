// Classification training and inference (`med3d train --task cls`, `med3d predict` on a
// classification run): a ResNet encoder with global average pooling and a fully connected
// layer (head "classifier", models/classifier.h) on whole volumes resized to the patch size.
//
// Data: one MSD-style folder whose dataset.json "training" entries carry an integer class,
// {"image": "./imagesTr/x.nii.gz", "label": 1}, and whose "labels" name the classes 0..K-1
// (data/dataset.h). Each case is prepared like a segmentation image (reorientation, spacing,
// intensity; prepare_image) and, per sample, the WHOLE volume is resampled to `patch` with the
// loader's augmentation (rotation, scaling, translation, noise, gamma; flips with flip), so a
// small finding is never cropped away.
//
// train_classification: the loop, files, resume, Ctrl-C and NaN behaviour of
// train_segmentation (train.h), with:
//   loss        cross-entropy of the logits [N, K] against the case classes
//   validation  every val_every epochs (and after the last): each validation case resized to
//               `patch`, one forward pass, softmax: accuracy (argmax) and ROC AUC (binary: of
//               the class-1 probability; K > 2: one-vs-rest macro mean, metrics.h)
//   best        best.safetensors by validation AUC for K = 2, by accuracy for K > 2, and by
//               accuracy when the AUC is undefined (validation cases of one class only); ties
//               go to the other metric (small validation sets often tie at AUC 1 while the
//               accuracy still improves), then to the earlier epoch
//   files       split.json, checkpoint.safetensors, best.safetensors, encoder.safetensors,
//               metrics.csv/.jsonl (columns epoch, step, train_loss, lr, val_accuracy,
//               val_auc) and curves.png (loss; validation accuracy and AUC); no overlays
// Options are SegTrainOptions; the segmentation-only ones (foreground_fraction, loss, crop,
// overlays) are ignored, foreground_labels and roi_margin must stay empty / 0, and exactly one
// data folder is allowed. model.head must be "classifier" (the CLI's default for --task cls).
// Bad input fails before the first step naming the file: a segmentation dataset, a missing or
// unreadable image, an image that is not 3D.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "med3d/data/dataset.h"
#include "med3d/data/preprocess.h"
#include "med3d/trainers/model_factory.h"
#include "med3d/trainers/train.h"

namespace med3d::trainers {

TrainSummary train_classification(Context context, const SegTrainOptions& options,
                                  const TrainHooks& hooks = {});

// Class probabilities (softmax, K values) of one prepared image [D, H, W]: resized
// (trilinear) to `patch`, one forward pass in eval mode under NoGrad.
std::vector<double> classify_probabilities(const Context& context, SegModel& model, const Tensor& image,
                                           const std::array<int64_t, 3>& patch);

struct ClassificationScores {
  double accuracy = 0;
  double auc = 0;    // NaN when undefined (see top)
  double score = 0;  // what selects the best checkpoint (see top)
  std::vector<std::vector<double>> probabilities;  // per case
  std::vector<int> truth;
};

// Accuracy and ROC AUC of K-class probabilities against the true classes (non-empty).
ClassificationScores score_classification(std::vector<std::vector<double>> probabilities,
                                          std::vector<int> truth);

// Whether `s` beats the best validation so far, given as that epoch's accuracy and AUC
// (best_epoch < 0: there is none yet); see "best" above.
bool is_better(const ClassificationScores& s, int64_t best_epoch, double best_accuracy, double best_auc);

// Predicts every case (prepare_image with `preprocess`) and scores it.
ClassificationScores validate_classification(const Context& context, SegModel& model,
                                             const std::vector<DatasetCase>& cases,
                                             const PreprocessOptions& preprocess,
                                             const std::array<int64_t, 3>& patch);

// Before the first step: every image exists, its header reads as a 3D (or 4D with one
// volume) image, and its class lies in [0, classes). Names the file on failure.
void check_classification_cases(const std::vector<DatasetCase>& cases, int64_t classes);

}  // namespace med3d::trainers
