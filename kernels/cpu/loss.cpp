#include "med3d/kernels/cpu/loss.h"

#include "med3d/kernels/cpu/block_sum.h"
#include "med3d/kernels/cpu_loops.h"

namespace med3d::kernels::cpu {

template <class T>
CrossEntropySums cross_entropy_forward(const T* x, const int32_t* target, const T* class_weights,
                                       ChannelLayout layout) {
  const std::vector<double> sums =
      block_sum(layout.positions(), 2, [&](int64_t begin, int64_t end, double* acc) {
        for (int64_t p = begin; p < end; ++p) {
          if (target[p] == kIgnoredTarget) continue;
          const double w = class_weight_of(class_weights, target[p]);
          acc[0] += w * cross_entropy_at(x + layout.base(p), layout.channels, layout.spatial, target[p]);
          acc[1] += w;
        }
      });
  return {sums[0], sums[1]};
}

template <class T>
void cross_entropy_backward(const T* x, const int32_t* target, const T* class_weights,
                            double scale, T* dx, ChannelLayout layout) {
  parallel_for(layout.positions(), [&](int64_t p) {
    const int64_t base = layout.base(p);
    if (target[p] == kIgnoredTarget) {
      for (int64_t c = 0; c < layout.channels; ++c) dx[base + c * layout.spatial] = T(0);
      return;
    }
    cross_entropy_backward_at(x + base, dx + base, layout.channels, layout.spatial, target[p],
                              scale * class_weight_of(class_weights, target[p]));
  });
}

template <class T>
void dice_sums(const T* p, const int32_t* target, ChannelLayout layout, double* intersection,
               double* p_sum, double* g_sum) {
  const int channels = static_cast<int>(layout.channels);
  const std::vector<double> sums =
      block_sum(layout.positions(), 3 * channels, [&](int64_t begin, int64_t end, double* acc) {
        for (int64_t q = begin; q < end; ++q) {
          const T* pq = p + layout.base(q);
          for (int c = 0; c < channels; ++c) acc[channels + c] += static_cast<double>(pq[c * layout.spatial]);
          const int32_t t = target[q];
          acc[t] += static_cast<double>(pq[t * layout.spatial]);
          acc[2 * channels + t] += 1.0;
        }
      });
  for (int c = 0; c < channels; ++c) {
    intersection[c] = sums[c];
    p_sum[c] = sums[channels + c];
    g_sum[c] = sums[2 * channels + c];
  }
}

template <class T>
void dice_backward(const int32_t* target, const DiceCoefficients* coefficients, double scale,
                   T* dp, ChannelLayout layout) {
  parallel_for(layout.positions(), [&](int64_t q) {
    T* dq = dp + layout.base(q);
    for (int64_t c = 0; c < layout.channels; ++c) {
      const double g = target[q] == c ? 1.0 : 0.0;
      dq[c * layout.spatial] = static_cast<T>(scale * (coefficients[c].a * g + coefficients[c].b));
    }
  });
}

template <class T>
double squared_error_sum(const T* x, const T* t, int64_t n) {
  return block_sum(n, 1, [&](int64_t begin, int64_t end, double* acc) {
    for (int64_t i = begin; i < end; ++i)
      acc[0] += squared_error(static_cast<double>(x[i]), static_cast<double>(t[i]));
  })[0];
}

template <class T>
void squared_error_backward(const T* x, const T* t, double scale, T* dx, T* dt, int64_t n) {
  parallel_for(n, [&](int64_t i) {
    const double g = scale * (static_cast<double>(x[i]) - static_cast<double>(t[i]));
    if (dx) dx[i] = static_cast<T>(g);
    if (dt) dt[i] = static_cast<T>(-g);
  });
}

template <class T>
double bce_with_logits_sum(const T* x, const T* t, const T* pos_weight, ChannelLayout layout) {
  const int64_t n = layout.batch * layout.channels * layout.spatial;
  return block_sum(n, 1, [&](int64_t begin, int64_t end, double* acc) {
    for (int64_t i = begin; i < end; ++i)
      acc[0] += bce_with_logits(static_cast<double>(x[i]), static_cast<double>(t[i]),
                                class_weight_of(pos_weight, layout.channel_of(i)));
  })[0];
}

template <class T>
void bce_with_logits_backward(const T* x, const T* t, const T* pos_weight, double scale, T* dx,
                              T* dt, ChannelLayout layout) {
  const int64_t n = layout.batch * layout.channels * layout.spatial;
  parallel_for(n, [&](int64_t i) {
    const double xi = static_cast<double>(x[i]);
    const double pw = class_weight_of(pos_weight, layout.channel_of(i));
    if (dx) dx[i] = static_cast<T>(scale * bce_with_logits_dx(xi, static_cast<double>(t[i]), pw));
    if (dt) dt[i] = static_cast<T>(scale * bce_with_logits_dt(xi, pw));
  });
}

#define MED3D_INSTANTIATE(T)                                                                    \
  template CrossEntropySums cross_entropy_forward<T>(const T*, const int32_t*, const T*,        \
                                                     ChannelLayout);                            \
  template void cross_entropy_backward<T>(const T*, const int32_t*, const T*, double, T*,       \
                                          ChannelLayout);                                       \
  template void dice_sums<T>(const T*, const int32_t*, ChannelLayout, double*, double*, double*); \
  template void dice_backward<T>(const int32_t*, const DiceCoefficients*, double, T*,           \
                                 ChannelLayout);                                                \
  template double squared_error_sum<T>(const T*, const T*, int64_t);                            \
  template void squared_error_backward<T>(const T*, const T*, double, T*, T*, int64_t);         \
  template double bce_with_logits_sum<T>(const T*, const T*, const T*, ChannelLayout);          \
  template void bce_with_logits_backward<T>(const T*, const T*, const T*, double, T*, T*,       \
                                            ChannelLayout);
MED3D_INSTANTIATE(float)
MED3D_INSTANTIATE(double)
#undef MED3D_INSTANTIATE

}  // namespace med3d::kernels::cpu
