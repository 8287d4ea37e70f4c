#include "med3d/kernels/cpu/pool.h"

#include <algorithm>

#include "med3d/kernels/cpu_loops.h"

namespace med3d::kernels::cpu {

PoolPlan make_pool_plan(int64_t planes, const std::array<int64_t, 3>& in,
                        const std::array<int64_t, 3>& kernel, const std::array<int64_t, 3>& stride,
                        const std::array<int64_t, 3>& padding, bool count_include_pad) {
  PoolPlan plan;
  plan.planes = planes;
  plan.in = in;
  for (int a = 0; a < 3; ++a) {
    plan.out[a] = pool_output_size(in[a], kernel[a], stride[a], padding[a]);
    for (int64_t o = 0; o < plan.out[a]; ++o)
      plan.windows[a].push_back(
          pool_window(o, kernel[a], stride[a], padding[a], in[a], count_include_pad));
  }
  return plan;
}

PoolPlan make_adaptive_pool_plan(int64_t planes, const std::array<int64_t, 3>& in,
                                 const std::array<int64_t, 3>& out) {
  PoolPlan plan;
  plan.planes = planes;
  plan.in = in;
  plan.out = out;
  for (int a = 0; a < 3; ++a)
    for (int64_t o = 0; o < out[a]; ++o)
      plan.windows[a].push_back(adaptive_pool_window(o, in[a], out[a]));
  return plan;
}

namespace {

int64_t plane_size(const std::array<int64_t, 3>& e) { return e[0] * e[1] * e[2]; }

// Runs fn(plane_offset_in_x, output_index, window_d, window_h, window_w) for every output
// element; planes are distributed over threads, each plane visited by one thread in
// row-major order.
template <class Fn>
void for_each_window(const PoolPlan& plan, Fn&& fn) {
  const int64_t in_plane = plane_size(plan.in), out_plane = plane_size(plan.out);
  const int64_t work = plan.planes * std::max(in_plane, out_plane);
#pragma omp parallel for if (work > kParallelGrain) schedule(static)
  for (int64_t p = 0; p < plan.planes; ++p) {
    int64_t out_index = p * out_plane;
    for (const PoolWindow& wd : plan.windows[0])
      for (const PoolWindow& wh : plan.windows[1])
        for (const PoolWindow& ww : plan.windows[2]) fn(p * in_plane, out_index++, wd, wh, ww);
  }
}

}  // namespace

template <class T>
void max_pool3d_forward(const PoolPlan& plan, const T* x, T* y, int64_t* argmax) {
  const int64_t h_in = plan.in[1], w_in = plan.in[2];
  for_each_window(plan, [&](int64_t x_offset, int64_t out, const PoolWindow& wd,
                            const PoolWindow& wh, const PoolWindow& ww) {
    const T* xp = x + x_offset;
    // Padding is -inf; the window always holds an input element since padding <= kernel / 2.
    int64_t best_index = (wd.begin * h_in + wh.begin) * w_in + ww.begin;
    T best = xp[best_index];
    for (int64_t d = wd.begin; d < wd.end; ++d)
      for (int64_t h = wh.begin; h < wh.end; ++h)
        for (int64_t w = ww.begin; w < ww.end; ++w) {
          const int64_t i = (d * h_in + h) * w_in + w;
          if (max_pool_takes(xp[i], best)) {
            best = xp[i];
            best_index = i;
          }
        }
    y[out] = best;
    argmax[out] = best_index;
  });
}

template <class T>
void max_pool3d_backward(const PoolPlan& plan, const T* dy, const int64_t* argmax, T* dx) {
  const int64_t in_plane = plane_size(plan.in), out_plane = plane_size(plan.out);
#pragma omp parallel for if (plan.planes * in_plane > kParallelGrain) schedule(static)
  for (int64_t p = 0; p < plan.planes; ++p) {
    T* dxp = dx + p * in_plane;
    std::fill(dxp, dxp + in_plane, T(0));
    for (int64_t o = p * out_plane; o < (p + 1) * out_plane; ++o) dxp[argmax[o]] += dy[o];
  }
}

template <class T>
void avg_pool3d_forward(const PoolPlan& plan, const T* x, T* y) {
  const int64_t h_in = plan.in[1], w_in = plan.in[2];
  for_each_window(plan, [&](int64_t x_offset, int64_t out, const PoolWindow& wd,
                            const PoolWindow& wh, const PoolWindow& ww) {
    const T* xp = x + x_offset;
    double total = 0;
    for (int64_t d = wd.begin; d < wd.end; ++d)
      for (int64_t h = wh.begin; h < wh.end; ++h)
        for (int64_t w = ww.begin; w < ww.end; ++w) total += xp[(d * h_in + h) * w_in + w];
    y[out] = static_cast<T>(total / pool_divisor(wd, wh, ww));
  });
}

template <class T>
void avg_pool3d_backward(const PoolPlan& plan, const T* dy, T* dx) {
  const int64_t h_in = plan.in[1], w_in = plan.in[2], in_plane = plane_size(plan.in);
#pragma omp parallel for if (plan.planes * in_plane > kParallelGrain) schedule(static)
  for (int64_t p = 0; p < plan.planes; ++p)
    std::fill(dx + p * in_plane, dx + (p + 1) * in_plane, T(0));
  for_each_window(plan, [&](int64_t x_offset, int64_t out, const PoolWindow& wd,
                            const PoolWindow& wh, const PoolWindow& ww) {
    T* dxp = dx + x_offset;
    const T g = static_cast<T>(static_cast<double>(dy[out]) / pool_divisor(wd, wh, ww));
    for (int64_t d = wd.begin; d < wd.end; ++d)
      for (int64_t h = wh.begin; h < wh.end; ++h)
        for (int64_t w = ww.begin; w < ww.end; ++w) dxp[(d * h_in + h) * w_in + w] += g;
  });
}

#define MED3D_INSTANTIATE(T)                                                                   \
  template void max_pool3d_forward<T>(const PoolPlan&, const T*, T*, int64_t*);                \
  template void max_pool3d_backward<T>(const PoolPlan&, const T*, const int64_t*, T*);         \
  template void avg_pool3d_forward<T>(const PoolPlan&, const T*, T*);                          \
  template void avg_pool3d_backward<T>(const PoolPlan&, const T*, T*);
MED3D_INSTANTIATE(float)
MED3D_INSTANTIATE(double)
#undef MED3D_INSTANTIATE

}  // namespace med3d::kernels::cpu
