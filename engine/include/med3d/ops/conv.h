// 3D convolution and transposed convolution, with PyTorch's semantics and weight layouts.
//   conv3d:           x [N, C, D, H, W], w [K, C/groups, T, R, S], b [K] or undefined
//                     -> y [N, K, Z, P, Q], Z = (D + 2*pad - dilation*(T-1) - 1) / stride + 1
//   conv_transpose3d: x [N, C, D, H, W], w [C, K/groups, T, R, S], b [K] or undefined
//                     -> y [N, K, D', H', W'],
//                        D' = (D-1)*stride - 2*pad + dilation*(T-1) + output_padding + 1
// Both are differentiable in x, w and b and recorded on the tape as one node. Inputs must be
// CPU tensors of one floating dtype and Context; bad shapes or options throw med3d::Error.
#pragma once

#include <array>
#include <cstdint>

#include "med3d/tensor.h"

namespace med3d {

struct Conv3dOptions {
  std::array<int64_t, 3> stride{1, 1, 1}, padding{0, 0, 0}, dilation{1, 1, 1};
  int64_t groups = 1;

  // The same stride, padding and dilation along depth, height and width.
  static Conv3dOptions uniform(int64_t stride, int64_t padding = 0, int64_t dilation = 1,
                               int64_t groups = 1) {
    return {{stride, stride, stride},
            {padding, padding, padding},
            {dilation, dilation, dilation},
            groups};
  }
};

struct ConvTranspose3dOptions {
  std::array<int64_t, 3> stride{1, 1, 1}, padding{0, 0, 0}, output_padding{0, 0, 0},
      dilation{1, 1, 1};
  int64_t groups = 1;

  static ConvTranspose3dOptions uniform(int64_t stride, int64_t padding = 0,
                                        int64_t output_padding = 0, int64_t dilation = 1,
                                        int64_t groups = 1) {
    return {{stride, stride, stride},
            {padding, padding, padding},
            {output_padding, output_padding, output_padding},
            {dilation, dilation, dilation},
            groups};
  }
};

Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor& b = {},
              const Conv3dOptions& options = {});

Tensor conv_transpose3d(const Tensor& x, const Tensor& w, const Tensor& b = {},
                        const ConvTranspose3dOptions& options = {});

}  // namespace med3d
