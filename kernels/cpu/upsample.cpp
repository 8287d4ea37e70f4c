#include "med3d/kernels/cpu/upsample.h"

#include <algorithm>
#include <vector>

#include "med3d/kernels/cpu_loops.h"
#include "med3d/kernels/upsample.h"

namespace med3d::kernels::cpu {

namespace {

int64_t plane_size(const std::array<int64_t, 3>& e) { return e[0] * e[1] * e[2]; }

// Per axis, the taps of every output index: computed once instead of once per element.
template <class T>
std::array<std::vector<LinearTap<T>>, 3> linear_taps(const UpsampleGeometry& g) {
  std::array<std::vector<LinearTap<T>>, 3> taps;
  for (int a = 0; a < 3; ++a) {
    const T ratio = linear_ratio<T>(g.in[a], g.out[a], g.align_corners, g.scale[a]);
    for (int64_t o = 0; o < g.out[a]; ++o)
      taps[a].push_back(linear_tap<T>(o, g.in[a], g.out[a], ratio, g.align_corners));
  }
  return taps;
}

template <class T>
std::array<std::vector<int64_t>, 3> nearest_sources(const UpsampleGeometry& g) {
  std::array<std::vector<int64_t>, 3> sources;
  for (int a = 0; a < 3; ++a) {
    const T ratio = nearest_ratio<T>(g.in[a], g.out[a], g.scale[a]);
    for (int64_t o = 0; o < g.out[a]; ++o) sources[a].push_back(nearest_source<T>(o, g.in[a], ratio));
  }
  return sources;
}

}  // namespace

template <class T>
void upsample_trilinear3d_forward(const UpsampleGeometry& g, const T* x, T* y) {
  const auto taps = linear_taps<T>(g);
  const int64_t hi = g.in[1], wi = g.in[2], ho = g.out[1], wo = g.out[2];
  const int64_t in_plane = plane_size(g.in);
  const int64_t rows = g.planes * g.out[0] * ho;  // one row = one (plane, od, oh)
#pragma omp parallel for if (rows * wo > kParallelGrain) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t p = r / (g.out[0] * ho);
    const LinearTap<T>& td = taps[0][r / ho % g.out[0]];
    const LinearTap<T>& th = taps[1][r % ho];
    const T* x00 = x + p * in_plane + (td.i0 * hi + th.i0) * wi;
    const T* x01 = x + p * in_plane + (td.i0 * hi + th.i1) * wi;
    const T* x10 = x + p * in_plane + (td.i1 * hi + th.i0) * wi;
    const T* x11 = x + p * in_plane + (td.i1 * hi + th.i1) * wi;
    T* yr = y + r * wo;
    for (int64_t ow = 0; ow < wo; ++ow) {
      const LinearTap<T>& tw = taps[2][ow];
      yr[ow] = td.w0 * (th.w0 * (tw.w0 * x00[tw.i0] + tw.w1 * x00[tw.i1]) +
                        th.w1 * (tw.w0 * x01[tw.i0] + tw.w1 * x01[tw.i1])) +
               td.w1 * (th.w0 * (tw.w0 * x10[tw.i0] + tw.w1 * x10[tw.i1]) +
                        th.w1 * (tw.w0 * x11[tw.i0] + tw.w1 * x11[tw.i1]));
    }
  }
}

template <class T>
void upsample_trilinear3d_backward(const UpsampleGeometry& g, const T* dy, T* dx) {
  const auto taps = linear_taps<T>(g);
  const int64_t hi = g.in[1], wi = g.in[2];
  const int64_t in_plane = plane_size(g.in), out_plane = plane_size(g.out);
#pragma omp parallel for if (g.planes * out_plane > kParallelGrain) schedule(static)
  for (int64_t p = 0; p < g.planes; ++p) {
    T* dxp = dx + p * in_plane;
    std::fill(dxp, dxp + in_plane, T(0));
    const T* dyp = dy + p * out_plane;
    for (const LinearTap<T>& td : taps[0])
      for (const LinearTap<T>& th : taps[1]) {
        T* d00 = dxp + (td.i0 * hi + th.i0) * wi;
        T* d01 = dxp + (td.i0 * hi + th.i1) * wi;
        T* d10 = dxp + (td.i1 * hi + th.i0) * wi;
        T* d11 = dxp + (td.i1 * hi + th.i1) * wi;
        const T w00 = td.w0 * th.w0, w01 = td.w0 * th.w1, w10 = td.w1 * th.w0, w11 = td.w1 * th.w1;
        for (const LinearTap<T>& tw : taps[2]) {
          const T v = *dyp++;
          d00[tw.i0] += w00 * tw.w0 * v;
          d00[tw.i1] += w00 * tw.w1 * v;
          d01[tw.i0] += w01 * tw.w0 * v;
          d01[tw.i1] += w01 * tw.w1 * v;
          d10[tw.i0] += w10 * tw.w0 * v;
          d10[tw.i1] += w10 * tw.w1 * v;
          d11[tw.i0] += w11 * tw.w0 * v;
          d11[tw.i1] += w11 * tw.w1 * v;
        }
      }
  }
}

template <class T>
void upsample_nearest3d_forward(const UpsampleGeometry& g, const T* x, T* y) {
  const auto src = nearest_sources<T>(g);
  const int64_t hi = g.in[1], wi = g.in[2], ho = g.out[1], wo = g.out[2];
  const int64_t in_plane = plane_size(g.in);
  const int64_t rows = g.planes * g.out[0] * ho;
#pragma omp parallel for if (rows * wo > kParallelGrain) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t p = r / (g.out[0] * ho);
    const T* xr = x + p * in_plane + (src[0][r / ho % g.out[0]] * hi + src[1][r % ho]) * wi;
    T* yr = y + r * wo;
    for (int64_t ow = 0; ow < wo; ++ow) yr[ow] = xr[src[2][ow]];
  }
}

template <class T>
void upsample_nearest3d_backward(const UpsampleGeometry& g, const T* dy, T* dx) {
  const auto src = nearest_sources<T>(g);
  const int64_t hi = g.in[1], wi = g.in[2];
  const int64_t in_plane = plane_size(g.in), out_plane = plane_size(g.out);
#pragma omp parallel for if (g.planes * out_plane > kParallelGrain) schedule(static)
  for (int64_t p = 0; p < g.planes; ++p) {
    T* dxp = dx + p * in_plane;
    std::fill(dxp, dxp + in_plane, T(0));
    const T* dyp = dy + p * out_plane;
    for (int64_t sd : src[0])
      for (int64_t sh : src[1]) {
        T* dr = dxp + (sd * hi + sh) * wi;
        for (int64_t sw : src[2]) dr[sw] += *dyp++;
      }
  }
}

#define MED3D_INSTANTIATE(T)                                                                  \
  template void upsample_trilinear3d_forward<T>(const UpsampleGeometry&, const T*, T*);       \
  template void upsample_trilinear3d_backward<T>(const UpsampleGeometry&, const T*, T*);      \
  template void upsample_nearest3d_forward<T>(const UpsampleGeometry&, const T*, T*);         \
  template void upsample_nearest3d_backward<T>(const UpsampleGeometry&, const T*, T*);
MED3D_INSTANTIATE(float)
MED3D_INSTANTIATE(double)
#undef MED3D_INSTANTIATE

}  // namespace med3d::kernels::cpu
