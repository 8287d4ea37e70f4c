// Running a segmentation model on whole prepared volumes, and the case preparation a run
// applies on top of preprocessing (shared by training, validation, pictures and inference).
//
// predict_probabilities: class probabilities [1, K, D, H, W] of a prepared image [D, H, W]:
//   sliding window (inference.h) at the prepared resolution, or with `resize_whole` the whole
//   volume resized (trilinear) to `patch`, one forward pass, and the probabilities resized back
//   (the coarse stage of the liver cascade). Eval mode, NoGrad; the model is left in eval mode.
// prepare_for_run: prepare_case, then (RunCaseOptions) labels mapped to a binary task and/or
//   the volume cropped to the region of interest: the bounding box of the largest 26-connected
//   component of the foreground, grown by `roi_margin` voxels per side (training draws each
//   side's margin from [roi_margin, 2 roi_margin] with a per-case seed, so a case keeps one
//   crop across epochs - the loader caches it - while patches and augmentation vary). The
//   cropped image's affine is moved to the crop's first voxel. A case without foreground is
//   not cropped.
#pragma once

#include <array>
#include <map>
#include <vector>

#include "med3d/data/crop.h"
#include "med3d/data/dataset.h"
#include "med3d/data/preprocess.h"
#include "med3d/trainers/model_factory.h"

namespace med3d::trainers {

struct PredictOptions {
  std::array<int64_t, 3> patch{32, 32, 32};
  double overlap = 0.5;
  bool flip_tta = false;
  bool resize_whole = false;
};

Tensor predict_probabilities(const Context& context, SegModel& model, int64_t domain,
                             const Tensor& image, const PredictOptions& options);

struct RunCaseOptions {
  std::vector<int32_t> foreground_labels;  // non-empty: these become 1, every other label 0
  int64_t roi_margin = 0;                  // > 0: crop to the foreground's region of interest
  bool random_margin = false;              // training: margins drawn from [m, 2m]
  uint64_t seed = 0;
};

// labels with every value in `foreground` set to 1 and all others to 0 (i32).
Tensor binarize_labels(const Tensor& labels, const std::vector<int32_t>& foreground);

// The region of interest of a label map: largest component's box grown by `margin` (clamped).
std::optional<data::Box3> roi_box(const Tensor& labels, int64_t margin);

// Moves `volume` (data and affine) to the box of its grid.
Volume crop_volume(const Volume& volume, const data::Box3& box);

PreparedCase prepare_for_run(const Context& context, const DatasetCase& c,
                             const PreprocessOptions& preprocess, const RunCaseOptions& options);

// Dice of each foreground label (1..K-1) of `labels` vs `reference` (both i32 [D, H, W]);
// a label absent from both counts 1.
std::map<int32_t, double> label_dice(const Tensor& labels, const Tensor& reference, int64_t classes);

// Mean Dice per foreground label over `cases`, predicted on the prepared grid.
std::map<int32_t, double> validation_dice(const Context& context, SegModel& model, int64_t domain,
                                          const std::vector<DatasetCase>& cases,
                                          const PreprocessOptions& preprocess,
                                          const RunCaseOptions& case_options,
                                          const PredictOptions& predict);

}  // namespace med3d::trainers
