// Conv3dParams: the geometry of one 3D convolution, and THE place where every conv variant's
// sizes are computed and validated (CPU and CUDA kernels, ops and benchmarks all use it).
//
// A Conv3dParams always describes a forward (cross-correlation) convolution
//   x [N, C, D, H, W]  *  w [K, C/groups, T, R, S]  ->  y [N, K, Z, P, Q]
//   y[n, k, z, p, q] = sum_{c in group(k), t, r, s} w[k, c, t, r, s] *
//                      x[n, c, z*stride_d - pad_d + t*dilation_d, p*..., q*...]
// with taps outside the input reading zero. A transposed convolution is described by the
// equivalent forward conv whose OUTPUT is the transposed conv's input and whose INPUT is the
// transposed conv's output (conv_transpose3d_params); its forward pass is then this conv's
// dgrad. Its output_padding makes the input (D, H, W) larger than the smallest input that
// yields (Z, P, Q); the kernels only require Z, P, Q <= conv_output_size(D, ...).
//
// The *_params functions validate their arguments and throw med3d::Error naming the op, the
// expected and the actual values.
#pragma once

#include <array>
#include <cstdint>

#include "med3d/error.h"
#include "med3d/kernels/hd.h"

namespace med3d::kernels {

using Dims3 = std::array<int64_t, 3>;
using Dims5 = std::array<int64_t, 5>;

struct Conv3dParams {
  int64_t N = 0, C = 0, D = 0, H = 0, W = 0;  // input
  int64_t K = 0, T = 0, R = 0, S = 0;         // output channels, kernel extents
  int64_t Z = 0, P = 0, Q = 0;                // output extents
  Dims3 pad{0, 0, 0}, stride{1, 1, 1}, dilation{1, 1, 1};
  Dims3 output_padding{0, 0, 0};  // transposed convs only (already included in D, H, W)
  int64_t groups = 1;

  MED3D_HD int64_t channels_per_group() const { return C / groups; }
  MED3D_HD int64_t filters_per_group() const { return K / groups; }
  MED3D_HD int64_t taps() const { return T * R * S; }
  MED3D_HD int64_t input_spatial() const { return D * H * W; }
  MED3D_HD int64_t output_spatial() const { return Z * P * Q; }
  Dims3 input_extent() const { return {D, H, W}; }
  Dims3 kernel_extent() const { return {T, R, S}; }
  Dims3 output_extent() const { return {Z, P, Q}; }
};

// Every field of p but the batch size N: what a conv's packed weights depend on (their header's
// fingerprint, the engine's cache of them).
inline std::array<int64_t, 24> fields_but_batch(const Conv3dParams& p) {
  return {p.C,         p.D,         p.H,         p.W,           p.K,           p.T,
          p.R,         p.S,         p.Z,         p.P,           p.Q,           p.groups,
          p.pad[0],    p.pad[1],    p.pad[2],    p.stride[0],   p.stride[1],   p.stride[2],
          p.dilation[0], p.dilation[1], p.dilation[2], p.output_padding[0], p.output_padding[1],
          p.output_padding[2]};
}

// The pass that reads a conv's weights in a packed layout made in advance (conv3d_pack_weights):
// fprop (x to y) or dgrad (dy to dx).
enum class PackFor { fprop, dgrad };

// Output extent of a forward conv along one axis (PyTorch's formula, floor division).
MED3D_HD constexpr int64_t conv_output_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride,
                                            int64_t dilation) {
  return (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
}

// Output extent of a transposed conv along one axis: the input extent of the forward conv
// that maps back to `in`, plus output_padding.
MED3D_HD constexpr int64_t conv_transpose_output_size(int64_t in, int64_t kernel, int64_t pad,
                                                      int64_t stride, int64_t dilation,
                                                      int64_t output_padding) {
  return (in - 1) * stride - 2 * pad + dilation * (kernel - 1) + output_padding + 1;
}

namespace detail {
inline constexpr const char* kAxis[3] = {"depth", "height", "width"};
}  // namespace detail

// Throws unless strides and dilations are positive and paddings non-negative.
inline void check_conv_geometry(const char* op, const Dims3& stride, const Dims3& pad,
                                const Dims3& dilation) {
  for (int a = 0; a < 3; ++a) {
    MED3D_CHECK(stride[a] >= 1, op, ": stride along ", detail::kAxis[a], " must be >= 1, got ",
                stride[a]);
    MED3D_CHECK(dilation[a] >= 1, op, ": dilation along ", detail::kAxis[a], " must be >= 1, got ",
                dilation[a]);
    MED3D_CHECK(pad[a] >= 0, op, ": padding along ", detail::kAxis[a], " must be >= 0, got ",
                pad[a]);
  }
}

// Throws unless `groups` >= 1 divides both channel counts.
inline void check_conv_groups(const char* op, int64_t groups, int64_t in_channels,
                              int64_t out_channels) {
  MED3D_CHECK(groups >= 1, op, ": groups must be >= 1, got ", groups);
  MED3D_CHECK(in_channels % groups == 0, op, ": input channels (", in_channels,
              ") must be divisible by groups (", groups, ")");
  MED3D_CHECK(out_channels % groups == 0, op, ": output channels (", out_channels,
              ") must be divisible by groups (", groups, ")");
}

// Throws unless the extents of a tensor's dimensions from `first` on are positive.
inline void check_positive_extents(const char* op, const char* what, const Dims5& dims, int first) {
  for (int i = first; i < 5; ++i)
    MED3D_CHECK(dims[i] > 0, op, ": ", what, " dimension ", i, " must be > 0, got [", dims[0], ", ",
                dims[1], ", ", dims[2], ", ", dims[3], ", ", dims[4], "]");
}

// Forward conv: x [N, C, D, H, W], w [K, C/groups, T, R, S].
inline Conv3dParams conv3d_params(const char* op, const Dims5& x, const Dims5& w,
                                  const Dims3& stride, const Dims3& pad, const Dims3& dilation,
                                  int64_t groups) {
  check_conv_geometry(op, stride, pad, dilation);
  check_positive_extents(op, "x", x, 1);
  check_positive_extents(op, "w", w, 0);
  check_conv_groups(op, groups, x[1], w[0]);
  MED3D_CHECK(x[1] == w[1] * groups, op, ": x has ", x[1], " channels but w [", w[0], ", ", w[1],
              ", ...] with groups=", groups, " expects ", w[1] * groups,
              " (w's dimension 1 is channels / groups)");
  Conv3dParams p;
  p.N = x[0], p.C = x[1], p.D = x[2], p.H = x[3], p.W = x[4];
  p.K = w[0], p.T = w[2], p.R = w[3], p.S = w[4];
  p.stride = stride, p.pad = pad, p.dilation = dilation, p.groups = groups;
  Dims3 out{};
  for (int a = 0; a < 3; ++a) {
    const int64_t padded = x[2 + a] + 2 * pad[a];
    const int64_t extent = dilation[a] * (w[2 + a] - 1) + 1;
    MED3D_CHECK(extent <= padded, op, ": the dilated kernel along ", detail::kAxis[a], " spans ",
                extent, " voxels but the padded input has only ", padded, " (input ", x[2 + a],
                " + 2 * padding ", pad[a],
                "); use a larger input, more padding or a smaller "
                "kernel or dilation");
    out[a] = conv_output_size(x[2 + a], w[2 + a], pad[a], stride[a], dilation[a]);
  }
  p.Z = out[0], p.P = out[1], p.Q = out[2];
  return p;
}

// Transposed conv: x [N, C, D, H, W], w [C, K/groups, T, R, S] (PyTorch's ConvTranspose3d
// layout). Returns the equivalent forward conv: input [N, K, D', H', W'] = the transposed
// output, output [N, C, D, H, W] = x, weight w unchanged ([C, K/groups, ...] is exactly the
// forward layout [K', C'/groups, ...]).
inline Conv3dParams conv_transpose3d_params(const char* op, const Dims5& x, const Dims5& w,
                                            const Dims3& stride, const Dims3& pad,
                                            const Dims3& output_padding, const Dims3& dilation,
                                            int64_t groups) {
  check_conv_geometry(op, stride, pad, dilation);
  check_positive_extents(op, "x", x, 1);
  check_positive_extents(op, "w", w, 0);
  MED3D_CHECK(groups >= 1, op, ": groups must be >= 1, got ", groups);
  MED3D_CHECK(x[1] == w[0], op, ": x has ", x[1], " channels but w [", w[0], ", ", w[1],
              ", ...] expects ", w[0],
              " (a transposed conv's w is [in channels, out channels / "
              "groups, T, R, S])");
  check_conv_groups(op, groups, x[1], w[1] * groups);
  Conv3dParams p;
  p.N = x[0], p.K = x[1], p.Z = x[2], p.P = x[3], p.Q = x[4];
  p.C = w[1] * groups, p.T = w[2], p.R = w[3], p.S = w[4];
  p.stride = stride, p.pad = pad, p.dilation = dilation, p.output_padding = output_padding;
  p.groups = groups;
  Dims3 in{};
  for (int a = 0; a < 3; ++a) {
    // PyTorch's rule: a larger output_padding would add planes no output voxel can reach.
    MED3D_CHECK(output_padding[a] >= 0 &&
                    (output_padding[a] < stride[a] || output_padding[a] < dilation[a]),
                op, ": output_padding along ", detail::kAxis[a],
                " must be >= 0 and smaller than "
                "either stride (",
                stride[a], ") or dilation (", dilation[a], "), got ", output_padding[a]);
    in[a] = conv_transpose_output_size(x[2 + a], w[2 + a], pad[a], stride[a], dilation[a],
                                       output_padding[a]);
    MED3D_CHECK(in[a] > 0, op, ": the output along ", detail::kAxis[a], " would have ", in[a],
                " voxels (input ", x[2 + a], ", kernel ", w[2 + a], ", stride ", stride[a],
                ", padding ", pad[a], ", dilation ", dilation[a], "); reduce the padding");
  }
  p.D = in[0], p.H = in[1], p.W = in[2];
  return p;
}

// The indices o in [0, count) along one axis whose input o * step + offset lies in [0, in):
// [lo, hi), empty when lo >= hi. Output positions that a tap reads inside (step = stride, offset =
// tap * dilation - pad), or taps that an output position reads inside (step = dilation, offset =
// position * stride - pad).
struct AxisRange {
  int64_t lo, hi;
};
inline AxisRange inside_range(int64_t count, int64_t in, int64_t step, int64_t offset) {
  // ceil(a / step) for any sign of a.
  auto ceil_div = [step](int64_t a) { return a >= 0 ? (a + step - 1) / step : -(-a / step); };
  const int64_t lo = ceil_div(-offset), hi = ceil_div(in - offset);
  return {lo > 0 ? lo : 0, hi < count ? hi : count};
}

// Number of (output position, tap) pairs along one axis whose input index lies inside [0, in).
inline int64_t conv_taps_inside(int64_t in, int64_t kernel, int64_t out, int64_t pad,
                                int64_t stride, int64_t dilation) {
  int64_t count = 0;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t t = 0; t < kernel; ++t) {
      const int64_t i = o * stride - pad + t * dilation;
      count += (i >= 0 && i < in) ? 1 : 0;
    }
  return count;
}

// FLOPs (a multiply-add counts 2) of the forward pass; dgrad and wgrad cost the same, and a
// transposed conv costs what its equivalent forward conv costs. Nominal counts every tap of
// every output voxel, as most frameworks report; effective counts only taps that land inside
// the input (zero padding and dilation holes on small maps are free for a smart kernel).
inline int64_t conv3d_flops_nominal(const Conv3dParams& p) {
  return 2 * p.N * p.K * p.channels_per_group() * p.output_spatial() * p.taps();
}
inline int64_t conv3d_flops_effective(const Conv3dParams& p) {
  return 2 * p.N * p.K * p.channels_per_group() *
         conv_taps_inside(p.D, p.T, p.Z, p.pad[0], p.stride[0], p.dilation[0]) *
         conv_taps_inside(p.H, p.R, p.P, p.pad[1], p.stride[1], p.dilation[1]) *
         conv_taps_inside(p.W, p.S, p.Q, p.pad[2], p.stride[2], p.dilation[2]);
}

}  // namespace med3d::kernels
