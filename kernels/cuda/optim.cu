// Fused optimiser updates: one grid-stride pass per parameter reads param, grad and the state
// once and writes param and the state once.
#include "cuda_common.cuh"

#include "med3d/kernels/cuda/optim.h"
#include "med3d/kernels/optim.h"

namespace med3d::kernels::cuda {

namespace {

__global__ void sgd_kernel(SgdScalars<float> s, float* param, const float* grad,
                           float* momentum_buffer, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_stride()) {
    float unused = 0;
    kernels::sgd_update(s, param[i], grad[i],
                        momentum_buffer != nullptr ? momentum_buffer[i] : unused);
  }
}

__global__ void adam_kernel(AdamScalars<float> s, float* param, const float* grad, float* exp_avg,
                            float* exp_avg_sq, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_stride())
    kernels::adam_update(s, param[i], grad[i], exp_avg[i], exp_avg_sq[i]);
}

}  // namespace

void sgd_update(Stream stream, const SgdScalars<float>& scalars, float* param, const float* grad,
                float* momentum_buffer, int64_t n) {
  if (n == 0) return;
  MED3D_LAUNCH(sgd_kernel, element_grid(n), dim3(kElementThreads), 0, stream, scalars, param,
               grad, momentum_buffer, n);
}

void adam_update(Stream stream, const AdamScalars<float>& scalars, float* param, const float* grad,
                 float* exp_avg, float* exp_avg_sq, int64_t n) {
  if (n == 0) return;
  MED3D_LAUNCH(adam_kernel, element_grid(n), dim3(kElementThreads), 0, stream, scalars, param,
               grad, exp_avg, exp_avg_sq, n);
}

}  // namespace med3d::kernels::cuda
