// Inference on whole volumes: sliding-window prediction, labels from probabilities, and the
// way back from the preprocessed grid to the grid of the input file.
//
// sliding_window_predict (nnU-Net style), CPU:
//   image f32 [1, C, D, H, W]; logits_fn maps a batch of patches [B, C, pD, pH, pW] (CPU f32)
//   to logits [B, K, pD, pH, pW] (any device, f32 or f64; moved to the CPU as f32). Returns
//   class probabilities f32 [1, K, D, H, W]: each window's softmax, weighted and accumulated,
//   divided by the accumulated weight (so a voxel's probabilities sum to 1).
//   - Windows: along each axis n_steps = ceil((n - p) / (p * (1 - overlap))) + 1 positions,
//     spread evenly (rounded) from 0 to n - p, so the first touches the start and the last
//     the end of the volume (nnU-Net's compute_steps_for_sliding_window).
//   - Gaussian weights: exp(-sum_a (i_a - c_a)^2 / (2 sigma_a^2)), c_a = (p_a - 1) / 2 (the
//     patch's centre; nnU-Net uses p_a / 2, off by half a voxel for even p_a), sigma_a =
//     p_a * sigma_scale (1/8), divided by the maximum and clamped below at kMinWindowWeight so
//     every voxel of a window counts and no weight is denormal. Uniform: all weights 1.
//   - Padding: along axes where the image is smaller than the patch it is padded on both
//     sides (the extra voxel after), with 0 (the normalised mean, as nnU-Net) or the image's
//     minimum, and the probabilities are cropped back.
//   - Flip test-time augmentation: the softmax of all 8 combinations of flipping D, H, W
//     (identity included) is averaged, each prediction flipped back first (nnU-Net v1 mirrors
//     probabilities, not logits).
//   - logits_fn runs under NoGrad on the image's Context; it is called with at most
//     batch_size windows at a time (the last batch may be smaller).
//
// argmax_labels: i32 [D, H, W] class index of probabilities or logits [1, K, D, H, W] or
//   [K, D, H, W]; the first maximum wins ties.
//
// prepare_image: the image half of med3d::prepare_case (for prediction, where there is no
//   label): read, reorient, resample (linear), normalise; PreparedCase::label is left empty.
//
// labels_to_reference_grid: a prediction on a PreparedCase's grid mapped onto the voxel grid
//   of `reference` (normally read_nifti of the same file, not reoriented), so that
//   write_like(path, reference, labels) overlays the input exactly. Probabilities or logits
//   ([K, D, H, W] or [1, K, D, H, W], floating) are resampled trilinearly (each channel) and
//   then argmax'ed; labels (i32 [D, H, W]) are resampled by nearest neighbour. The map between
//   the grids comes from their affines (prepared.image.affine and reference.affine); it must
//   be axis-aligned (a permutation with flips and a scale and shift per axis), which holds for
//   any reorientation and resampling prepare_case does. Interpolation uses the same conventions
//   as med3d::resample (voxel centres, border replicate); coordinates within 1e-6 voxel of a
//   voxel centre are snapped to it so identical grids map exactly.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "med3d/context.h"
#include "med3d/data/nifti.h"
#include "med3d/data/preprocess.h"
#include "med3d/tensor.h"

namespace med3d::trainers {

using LogitsFn = std::function<Tensor(const Tensor&)>;

enum class WindowWeighting { gaussian, uniform };
enum class PadValue { zero, image_minimum };

// Lower clamp of the normalised Gaussian weights (nnU-Net clamps to the smallest non-zero).
inline constexpr float kMinWindowWeight = 1e-6f;

struct SlidingWindowOptions {
  std::array<int64_t, 3> patch{64, 64, 64};  // {pD, pH, pW}
  double overlap = 0.5;                       // in [0, 1); step = patch * (1 - overlap)
  WindowWeighting weighting = WindowWeighting::gaussian;
  double sigma_scale = 1.0 / 8;               // Gaussian sigma = patch * sigma_scale
  bool flip_tta = false;                      // average over the 8 flips of D, H, W
  int64_t batch_size = 1;                     // windows per logits_fn call
  PadValue pad_value = PadValue::zero;
};

Tensor sliding_window_predict(const LogitsFn& logits_fn, const Tensor& image,
                              const SlidingWindowOptions& options);

// Window start positions along one axis of extent n >= patch (see top).
std::vector<int64_t> window_starts(int64_t n, int64_t patch, double overlap);

// The importance map f32 [pD, pH, pW] used for `weighting` (see top).
Tensor window_weights(const Context& context, const std::array<int64_t, 3>& patch,
                      WindowWeighting weighting, double sigma_scale = 1.0 / 8);

Tensor argmax_labels(const Tensor& probabilities);

PreparedCase prepare_image(const Context& context, const std::string& image_path,
                           const PreprocessOptions& options);

// Resamples `values` [..., D, H, W] (floating for linear; any dtype for nearest) from the grid
// with `source_affine` onto a grid of `target_shape` and `target_affine` (see top).
Tensor resample_to_grid(const Tensor& values, const std::array<double, 16>& source_affine,
                        const std::array<int64_t, 3>& target_shape,
                        const std::array<double, 16>& target_affine, Interpolation interpolation);

// i32 [D, H, W] labels on reference.data's grid (see top).
Tensor labels_to_reference_grid(const Tensor& prediction, const PreparedCase& prepared,
                                const Volume& reference);

}  // namespace med3d::trainers
