// CUDA launchers of 3D pooling (f32, contiguous [planes, D, H, W] device tensors with planes =
// N * C, queued on `stream`), with the window math of med3d/kernels/pool.h shared with the CPU
// loops. Forward passes overwrite y [planes, out] (and argmax); backward passes overwrite dx
// [planes, in]. The backward passes are gathers: every dx element sums, in output order, the
// dy elements of the windows that read it, so gradients are deterministic (no atomics) and
// equal the CPU loops' bit for bit.
#pragma once

#include <cstdint>

#include "med3d/kernels/cuda/runtime.h"

namespace med3d::kernels::cuda {

struct PoolShape {
  int64_t planes = 0;
  int64_t in[3] = {0, 0, 0};
  int64_t out[3] = {0, 0, 0};
  // Windows: pool_window with these (max and average pooling), or adaptive_pool_window when
  // `adaptive` (kernel, stride and padding are then unused).
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t padding[3] = {0, 0, 0};
  bool count_include_pad = true;
  bool adaptive = false;
};

// y = max over each window; argmax = its first maximum (NaN wins) as a flat index into the
// plane, as the CPU loop chooses it.
void max_pool3d_forward(Stream stream, const PoolShape& s, const float* x, float* y, int64_t* argmax);
// dx[i] = sum of dy over the windows whose argmax is i.
void max_pool3d_backward(Stream stream, const PoolShape& s, const float* dy, const int64_t* argmax,
                         float* dx);
// y = sum over each window (in double) / the window's divisor.
void avg_pool3d_forward(Stream stream, const PoolShape& s, const float* x, float* y);
// dx[i] = sum over the windows reading i of dy / divisor.
void avg_pool3d_backward(Stream stream, const PoolShape& s, const float* dy, float* dx);

}  // namespace med3d::kernels::cuda
