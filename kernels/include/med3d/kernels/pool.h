// Index math of 3D pooling (max, average, adaptive average), shared by the CPU loops and the
// CUDA launchers. Pooling is separable in its window bounds: each output index along one
// axis reads the input range [begin, end) of that axis, and the average divisor is the
// product of one factor per axis. Floor mode only (PyTorch's ceil_mode=False).
#pragma once

#include <cstdint>

#include "med3d/kernels/hd.h"

namespace med3d::kernels {

// The input range one output index reads along one axis, clipped to the input, and this
// axis's factor of the averaging divisor.
struct PoolWindow {
  int64_t begin;
  int64_t end;
  int64_t divisor;
};

// floor((in + 2 pad - kernel) / stride) + 1; callers first check in + 2 pad >= kernel.
MED3D_HD inline int64_t pool_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}

// PyTorch's avg_pool3d window: the divisor counts the padding that the window covers when
// `count_include_pad` (but never the part of the window past the padding), otherwise only
// the input elements it covers.
MED3D_HD inline PoolWindow pool_window(int64_t out_index, int64_t kernel, int64_t stride,
                                       int64_t pad, int64_t in, bool count_include_pad) {
  int64_t begin = out_index * stride - pad;
  int64_t end = begin + kernel < in + pad ? begin + kernel : in + pad;
  const int64_t padded = end - begin;
  begin = begin > 0 ? begin : 0;
  end = end < in ? end : in;
  return {begin, end, count_include_pad ? padded : end - begin};
}

// PyTorch's adaptive pooling: [floor(o * in / out), ceil((o + 1) * in / out)).
MED3D_HD inline PoolWindow adaptive_pool_window(int64_t out_index, int64_t in, int64_t out) {
  const int64_t begin = out_index * in / out;
  const int64_t end = ((out_index + 1) * in + out - 1) / out;
  return {begin, end, end - begin};
}

// The averaging divisor of the window (wd, wh, ww), in double as both backends divide.
MED3D_HD inline double pool_divisor(const PoolWindow& wd, const PoolWindow& wh,
                                    const PoolWindow& ww) {
  return static_cast<double>(wd.divisor * wh.divisor * ww.divisor);
}

// Whether max pooling replaces the running maximum `best` by `value`: strictly greater keeps
// the first maximum in scan order on ties, and NaN wins so it propagates, as in PyTorch.
template <class T>
MED3D_HD inline bool max_pool_takes(T value, T best) {
  return value > best || value != value;
}

}  // namespace med3d::kernels
