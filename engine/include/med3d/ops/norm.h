// Batch normalisation over NCDHW volumes (or [N, C] features), as torch.nn.functional.batch_norm.
//
// batch_norm3d(x, weight, bias, running_mean, running_var, training, momentum, eps):
//   x: [N, C, D, H, W] or [N, C], f32 or f64 on the CPU, f32 on CUDA (the other tensors on
//   x's device; running statistics stay there).
//   weight, bias: [C] of x's dtype, each optional (undefined = 1 and 0; no affine transform).
//   running_mean, running_var: [C] of x's dtype, both defined or both undefined.
//   y = (x - mean) / sqrt(var + eps) * weight + bias, per channel c.
// Training: mean and var are the batch statistics of each channel over N and the spatial
//   axes (biased variance); N * D * H * W must be > 1. When running stats are given they are
//   OVERWRITTEN in place: running = (1 - momentum) * running + momentum * batch, where the
//   batch variance used here is the unbiased one, as in PyTorch. The gradient of x flows
//   through the batch statistics.
// Eval (training = false): mean and var are running_mean and running_var (required; on
//   CUDA a negative running_var gives NaN instead of an error, which needs a host read).
// Gradients: x, weight, bias. Statistics are accumulated in double, in a deterministic order.
//
// batch_norm_relu3d(same arguments): relu(batch_norm3d(...)) in one pass over x, with the same
//   values and gradients bit for bit, and no intermediate tensor. Use it wherever a batch norm
//   feeds only a ReLU (the conv-bn-relu blocks of every model here).
#pragma once

#include "med3d/tensor.h"

namespace med3d {

Tensor batch_norm3d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                    Tensor running_mean, Tensor running_var, bool training,
                    double momentum = 0.1, double eps = 1e-5);

Tensor batch_norm_relu3d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                         Tensor running_mean, Tensor running_var, bool training,
                         double momentum = 0.1, double eps = 1e-5);

}  // namespace med3d
