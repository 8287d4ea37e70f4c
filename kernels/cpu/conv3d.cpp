// CPU conv3d fprop / dgrad / wgrad: vol2col + Eigen GEMM per sample and group (see the header).
#include "med3d/kernels/cpu/conv3d.h"

#include <Eigen/Core>
#include <algorithm>

namespace med3d::kernels::cpu {

namespace {

template <class T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A row-major view of `rows` x `cols` elements whose rows start `ld` elements apart.
template <class T>
Eigen::Map<RowMajor<T>, 0, Eigen::OuterStride<>> matrix(T* data, int64_t rows, int64_t cols,
                                                        int64_t ld) {
  return {data, rows, cols, Eigen::OuterStride<>(ld)};
}
template <class T>
Eigen::Map<const RowMajor<T>, 0, Eigen::OuterStride<>> matrix(const T* data, int64_t rows,
                                                              int64_t cols, int64_t ld) {
  return {data, rows, cols, Eigen::OuterStride<>(ld)};
}

// A 1x1x1 conv with unit stride, no padding and matching extents is a plain GEMM on the input.
bool is_pointwise(const Conv3dParams& p) {
  return p.taps() == 1 && p.stride == Dims3{1, 1, 1} && p.pad == Dims3{0, 0, 0} && p.Z == p.D &&
         p.P == p.H && p.Q == p.W;
}

int64_t column_rows(const Conv3dParams& p) { return p.channels_per_group() * p.taps(); }

// Blocks are whole output lines (z, p) of Q voxels, so the inner loops run along q and W.
int64_t lines_per_block(const Conv3dParams& p, int64_t scratch_elements) {
  const int64_t lines = std::max<int64_t>(p.Z * p.P, 1);
  return std::clamp<int64_t>(scratch_elements / std::max<int64_t>(column_rows(p) * p.Q, 1), 1, lines);
}

// Lines per block that fit the caller's scratch; throws if not even one line fits.
int64_t checked_block(const Conv3dParams& p, int64_t scratch_elements) {
  MED3D_CHECK(is_pointwise(p) || scratch_elements >= column_rows(p) * p.Q,
              "conv3d kernels: the scratch buffer holds ", scratch_elements,
              " elements but one output line needs ", column_rows(p) * p.Q,
              "; size it with conv3d_scratch_elements");
  return lines_per_block(p, scratch_elements);
}

// The outputs o in [0, out) whose input index o * stride + offset lies in [0, in): [lo, hi).
struct Range {
  int64_t lo, hi;
};
Range inside(int64_t out, int64_t in, int64_t offset, int64_t stride) {
  const int64_t lo = std::min(offset >= 0 ? 0 : (-offset + stride - 1) / stride, out);
  const int64_t hi = in - offset <= 0 ? 0 : (in - offset + stride - 1) / stride;
  return {lo, std::clamp(hi, lo, out)};
}

// Walks the column-matrix row (c, t, r, s) over the block's output lines: calls
// inside(l, base, qs) for a line whose (d, h) tap lies in the input, where the input index of
// output q is base + q * stride_w and qs are the q whose w lies in the input too, and
// outside(l) for the other lines.
template <class Inside, class Outside>
void walk_row(const Conv3dParams& p, int64_t row, int64_t line0, int64_t lines, Inside&& inside_fn,
              Outside&& outside_fn) {
  const int64_t tap = row % p.taps();
  const int64_t t = tap / (p.R * p.S), r = (tap / p.S) % p.R, s = tap % p.S;
  const int64_t w_offset = s * p.dilation[2] - p.pad[2];
  const Range qs = inside(p.Q, p.W, w_offset, p.stride[2]);
  for (int64_t l = 0; l < lines; ++l) {
    const int64_t z = (line0 + l) / p.P, y = (line0 + l) % p.P;
    const int64_t d = z * p.stride[0] - p.pad[0] + t * p.dilation[0];
    const int64_t h = y * p.stride[1] - p.pad[1] + r * p.dilation[1];
    if (d < 0 || d >= p.D || h < 0 || h >= p.H || qs.lo == qs.hi)
      outside_fn(l);
    else
      inside_fn(l, (d * p.H + h) * p.W + w_offset, qs);
  }
}

// col[row, l * Q + q] = x[c, d, h, w] (0 outside) for the block's lines; x points at the
// group's first channel. Rows are independent, so they are spread over the threads.
template <class T>
void vol2col(const Conv3dParams& p, const T* x, int64_t line0, int64_t lines, T* col) {
  const int64_t cols = lines * p.Q, sw = p.stride[2];
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < column_rows(p); ++row) {
    const T* xc = x + row / p.taps() * p.input_spatial();
    T* out = col + row * cols;
    walk_row(
        p, row, line0, lines,
        [&](int64_t l, int64_t base, Range qs) {
          T* o = out + l * p.Q;
          std::fill(o, o + qs.lo, T(0));
          for (int64_t q = qs.lo; q < qs.hi; ++q) o[q] = xc[base + q * sw];
          std::fill(o + qs.hi, o + p.Q, T(0));
        },
        [&](int64_t l) { std::fill(out + l * p.Q, out + (l + 1) * p.Q, T(0)); });
  }
}

// x[c, d, h, w] += col[row, l * Q + q] for the block's lines; zeroes x first on the first
// block. Taps of one channel overlap in x, so one thread owns each channel: race-free, and the
// sums run in a fixed order.
template <class T>
void col2vol(const Conv3dParams& p, const T* col, int64_t line0, int64_t lines, T* x) {
  const int64_t cols = lines * p.Q, sw = p.stride[2];
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < p.channels_per_group(); ++c) {
    T* xc = x + c * p.input_spatial();
    if (line0 == 0) std::fill(xc, xc + p.input_spatial(), T(0));
    for (int64_t row = c * p.taps(); row < (c + 1) * p.taps(); ++row) {
      const T* in = col + row * cols;
      walk_row(
          p, row, line0, lines,
          [&](int64_t l, int64_t base, Range qs) {
            for (int64_t q = qs.lo; q < qs.hi; ++q) xc[base + q * sw] += in[l * p.Q + q];
          },
          [](int64_t) {});
    }
  }
}

}  // namespace

int64_t conv3d_scratch_elements(const Conv3dParams& p, int64_t budget) {
  return is_pointwise(p) ? 0 : column_rows(p) * lines_per_block(p, budget) * p.Q;
}

template <class T>
void conv3d_fprop(const Conv3dParams& p, const T* x, const T* w, const T* bias, T* y, T* scratch,
                  int64_t scratch_elements) {
  const int64_t Cg = p.channels_per_group(), Kg = p.filters_per_group(), rows = column_rows(p);
  const int64_t in_sp = p.input_spatial(), out_sp = p.output_spatial();
  const int64_t lines = p.Z * p.P, block = checked_block(p, scratch_elements);
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t g = 0; g < p.groups; ++g) {
      const T* xg = x + (n * p.C + g * Cg) * in_sp;
      T* yg = y + (n * p.K + g * Kg) * out_sp;
      const auto wg = matrix(w + g * Kg * rows, Kg, rows, rows);
      if (is_pointwise(p)) {
        matrix(yg, Kg, out_sp, out_sp).noalias() = wg * matrix(xg, Cg, in_sp, in_sp);
        continue;
      }
      for (int64_t l0 = 0; l0 < lines; l0 += block) {
        const int64_t cols = std::min(block, lines - l0) * p.Q;
        vol2col(p, xg, l0, cols / p.Q, scratch);
        matrix(yg + l0 * p.Q, Kg, cols, out_sp).noalias() = wg * matrix(scratch, rows, cols, cols);
      }
    }
    if (bias) add_channel_bias(1, p.K, out_sp, bias, y + n * p.K * out_sp);
  }
}

template <class T>
void conv3d_dgrad(const Conv3dParams& p, const T* dy, const T* w, T* dx, T* scratch,
                  int64_t scratch_elements) {
  const int64_t Cg = p.channels_per_group(), Kg = p.filters_per_group(), rows = column_rows(p);
  const int64_t in_sp = p.input_spatial(), out_sp = p.output_spatial();
  const int64_t lines = p.Z * p.P, block = checked_block(p, scratch_elements);
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t g = 0; g < p.groups; ++g) {
      T* dxg = dx + (n * p.C + g * Cg) * in_sp;
      const T* dyg = dy + (n * p.K + g * Kg) * out_sp;
      const auto wg = matrix(w + g * Kg * rows, Kg, rows, rows);
      if (is_pointwise(p)) {
        matrix(dxg, Cg, in_sp, in_sp).noalias() = wg.transpose() * matrix(dyg, Kg, out_sp, out_sp);
        continue;
      }
      for (int64_t l0 = 0; l0 < lines; l0 += block) {
        const int64_t cols = std::min(block, lines - l0) * p.Q;
        matrix(scratch, rows, cols, cols).noalias() =
            wg.transpose() * matrix(dyg + l0 * p.Q, Kg, cols, out_sp);
        col2vol(p, scratch, l0, cols / p.Q, dxg);
      }
    }
  }
}

template <class T>
void conv3d_wgrad(const Conv3dParams& p, const T* x, const T* dy, T* dw, T* scratch,
                  int64_t scratch_elements) {
  const int64_t Cg = p.channels_per_group(), Kg = p.filters_per_group(), rows = column_rows(p);
  const int64_t in_sp = p.input_spatial(), out_sp = p.output_spatial();
  const int64_t lines = p.Z * p.P, block = checked_block(p, scratch_elements);
  std::fill(dw, dw + p.K * rows, T(0));
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t g = 0; g < p.groups; ++g) {
      const T* xg = x + (n * p.C + g * Cg) * in_sp;
      const T* dyg = dy + (n * p.K + g * Kg) * out_sp;
      auto dwg = matrix(dw + g * Kg * rows, Kg, rows, rows);
      if (is_pointwise(p)) {
        dwg.noalias() += matrix(dyg, Kg, out_sp, out_sp) * matrix(xg, Cg, in_sp, in_sp).transpose();
        continue;
      }
      for (int64_t l0 = 0; l0 < lines; l0 += block) {
        const int64_t cols = std::min(block, lines - l0) * p.Q;
        vol2col(p, xg, l0, cols / p.Q, scratch);
        dwg.noalias() += matrix(dyg + l0 * p.Q, Kg, cols, out_sp) *
                         matrix(static_cast<const T*>(scratch), rows, cols, cols).transpose();
      }
    }
  }
}

template <class T>
void add_channel_bias(int64_t N, int64_t channels, int64_t spatial, const T* bias, T* y) {
#pragma omp parallel for schedule(static) if (N * channels * spatial > 32768)
  for (int64_t i = 0; i < N * channels; ++i) {
    const T b = bias[i % channels];
    T* row = y + i * spatial;
    for (int64_t j = 0; j < spatial; ++j) row[j] += b;
  }
}

template <class T>
void channel_bias_grad(int64_t N, int64_t channels, int64_t spatial, const T* dy, T* db) {
#pragma omp parallel for schedule(static) if (N * channels * spatial > 32768)
  for (int64_t c = 0; c < channels; ++c) {
    double total = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* row = dy + (n * channels + c) * spatial;
      for (int64_t j = 0; j < spatial; ++j) total += static_cast<double>(row[j]);
    }
    db[c] = static_cast<T>(total);
  }
}

#define MED3D_INSTANTIATE(T) \
  template void conv3d_fprop<T>(const Conv3dParams&, const T*, const T*, const T*, T*, T*, int64_t);      \
  template void conv3d_dgrad<T>(const Conv3dParams&, const T*, const T*, T*, T*, int64_t);                \
  template void conv3d_wgrad<T>(const Conv3dParams&, const T*, const T*, T*, T*, int64_t);                \
  template void add_channel_bias<T>(int64_t, int64_t, int64_t, const T*, T*);                    \
  template void channel_bias_grad<T>(int64_t, int64_t, int64_t, const T*, T*);
MED3D_INSTANTIATE(float)
MED3D_INSTANTIATE(double)
#undef MED3D_INSTANTIATE

}  // namespace med3d::kernels::cpu
