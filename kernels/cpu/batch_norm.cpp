#include "med3d/kernels/cpu/batch_norm.h"

#include <vector>

#include "med3d/kernels/batch_norm.h"
#include "med3d/kernels/cpu_loops.h"

namespace med3d::kernels::cpu {

namespace {

// Runs fn(plane, channel, offset) for every (n, c) plane, in parallel when the tensor is big
// enough to pay for the threads. Each plane is owned by one thread.
template <class Fn>
void for_each_plane(const BatchNormShape& s, Fn&& fn) {
  const int64_t planes = s.n * s.c;
#pragma omp parallel for if (planes * s.spatial > kParallelGrain) schedule(static)
  for (int64_t p = 0; p < planes; ++p) fn(p, p % s.c, p * s.spatial);
}

}  // namespace

template <class T>
void batch_norm_stats(const BatchNormShape& s, const T* x, double* mean, double* var) {
  std::vector<double> sum(s.n * s.c), sumsq(s.n * s.c);
  for_each_plane(s, [&](int64_t p, int64_t c, int64_t offset) {
    const double shift = static_cast<double>(x[c * s.spatial]);  // x[0, c, 0]
    const T* xp = x + offset;
    double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t i = 0; i < s.spatial; ++i) {
      const double d = static_cast<double>(xp[i]) - shift;
      s1 += d;
      s2 += d * d;
    }
    sum[p] = s1;
    sumsq[p] = s2;
  });
  for (int64_t c = 0; c < s.c; ++c) {
    ShiftedMoments m{static_cast<double>(x[c * s.spatial]), 0, 0};
    for (int64_t n = 0; n < s.n; ++n) {
      m.sum += sum[n * s.c + c];
      m.sumsq += sumsq[n * s.c + c];
    }
    batch_norm_finalize(m, s.n * s.spatial, &mean[c], &var[c]);
  }
}

template <class T>
void batch_norm_apply(const BatchNormShape& s, const T* x, const double* mean,
                      const double* scale, const double* bias, bool relu, T* y) {
  for_each_plane(s, [&](int64_t, int64_t c, int64_t offset) {
    const T m = static_cast<T>(mean[c]), a = static_cast<T>(scale[c]), b = static_cast<T>(bias[c]);
    const T* xp = x + offset;
    T* yp = y + offset;
#pragma omp simd
    for (int64_t i = 0; i < s.spatial; ++i) yp[i] = batch_norm_forward(xp[i], m, a, b, relu);
  });
}

template <class T>
void batch_norm_reduce_grad(const BatchNormShape& s, const T* x, const T* dy, const double* mean,
                            double* sum_dy, double* sum_dy_xmu) {
  std::vector<double> part_dy(s.n * s.c), part_dy_xmu(s.n * s.c);
  for_each_plane(s, [&](int64_t p, int64_t c, int64_t offset) {
    const double m = mean[c];
    const T* xp = x + offset;
    const T* gp = dy + offset;
    double s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t i = 0; i < s.spatial; ++i) {
      const double g = static_cast<double>(gp[i]);
      s1 += g;
      s2 += g * (static_cast<double>(xp[i]) - m);
    }
    part_dy[p] = s1;
    part_dy_xmu[p] = s2;
  });
  for (int64_t c = 0; c < s.c; ++c) {
    double s1 = 0, s2 = 0;
    for (int64_t n = 0; n < s.n; ++n) {
      s1 += part_dy[n * s.c + c];
      s2 += part_dy_xmu[n * s.c + c];
    }
    sum_dy[c] = s1;
    sum_dy_xmu[c] = s2;
  }
}

template <class T>
void batch_norm_backward_train(const BatchNormShape& s, const T* x, const T* dy,
                               const double* mean, const double* scale, const double* mean_dy,
                               const double* proj, T* dx) {
  for_each_plane(s, [&](int64_t, int64_t c, int64_t offset) {
    const T m = static_cast<T>(mean[c]), a = static_cast<T>(scale[c]);
    const T mdy = static_cast<T>(mean_dy[c]), pr = static_cast<T>(proj[c]);
    const T* xp = x + offset;
    const T* gp = dy + offset;
    T* op = dx + offset;
#pragma omp simd
    for (int64_t i = 0; i < s.spatial; ++i)
      op[i] = kernels::batch_norm_backward_train(xp[i], gp[i], m, a, mdy, pr);
  });
}

template <class T>
void batch_norm_backward_eval(const BatchNormShape& s, const T* dy, const double* scale, T* dx) {
  for_each_plane(s, [&](int64_t, int64_t c, int64_t offset) {
    const T a = static_cast<T>(scale[c]);
    const T* gp = dy + offset;
    T* op = dx + offset;
#pragma omp simd
    for (int64_t i = 0; i < s.spatial; ++i) op[i] = a * gp[i];
  });
}

#define MED3D_INSTANTIATE(T)                                                                     \
  template void batch_norm_stats<T>(const BatchNormShape&, const T*, double*, double*);          \
  template void batch_norm_apply<T>(const BatchNormShape&, const T*, const double*,              \
                                    const double*, const double*, bool, T*);                     \
  template void batch_norm_reduce_grad<T>(const BatchNormShape&, const T*, const T*,             \
                                          const double*, double*, double*);                      \
  template void batch_norm_backward_train<T>(const BatchNormShape&, const T*, const T*,          \
                                             const double*, const double*, const double*,        \
                                             const double*, T*);                                 \
  template void batch_norm_backward_eval<T>(const BatchNormShape&, const T*, const double*, T*);
MED3D_INSTANTIATE(float)
MED3D_INSTANTIATE(double)
#undef MED3D_INSTANTIATE

}  // namespace med3d::kernels::cpu
