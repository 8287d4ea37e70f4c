// Softmax family and losses over the channel axis. Tensors are [N, C, spatial...] with rank
// 2..5 (C = axis 1); labels are class indices [N, spatial...] of dtype i32, i64 or u8.
// Logits and targets are f32 or f64 CPU tensors of one Context and dtype. Losses return a
// one-element tensor [1] (the mean) and are differentiable in their floating inputs, except
// class_weights and pos_weight, which are constants (as in PyTorch). Sums run in double, in a
// fixed order, so results do not depend on the number of threads.
#pragma once

#include <cstdint>

#include "med3d/tensor.h"

namespace med3d {

// Softmax over channels: y_c = exp(x_c - max) / sum_k exp(x_k - max).
Tensor softmax(const Tensor& x);
// log_softmax over channels: y_c = x_c - log sum_k exp(x_k), computed with the max shift.
Tensor log_softmax(const Tensor& x);
// Index of the largest channel per position, i32 [N, spatial...]; the first maximum wins ties.
// Not differentiable (never recorded).
Tensor argmax(const Tensor& logits);

struct CrossEntropyOptions {
  int64_t ignore_index = -100;  // positions with this label contribute neither loss nor weight
  Tensor class_weights{};       // [C] of the logits' dtype, or undefined for all ones
};
// Cross-entropy of logits [N, C, spatial...] against labels [N, spatial...], exactly as
// torch.nn.functional.cross_entropy(reduction="mean"):
//   loss = sum_i w[y_i] * (-log softmax(x_i)[y_i]) / sum_i w[y_i]
// over positions i whose label is not ignore_index (w = 1 without class_weights).
// A label outside [0, C) that is not ignore_index throws med3d::Error naming it and its
// position. When every position is ignored the loss is NaN (0 / 0), as in PyTorch, and the
// gradient is zero.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options = {});

struct SoftDiceOptions {
  double smooth = 1e-5;
  bool include_background = true;  // false leaves class 0 out of the mean (needs C >= 2)
};
// Soft Dice loss of p = softmax(logits) against one-hot labels g (every label in [0, C)).
// For each class c, with sums over the batch and all positions:
//   dice_c = (2 * sum(p_c * g_c) + smooth) / (sum(p_c) + sum(g_c) + smooth)
//   loss = 1 - mean of dice_c over the included classes (all, or 1..C-1 without background).
// Differentiable in logits.
Tensor soft_dice_loss(const Tensor& logits, const Tensor& labels, const SoftDiceOptions& options = {});

// mean((x - target)^2) over all elements; x and target of one shape, both differentiable.
Tensor mse_loss(const Tensor& x, const Tensor& target);

// Mean binary cross-entropy of logits x against probabilities target (same shape, any rank
// 1..5), in PyTorch's stable form: with l = 1 + (pos_weight_c - 1) * t,
//   loss = (1 - t) * x + l * (log(1 + exp(-|x|)) + max(-x, 0)),
// which is max(x, 0) - x * t + log(1 + exp(-|x|)) without pos_weight. pos_weight is [C] and
// applies along axis 1 (x of rank >= 2); for rank 2 that is PyTorch's broadcasting, for
// volumes it equals PyTorch's pos_weight.reshape(C, 1, 1, 1). Differentiable in x and target.
Tensor binary_cross_entropy_with_logits(const Tensor& x, const Tensor& target,
                                        const Tensor& pos_weight = {});

}  // namespace med3d
