// The linear layer's GEMMs on cuBLAS (see med3d/kernels/cuda/blas.h). cuBLAS is column-major:
// a row-major [r, c] matrix is, in the same memory, the column-major [c, r] matrix (its
// transpose) with leading dimension c. So each row-major product is computed transposed:
//   y  = x w^T   ->  y^T  [out, n]  = w x^T       : C = op_T(w [in, out]) * x [in, n]
//   dx = dy w    ->  dx^T [in, n]   = w^T dy^T    : C = w [in, out] * dy [out, n]
//   dw = dy^T x  ->  dw^T [in, out] = x^T dy      : C = x [in, n] * op_T(dy [out, n])
// (matrices in brackets are the column-major views of the row-major buffers).
#include "cuda_common.cuh"

#if defined(MED3D_CUDA_EMULATED)
#include "cublas_emu.h"
#else
#include <cublas_v2.h>
#endif

#include <climits>

#include "med3d/error.h"
#include "med3d/kernels/cuda/blas.h"

namespace med3d::kernels::cuda {

struct BlasHandle {
  cublasHandle_t handle = nullptr;
};

namespace {

void check(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  detail::throw_error(call, " failed: ", cublasGetStatusString(status), " (status ",
                      static_cast<int>(status), ")");
}

// cuBLAS takes int sizes; each dimension (not the element count) must fit.
int as_int(int64_t value, const char* what, const char* op) {
  MED3D_CHECK(value >= 0 && value <= INT_MAX, op, ": ", what, " = ", value,
              " exceeds cuBLAS's int range (at most ", INT_MAX, "); split the batch");
  return static_cast<int>(value);
}

// C [m, c_cols] (column-major, ldc = m) = op(A) op(B), overwritten (beta = 0: C is not read).
void sgemm(Blas blas, Stream stream, const char* op, cublasOperation_t op_a,
           cublasOperation_t op_b, int64_t m, int64_t c_cols, int64_t k, const float* a,
           int64_t lda, const float* b, int64_t ldb, float* c) {
  MED3D_CHECK(blas != nullptr, op, ": no cuBLAS handle; create one with create_blas");
  check(cublasSetStream(blas->handle, stream), "cublasSetStream");
  const float alpha = 1.0f, beta = 0.0f;
  check(cublasSgemm(blas->handle, op_a, op_b, as_int(m, "m", op), as_int(c_cols, "n", op),
                    as_int(k, "k", op), &alpha, a, as_int(lda, "lda", op), b,
                    as_int(ldb, "ldb", op), &beta, c, as_int(m, "ldc", op)),
        "cublasSgemm");
}

}  // namespace

Blas create_blas(int device, Stream stream) {
  set_device(device);
  auto* blas = new BlasHandle;
  try {
    check(cublasCreate(&blas->handle), "cublasCreate");
    check(cublasSetStream(blas->handle, stream), "cublasSetStream");
    // Plain f32 on purpose: with TF32 tensor ops cuBLAS rounds the inputs to 10-bit mantissas,
    // and the CUDA ops must match their CPU twins to 1e-4 (the gpu suite). Set explicitly so a
    // different library default cannot change the results.
    check(cublasSetMathMode(blas->handle, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  } catch (...) {
    if (blas->handle != nullptr) cublasDestroy(blas->handle);
    delete blas;
    throw;
  }
  return blas;
}

void destroy_blas(int device, Blas blas) noexcept {
  if (blas == nullptr) return;
  // Destructors cannot throw; a failure here means the device already failed, which an
  // earlier checked call reported. cublasDestroy waits for the device's work itself.
  if (cudaSetDevice(device) == cudaSuccess) cublasDestroy(blas->handle);
  delete blas;
}

void linear_fprop(Blas blas, Stream stream, const float* x, const float* w, float* y, int64_t n,
                  int64_t in, int64_t out) {
  if (n == 0 || out == 0) return;
  // cuBLAS rejects lda = in = 0 (it must be at least 1); the empty sum is zero.
  if (in == 0) return fill_zero(y, static_cast<std::size_t>(n * out) * sizeof(float), stream);
  sgemm(blas, stream, "linear_fprop", CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, w, in, x, in, y);
}

void linear_dgrad(Blas blas, Stream stream, const float* dy, const float* w, float* dx, int64_t n,
                  int64_t in, int64_t out) {
  if (n == 0 || in == 0) return;
  if (out == 0) return fill_zero(dx, static_cast<std::size_t>(n * in) * sizeof(float), stream);
  sgemm(blas, stream, "linear_dgrad", CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, w, in, dy, out, dx);
}

void linear_wgrad(Blas blas, Stream stream, const float* dy, const float* x, float* dw, int64_t n,
                  int64_t in, int64_t out) {
  if (out == 0 || in == 0) return;
  if (n == 0) return fill_zero(dw, static_cast<std::size_t>(out * in) * sizeof(float), stream);
  sgemm(blas, stream, "linear_wgrad", CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, x, in, dy, out, dw);
}

}  // namespace med3d::kernels::cuda
