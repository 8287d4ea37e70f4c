// Test-only stand-in for <cublas_v2.h>: the cuBLAS v2 calls of kernels/cuda/blas.cu for
// MED3D_CUDA=EMULATE builds (include cuda_runtime_emu.h first). cublasSgemm is a plain
// column-major reference loop with the documented semantics, C = alpha op(A) op(B) + beta C
// (C is not read when beta == 0), accumulated in double, and it validates its arguments as
// cuBLAS does (negative sizes, leading dimensions below their minimum, unknown operations,
// null pointers), so a wrong transpose or leading dimension in blas.cu fails the gpu suite.
#pragma once

#include <cstdint>

struct cublasContext {
  cudaStream_t stream = nullptr;
  int math_mode = 0;
};
using cublasHandle_t = cublasContext*;

enum cublasStatus_t {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7,
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 };
enum cublasMath_t {
  CUBLAS_DEFAULT_MATH = 0,
  CUBLAS_TENSOR_OP_MATH = 1,
  CUBLAS_PEDANTIC_MATH = 2,
  CUBLAS_TF32_TENSOR_OP_MATH = 3,
};

inline const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
  }
  return "unknown error";
}

inline cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode < CUBLAS_DEFAULT_MATH || mode > CUBLAS_TF32_TENSOR_OP_MATH)
    return CUBLAS_STATUS_INVALID_VALUE;
  handle->math_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

namespace cuda_emu {
// Element (row, col) of op(M) for a column-major M with leading dimension ld.
inline float op_element(cublasOperation_t op, const float* m, int ld, int row, int col) {
  return op == CUBLAS_OP_N ? m[row + int64_t(col) * ld] : m[col + int64_t(row) * ld];
}
inline bool valid_op(cublasOperation_t op) {
  return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
}
inline int at_least_one(int v) { return v < 1 ? 1 : v; }
}  // namespace cuda_emu

// C [m, n] = alpha op(A) [m, k] op(B) [k, n] + beta C, all column-major.
inline cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                                  cublasOperation_t transb, int m, int n, int k,
                                  const float* alpha, const float* A, int lda, const float* B,
                                  int ldb, const float* beta, float* C, int ldc) {
  using cuda_emu::at_least_one;
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0 || !cuda_emu::valid_op(transa) || !cuda_emu::valid_op(transb))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (lda < at_least_one(transa == CUBLAS_OP_N ? m : k) ||
      ldb < at_least_one(transb == CUBLAS_OP_N ? k : n) || ldc < at_least_one(m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (alpha == nullptr || beta == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if (C == nullptr || (k > 0 && (A == nullptr || B == nullptr))) return CUBLAS_STATUS_INVALID_VALUE;
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      double product = 0;
      for (int l = 0; l < k; ++l)
        product += double(cuda_emu::op_element(transa, A, lda, i, l)) *
                   double(cuda_emu::op_element(transb, B, ldb, l, j));
      float& c = C[i + int64_t(j) * ldc];
      const double scaled = *beta == 0.0f ? 0.0 : double(*beta) * double(c);
      c = static_cast<float>(double(*alpha) * product + scaled);
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}
