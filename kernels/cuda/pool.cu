// Pooling kernels: one thread per output element in the forward passes, one per input element
// in the backward passes (gathers over the windows that contain it, see gather.cuh).
#include "cuda_common.cuh"
#include "gather.cuh"

#include "med3d/kernels/cuda/pool.h"
#include "med3d/kernels/pool.h"

namespace med3d::kernels::cuda {

namespace {

__device__ inline PoolWindow window(const PoolShape& s, int a, int64_t o) {
  if (s.adaptive) return adaptive_pool_window(o, s.in[a], s.out[a]);
  return pool_window(o, s.kernel[a], s.stride[a], s.padding[a], s.in[a], s.count_include_pad);
}

// Outputs along axis a whose windows contain input index i.
__device__ inline Range users(const PoolShape& s, int a, int64_t i) {
  return readers(s.out[a], i, [&](int64_t o) { return window(s, a, o).begin; },
                 [&](int64_t o) { return window(s, a, o).end - 1; });
}

__global__ void max_forward_kernel(PoolShape s, const float* x, float* y, int64_t* argmax, int64_t n) {
  const int64_t hi = s.in[1], wi = s.in[2];
  for (int64_t idx = grid_index(); idx < n; idx += grid_stride()) {
    const Index o = unflatten(idx, s.out);
    const PoolWindow wd = window(s, 0, o.d), wh = window(s, 1, o.h), ww = window(s, 2, o.w);
    const float* xp = x + o.plane * volume(s.in);
    // The CPU loop's scan: start at the window's first element, replace on max_pool_takes.
    int64_t best_index = (wd.begin * hi + wh.begin) * wi + ww.begin;
    float best = xp[best_index];
    for (int64_t d = wd.begin; d < wd.end; ++d)
      for (int64_t h = wh.begin; h < wh.end; ++h)
        for (int64_t w = ww.begin; w < ww.end; ++w) {
          const int64_t i = (d * hi + h) * wi + w;
          if (max_pool_takes(xp[i], best)) {
            best = xp[i];
            best_index = i;
          }
        }
    y[idx] = best;
    argmax[idx] = best_index;
  }
}

__global__ void max_backward_kernel(PoolShape s, const float* dy, const int64_t* argmax, float* dx,
                                    int64_t n) {
  const int64_t ho = s.out[1], wo = s.out[2];
  for (int64_t idx = grid_index(); idx < n; idx += grid_stride()) {
    const Index i = unflatten(idx, s.in);
    const int64_t flat = (i.d * s.in[1] + i.h) * s.in[2] + i.w;
    const Range rd = users(s, 0, i.d), rh = users(s, 1, i.h), rw = users(s, 2, i.w);
    const int64_t offset = i.plane * volume(s.out);
    float total = 0.0f;
    for (int64_t od = rd.begin; od < rd.end; ++od)
      for (int64_t oh = rh.begin; oh < rh.end; ++oh)
        for (int64_t ow = rw.begin; ow < rw.end; ++ow) {
          const int64_t o = offset + (od * ho + oh) * wo + ow;
          if (argmax[o] == flat) total += dy[o];
        }
    dx[idx] = total;
  }
}

__global__ void avg_forward_kernel(PoolShape s, const float* x, float* y, int64_t n) {
  const int64_t hi = s.in[1], wi = s.in[2];
  for (int64_t idx = grid_index(); idx < n; idx += grid_stride()) {
    const Index o = unflatten(idx, s.out);
    const PoolWindow wd = window(s, 0, o.d), wh = window(s, 1, o.h), ww = window(s, 2, o.w);
    const float* xp = x + o.plane * volume(s.in);
    double total = 0;
    for (int64_t d = wd.begin; d < wd.end; ++d)
      for (int64_t h = wh.begin; h < wh.end; ++h)
        for (int64_t w = ww.begin; w < ww.end; ++w) total += xp[(d * hi + h) * wi + w];
    y[idx] = static_cast<float>(total / pool_divisor(wd, wh, ww));
  }
}

__global__ void avg_backward_kernel(PoolShape s, const float* dy, float* dx, int64_t n) {
  const int64_t ho = s.out[1], wo = s.out[2];
  for (int64_t idx = grid_index(); idx < n; idx += grid_stride()) {
    const Index i = unflatten(idx, s.in);
    const Range rd = users(s, 0, i.d), rh = users(s, 1, i.h), rw = users(s, 2, i.w);
    const float* dyp = dy + i.plane * volume(s.out);
    float total = 0.0f;
    for (int64_t od = rd.begin; od < rd.end; ++od) {
      const PoolWindow wd = window(s, 0, od);
      for (int64_t oh = rh.begin; oh < rh.end; ++oh) {
        const PoolWindow wh = window(s, 1, oh);
        for (int64_t ow = rw.begin; ow < rw.end; ++ow) {
          // The CPU loop's rounding: each window's share in double, added in f32.
          const double divisor = pool_divisor(wd, wh, window(s, 2, ow));
          total += static_cast<float>(static_cast<double>(dyp[(od * ho + oh) * wo + ow]) / divisor);
        }
      }
    }
    dx[idx] = total;
  }
}

int64_t elements(int64_t planes, const int64_t (&e)[3]) { return planes * e[0] * e[1] * e[2]; }

}  // namespace

void max_pool3d_forward(Stream stream, const PoolShape& s, const float* x, float* y, int64_t* argmax) {
  const int64_t n = elements(s.planes, s.out);
  if (n == 0) return;
  MED3D_LAUNCH(max_forward_kernel, element_grid(n), dim3(kElementThreads), 0, stream, s, x, y,
               argmax, n);
}

void max_pool3d_backward(Stream stream, const PoolShape& s, const float* dy, const int64_t* argmax,
                         float* dx) {
  const int64_t n = elements(s.planes, s.in);
  if (n == 0) return;
  MED3D_LAUNCH(max_backward_kernel, element_grid(n), dim3(kElementThreads), 0, stream, s, dy,
               argmax, dx, n);
}

void avg_pool3d_forward(Stream stream, const PoolShape& s, const float* x, float* y) {
  const int64_t n = elements(s.planes, s.out);
  if (n == 0) return;
  MED3D_LAUNCH(avg_forward_kernel, element_grid(n), dim3(kElementThreads), 0, stream, s, x, y, n);
}

void avg_pool3d_backward(Stream stream, const PoolShape& s, const float* dy, float* dx) {
  const int64_t n = elements(s.planes, s.in);
  if (n == 0) return;
  MED3D_LAUNCH(avg_backward_kernel, element_grid(n), dim3(kElementThreads), 0, stream, s, dy, dx, n);
}

}  // namespace med3d::kernels::cuda
