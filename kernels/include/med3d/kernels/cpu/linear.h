// CPU fully connected layer with Eigen GEMM; row-major x [n, in], w [out, in], y [n, out].
// All outputs are overwritten. T = float or double.
#pragma once

#include <cstdint>

namespace med3d::kernels::cpu {

// y = x w^T (+ b when b is not nullptr).
template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t n, int64_t in, int64_t out);
// dx = dy w.
template <class T>
void linear_dgrad(const T* dy, const T* w, T* dx, int64_t n, int64_t in, int64_t out);
// dw = dy^T x.
template <class T>
void linear_wgrad(const T* dy, const T* x, T* dw, int64_t n, int64_t in, int64_t out);
// db = sum over rows of dy (in double).
template <class T>
void linear_bgrad(const T* dy, T* db, int64_t n, int64_t out);

}  // namespace med3d::kernels::cpu
