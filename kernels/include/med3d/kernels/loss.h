// Per-position and per-element math of the losses, shared by the CPU loops and CUDA launchers.
// Class targets are int32 per position: a class in [0, C), or kIgnoredTarget (the engine maps
// ignore_index to it after validating the labels). Channel layout as in softmax.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "med3d/kernels/hd.h"
#include "med3d/kernels/softmax.h"

namespace med3d::kernels {

inline constexpr int32_t kIgnoredTarget = -1;

// weights[c], or 1 without weights (nullptr): class_weights of cross-entropy, pos_weight of BCE.
template <class T>
MED3D_HD inline double class_weight_of(const T* weights, int64_t c) {
  return weights ? static_cast<double>(weights[c]) : 1.0;
}

// -log softmax(x)_target at one position.
template <class T>
MED3D_HD inline double cross_entropy_at(const T* x, int64_t channels, int64_t stride,
                                        int32_t target) {
  const LogSumExp<T> lse = log_sum_exp(x, channels, stride);
  return lse.log_total - static_cast<double>(x[target * stride] - lse.max);
}

// dx_c = scale * (softmax(x)_c - [c == target]); scale carries dy, the class weight and 1/sum(w).
template <class T>
MED3D_HD inline void cross_entropy_backward_at(const T* x, T* dx, int64_t channels, int64_t stride,
                                               int32_t target, double scale) {
  softmax_at(x, dx, channels, stride);
  for (int64_t c = 0; c < channels; ++c)
    dx[c * stride] = static_cast<T>(scale * (static_cast<double>(dx[c * stride]) - (c == target ? 1.0 : 0.0)));
}

// (x - t)^2 in double; its gradient is 2 (x - t).
MED3D_HD inline double squared_error(double x, double t) { return (x - t) * (x - t); }

// log(1 + exp(-|x|)) + max(-x, 0) = log(1 + exp(-x)), without overflow for large |x|.
MED3D_HD inline double softplus_of_negative(double x) {
  return std::log1p(std::exp(-std::fabs(x))) + (x < 0 ? -x : 0.0);
}
MED3D_HD inline double sigmoid_of(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

// Binary cross-entropy with logits as PyTorch computes it, with l = 1 + (pos_weight - 1) * t
// (l = 1 without pos_weight): loss = (1 - t) * x + l * log(1 + exp(-x)).
// Without pos_weight this is max(x, 0) - x * t + log(1 + exp(-|x|)).
MED3D_HD inline double bce_with_logits(double x, double t, double pos_weight) {
  const double l = 1.0 + (pos_weight - 1.0) * t;
  return (1.0 - t) * x + l * softplus_of_negative(x);
}
// d loss / d x = (1 - t) - l * sigmoid(-x).
MED3D_HD inline double bce_with_logits_dx(double x, double t, double pos_weight) {
  const double l = 1.0 + (pos_weight - 1.0) * t;
  return (1.0 - t) - l * sigmoid_of(-x);
}
// d loss / d t = -x + (pos_weight - 1) * log(1 + exp(-x)).
MED3D_HD inline double bce_with_logits_dt(double x, double pos_weight) {
  return -x + (pos_weight - 1.0) * softplus_of_negative(x);
}

// Soft Dice, per class c over batch and space: I = sum p*g, P = sum p, G = sum g,
// D = P + G + smooth, dice = (2I + smooth) / D. With K included classes and loss = 1 - mean
// dice, d loss / d p(i) = a_c * g(i) + b_c with a_c = -2 / (K D), b_c = (2I + smooth) / (K D^2).
struct DiceCoefficients {
  double a = 0;
  double b = 0;
};
MED3D_HD inline DiceCoefficients dice_gradient_coefficients(double intersection, double p_sum,
                                                            double g_sum, double smooth,
                                                            double included_classes) {
  const double d = p_sum + g_sum + smooth;
  return {-2.0 / (included_classes * d), (2.0 * intersection + smooth) / (included_classes * d * d)};
}

}  // namespace med3d::kernels
