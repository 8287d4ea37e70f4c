// CPU loops of 3D pooling over contiguous [planes, D, H, W] tensors (planes = N * C). A
// PoolPlan lists, per axis and output index, the input window (see med3d/kernels/pool.h);
// max, average and adaptive average pooling all run from one. Every loop is parallel over
// planes and each plane is owned by one thread, so the backward scatters are deterministic.
// Backward functions overwrite dx. Instantiated for T = float and double.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "med3d/kernels/pool.h"

namespace med3d::kernels::cpu {

struct PoolPlan {
  int64_t planes = 0;
  std::array<int64_t, 3> in{};
  std::array<int64_t, 3> out{};
  std::array<std::vector<PoolWindow>, 3> windows;  // windows[axis][output index]
};

// Windows of max/avg pooling with the given kernel, stride and padding per axis; the output
// size is pool_output_size (callers validate that it is positive).
PoolPlan make_pool_plan(int64_t planes, const std::array<int64_t, 3>& in,
                        const std::array<int64_t, 3>& kernel, const std::array<int64_t, 3>& stride,
                        const std::array<int64_t, 3>& padding, bool count_include_pad);
// Windows of adaptive average pooling to `out`.
PoolPlan make_adaptive_pool_plan(int64_t planes, const std::array<int64_t, 3>& in,
                                 const std::array<int64_t, 3>& out);

// y = max over each window; argmax = the window's maximum as a flat index into its plane.
template <class T>
void max_pool3d_forward(const PoolPlan& plan, const T* x, T* y, int64_t* argmax);
// dx[argmax] += dy (dx is zeroed first).
template <class T>
void max_pool3d_backward(const PoolPlan& plan, const T* dy, const int64_t* argmax, T* dx);

// y = sum over each window / product of the windows' divisors (accumulated in double).
template <class T>
void avg_pool3d_forward(const PoolPlan& plan, const T* x, T* y);
// Spreads dy / divisor over each window (dx is zeroed first).
template <class T>
void avg_pool3d_backward(const PoolPlan& plan, const T* dy, T* dx);

}  // namespace med3d::kernels::cpu
