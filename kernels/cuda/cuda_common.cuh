// What every kernel .cuh shares: dynamic shared memory and block reductions. The same source is
// compiled by nvcc and, in tests, by g++ under tests/cuda_emu/cuda_emu.h (which defines
// MED3D_EXTERN_SHARED itself); nothing here launches a kernel.
#pragma once

#if defined(__CUDACC__)
// One untyped array for every kernel: `extern __shared__ T name[]` with different T in
// different templates is a redeclaration error under nvcc.
#define MED3D_EXTERN_SHARED(type, name)                         \
  extern __shared__ __align__(16) unsigned char med3d_smem_[]; \
  type* name = reinterpret_cast<type*>(med3d_smem_)
#elif !defined(MED3D_EXTERN_SHARED)
#error "kernels/cuda/*.cuh need nvcc, or tests/cuda_emu/cuda_emu.h included first"
#endif

namespace med3d::kernels::cuda {

inline constexpr unsigned kFullWarp = 0xffffffffu;

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
