// CUDA launchers of the losses (f32 values, device pointers, queued on `stream`). Class
// targets are int32 per position, a class in [0, C) or kIgnoredTarget (med3d/kernels/loss.h).
// Sums run in double in a fixed order (per-block partials, then one block adds them in block
// order), so every result is deterministic; there are no float atomics. Loss values and the
// incoming gradient dy stay on the device: forward launchers write loss[0], backward launchers
// read dy[0]. `workspace` holds loss_workspace_elements(...) doubles; forwards also leave in
// it what the matching backward reads (documented per launcher), so keep it alive until then.
#pragma once

#include <cstdint>

#include "med3d/kernels/cuda/runtime.h"
#include "med3d/kernels/loss.h"

namespace med3d::kernels::cuda {

// Labels -> targets [n]: kIgnoredTarget where has_ignore and label == ignore_index, else the
// label, which must lie in [0, channels). first_invalid[0] is set to the smallest position of
// a label that is neither (left at ~0ull when all are valid; integer atomicMin, deterministic).
void init_first_invalid(Stream stream, unsigned long long* first_invalid);
void class_targets(Stream stream, const int32_t* labels, int64_t n, bool has_ignore,
                   int64_t ignore_index, int64_t channels, int32_t* targets,
                   unsigned long long* first_invalid);
void class_targets(Stream stream, const int64_t* labels, int64_t n, bool has_ignore,
                   int64_t ignore_index, int64_t channels, int32_t* targets,
                   unsigned long long* first_invalid);
void class_targets(Stream stream, const uint8_t* labels, int64_t n, bool has_ignore,
                   int64_t ignore_index, int64_t channels, int32_t* targets,
                   unsigned long long* first_invalid);

// Doubles of workspace the forward launchers below need for `count` summed items (positions
// for cross-entropy and Dice, elements otherwise) and `channels` classes.
int64_t loss_workspace_elements(int64_t count, int64_t channels);

// loss[0] = sum w[t] * (-log softmax(x)[t]) / sum w[t] over non-ignored positions (NaN when
// the weight sum is 0). class_weights [C] or nullptr. workspace[0] = the weight sum after.
void cross_entropy_forward(Stream stream, const float* x, const int32_t* target,
                           const float* class_weights, ChannelLayout layout, float* loss,
                           double* workspace);
// dx = dy[0] / weight_sum[0] * w[t] * (softmax(x) - onehot(t)); zero at ignored positions and
// everywhere when weight_sum[0] is 0.
void cross_entropy_backward(Stream stream, const float* x, const int32_t* target,
                            const float* class_weights, const float* dy, const double* weight_sum,
                            float* dx, ChannelLayout layout);

// Soft Dice of probabilities p [N, C, S] against one-hot targets (all in [0, C)):
// loss[0] = 1 - mean over classes c >= first_class of (2 I_c + smooth) / (P_c + G_c + smooth).
// workspace[0, 2C) = the DiceCoefficients [C] of the backward (zero for excluded classes).
void dice_forward(Stream stream, const float* p, const int32_t* target, ChannelLayout layout,
                  int64_t first_class, double smooth, float* loss, double* workspace);
// dp_c(i) = dy[0] * (a_c [t(i) == c] + b_c), coefficients = the forward's workspace.
void dice_backward(Stream stream, const int32_t* target, const double* coefficients,
                   const float* dy, float* dp, ChannelLayout layout);

// loss[0] = mean (x - t)^2 over n elements.
void mse_forward(Stream stream, const float* x, const float* t, int64_t n, float* loss,
                 double* workspace);
// dx = 2 dy[0] / n * (x - t), dt = -dx; a nullptr output is skipped.
void mse_backward(Stream stream, const float* x, const float* t, const float* dy, float* dx,
                  float* dt, int64_t n);

// loss[0] = mean binary cross-entropy with logits over the N*C*S elements; pos_weight [C] or
// nullptr, along the channel of `layout`.
void bce_with_logits_forward(Stream stream, const float* x, const float* t, const float* pos_weight,
                             ChannelLayout layout, float* loss, double* workspace);
// dx, dt = dy[0] / (N*C*S) * d loss / d x, d loss / d t; a nullptr output is skipped.
void bce_with_logits_backward(Stream stream, const float* x, const float* t,
                              const float* pos_weight, const float* dy, float* dx, float* dt,
                              ChannelLayout layout);

}  // namespace med3d::kernels::cuda
