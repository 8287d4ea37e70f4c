// Per-element and per-channel math of batch normalisation, shared by the CPU loops and the
// CUDA launchers. Notation per channel c over its M = N * spatial values:
//   mean, var (biased), invstd = 1 / sqrt(var + eps), scale = weight * invstd,
//   y = (x - mean) * scale + bias, or relu of it when fused with the following ReLU.
// Training backward (through the batch statistics), with sum_dy = sum(dy) and
// sum_dy_xmu = sum(dy * (x - mean)):
//   dx = scale * (dy - sum_dy / M - (x - mean) * invstd^2 * sum_dy_xmu / M)
//   dweight = sum_dy_xmu * invstd, dbias = sum_dy.
// Eval backward (running statistics are constants): dx = scale * dy, same dweight, dbias.
#pragma once

#include <cmath>
#include <cstdint>

#include "med3d/kernels/elementwise.h"
#include "med3d/kernels/hd.h"

namespace med3d::kernels {

// Subtracting (x - mean) before scaling keeps f32 precise when |mean| >> std.
template <class T>
MED3D_HD inline T batch_norm_forward(T x, T mean, T scale, T bias) {
  return (x - mean) * scale + bias;
}

// Batch norm fused with the ReLU that follows it (one pass over x instead of two).
template <class T>
MED3D_HD inline T batch_norm_forward(T x, T mean, T scale, T bias, bool relu) {
  const T y = batch_norm_forward(x, mean, scale, bias);
  return relu ? relu_forward(y) : y;
}

// `proj` = invstd^2 * sum_dy_xmu / M: the part of dy along (x - mean), removed because the
// variance moves with x; `mean_dy` is removed because the mean moves with x.
template <class T>
MED3D_HD inline T batch_norm_backward_train(T x, T dy, T mean, T scale, T mean_dy, T proj) {
  return scale * (dy - mean_dy - (x - mean) * proj);
}

// Moments are accumulated as sums of (x - shift) with `shift` one value of the channel: this
// one-pass form is as accurate as two passes unless the channel's spread is >> 1e8 times
// its distance from the shift, and it needs one read of x instead of two.
struct ShiftedMoments {
  double shift;  // subtracted from every value before summing
  double sum;    // sum of (x - shift)
  double sumsq;  // sum of (x - shift)^2
};

// Mean and biased variance from shifted sums over `count` values (count > 0).
MED3D_HD inline void batch_norm_finalize(const ShiftedMoments& m, int64_t count, double* mean,
                                         double* var) {
  const double d = m.sum / static_cast<double>(count);
  *mean = m.shift + d;
  const double v = m.sumsq / static_cast<double>(count) - d * d;
  *var = v > 0 ? v : 0;  // rounding can make an exactly constant channel slightly negative
}

// Exponential moving average as in PyTorch: new = (1 - momentum) * old + momentum * batch.
MED3D_HD inline double running_stat_update(double old_value, double batch_value, double momentum) {
  return (1 - momentum) * old_value + momentum * batch_value;
}

// invstd = 1 / sqrt(var + eps); var + eps > 0 is the caller's to check.
MED3D_HD inline double batch_norm_invstd(double var, double eps) {
  return 1 / std::sqrt(var + eps);
}

// The per-channel scalars of the training-mode input gradient from the channel's sums over
// `count` values (see batch_norm_backward_train).
struct BatchNormGradScalars {
  double mean_dy;  // sum_dy / M
  double proj;     // invstd^2 * sum_dy_xmu / M
};

MED3D_HD inline BatchNormGradScalars batch_norm_grad_scalars(double sum_dy, double sum_dy_xmu,
                                                             double invstd, double count) {
  return {sum_dy / count, invstd * invstd * sum_dy_xmu / count};
}

// PyTorch keeps the unbiased variance in running_var: var * M / (M - 1), M > 1.
MED3D_HD inline double unbiased_variance(double biased_var, int64_t count) {
  return biased_var * static_cast<double>(count) / static_cast<double>(count - 1);
}

}  // namespace med3d::kernels
