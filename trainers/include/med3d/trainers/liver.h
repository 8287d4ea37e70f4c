// The two-stage liver cascade (coarse whole volume, then fine region of interest).
//
// Stage 1 (a run trained with --head coarse --crop resize): the whole prepared volume resized
// to its patch, one forward pass, probabilities resized back, argmax -> coarse mask.
// Stage 2 (a run trained with --head denseaspp --roi-margin M): the bounding box of the coarse
// mask's largest 26-connected component, grown by `margin` voxels (default: the stage-2 run's
// M), segmented by sliding window at the prepared resolution and pasted into an otherwise
// background volume, then mapped to the input file's grid (labels_to_reference_grid).
// Both stages must share their preprocessing (orientation, spacing, intensity): the box found
// on stage 1's grid is used on stage 2's. An empty coarse mask gives an all-background result
// (box = nullopt), not an error.
#pragma once

#include <optional>
#include <string>

#include "med3d/data/crop.h"
#include "med3d/data/nifti.h"
#include "med3d/trainers/run_files.h"

namespace med3d::trainers {

struct LiverOptions {
  int64_t margin = -1;  // voxels of the prepared grid; < 0: the stage-2 run's roi_margin
  double overlap = 0.5;
};

struct LiverResult {
  Tensor labels;                   // i32 on the reference's grid (write with write_like)
  Tensor coarse;                   // i32 stage-1 mask on the prepared grid
  std::optional<data::Box3> box;   // the stage-2 box on the prepared grid
};

// Stage 2 alone, from a given coarse mask on `prepared`'s grid: labels i32 on that grid.
Tensor liver_fine_stage(const Context& context, LoadedModel& stage2, const PreparedCase& prepared,
                        const Tensor& coarse_mask, const LiverOptions& options,
                        std::optional<data::Box3>* box = nullptr);

LiverResult liver_cascade(const Context& context, LoadedModel& stage1, LoadedModel& stage2,
                          const std::string& image_path, const Volume& reference,
                          const LiverOptions& options = {});

}  // namespace med3d::trainers
