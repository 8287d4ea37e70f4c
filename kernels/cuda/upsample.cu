// Upsampling kernels: one thread per output element in the forward passes, one per input
// element in the backward passes (gathers over the contiguous output ranges of gather.cuh).
// The source-index ratios are computed once on the host in f32, as the CPU loops do for f32.
#include "cuda_common.cuh"
#include "gather.cuh"

#include "med3d/kernels/cuda/upsample.h"
#include "med3d/kernels/upsample.h"

namespace med3d::kernels::cuda {

namespace {

struct Plan {
  UpsampleShape s;
  float ratio[3];
};

Plan linear_plan(const UpsampleShape& s) {
  Plan p{s, {0, 0, 0}};
  for (int a = 0; a < 3; ++a)
    p.ratio[a] = linear_ratio<float>(s.in[a], s.out[a], s.align_corners, s.scale[a]);
  return p;
}

Plan nearest_plan(const UpsampleShape& s) {
  Plan p{s, {0, 0, 0}};
  for (int a = 0; a < 3; ++a) p.ratio[a] = nearest_ratio<float>(s.in[a], s.out[a], s.scale[a]);
  return p;
}

__device__ inline LinearTap<float> tap(const Plan& p, int a, int64_t o) {
  return linear_tap<float>(o, p.s.in[a], p.s.out[a], p.ratio[a], p.s.align_corners);
}

// Outputs along axis a whose taps read input index i.
__device__ inline Range linear_users(const Plan& p, int a, int64_t i) {
  return readers(p.s.out[a], i, [&](int64_t o) { return tap(p, a, o).i0; },
                 [&](int64_t o) { return tap(p, a, o).i1; });
}

// The weight with which output o reads input i along axis a (both taps may read i).
__device__ inline float linear_weight(const Plan& p, int a, int64_t o, int64_t i) {
  const LinearTap<float> t = tap(p, a, o);
  return (t.i0 == i ? t.w0 : 0.0f) + (t.i1 == i ? t.w1 : 0.0f);
}

__global__ void trilinear_forward_kernel(Plan p, const float* x, float* y, int64_t n) {
  const int64_t wi = p.s.in[2], hi = p.s.in[1];
  for (int64_t idx = grid_index(); idx < n; idx += grid_stride()) {
    const Index o = unflatten(idx, p.s.out);
    const LinearTap<float> td = tap(p, 0, o.d), th = tap(p, 1, o.h), tw = tap(p, 2, o.w);
    const float* xp = x + o.plane * volume(p.s.in);
    // Rows along W first, then the blend, in the CPU loop's order of operations.
    auto row = [&](int64_t d, int64_t h) {
      const float* r = xp + (d * hi + h) * wi;
      return linear_blend(tw, r[tw.i0], r[tw.i1]);
    };
    y[idx] = bilinear_blend(td, th, row(td.i0, th.i0), row(td.i0, th.i1), row(td.i1, th.i0),
                            row(td.i1, th.i1));
  }
}

__global__ void trilinear_backward_kernel(Plan p, const float* dy, float* dx, int64_t n) {
  const int64_t wo = p.s.out[2], ho = p.s.out[1];
  for (int64_t idx = grid_index(); idx < n; idx += grid_stride()) {
    const Index i = unflatten(idx, p.s.in);
    const int64_t id = i.d, ih = i.h, iw = i.w;
    const Range rd = linear_users(p, 0, id), rh = linear_users(p, 1, ih), rw = linear_users(p, 2, iw);
    const float* dyp = dy + i.plane * volume(p.s.out);
    float total = 0.0f;
    for (int64_t od = rd.begin; od < rd.end; ++od) {
      const float wd = linear_weight(p, 0, od, id);
      for (int64_t oh = rh.begin; oh < rh.end; ++oh) {
        const float weight = wd * linear_weight(p, 1, oh, ih);
        const float* dyr = dyp + (od * ho + oh) * wo;
        float row = 0.0f;
        for (int64_t ow = rw.begin; ow < rw.end; ++ow) row += linear_weight(p, 2, ow, iw) * dyr[ow];
        total += weight * row;
      }
    }
    dx[idx] = total;
  }
}

__device__ inline int64_t source(const Plan& p, int a, int64_t o) {
  return nearest_source<float>(o, p.s.in[a], p.ratio[a]);
}

__global__ void nearest_forward_kernel(Plan p, const float* x, float* y, int64_t n) {
  const int64_t wi = p.s.in[2], hi = p.s.in[1], di = p.s.in[0];
  for (int64_t idx = grid_index(); idx < n; idx += grid_stride()) {
    const Index o = unflatten(idx, p.s.out);
    y[idx] = x[((o.plane * di + source(p, 0, o.d)) * hi + source(p, 1, o.h)) * wi + source(p, 2, o.w)];
  }
}

// Outputs along axis a whose nearest source is input index i.
__device__ inline Range nearest_users(const Plan& p, int a, int64_t i) {
  const auto src = [&](int64_t o) { return source(p, a, o); };
  return readers(p.s.out[a], i, src, src);
}

__global__ void nearest_backward_kernel(Plan p, const float* dy, float* dx, int64_t n) {
  const int64_t wo = p.s.out[2], ho = p.s.out[1];
  for (int64_t idx = grid_index(); idx < n; idx += grid_stride()) {
    const Index i = unflatten(idx, p.s.in);
    const Range rd = nearest_users(p, 0, i.d), rh = nearest_users(p, 1, i.h), rw = nearest_users(p, 2, i.w);
    const float* dyp = dy + i.plane * volume(p.s.out);
    // Output order, as the CPU loop adds them.
    float total = 0.0f;
    for (int64_t od = rd.begin; od < rd.end; ++od)
      for (int64_t oh = rh.begin; oh < rh.end; ++oh)
        for (int64_t ow = rw.begin; ow < rw.end; ++ow) total += dyp[(od * ho + oh) * wo + ow];
    dx[idx] = total;
  }
}

void launch(void (*kernel)(Plan, const float*, float*, int64_t), Stream stream, const Plan& p,
            const float* src, float* dst, int64_t n) {
  if (n == 0) return;
  MED3D_LAUNCH(kernel, element_grid(n), dim3(kElementThreads), 0, stream, p, src, dst, n);
}

}  // namespace

void upsample_trilinear3d_forward(Stream stream, const UpsampleShape& s, const float* x, float* y) {
  launch(trilinear_forward_kernel, stream, linear_plan(s), x, y, s.planes * volume(s.out));
}

void upsample_trilinear3d_backward(Stream stream, const UpsampleShape& s, const float* dy, float* dx) {
  launch(trilinear_backward_kernel, stream, linear_plan(s), dy, dx, s.planes * volume(s.in));
}

void upsample_nearest3d_forward(Stream stream, const UpsampleShape& s, const float* x, float* y) {
  launch(nearest_forward_kernel, stream, nearest_plan(s), x, y, s.planes * volume(s.out));
}

void upsample_nearest3d_backward(Stream stream, const UpsampleShape& s, const float* dy, float* dx) {
  launch(nearest_backward_kernel, stream, nearest_plan(s), dy, dx, s.planes * volume(s.in));
}

}  // namespace med3d::kernels::cuda
