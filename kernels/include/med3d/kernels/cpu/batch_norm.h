// CPU loops of batch normalisation over a contiguous [N, C, spatial] tensor (spatial = D*H*W,
// or 1 for [N, C] input). Per-channel values (mean, scale, ...) are arrays of C doubles; all
// reductions are accumulated in double, per (n, c) plane in parallel and then over n in a
// fixed order, so results do not depend on the thread count. See med3d/kernels/batch_norm.h
// for the formulas. Instantiated for T = float and double.
#pragma once

#include <cstdint>

namespace med3d::kernels::cpu {

struct BatchNormShape {
  int64_t n;
  int64_t c;
  int64_t spatial;
};

// Writes the mean and biased variance of every channel of x.
template <class T>
void batch_norm_stats(const BatchNormShape& shape, const T* x, double* mean, double* var);

// Writes y = (x - mean[c]) * scale[c] + bias[c], with relu applied when `relu` (the fused
// batch_norm_relu3d).
template <class T>
void batch_norm_apply(const BatchNormShape& shape, const T* x, const double* mean,
                      const double* scale, const double* bias, bool relu, T* y);

// Writes sum_dy[c] = sum(dy) and sum_dy_xmu[c] = sum(dy * (x - mean[c])) of every channel.
template <class T>
void batch_norm_reduce_grad(const BatchNormShape& shape, const T* x, const T* dy,
                            const double* mean, double* sum_dy, double* sum_dy_xmu);

// Writes the input gradient of training mode:
// dx = scale[c] * (dy - mean_dy[c] - (x - mean[c]) * proj[c]).
template <class T>
void batch_norm_backward_train(const BatchNormShape& shape, const T* x, const T* dy,
                               const double* mean, const double* scale, const double* mean_dy,
                               const double* proj, T* dx);

// Training mode in one pass per channel: every kernel above walks the whole tensor, so a
// tensor larger than the caches is fetched from memory once per kernel; these fused kernels
// take one channel at a time (its N planes, usually within L2) through all their steps, with
// the same arithmetic in the same order as the separate kernels (bitwise equal results).
//
// Forward: writes mean, biased var and invstd = 1 / sqrt(var + eps) of every channel, and
// y = (x - mean) * weight * invstd + bias (then relu when `relu`).
template <class T>
void batch_norm_train_forward(const BatchNormShape& shape, const T* x, const double* weight, const double* bias,
                              double eps, bool relu, double* mean, double* var, double* invstd, T* y);

// Backward of the forward above: writes sum_dy and sum_dy_xmu (as batch_norm_reduce_grad) and,
// unless dx is null, the input gradient (as batch_norm_backward_train with scale = weight *
// invstd). With relu_y (the relu's output y) dy is first masked by y > 0, the backward of the
// fused relu, without storing the masked dy.
template <class T>
void batch_norm_train_backward(const BatchNormShape& shape, const T* x, const T* dy, const T* relu_y,
                               const double* mean, const double* invstd, const double* weight, double* sum_dy,
                               double* sum_dy_xmu, T* dx);

// Writes the input gradient of eval mode: dx = scale[c] * dy.
template <class T>
void batch_norm_backward_eval(const BatchNormShape& shape, const T* dy, const double* scale, T* dx);

}  // namespace med3d::kernels::cpu
