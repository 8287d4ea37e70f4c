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

// One use of an input index by an output index along one axis, with its weight.
template <class T>
struct LinearUse {
  int64_t out;
  T weight;
};

// uses[i] lists, in output order, the output indices whose taps read input index i.
template <class T>
std::vector<std::vector<LinearUse<T>>> linear_uses(const std::vector<LinearTap<T>>& taps, int64_t in) {
  std::vector<std::vector<LinearUse<T>>> uses(static_cast<std::size_t>(in));
  for (int64_t o = 0; o < static_cast<int64_t>(taps.size()); ++o) {
    uses[taps[o].i0].push_back({o, taps[o].w0});
    uses[taps[o].i1].push_back({o, taps[o].w1});
  }
  return uses;
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

int64_t upsample_trilinear3d_workspace(const UpsampleGeometry& g) {
  return g.planes * g.in[0] * g.in[1] * g.out[2];
}

// Trilinear interpolation is separable: the forward first interpolates every input row along
// W into the workspace (planes x D_in x H_in x W_out), then blends four of those rows into
// each output row. The blend is contiguous in W (it vectorises), and each W-interpolated row
// is computed once instead of once per output row that reads it. The arithmetic equals the
// direct eight-tap formula: d0 * (h0 * row00 + h1 * row01) + d1 * (h0 * row10 + h1 * row11).
template <class T>
void upsample_trilinear3d_forward(const UpsampleGeometry& g, const T* x, T* y, T* workspace) {
  const auto taps = linear_taps<T>(g);
  const int64_t di = g.in[0], hi = g.in[1], wi = g.in[2];
  const int64_t dout = g.out[0], ho = g.out[1], wo = g.out[2];
  const int64_t in_rows = g.planes * di * hi;
#pragma omp parallel for if (in_rows * wo > kParallelGrain) schedule(static)
  for (int64_t r = 0; r < in_rows; ++r) {
    const T* xr = x + r * wi;
    T* wr = workspace + r * wo;
    for (int64_t ow = 0; ow < wo; ++ow) {
      const LinearTap<T>& tw = taps[2][ow];
      wr[ow] = linear_blend(tw, xr[tw.i0], xr[tw.i1]);
    }
  }
  const int64_t out_rows = g.planes * dout * ho;  // one row = one (plane, od, oh)
#pragma omp parallel for if (out_rows * wo > kParallelGrain) schedule(static)
  for (int64_t r = 0; r < out_rows; ++r) {
    const int64_t p = r / (dout * ho);
    const LinearTap<T>& td = taps[0][r / ho % dout];
    const LinearTap<T>& th = taps[1][r % ho];
    const T* plane = workspace + p * di * hi * wo;
    const T* r00 = plane + (td.i0 * hi + th.i0) * wo;
    const T* r01 = plane + (td.i0 * hi + th.i1) * wo;
    const T* r10 = plane + (td.i1 * hi + th.i0) * wo;
    const T* r11 = plane + (td.i1 * hi + th.i1) * wo;
    T* yr = y + r * wo;
#pragma omp simd
    for (int64_t ow = 0; ow < wo; ++ow)
      yr[ow] = bilinear_blend(td, th, r00[ow], r01[ow], r10[ow], r11[ow]);
  }
}

// The backward is the transpose of the forward, written as gathers so that every element of
// the workspace and of dx is summed by one thread in a fixed order (no atomics, and the
// result does not depend on the thread count): first each workspace row (plane, d, h)
// gathers the dy rows that read it, weighted, then each dx element gathers along W.
template <class T>
void upsample_trilinear3d_backward(const UpsampleGeometry& g, const T* dy, T* dx, T* workspace) {
  const auto taps = linear_taps<T>(g);
  const std::array<std::vector<std::vector<LinearUse<T>>>, 3> uses{
      linear_uses(taps[0], g.in[0]), linear_uses(taps[1], g.in[1]), linear_uses(taps[2], g.in[2])};
  const int64_t di = g.in[0], hi = g.in[1], wi = g.in[2];
  const int64_t dout = g.out[0], ho = g.out[1], wo = g.out[2];
  const int64_t in_rows = g.planes * di * hi;
#pragma omp parallel for if (in_rows * wo > kParallelGrain) schedule(static)
  for (int64_t r = 0; r < in_rows; ++r) {
    const int64_t p = r / (di * hi);
    T* wr = workspace + r * wo;
    std::fill(wr, wr + wo, T(0));
    for (const LinearUse<T>& ud : uses[0][r / hi % di])
      for (const LinearUse<T>& uh : uses[1][r % hi]) {
        const T weight = ud.weight * uh.weight;
        const T* dyr = dy + ((p * dout + ud.out) * ho + uh.out) * wo;
#pragma omp simd
        for (int64_t ow = 0; ow < wo; ++ow) wr[ow] += weight * dyr[ow];
      }
  }
#pragma omp parallel for if (in_rows * wi > kParallelGrain) schedule(static)
  for (int64_t r = 0; r < in_rows; ++r) {
    const T* wr = workspace + r * wo;
    T* dxr = dx + r * wi;
    for (int64_t iw = 0; iw < wi; ++iw) {
      T total = 0;
      for (const LinearUse<T>& uw : uses[2][iw]) total += uw.weight * wr[uw.out];
      dxr[iw] = total;
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
  template void upsample_trilinear3d_forward<T>(const UpsampleGeometry&, const T*, T*, T*);   \
  template void upsample_trilinear3d_backward<T>(const UpsampleGeometry&, const T*, T*, T*);  \
  template void upsample_nearest3d_forward<T>(const UpsampleGeometry&, const T*, T*);         \
  template void upsample_nearest3d_backward<T>(const UpsampleGeometry&, const T*, T*);
MED3D_INSTANTIATE(float)
MED3D_INSTANTIATE(double)
#undef MED3D_INSTANTIATE

}  // namespace med3d::kernels::cpu
