// 3D upsampling (and downsampling) of NCDHW volumes, matching
// torch.nn.functional.interpolate with mode="trilinear" or mode="nearest" (PyTorch 1.13).
// x: [N, C, D, H, W], f32 or f64 on the CPU, every extent >= 1. Per-axis arrays are {D, H, W}.
// By size: the output spatial extents are `size` (each >= 1).
// By scale: the output extents are floor(in * scale) (each must come out >= 1). With
//   align_corners = false (and for nearest) the source coordinate uses 1 / scale, as
//   PyTorch does when scale_factor is given and recompute_scale_factor is not set; so
//   scale 1.3 on 4 voxels gives 5 voxels sampled at steps of 1 / 1.3, not 4 / 5.
// align_corners = true aligns the centres of the corner voxels of input and output.
// Gradients: x (deterministic).
// The scale variants carry a _scale suffix so that braced lists stay unambiguous:
//   upsample_trilinear3d(x, {32, 64, 64}, false); upsample_trilinear3d_scale(x, {2, 2, 2}, false).
#pragma once

#include <array>
#include <cstdint>

#include "med3d/tensor.h"

namespace med3d {

Tensor upsample_trilinear3d(const Tensor& x, std::array<int64_t, 3> size, bool align_corners);
Tensor upsample_trilinear3d_scale(const Tensor& x, std::array<double, 3> scale, bool align_corners);

Tensor upsample_nearest3d(const Tensor& x, std::array<int64_t, 3> size);
Tensor upsample_nearest3d_scale(const Tensor& x, std::array<double, 3> scale);

}  // namespace med3d
