// CUDA launcher of inverted dropout (f32, contiguous, device pointers, queued on `stream`):
// out[i] = in[i] / (1 - p) where the Philox stream (seed, offset) keeps element i, else 0, with
// the functors of med3d/kernels/dropout.h, so the mask is bit-identical to the CPU loop's
// (kernels/cpu/dropout.h) for the same (seed, offset). Overwrites out only; out may alias in.
// The same call serves forward (in = x) and backward (in = dy).
#pragma once

#include <cstdint>

#include "med3d/kernels/cuda/runtime.h"

namespace med3d::kernels::cuda {

void dropout_apply(Stream stream, const float* in, float* out, int64_t n, double p, uint64_t seed,
                   uint64_t offset);

}  // namespace med3d::kernels::cuda
