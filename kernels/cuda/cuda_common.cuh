// What every kernel file shares: dynamic shared memory, block reductions, the checked launch
// and the 1D grid of element-wise kernels. The same source is compiled by nvcc and, in tests
// and MED3D_CUDA=EMULATE builds, by g++ under tests/cuda_emu/cuda_emu.h (which defines
// MED3D_EXTERN_SHARED and the runtime calls itself).
#pragma once

#include <cstdint>

#include "med3d/kernels/cuda/runtime.h"

#if defined(__CUDACC__)
#include <cuda_runtime.h>

// kernel<<<...>>> then the launch check. `kernel` must be one token: take a template
// instance's address into a variable first.
#define MED3D_LAUNCH(kernel, grid, block, shared_bytes, stream, ...)  \
  do {                                                                \
    kernel<<<(grid), (block), (shared_bytes), (stream)>>>(__VA_ARGS__); \
    ::med3d::kernels::cuda::check_launch(#kernel);                    \
  } while (0)

// One untyped array for every kernel: `extern __shared__ T name[]` with different T in
// different templates is a redeclaration error under nvcc.
#define MED3D_EXTERN_SHARED(type, name)                         \
  extern __shared__ __align__(16) unsigned char med3d_smem_[]; \
  type* name = reinterpret_cast<type*>(med3d_smem_)
#elif defined(MED3D_EXTERN_SHARED)
// The emulator runs every launch to completion at once, so the stream orders nothing.
#define MED3D_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
  do {                                                               \
    static_cast<void>(stream);                                       \
    ::cuda_emu::launch(kernel, (grid), (block), (shared_bytes), __VA_ARGS__); \
  } while (0)
#else
#error "kernels/cuda/* need nvcc, or tests/cuda_emu/cuda_emu.h included first"
#endif

namespace med3d::kernels::cuda {

inline constexpr unsigned kFullWarp = 0xffffffffu;

// Element-wise kernels: 256 threads, grid-stride loops over at most 4096 blocks.
inline constexpr unsigned kElementThreads = 256;
__host__ inline dim3 element_grid(int64_t count) {
  const int64_t blocks = (count + kElementThreads - 1) / kElementThreads;
  return dim3(static_cast<unsigned>(blocks < 1 ? 1 : blocks > 4096 ? 4096 : blocks));
}

// The index of this thread in a 1D grid-stride loop, and the stride.
__device__ inline int64_t grid_index() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline int64_t grid_stride() { return int64_t(blockDim.x) * gridDim.x; }

// Sum of `value` over the block, valid in thread 0 only. blockDim.x must be a multiple of 32
// (blockDim.y = blockDim.z = 1) and `partials` must hold blockDim.x / 32 values of T (dynamic
// shared memory). The order of additions is fixed, so the result is deterministic.
template <class T>
__device__ T block_sum(T value, T* partials) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(kFullWarp, value, offset);
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partials[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < blockDim.x / 32 ? partials[lane] : T(0);
    for (int offset = 16; offset > 0; offset /= 2)
      value += __shfl_down_sync(kFullWarp, value, offset);
  }
  __syncthreads();  // partials may be reused by the caller's next reduction
  return value;
}

}  // namespace med3d::kernels::cuda
