// Regions of interest for cascaded segmentation (e.g. liver then lesions): connected
// components, the largest one, bounding boxes, box margins, and crop/paste of a box.
//
// Masks are CPU tensors [D, H, W] of any dtype; a voxel is foreground when it is non-zero.
// Boxes are med3d::data::Box3: half-open voxel ranges [lo, hi) per tensor axis (D, H, W);
// here they always lie inside the volume.
//
// - connected_components: labels i32 [D, H, W], 0 = background, components numbered 1, 2, ...
//   in the scan order (D, then H, then W) of their first voxel; sizes[i] = voxels of
//   component i + 1. 26-connectivity joins voxels sharing a face, edge or corner; 6 only faces.
// - largest_component: the mask with every voxel outside its largest component set to 0
//   (values inside kept, so a liver label with a lesion label inside stays whole); the first
//   component in scan order wins ties; an empty mask comes back as a zero copy.
// - bounding_box: the tight box of the foreground; std::nullopt for an empty mask.
// - expand_box: the box grown by margin[a] voxels on both sides of axis a, clamped to shape.
// - random_expand_box: the box grown by an independent margin on each side of each axis,
//   drawn uniformly from the integers {min_margin[a], ..., max_margin[a]} with `rng` (Philox,
//   reproducible from its seed), then clamped to shape.
// - crop_box: a copy of the box of x [..., D, H, W] (leading axes kept).
// - paste_box: the inverse: a copy of `full` with the box overwritten by `patch`, or a volume
//   [..., shape] filled with `fill` and the box set to `patch`. Same dtype as `patch`.
// (crop_box, not crop, so calls do not collide with med3d::data::crop through ADL.)
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "med3d/data/crop.h"
#include "med3d/tensor.h"

namespace med3d::trainers {

using data::Box3;
using data::Index3;

enum class Connectivity { faces = 6, all = 26 };

struct Components {
  Tensor labels;               // i32 [D, H, W]
  std::vector<int64_t> sizes;  // voxels of component 1, 2, ...
  int64_t count() const { return static_cast<int64_t>(sizes.size()); }
};

Components connected_components(const Tensor& mask, Connectivity connectivity = Connectivity::all);

Tensor largest_component(const Tensor& mask, Connectivity connectivity = Connectivity::all);

std::optional<Box3> bounding_box(const Tensor& mask);

Box3 expand_box(const Box3& box, const Index3& margin, const Index3& shape);

Box3 random_expand_box(const Box3& box, const Index3& min_margin, const Index3& max_margin,
                       const Index3& shape, data::SampleRng& rng);

Tensor crop_box(const Tensor& x, const Box3& box);

Tensor paste_box(const Tensor& full, const Tensor& patch, const Box3& box);
Tensor paste_box(const Tensor& patch, const Box3& box, const Index3& shape, double fill = 0.0);

}  // namespace med3d::trainers
