// Inverted dropout: a grid-stride loop over the shared functors; each element draws its own
// Philox counter, so the mask does not depend on the launch geometry.
#include "cuda_common.cuh"

#include "med3d/kernels/cuda/dropout.h"
#include "med3d/kernels/dropout.h"

namespace med3d::kernels::cuda {

namespace {

__global__ void dropout_kernel(const float* in, float* out, int64_t n, double p, float scale,
                               uint64_t seed, uint64_t offset) {
  for (int64_t i = grid_index(); i < n; i += grid_stride()) {
    const bool keep = dropout_keeps(seed, offset, static_cast<uint64_t>(i), p);
    out[i] = kernels::dropout_apply(in[i], keep, scale);
  }
}

}  // namespace

void dropout_apply(Stream stream, const float* in, float* out, int64_t n, double p, uint64_t seed,
                   uint64_t offset) {
  if (n == 0) return;
  // The scale is rounded to f32 on the host, as the CPU loop rounds it.
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  MED3D_LAUNCH(dropout_kernel, element_grid(n), dim3(kElementThreads), 0, stream, in, out, n, p,
               scale, seed, offset);
}

}  // namespace med3d::kernels::cuda
