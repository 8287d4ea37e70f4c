// Per-position math of the channel softmax family, shared by the CPU loops and CUDA launchers.
// A tensor [N, C, spatial...] is viewed as ChannelLayout {N, C, S} with S the product of the
// spatial extents (1 for rank 2). Position p in [0, N*S) owns the C values
// x[base + c*S], base = (p / S) * C * S + p % S. exp() runs in T (float exp is several times
// faster than double and accurate to an ulp), the max shift keeps it from overflowing, and
// sums over channels run in double.
#pragma once

#include <cmath>
#include <cstdint>

#include "med3d/kernels/hd.h"

namespace med3d::kernels {

struct ChannelLayout {
  int64_t batch = 0;
  int64_t channels = 0;
  int64_t spatial = 0;

  MED3D_HD int64_t positions() const { return batch * spatial; }
  // Offset of channel 0 of position p; channel c lies `spatial` elements further per step.
  MED3D_HD int64_t base(int64_t p) const { return (p / spatial) * channels * spatial + p % spatial; }
  // Channel of flat element i of the [N, C, S] tensor.
  MED3D_HD int64_t channel_of(int64_t i) const { return (i / spatial) % channels; }
};

template <class T>
MED3D_HD inline T channel_max(const T* x, int64_t channels, int64_t stride) {
  T m = x[0];
  for (int64_t c = 1; c < channels; ++c) m = x[c * stride] > m ? x[c * stride] : m;
  return m;
}

// log(sum_c exp(x_c)) kept as max + log_total, so callers can form x_c - lse as
// (x_c - max) - log_total without the rounding of a large lse.
template <class T>
struct LogSumExp {
  T max;
  double log_total;
};
template <class T>
MED3D_HD inline LogSumExp<T> log_sum_exp(const T* x, int64_t channels, int64_t stride) {
  const T m = channel_max(x, channels, stride);
  double total = 0;
  for (int64_t c = 0; c < channels; ++c) total += static_cast<double>(std::exp(x[c * stride] - m));
  return {m, std::log(total)};
}

// One exp per channel: y holds exp(x - max) until the sum is known.
template <class T>
MED3D_HD inline void softmax_at(const T* x, T* y, int64_t channels, int64_t stride) {
  const T m = channel_max(x, channels, stride);
  double total = 0;
  for (int64_t c = 0; c < channels; ++c) {
    const T e = std::exp(x[c * stride] - m);
    y[c * stride] = e;
    total += static_cast<double>(e);
  }
  const double inverse = 1.0 / total;
  for (int64_t c = 0; c < channels; ++c)
    y[c * stride] = static_cast<T>(static_cast<double>(y[c * stride]) * inverse);
}

template <class T>
MED3D_HD inline void log_softmax_at(const T* x, T* y, int64_t channels, int64_t stride) {
  const LogSumExp<T> lse = log_sum_exp(x, channels, stride);
  for (int64_t c = 0; c < channels; ++c)
    y[c * stride] = static_cast<T>(static_cast<double>(x[c * stride] - lse.max) - lse.log_total);
}

// y = softmax(x): dx_c = y_c * (dy_c - sum_k dy_k y_k).
template <class T>
MED3D_HD inline void softmax_backward_at(const T* y, const T* dy, T* dx, int64_t channels,
                                         int64_t stride) {
  double dot = 0;
  for (int64_t c = 0; c < channels; ++c)
    dot += static_cast<double>(dy[c * stride]) * static_cast<double>(y[c * stride]);
  for (int64_t c = 0; c < channels; ++c)
    dx[c * stride] = static_cast<T>(static_cast<double>(y[c * stride]) *
                                    (static_cast<double>(dy[c * stride]) - dot));
}

// y = log_softmax(x): dx_c = dy_c - exp(y_c) * sum_k dy_k.
template <class T>
MED3D_HD inline void log_softmax_backward_at(const T* y, const T* dy, T* dx, int64_t channels,
                                             int64_t stride) {
  double total = 0;
  for (int64_t c = 0; c < channels; ++c) total += static_cast<double>(dy[c * stride]);
  for (int64_t c = 0; c < channels; ++c)
    dx[c * stride] = static_cast<T>(static_cast<double>(dy[c * stride]) -
                                    static_cast<double>(std::exp(y[c * stride])) * total);
}

// Index of the largest channel; the first one wins ties.
template <class T>
MED3D_HD inline int32_t argmax_at(const T* x, int64_t channels, int64_t stride) {
  int32_t best = 0;
  for (int64_t c = 1; c < channels; ++c)
    if (x[c * stride] > x[best * stride]) best = static_cast<int32_t>(c);
  return best;
}

}  // namespace med3d::kernels
