// Running a trained segmentation model on whole prepared volumes: sliding-window probabilities
// (inference.h) for one case, and the validation Dice used to pick the best checkpoint.
// Both switch the model to eval mode under NoGrad and leave it in eval mode.
#pragma once

#include <array>
#include <map>
#include <vector>

#include "med3d/data/dataset.h"
#include "med3d/data/preprocess.h"
#include "med3d/trainers/model_factory.h"

namespace med3d::trainers {

struct PredictOptions {
  std::array<int64_t, 3> patch{32, 32, 32};
  double overlap = 0.5;
  bool flip_tta = false;
};

// Class probabilities [1, K, D, H, W] of domain `domain` for a prepared image [D, H, W].
Tensor predict_probabilities(const Context& context, SegModel& model, int64_t domain,
                             const Tensor& image, const PredictOptions& options);

// Dice of each foreground label (1..K-1) of `labels` vs `reference` (both i32 [D, H, W]);
// a label absent from both counts 1.
std::map<int32_t, double> label_dice(const Tensor& labels, const Tensor& reference, int64_t classes);

// Mean Dice per foreground label over `cases`, predicted on the preprocessed grid.
std::map<int32_t, double> validation_dice(const Context& context, SegModel& model, int64_t domain,
                                          const std::vector<DatasetCase>& cases,
                                          const PreprocessOptions& preprocess,
                                          const std::array<int64_t, 3>& patch);

}  // namespace med3d::trainers
