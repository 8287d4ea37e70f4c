// The fully connected layer's three GEMMs on cuBLAS (SGEMM, f32, row-major contiguous device
// pointers, queued on `stream`): x [n, in], w [out, in], y and dy [n, out].
//   linear_fprop  overwrites y  [n, out] = x w^T   (no bias: the caller adds it)
//   linear_dgrad  overwrites dx [n, in]  = dy w
//   linear_wgrad  overwrites dw [out, in] = dy^T x
// A Blas is a cuBLAS handle bound to one device; use it with one stream only (the Context's):
// cuBLAS results are bitwise reproducible only while a handle is not shared between streams.
// The math mode is plain f32 (no TF32). Empty outputs launch nothing; an empty sum (in = 0 for
// fprop, out = 0 for dgrad, n = 0 for wgrad) writes zeros. Failures throw med3d::Error naming
// the cuBLAS call and its status. Plain C++: callers need no CUDA or cuBLAS header.
// Defined in kernels/cuda/blas.cu (nvcc + cuBLAS, or g++ over tests/cuda_emu/cublas_emu.h).
#pragma once

#include <cstdint>

#include "med3d/kernels/cuda/runtime.h"

namespace med3d::kernels::cuda {

struct BlasHandle;
using Blas = BlasHandle*;

// A cuBLAS handle on `device` working on `stream`; destroy_blas waits for the device first.
Blas create_blas(int device, Stream stream);
void destroy_blas(int device, Blas blas) noexcept;

void linear_fprop(Blas blas, Stream stream, const float* x, const float* w, float* y, int64_t n,
                  int64_t in, int64_t out);
void linear_dgrad(Blas blas, Stream stream, const float* dy, const float* w, float* dx, int64_t n,
                  int64_t in, int64_t out);
void linear_wgrad(Blas blas, Stream stream, const float* dy, const float* x, float* dw, int64_t n,
                  int64_t in, int64_t out);

}  // namespace med3d::kernels::cuda
