// CUDA launchers of the optimiser updates: one fused kernel per parameter (f32, contiguous,
// device pointers, queued on `stream`) over the per-element functors of med3d/kernels/optim.h,
// the ones the CPU loops of engine/src/optim.cpp run, with the same host-computed scalars.
// Each overwrites param and its state buffers in place; grad is only read.
#pragma once

#include <cstdint>

#include "med3d/kernels/cuda/runtime.h"
#include "med3d/kernels/optim.h"

namespace med3d::kernels::cuda {

// `momentum_buffer` may be nullptr when scalars.momentum == 0 (PyTorch keeps no buffer then).
void sgd_update(Stream stream, const SgdScalars<float>& scalars, float* param, const float* grad,
                float* momentum_buffer, int64_t n);

void adam_update(Stream stream, const AdamScalars<float>& scalars, float* param, const float* grad,
                 float* exp_avg, float* exp_avg_sq, int64_t n);

}  // namespace med3d::kernels::cuda
