// Seeded, reproducible CPU augmentation of an (image, label) pair of [D, H, W] volumes
// (image f32, label i32; axis convention in nifti.h), always transformed together.
//
// Geometry is ONE affine resampling pass: every output voxel p is mapped to source
// coordinates x = map(p) and read there, trilinearly for the image (outside the volume:
// `image_fill`) and by nearest neighbour for the label (outside: 0), so label values are
// copied, never blended or invented. Coordinates within 1e-6 of an integer are snapped to
// it, so an identity map copies voxels exactly and 90-degree rotations permute them exactly.
//
// The augmentation map (augment_map) composes, from output to source:
//   flips (in output coordinates) -> `base` (e.g. box_map: a crop box resized to the output
//   grid; the identity for same-shape augmentation) -> the inverse of
//   y = centre + scale * R * (x - centre) + translation
// with R = R_D(a0) * R_H(a1) * R_W(a2), R_D rotating in the (H, W) plane, R_H in (D, W), R_W
// in (D, H), each taking the plane's first axis e_i to cos(a) e_i + sin(a) e_j; rotation and
// scale act in voxel units, so resample to isotropic spacing first.
// Example: a0 = 90 degrees maps source (d, h, w) to output (d, n-1-w, h) on an n x n slice:
// out(d, h, w) = in(d, w, n-1-h) (centre (n-1)/2).
//
// Intensity (image only): gamma on the image's [min, max] range,
//   x' = min + (max - min) * ((x - min) / (max - min))^gamma,
// then additive Gaussian noise N(0, noise_std^2) per voxel (absolute units: meant for
// normalised images): Philox block j keyed by the noise seed gives, by Box-Muller (f32),
// the normals of voxels 4j..4j+3, so the noise depends only on the seed and voxel index.
//
// Functions run single-threaded on purpose: the loader parallelises over samples.
// All randomness comes from the SampleRng / seed passed in (crop.h); same seed, same output.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <utility>

#include "med3d/data/crop.h"
#include "med3d/tensor.h"

namespace med3d::data {

struct AugmentOptions {
  double max_rotation_degrees = 5.0;  // each of the three angles uniform in [-r, r] (Med3D)
  double scale_min = 0.8;             // isotropic zoom, uniform in [scale_min, scale_max]
  double scale_max = 1.2;
  // Per axis, uniform in +-fraction * extent of the foreground box (of the volume without
  // foreground), in voxels.
  double max_translation_fraction = 0.1;
  std::array<double, 3> flip_probability{0.5, 0.5, 0.5};  // per axis D, H, W
  double noise_probability = 0.5;  // apply noise with this probability ...
  double noise_std_max = 0.1;      // ... with std uniform in [0, noise_std_max]
  double gamma_probability = 0.3;  // apply gamma with this probability ...
  double gamma_min = 0.7;          // ... with gamma uniform in [gamma_min, gamma_max]
  double gamma_max = 1.5;
  // Rotate and scale about the foreground box centre (volume centre without foreground).
  bool rotate_about_foreground = true;
  // Image value outside the source volume; nullopt: the image minimum (air for CT).
  std::optional<double> image_fill;
};

// One sample's drawn augmentation; identity by default.
struct AugmentParams {
  std::array<double, 3> rotation_degrees{};  // a0, a1, a2 (see above)
  double scale = 1.0;
  std::array<double, 3> translation{};  // voxels, tensor order
  std::array<bool, 3> flip{};
  std::array<double, 3> centre{};  // source voxel coordinates
  double noise_std = 0.0;
  double gamma = 1.0;
};

// x = m * p + offset, m row-major 3x3, coordinates in tensor order (d, h, w).
struct Affine3 {
  std::array<double, 9> m{1, 0, 0, 0, 1, 0, 0, 0, 1};
  std::array<double, 3> offset{};
  std::array<double, 3> apply(const std::array<double, 3>& p) const;
};

// outer(inner(p)).
Affine3 compose(const Affine3& outer, const Affine3& inner);

// Maps an `out` grid onto `box` of the source (voxel centres aligned, as PyTorch's
// interpolate with align_corners=false); the identity plus box.lo when the sizes match.
Affine3 box_map(const Box3& box, const Index3& out);

// The centre of `foreground` (or of a volume of `shape` without one), in voxel coordinates.
std::array<double, 3> centre_of(const Index3& shape, const std::optional<Box3>& foreground);

// Draws parameters: angles, scale, translation (scaled by the foreground box or `shape`),
// flips, noise and gamma; `centre` from centre_of when rotate_about_foreground, else the
// volume centre. Checks the options (ranges, probabilities) and throws med3d::Error.
AugmentParams draw_augment_params(const AugmentOptions& options, const Index3& shape,
                                  const std::optional<Box3>& foreground, SampleRng& rng);

// Output-to-source map of `params` for an output grid `out`, after `base` (see above).
Affine3 augment_map(const AugmentParams& params, const Index3& out, const Affine3& base = {});

// Resamples image (trilinear) and label (nearest) through `map` onto an `out` grid.
// Shapes of image and label must match. Returns new tensors of the image's Context.
std::pair<Tensor, Tensor> resample(const Tensor& image, const Tensor& label, const Affine3& map,
                                   const Index3& out, double image_fill);

// Gamma, then noise, in place on an f32 image (see above); noise from (noise_seed, voxel).
void apply_intensity(Tensor& image, const AugmentParams& params, uint64_t noise_seed);

// The whole augmentation of a pair, same shape in and out, from `seed` alone.
std::pair<Tensor, Tensor> augment(const Tensor& image, const Tensor& label,
                                  const AugmentOptions& options, uint64_t seed);

// The minimum of an f32 image (image_fill's default).
double image_minimum(const Tensor& image);

}  // namespace med3d::data
