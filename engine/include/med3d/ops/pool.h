// 3D pooling over NCDHW volumes, as torch.nn.functional's max_pool3d, avg_pool3d and
// adaptive_avg_pool3d. x: [N, C, D, H, W], f32 or f64 on the CPU. Per-axis arrays are
// {D, H, W}. Output extent per axis (floor mode; ceil_mode is not offered):
//   floor((in + 2 * padding - kernel) / stride) + 1, which must be >= 1.
// kernel and stride must be >= 1 and 0 <= padding <= kernel / 2 (PyTorch's limits).
// Gradients: x.
#pragma once

#include <array>
#include <cstdint>

#include "med3d/tensor.h"

namespace med3d {

// Maximum over each window; padding counts as -inf, NaN propagates, ties go to the first
// element in D, H, W scan order. Saves the argmax of every output for backward.
Tensor max_pool3d(const Tensor& x, std::array<int64_t, 3> kernel, std::array<int64_t, 3> stride,
                  std::array<int64_t, 3> padding = {0, 0, 0});

// Mean over each window. count_include_pad: the divisor counts the zero padding the window
// covers; otherwise only the input elements it covers.
Tensor avg_pool3d(const Tensor& x, std::array<int64_t, 3> kernel, std::array<int64_t, 3> stride,
                  std::array<int64_t, 3> padding = {0, 0, 0}, bool count_include_pad = true);

// Mean over the windows [floor(o * in / out), ceil((o + 1) * in / out)) per axis, for an
// output of output_size (each >= 1). {1, 1, 1} is global average pooling.
Tensor adaptive_avg_pool3d(const Tensor& x, std::array<int64_t, 3> output_size);

}  // namespace med3d
