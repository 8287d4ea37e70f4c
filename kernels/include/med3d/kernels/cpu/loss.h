// CPU loops of the losses. Class targets are int32 per position in [0, C) or kIgnoredTarget
// (see kernels/loss.h); class_weights and pos_weight are [C] or nullptr. Forward functions
// return sums in double (deterministic, see block_sum.h); the op divides by the count.
// Backward functions overwrite their outputs; a nullptr output is skipped. T = float or double.
#pragma once

#include <cstdint>

#include "med3d/kernels/loss.h"

namespace med3d::kernels::cpu {

// Labels -> targets [n]: kIgnoredTarget where has_ignore and label == ignore_index, else the
// label, which must lie in [0, channels). Returns the smallest position of a label that is
// neither, or -1 when all are valid (the CUDA class_targets' twin). On all threads, branch-free.
template <class L>
int64_t class_targets(const L* labels, int64_t n, bool has_ignore, int64_t ignore_index, int64_t channels,
                      int32_t* targets);

struct CrossEntropySums {
  double loss = 0;    // sum over non-ignored positions of w[target] * (-log softmax_target)
  double weight = 0;  // sum over non-ignored positions of w[target] (1 without weights)
};
template <class T>
CrossEntropySums cross_entropy_forward(const T* x, const int32_t* target, const T* class_weights,
                                       ChannelLayout layout);
// dx = scale * w[target] * (softmax(x) - onehot(target)); zero at ignored positions.
template <class T>
void cross_entropy_backward(const T* x, const int32_t* target, const T* class_weights,
                            double scale, T* dx, ChannelLayout layout);

// Per-class sums of probabilities p [N, C, S] against one-hot targets, each output [C]:
// intersection_c = sum p_c [t == c], p_sum_c = sum p_c, g_sum_c = count of t == c.
template <class T>
void dice_sums(const T* p, const int32_t* target, ChannelLayout layout, double* intersection,
               double* p_sum, double* g_sum);
// dp_c(i) = scale * (coefficients_c.a * [t(i) == c] + coefficients_c.b), coefficients [C].
template <class T>
void dice_backward(const int32_t* target, const DiceCoefficients* coefficients, double scale,
                   T* dp, ChannelLayout layout);

// sum (x - t)^2 over n elements.
template <class T> double squared_error_sum(const T* x, const T* t, int64_t n);
// dx = scale * (x - t), dt = -dx.
template <class T>
void squared_error_backward(const T* x, const T* t, double scale, T* dx, T* dt, int64_t n);

// Sum of bce_with_logits over all elements; pos_weight indexed by channel.
template <class T>
double bce_with_logits_sum(const T* x, const T* t, const T* pos_weight, ChannelLayout layout);
// dx = scale * d loss / dx, dt = scale * d loss / dt.
template <class T>
void bce_with_logits_backward(const T* x, const T* t, const T* pos_weight, double scale, T* dx,
                              T* dt, ChannelLayout layout);

}  // namespace med3d::kernels::cpu
