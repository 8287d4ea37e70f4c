#include "med3d/kernels/cpu/pool.h"

#include <algorithm>
#include <limits>
#include <vector>

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

namespace {

// Whether (v, iv) wins over the running (best, ib) in the order that max pooling's scan (d, h,
// w order from the window's first element, `max_pool_takes`) realises: numbers by value, the
// lower flat index on ties; NaN over numbers, the higher index among NaNs (the scan's last NaN).
// A total order, so the maximum does not depend on the visiting order.
template <class T, class Index>
inline bool max_pool_beats(T v, Index iv, T best, Index ib) {
  const bool v_nan = v != v, best_nan = best != best;
  return v > best || (v == best && iv < ib) || (v_nan && (!best_nan || iv > ib));
}

// The windows along W as one pattern: window o is [o * stride - pad, + span) clipped to the row
// (pooling's windows are; `uniform` is false for any other list).
struct RowWindows {
  bool uniform = false;
  int64_t stride = 1, pad = 0, span = 0;
};

RowWindows row_windows(const std::vector<PoolWindow>& windows, int64_t in) {
  RowWindows r;
  const auto n = static_cast<int64_t>(windows.size());
  for (const PoolWindow& w : windows) r.span = std::max(r.span, w.end - w.begin);
  int64_t whole = 0;  // the first window not clipped
  while (whole < n && windows[whole].end - windows[whole].begin < r.span) ++whole;
  if (whole == n) return r;
  const int64_t stride = whole + 1 < n ? windows[whole + 1].begin - windows[whole].begin : 1;
  const int64_t pad = whole * stride - windows[whole].begin;
  if (stride < 1 || pad < 0 || pad >= r.span) return r;
  bool uniform = true;
  for (int64_t o = 0; o < n; ++o) {
    const int64_t begin = o * stride - pad;
    uniform = uniform && windows[o].begin == std::max<int64_t>(begin, 0) &&
              windows[o].end == std::min(begin + r.span, in) && windows[o].begin < windows[o].end;
  }
  if (uniform) r = {true, stride, pad, r.span};  // (otherwise stride 1 and no pad, as scanned)
  return r;
}

// One (plane, od) slab at a time, reduced axis by axis with their flat indices: D over
// contiguous planes of H x W, then H over contiguous rows of W (both in vectors, and D in
// ascending index order, so the scan's own rule decides there), then W. For W, the H maxima
// go into rows padded by repeating their edge elements (a clipped window then revisits an
// element, which never beats itself), `pitch` = stride x `per_row` apart, so that output o of
// row oh reads element (oh * per_row + o) * stride + j: all rows in one vector loop, with
// per_row - W_out outputs past each row's end computed and dropped. 3x faster than gathering
// all 27 taps of every output (the k3 s2 stem pooling); W by a column table's gathers, and D
// from a copy of the first depth, took 1.06 ms where this takes 0.73 (2 x 64 x 16 x 32 x 32, 2
// threads). Windows that are not one pattern along W scan element by element.
// `Index` is int32_t whenever a plane's flat indices fit.
template <class T, class Index>
void max_pool_rows(const PoolPlan& plan, const T* x, T* y, int64_t* argmax) {
  const int64_t h_in = plan.in[1], w_in = plan.in[2], hw = h_in * w_in, in_plane = plane_size(plan.in);
  const int64_t od_n = plan.out[0], oh_n = plan.out[1], ow_n = plan.out[2];
  const RowWindows row = row_windows(plan.windows[2], w_in);
  const int64_t stride = row.stride;
  // Outputs per padded row: as many as its padded length needs (the row and the last window).
  const int64_t padded_row = std::max(row.pad + w_in, (ow_n - 1) * stride + row.span);
  const int64_t per_row = (padded_row + stride - 1) / stride;
  const int64_t pitch = per_row * stride, padded_size = oh_n * pitch + row.span;
  const int64_t slabs = plan.planes * od_n;
#pragma omp parallel if (plan.planes * std::max(in_plane, plane_size(plan.out)) > kParallelGrain)
  {
    std::vector<T> d_best(static_cast<std::size_t>(hw)), padded(static_cast<std::size_t>(padded_size));
    std::vector<Index> d_index(d_best.size()), padded_index(padded.size());
    std::vector<T> best(static_cast<std::size_t>(oh_n * per_row));
    std::vector<Index> best_index(best.size());
#pragma omp for schedule(static)
    for (int64_t slab = 0; slab < slabs; ++slab) {
      const PoolWindow& wd = plan.windows[0][slab % od_n];
      const T* xp = x + slab / od_n * in_plane;
      T* db = d_best.data();
      Index* di = d_index.data();
      const Index first = static_cast<Index>(wd.begin * hw);
      if (wd.end - wd.begin == 1) {
#pragma omp simd
        for (int64_t i = 0; i < hw; ++i) {
          db[i] = xp[first + i];
          di[i] = static_cast<Index>(first + i);
        }
      } else {  // the first two depths compared in one pass
        const Index second = static_cast<Index>(first + hw);
#pragma omp simd
        for (int64_t i = 0; i < hw; ++i) {
          const bool takes = max_pool_takes(xp[second + i], xp[first + i]);
          db[i] = takes ? xp[second + i] : xp[first + i];
          di[i] = static_cast<Index>((takes ? second : first) + i);
        }
      }
      for (int64_t d = wd.begin + 2; d < wd.end; ++d) {
        const T* xd = xp + d * hw;
        const Index base = static_cast<Index>(d * hw);
#pragma omp simd
        for (int64_t i = 0; i < hw; ++i) {
          const bool takes = max_pool_takes(xd[i], db[i]);
          db[i] = takes ? xd[i] : db[i];
          di[i] = takes ? static_cast<Index>(base + i) : di[i];
        }
      }
      const int64_t out = slab * oh_n * ow_n;
      for (int64_t oh = 0; oh < oh_n; ++oh) {
        const PoolWindow& wh = plan.windows[1][oh];
        T* hb = padded.data() + oh * pitch;
        Index* hi = padded_index.data() + oh * pitch;
        std::copy(db + wh.begin * w_in, db + (wh.begin + 1) * w_in, hb + row.pad);
        std::copy(di + wh.begin * w_in, di + (wh.begin + 1) * w_in, hi + row.pad);
        for (int64_t h = wh.begin + 1; h < wh.end; ++h) {
          const T* vb = db + h * w_in;
          const Index* vi = di + h * w_in;
          T* rb = hb + row.pad;
          Index* ri = hi + row.pad;
#pragma omp simd
          for (int64_t w = 0; w < w_in; ++w) {
            const bool takes = max_pool_beats(vb[w], vi[w], rb[w], ri[w]);
            rb[w] = takes ? vb[w] : rb[w];
            ri[w] = takes ? vi[w] : ri[w];
          }
        }
        if (!row.uniform) {  // each window scanned
          for (int64_t o = 0; o < ow_n; ++o) {
            const PoolWindow& ww = plan.windows[2][o];
            T b = hb[row.pad + ww.begin];
            Index bi = hi[row.pad + ww.begin];
            for (int64_t w = ww.begin + 1; w < ww.end; ++w)
              if (max_pool_beats(hb[row.pad + w], hi[row.pad + w], b, bi)) b = hb[row.pad + w], bi = hi[row.pad + w];
            y[out + oh * ow_n + o] = b;
            argmax[out + oh * ow_n + o] = bi;
          }
          continue;
        }
        std::fill(hb, hb + row.pad, hb[row.pad]);
        std::fill(hi, hi + row.pad, hi[row.pad]);
        const int64_t tail = (oh + 1 < oh_n ? pitch : padded_size - oh * pitch) - row.pad - w_in;
        std::fill_n(hb + row.pad + w_in, tail, hb[row.pad + w_in - 1]);
        std::fill_n(hi + row.pad + w_in, tail, hi[row.pad + w_in - 1]);
      }
      if (!row.uniform) continue;
      const T* pb = padded.data();
      const Index* pi = padded_index.data();
      T* bv = best.data();
      Index* bi = best_index.data();
      const int64_t outputs = oh_n * per_row;
#pragma omp simd
      for (int64_t f = 0; f < outputs; ++f) {
        bv[f] = pb[f * stride];
        bi[f] = pi[f * stride];
      }
      for (int64_t j = 1; j < row.span; ++j) {
#pragma omp simd
        for (int64_t f = 0; f < outputs; ++f) {
          const T v = pb[f * stride + j];
          const Index iv = pi[f * stride + j];
          const bool takes = max_pool_beats(v, iv, bv[f], bi[f]);
          bv[f] = takes ? v : bv[f];
          bi[f] = takes ? iv : bi[f];
        }
      }
      for (int64_t oh = 0; oh < oh_n; ++oh) {
        std::copy(bv + oh * per_row, bv + oh * per_row + ow_n, y + out + oh * ow_n);
        std::copy(bi + oh * per_row, bi + oh * per_row + ow_n, argmax + out + oh * ow_n);
      }
    }
  }
}

}  // namespace

template <class T>
void max_pool3d_forward(const PoolPlan& plan, const T* x, T* y, int64_t* argmax) {
  if (plane_size(plan.in) <= std::numeric_limits<int32_t>::max())
    max_pool_rows<T, int32_t>(plan, x, y, argmax);
  else
    max_pool_rows<T, int64_t>(plan, x, y, argmax);
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
