#include "med3d/kernels/cpu/upsample.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "med3d/kernels/cpu_loops.h"
#include "med3d/kernels/upsample.h"
#include "simd.h"

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

// out[i] = sum over the uses u, in order, of u.weight * source(u.out)[i] for i < n (0 without
// uses): a weighted sum of rows, the first term a product and each next one a fused
// multiply-add. Four uses (doubling's inside) run in one pass, the same operations in the
// same order.
template <class T, class Source>
void weighted_sum(const std::vector<LinearUse<T>>& uses, Source source, int64_t n, T* out) {
  if (uses.empty()) {
    std::fill(out, out + n, T(0));
    return;
  }
  if (uses.size() == 4) {
    const T w0 = uses[0].weight, w1 = uses[1].weight, w2 = uses[2].weight, w3 = uses[3].weight;
    const T *r0 = source(uses[0].out), *r1 = source(uses[1].out), *r2 = source(uses[2].out), *r3 = source(uses[3].out);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = std::fma(w3, r3[i], std::fma(w2, r2[i], std::fma(w1, r1[i], w0 * r0[i])));
    return;
  }
  const T w0 = uses.front().weight;
  const T* r0 = source(uses.front().out);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = w0 * r0[i];
  for (std::size_t u = 1; u < uses.size(); ++u) {
    const T weight = uses[u].weight;
    const T* r = source(uses[u].out);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i] = std::fma(weight, r[i], out[i]);
  }
}

// Whether the taps along an axis double it with a fixed pattern inside (scale 2 without corner
// alignment): output o in [1, 2 in - 2] reads (o - 1) / 2 and the next index, with the weights
// of o = 2 when o is even and of o = 1 when odd. Then the axis has loops without index tables,
// which vectorise (the tables' gathers left the W step scalar: upsampling at 44% / 21% of copy).
template <class T>
bool doubles(const std::vector<LinearTap<T>>& taps, int64_t in) {
  const auto out = static_cast<int64_t>(taps.size());
  if (in < 3 || out != 2 * in) return false;
  for (int64_t o = 1; o < out - 1; ++o) {
    const LinearTap<T>& t = taps[o];
    const LinearTap<T>& ref = taps[o % 2 == 0 ? 2 : 1];
    if (t.i0 != (o - 1) / 2 || t.i1 != t.i0 + 1 || t.w0 != ref.w0 || t.w1 != ref.w1) return false;
  }
  return true;
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

// Runs fn(p) for every plane: planes across the threads when there are enough of them (each
// plane's workspace, D_in x H_in x W_out, then stays in its thread's cache between the two
// steps below), else one plane after another with the row loops inside fn parallel.
// (Planes in turn run outside any parallel region: an inactive `if (false)` region around the
// row loops would make theirs nested ones, which libgomp serves with new threads.)
template <class Fn>
void for_each_plane(const UpsampleGeometry& g, int64_t work, Fn&& fn) {
  if (g.planes >= 2 * omp_get_max_threads() && work > kParallelGrain && !omp_in_parallel()) {
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < g.planes; ++p) fn(p);
    return;
  }
  for (int64_t p = 0; p < g.planes; ++p) fn(p);
}

// Whether the row loops of one plane run in parallel: only when the planes do not.
bool rows_in_parallel(int64_t work) { return !omp_in_parallel() && work > kParallelGrain; }

}  // namespace

int64_t upsample_trilinear3d_workspace(const UpsampleGeometry& g) {
  return g.planes * g.in[0] * g.in[1] * g.out[2];
}

// Trilinear interpolation is separable: the forward first interpolates every input row of a
// plane along W into the workspace (D_in x H_in x W_out), then blends four of those rows into
// each output row. The blend is contiguous in W (it vectorises), and each W-interpolated row
// is computed once instead of once per output row that reads it. The arithmetic equals the
// direct eight-tap formula: d0 * (h0 * row00 + h1 * row01) + d1 * (h0 * row10 + h1 * row11).
template <class T>
void upsample_trilinear3d_forward(const UpsampleGeometry& g, const T* x, T* y, T* workspace) {
  const auto taps = linear_taps<T>(g);
  const int64_t di = g.in[0], hi = g.in[1], wi = g.in[2];
  const int64_t dout = g.out[0], ho = g.out[1], wo = g.out[2];
  const int64_t in_rows = di * hi, out_rows = dout * ho;  // per plane
  const bool w_doubles = doubles(taps[2], wi);
  // A y of kStreamedBytes or more (x2 upsampling of a 2x32x16x32x32 map: 32 MiB) is written with
  // non-temporal stores: no read for ownership of lines it overwrites whole (med3d-bench ops: 0.83x
  // the time, 6 of 8 rounds).
  [[maybe_unused]] const bool stream = g.planes * out_rows * wo * int64_t(sizeof(T)) >= kStreamedBytes;
  for_each_plane(g, g.planes * out_rows * wo, [&](int64_t p) {
    const T* xp = x + p * in_rows * wi;
    T* ws = workspace + p * in_rows * wo;
    T* yp = y + p * out_rows * wo;
#pragma omp parallel for if (rows_in_parallel(in_rows * wo)) schedule(static)
    for (int64_t r = 0; r < in_rows; ++r) {
      const T* xr = xp + r * wi;
      T* wr = ws + r * wo;
      if (w_doubles) {
        // The same blends as the table below: edges from it, the inside by pattern.
        for (const int64_t ow : {int64_t{0}, int64_t{1}, wo - 2, wo - 1}) wr[ow] = linear_blend(taps[2][ow], xr[taps[2][ow].i0], xr[taps[2][ow].i1]);
        const LinearTap<T> even = taps[2][2], odd = taps[2][1];
        for (int64_t i = 1; i < wi - 1; ++i) {
          wr[2 * i] = even.w0 * xr[i - 1] + even.w1 * xr[i];
          wr[2 * i + 1] = odd.w0 * xr[i] + odd.w1 * xr[i + 1];
        }
        continue;
      }
      for (int64_t ow = 0; ow < wo; ++ow) {
        const LinearTap<T>& tw = taps[2][ow];
        wr[ow] = linear_blend(tw, xr[tw.i0], xr[tw.i1]);
      }
    }
#pragma omp parallel if (rows_in_parallel(out_rows * wo))
    {
#pragma omp for schedule(static) nowait
      for (int64_t r = 0; r < out_rows; ++r) {  // one row = one (od, oh)
        const LinearTap<T>& td = taps[0][r / ho];
        const LinearTap<T>& th = taps[1][r % ho];
        const T* r00 = ws + (td.i0 * hi + th.i0) * wo;
        const T* r01 = ws + (td.i0 * hi + th.i1) * wo;
        const T* r10 = ws + (td.i1 * hi + th.i0) * wo;
        const T* r11 = ws + (td.i1 * hi + th.i1) * wo;
        T* yr = yp + r * wo;
        int64_t ow = 0;
#if defined(MED3D_SIMD)
        if constexpr (std::is_same_v<T, float>) {
          if (stream) {
            // The same products and sums as bilinear_blend, in its order.
            for (; ow < wo && reinterpret_cast<uintptr_t>(yr + ow) % 64 != 0; ++ow)
              yr[ow] = bilinear_blend(td, th, r00[ow], r01[ow], r10[ow], r11[ow]);
            const simd::Vec d0 = simd::broadcast(td.w0), d1 = simd::broadcast(td.w1);
            const simd::Vec h0 = simd::broadcast(th.w0), h1 = simd::broadcast(th.w1);
            for (; ow + simd::kLanes <= wo; ow += simd::kLanes) {
              const simd::Vec near = simd::add(simd::mul(h0, simd::load(r00 + ow)), simd::mul(h1, simd::load(r01 + ow)));
              const simd::Vec far = simd::add(simd::mul(h0, simd::load(r10 + ow)), simd::mul(h1, simd::load(r11 + ow)));
              simd::store_streaming(yr + ow, simd::add(simd::mul(d0, near), simd::mul(d1, far)));
            }
          }
        }
#endif
#pragma omp simd
        for (int64_t i = ow; i < wo; ++i) yr[i] = bilinear_blend(td, th, r00[i], r01[i], r10[i], r11[i]);
      }
#if defined(MED3D_SIMD)
      if (stream) _mm_sfence();  // this thread's streamed rows visible before the region ends
#endif
    }
  });
}

// The backward is the transpose of the forward, summed axis by axis the other way round: each
// depth slice of dy is reduced along H (every input row h gathers the dy rows that read it,
// weighted) and then along W, to an H_in x W_in slice; each depth slice of dx then gathers the
// reduced slices of the dy depths that read it. The reduced slices of the last few dy depths
// stay in a ring (one slot per dy depth an input depth can read), so dy is read once, front to
// back, and every partial sum stays in L1. Each element of dx is summed by one thread in a fixed
// order (no atomics, and the result does not depend on the thread count); items are (plane,
// range of input depths) across the threads. (Gathering 16 dy rows into every workspace row
// (d, h) and then W took 2.5 ms on 2 x 32 x 32 x 64 x 64 on 2 threads: each dy row came from L2
// four times.)
template <class T>
void upsample_trilinear3d_backward(const UpsampleGeometry& g, const T* dy, T* dx) {
  const auto taps = linear_taps<T>(g);
  const std::array<std::vector<std::vector<LinearUse<T>>>, 3> uses{
      linear_uses(taps[0], g.in[0]), linear_uses(taps[1], g.in[1]), linear_uses(taps[2], g.in[2])};
  const int64_t di = g.in[0], hi = g.in[1], wi = g.in[2];
  const int64_t dout = g.out[0], ho = g.out[1], wo = g.out[2];
  const int64_t slice_in = hi * wi, slice_out = ho * wo;
  // Along W, input iw is read by the outputs [w_start[iw], w_start[iw] + w_len[iw]) (taps are
  // monotone), with weight w_coef[u * wi + iw] for output w_start[iw] + u (the sum of its two
  // taps' weights where both read iw, at clamped edges). Laid out so that the loop over iw
  // vectorises, u outermost: each dx element still sums its terms in output order.
  std::vector<int64_t> w_start(static_cast<std::size_t>(wi), 0), w_len(static_cast<std::size_t>(wi), 0);
  int64_t w_terms = 0;
  for (int64_t iw = 0; iw < wi; ++iw) {
    const auto& list = uses[2][static_cast<std::size_t>(iw)];
    if (list.empty()) continue;
    w_start[iw] = list.front().out;
    w_len[iw] = list.back().out - list.front().out + 1;
    w_terms = std::max(w_terms, w_len[iw]);
  }
  std::vector<T> w_coef(static_cast<std::size_t>(w_terms * wi), T(0));
  for (int64_t iw = 0; iw < wi; ++iw)
    for (const LinearUse<T>& use : uses[2][static_cast<std::size_t>(iw)])
      w_coef[(use.out - w_start[iw]) * wi + iw] += use.weight;
  // Doubling without corner alignment: input i reads outputs 2i - 1 to 2i + 2 with the four
  // coefficients of i = 2 on the row padded by one repeated element at each end (input 0 then
  // gets c0 + c1 on output 0, the last input c2 + c3 on the last output, as their tables say;
  // input 1's table adds output 0 with weight 0, left out). One vector loop then covers the row,
  // where the edges summed alone took a fifth of the time.
  bool w_doubles = wi >= 4 && doubles(taps[2], wi);
  for (int64_t iw = 2; w_doubles && iw < wi - 1; ++iw) {
    w_doubles = w_start[iw] == 2 * iw - 1 && w_len[iw] == 4;
    for (int64_t u = 0; w_doubles && u < 4; ++u) w_doubles = w_coef[u * wi + iw] == w_coef[u * wi + 2];
  }
  const auto coef = [&](int64_t u, int64_t iw) { return w_coef[u * wi + iw]; };
  T c[4] = {};
  if (w_doubles) {
    for (int64_t u = 0; u < 4; ++u) c[u] = coef(u, 2);
    const int64_t last = wi - 1;
    w_doubles = w_start[0] == 0 && w_len[0] == 3 && coef(0, 0) == c[0] + c[1] && coef(1, 0) == c[2] &&
                coef(2, 0) == c[3] && w_start[1] == 0 && w_len[1] == 5 && coef(0, 1) == T(0) && coef(1, 1) == c[0] &&
                coef(2, 1) == c[1] && coef(3, 1) == c[2] && coef(4, 1) == c[3] && w_start[last] == 2 * last - 1 &&
                w_len[last] == 3 && coef(0, last) == c[0] && coef(1, last) == c[1] && coef(2, last) == c[2] + c[3];
  }
  // dxr[iw] = the sum over u of coef(u, iw) * padded[1 + w_start[iw] + u] (padded: a row of W_out
  // with a repeated element at each end).
  const auto reduce_w = [&, c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3]](const T* padded, T* dxr) {
    if (w_doubles) {
#pragma omp simd
      for (int64_t i = 0; i < wi; ++i)
        dxr[i] = std::fma(c3, padded[2 * i + 3],
                          std::fma(c2, padded[2 * i + 2], std::fma(c1, padded[2 * i + 1], c0 * padded[2 * i])));
      return;
    }
    const T* row = padded + 1;
    std::fill(dxr, dxr + wi, T(0));
    for (int64_t u = 0; u < w_terms; ++u) {
      const T* coefs = w_coef.data() + u * wi;
#pragma omp simd
      for (int64_t iw = 0; iw < wi; ++iw) {
        // Clamped index: lanes past their last output read a valid element and discard it.
        const T term = coefs[iw] * row[std::min(w_start[iw] + u, wo - 1)];
        dxr[iw] += u < w_len[iw] ? term : T(0);
      }
    }
  };
  // reduced (H_in x W_in) = dys (one depth slice of dy) reduced along H, then W, through `row`:
  // W_out scratch with room for one element before and after it.
  constexpr int64_t kPrefetchAhead = 4096;
  const auto reduce_slice = [&](const T* dys, T* reduced, T* row) {
    T* padded = row - 1;
    for (int64_t h = 0; h < hi; ++h) {
      const auto& list = uses[1][static_cast<std::size_t>(h)];
      if (!list.empty()) {
        // dy streams through here once: the two rows 4 KiB past the last one read, requested now
        // (the hardware prefetchers alone kept too few in flight: 1x32x32x64x64 on 2 threads took
        // 11.7 ms, 6.8 this way; 2 or 8 KiB ahead were slower, 16 KiB as slow as none).
        const char* front = reinterpret_cast<const char*>(dys + (list.back().out + 1) * wo) + kPrefetchAhead;
        for (int64_t b = 0; b < 2 * wo * static_cast<int64_t>(sizeof(T)); b += 64) __builtin_prefetch(front + b);
      }
      weighted_sum(list, [&](int64_t oh) { return dys + oh * wo; }, wo, row);
      row[-1] = row[0];
      row[wo] = row[wo - 1];
      reduce_w(padded, reduced + h * wi);
    }
  };
  int64_t slots = 1;  // the most dy depths one input depth reads
  for (const auto& list : uses[0])
    if (!list.empty()) slots = std::max(slots, list.back().out - list.front().out + 1);
  const bool parallel = !omp_in_parallel() && g.planes * dout * slice_out > kParallelGrain;
  // Items of a few input depths each when there are few planes, so that every thread gets work.
  const int64_t chunks = parallel ? std::clamp<int64_t>(4 * omp_get_max_threads() / g.planes, 1, di) : 1;
#pragma omp parallel if (parallel)
  {
    // The row starts on a cache line: its vector stores then stay inside lines (one element in,
    // as the pad before it would put it, half of them crossed one: 1.04x the time, one thread).
    constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));
    std::vector<T> ring(static_cast<std::size_t>(slots * slice_in)), row_buffer(static_cast<std::size_t>(wo + 3 * kLine));
    T* row = row_buffer.data() + kLine;
    row += (kLine - reinterpret_cast<std::uintptr_t>(row) / sizeof(T) % kLine) % kLine;
    std::vector<int64_t> ring_depth(static_cast<std::size_t>(slots));
#pragma omp for schedule(static)
    for (int64_t item = 0; item < g.planes * chunks; ++item) {
      const int64_t p = item / chunks, c = item % chunks;
      std::fill(ring_depth.begin(), ring_depth.end(), int64_t{-1});
      for (int64_t d = di * c / chunks; d < di * (c + 1) / chunks; ++d) {
        T* dxs = dx + (p * di + d) * slice_in;
        const auto& list = uses[0][static_cast<std::size_t>(d)];
        for (const LinearUse<T>& ud : list) {
          const int64_t s = ud.out % slots;
          if (ring_depth[s] == ud.out) continue;
          reduce_slice(dy + (p * dout + ud.out) * slice_out, ring.data() + s * slice_in, row);
          ring_depth[s] = ud.out;
        }
        weighted_sum(list, [&](int64_t od) { return ring.data() + od % slots * slice_in; }, slice_in, dxs);
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
  template void upsample_trilinear3d_forward<T>(const UpsampleGeometry&, const T*, T*, T*);   \
  template void upsample_trilinear3d_backward<T>(const UpsampleGeometry&, const T*, T*);      \
  template void upsample_nearest3d_forward<T>(const UpsampleGeometry&, const T*, T*);         \
  template void upsample_nearest3d_backward<T>(const UpsampleGeometry&, const T*, T*);
MED3D_INSTANTIATE(float)
MED3D_INSTANTIATE(double)
#undef MED3D_INSTANTIATE

}  // namespace med3d::kernels::cpu
