// Source-coordinate math of 3D upsampling, shared by the CPU loops and the CUDA launchers.
// It reproduces torch.nn.functional.interpolate (PyTorch 1.13) per axis:
// - trilinear: the output index o maps to the source coordinate
//     align_corners:  o * (in - 1) / (out - 1)              (0 when out == 1)
//     otherwise:      max(0, (o + 0.5) * r - 0.5), r = 1 / scale_factor when a scale factor
//                     was given, else in / out
//   and an axis whose output size equals its input size is copied (even when a scale factor
//   would map it otherwise), as PyTorch does.
// - nearest ("nearest", not "nearest-exact"): min(floor(o * r), in - 1) with the same r,
//   the product taken in the compute type A and rounded to float before the floor, as
//   PyTorch's CPU kernel for contiguous NCDHW tensors does. That kernel has no copy shortcut
//   for out == in (so scale 1.1 on 5 voxels reads 0, 0, 1, 2, 3), while PyTorch's backward
//   and its channels-last forward do: med3d follows the NCDHW forward in both directions, so
//   its gradient is the true gradient of its forward.
// The coordinates are computed in the compute type A (the element type on the CPU, like
// PyTorch's CPU kernels), so indices and weights agree with PyTorch bit for bit.
#pragma once

#include <cmath>
#include <cstdint>

#include "med3d/kernels/hd.h"

namespace med3d::kernels {

// Source index ratio of linear interpolation along one axis. `scale_factor` <= 0 means the
// output size was given.
template <class A>
MED3D_HD inline A linear_ratio(int64_t in, int64_t out, bool align_corners, double scale_factor) {
  if (align_corners) return out > 1 ? static_cast<A>(in - 1) / static_cast<A>(out - 1) : A(0);
  if (scale_factor > 0) return static_cast<A>(1.0 / scale_factor);
  return static_cast<A>(in) / static_cast<A>(out);
}

// The two input indices and weights that output index `o` blends along one axis.
template <class A>
struct LinearTap {
  int64_t i0, i1;
  A w0, w1;
};

template <class A>
MED3D_HD inline LinearTap<A> linear_tap(int64_t o, int64_t in, int64_t out, A ratio,
                                        bool align_corners) {
  if (in == out) return {o, o, A(1), A(0)};
  A source = align_corners ? ratio * static_cast<A>(o)
                           : ratio * (static_cast<A>(o) + A(0.5)) - A(0.5);
  if (source < A(0)) source = A(0);
  const int64_t i0 = static_cast<int64_t>(source);
  const int64_t i1 = i0 < in - 1 ? i0 + 1 : i0;
  A w1 = source - static_cast<A>(i0);
  w1 = w1 < A(0) ? A(0) : (w1 > A(1) ? A(1) : w1);
  return {i0, i1, A(1) - w1, w1};
}

// The blend of the values at a tap's two indices.
template <class A, class T>
MED3D_HD inline T linear_blend(const LinearTap<A>& t, T v0, T v1) {
  return t.w0 * v0 + t.w1 * v1;
}

// The blend along D and H of four values already interpolated along W (r_dh reads the D tap's
// index d and the H tap's index h): the separable order of the CPU loop, which the CUDA
// kernel follows so both round alike.
template <class A, class T>
MED3D_HD inline T bilinear_blend(const LinearTap<A>& td, const LinearTap<A>& th, T r00, T r01,
                                 T r10, T r11) {
  return td.w0 * (th.w0 * r00 + th.w1 * r01) + td.w1 * (th.w0 * r10 + th.w1 * r11);
}

template <class A>
MED3D_HD inline A nearest_ratio(int64_t in, int64_t out, double scale_factor) {
  if (scale_factor > 0) return static_cast<A>(1.0 / scale_factor);
  return static_cast<A>(in) / static_cast<A>(out);
}

template <class A>
MED3D_HD inline int64_t nearest_source(int64_t o, int64_t in, A ratio) {
  const int64_t source = static_cast<int64_t>(floorf(static_cast<float>(static_cast<A>(o) * ratio)));
  return source < in - 1 ? source : in - 1;
}

// Output size for a scale factor, as interpolate computes it: floor(in * scale).
MED3D_HD inline int64_t scaled_size(int64_t in, double scale_factor) {
  return static_cast<int64_t>(floor(static_cast<double>(in) * scale_factor));
}

}  // namespace med3d::kernels
