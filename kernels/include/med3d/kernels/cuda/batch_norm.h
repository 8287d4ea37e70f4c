// CUDA launchers of batch normalisation over a contiguous f32 [N, C, spatial] tensor (device
// pointers, queued on `stream`), with the math of med3d/kernels/batch_norm.h and the
// deterministic two-level reductions of kernels/cuda/batch_norm.cuh, so results match the CPU
// op (kernels/cpu/batch_norm.cpp) up to f32 rounding and never depend on scheduling.
//   `stats`     2 * C doubles, overwritten by the forwards: mean[c] at [c], invstd[c] at [C + c]
//               (the batch's in training, the running statistics' in eval); read by backward.
//   `workspace` batch_norm_workspace_elements(size) doubles, scratch of one call.
//   weight/bias may be nullptr (1 and 0); so may running_mean/var in training (no update).
// The forwards overwrite y and stats (y is relu'd in the same pass when `relu`: the fused
// batch_norm_relu3d); training also updates running_mean/var in place
// (momentum average with the unbiased batch variance, as PyTorch). Backward overwrites those of
// dx, dweight, dbias that are not nullptr. Eval does not check running_var >= 0 (that would
// need a host round trip): a negative one gives NaN instead of the CPU op's error.
#pragma once

#include <cstdint>

#include "med3d/kernels/cuda/runtime.h"

namespace med3d::kernels::cuda {

struct BatchNormSize {
  int64_t n, c, spatial;
};

int64_t batch_norm_workspace_elements(const BatchNormSize& size);

void batch_norm_forward_train(Stream stream, const BatchNormSize& size, const float* x,
                              const float* weight, const float* bias, float* running_mean,
                              float* running_var, double momentum, double eps, bool relu,
                              float* y, double* stats, double* workspace);

void batch_norm_forward_eval(Stream stream, const BatchNormSize& size, const float* x,
                             const float* weight, const float* bias, const float* running_mean,
                             const float* running_var, double eps, bool relu, float* y,
                             double* stats, double* workspace);

// `training` selects the gradient through the batch statistics (else they are constants).
void batch_norm_backward(Stream stream, const BatchNormSize& size, bool training, const float* x,
                         const float* dy, const float* weight, const double* stats, float* dx,
                         float* dweight, float* dbias, double* workspace);

}  // namespace med3d::kernels::cuda
