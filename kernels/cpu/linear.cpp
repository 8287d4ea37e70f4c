#include "med3d/kernels/cpu/linear.h"

#include <Eigen/Core>

#include "med3d/kernels/cpu_loops.h"

namespace med3d::kernels::cpu {

namespace {
template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MatrixMap = Eigen::Map<Matrix<T>>;
template <class T>
using ConstMatrixMap = Eigen::Map<const Matrix<T>>;
}  // namespace

template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, int64_t n, int64_t in, int64_t out) {
  MatrixMap<T> ym(y, n, out);
  ym.noalias() = ConstMatrixMap<T>(x, n, in) * ConstMatrixMap<T>(w, out, in).transpose();
  if (b) ym.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(b, out);
}

template <class T>
void linear_dgrad(const T* dy, const T* w, T* dx, int64_t n, int64_t in, int64_t out) {
  MatrixMap<T>(dx, n, in).noalias() = ConstMatrixMap<T>(dy, n, out) * ConstMatrixMap<T>(w, out, in);
}

template <class T>
void linear_wgrad(const T* dy, const T* x, T* dw, int64_t n, int64_t in, int64_t out) {
  MatrixMap<T>(dw, out, in).noalias() =
      ConstMatrixMap<T>(dy, n, out).transpose() * ConstMatrixMap<T>(x, n, in);
}

template <class T>
void linear_bgrad(const T* dy, T* db, int64_t n, int64_t out) {
  parallel_for(out, [&](int64_t j) {
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += static_cast<double>(dy[i * out + j]);
    db[j] = static_cast<T>(total);
  });
}

#define MED3D_INSTANTIATE(T)                                                          \
  template void linear_forward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, \
                                  int64_t);                                           \
  template void linear_dgrad<T>(const T*, const T*, T*, int64_t, int64_t, int64_t);   \
  template void linear_wgrad<T>(const T*, const T*, T*, int64_t, int64_t, int64_t);   \
  template void linear_bgrad<T>(const T*, T*, int64_t, int64_t);
MED3D_INSTANTIATE(float)
MED3D_INSTANTIATE(double)
#undef MED3D_INSTANTIATE

}  // namespace med3d::kernels::cpu
