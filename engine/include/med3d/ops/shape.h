// Ops that rearrange tensors: concatenation and MedicalNet's shortcut type A. Inputs are f32
// or f64 CPU tensors of one Context and dtype; results are new tensors.
#pragma once

#include <cstdint>
#include <vector>

#include "med3d/tensor.h"

namespace med3d {

// Joins tensors along `axis` (negative counts from the back). Every part has the same rank
// and the same extents except along `axis`. Differentiable in every part.
Tensor concat(const std::vector<Tensor>& xs, int axis = 1);

// MedicalNet's shortcut type A (downsample_basic_block): x [N, C, D, H, W] subsampled as
// x[:, :, ::stride, ::stride, ::stride], then zero channels appended up to out_channels (>= C).
// Output [N, out_channels, ceil(D/stride), ceil(H/stride), ceil(W/stride)].
// MedicalNet builds this from `out.data`, so the result is DETACHED: it is never recorded and
// no gradient flows back to x through it.
Tensor zero_pad_channels_subsample(const Tensor& x, int64_t stride, int64_t out_channels);

}  // namespace med3d
