// Crops and patch sampling for 3D volumes, plus the per-sample random stream used by the
// whole data pipeline (crop.h, augment.h, loader.h).
//
// Volumes are [D, H, W] tensors (axis convention: see nifti.h): images f32, labels i32 with
// 0 = background and any other value = foreground. Boxes are half-open voxel ranges
// [lo, hi) per axis in tensor order (D, H, W); a box may extend beyond the volume, and the
// voxels outside are padding.
//
// Randomness: every random choice for one sample comes from a SampleRng keyed by a seed
// derived from (loader seed, epoch, sample index) with derive_seed, so the result does not
// depend on which thread computes the sample or in which order.
//
// - foreground_box: the tight bounding box of label != 0 (nullopt for an all-zero label).
// - med3d_crop_box: the Med3D (MedicalNet) random crop: a box that always contains the
//   foreground box grown by half its extent on each side (2x the box, clamped to the volume)
//   and reaches a random distance towards the volume border, up to the whole volume.
//   Without foreground: the whole volume.
// - sample_patch_box: a patch of a fixed size; with probability foreground_fraction it is
//   centred on a uniformly drawn foreground voxel, otherwise on a uniform random position.
//   The patch is kept inside the volume along axes where the volume is at least as large;
//   along smaller axes it is centred on the volume and extends past it on both sides (padding).
// - crop: copies a box out of a tensor, writing `fill` where the box lies outside (padding).
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "med3d/tensor.h"

namespace med3d::data {

using Index3 = std::array<int64_t, 3>;

struct Box3 {
  Index3 lo{};  // first voxel, may be negative (padding)
  Index3 hi{};  // one past the last voxel, may exceed the volume (padding)
  Index3 size() const { return {hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]}; }
  bool contains(const Box3& inner) const;
  bool operator==(const Box3& other) const = default;
};

// splitmix64 finaliser: a well-mixed 64-bit hash (Steele et al., 2014).
uint64_t splitmix64(uint64_t x);
// The seed of one sample: depends only on its arguments, never on threads or timing.
uint64_t derive_seed(uint64_t seed, uint64_t epoch, uint64_t sample);

// A stream of uniform and normal numbers keyed by `seed` (Philox4x32-10, counter-based).
class SampleRng {
 public:
  explicit SampleRng(uint64_t seed) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  double uniform();                          // [0, 1)
  double uniform(double lo, double hi);      // [lo, hi)
  int64_t integer(int64_t count);            // {0, ..., count - 1}; count > 0
  bool bernoulli(double probability);        // true with `probability`
  double normal();                           // standard normal

 private:
  uint64_t seed_;
  uint64_t counter_ = 0;
};

// The [D, H, W] extents of a rank-3 tensor; throws for other ranks (names `who`).
Index3 volume_shape(const Tensor& volume, const char* who);

std::optional<Box3> foreground_box(const Tensor& label);

Box3 med3d_crop_box(const Index3& shape, const std::optional<Box3>& foreground, SampleRng& rng);

// `on_foreground` (optional) reports whether this patch was centred on a foreground voxel.
Box3 sample_patch_box(const Tensor& label, const Index3& patch, double foreground_fraction,
                      SampleRng& rng, bool* on_foreground = nullptr);

// A copy of `box` of a [D, H, W] f32 or i32 tensor; voxels outside the volume get `fill`.
Tensor crop(const Tensor& volume, const Box3& box, double fill = 0.0);

}  // namespace med3d::data
