#include "med3d/kernels/cpu/loss.h"

#include <Eigen/Core>
#include <algorithm>
#include <type_traits>
#include <vector>

#include "med3d/kernels/cpu/block_sum.h"
#include "med3d/kernels/cpu_loops.h"

namespace med3d::kernels::cpu {

namespace {

// Cross-entropy runs on runs of positions within one sample, whose channels are contiguous
// rows (x + c * spatial), so that exp and log vectorise (Eigen's packet exp and log; the
// scalar libm calls per position cost 4-7x PyTorch's time). fn(x0, p0, len) gets channel 0
// of the run's first position p0.
constexpr int64_t kRun = 256;

template <class T, class Fn>
void for_runs(ChannelLayout layout, const T* x, int64_t begin, int64_t end, Fn&& fn) {
  for (int64_t p = begin; p < end;) {
    const int64_t s = p % layout.spatial, len = std::min({end - p, layout.spatial - s, kRun});
    fn(x + layout.base(p), p, len);
    p += len;
  }
}

template <class T>
using RunArray = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstRunArray = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Of a run: m = the channel max, total = sum_c exp(x_c - m), all in T: each total is a sum of
// C terms in (0, 1], one of them 1, so T loses nothing that matters, and the run stays in
// packet exp and log (the double sums and divisions per position took 2x PyTorch's time).
template <class T>
void run_exp_sums(const T* x0, int64_t channels, int64_t spatial, int64_t len, T* m, T* total) {
  RunArray<T> mv(m, len), tv(total, len);
  mv = ConstRunArray<T>(x0, len);
  for (int64_t c = 1; c < channels; ++c) mv = mv.max(ConstRunArray<T>(x0 + c * spatial, len));
  tv.setZero();
  for (int64_t c = 0; c < channels; ++c) tv += (ConstRunArray<T>(x0 + c * spatial, len) - mv).exp();
}

// weight[i] = factor * w_t for the run's targets t (class weights, or 1), 0 where ignored: picked
// channel by channel, so that the loop vectorises.
template <class T>
void pick_class_weights(const int32_t* t, const T* class_weights, double factor, int64_t channels, int64_t len,
                        T* weight) {
  std::fill_n(weight, len, T(0));
  for (int64_t c = 0; c < channels; ++c) {
    const auto wc = static_cast<T>(factor * class_weight_of(class_weights, c));
    for (int64_t i = 0; i < len; ++i) weight[i] = t[i] == c ? wc : weight[i];
  }
}

// Of a run: the sums of w_t (log total - (x_t - m)) and of w_t over its positions, t each one's
// target, w_t its class weight, none where ignored. The target's logit and weight are picked
// channel by channel and every loop runs on local arrays, so that each one vectorises (a loop
// over the positions that read x and the weight at each target was half of the forward's time).
template <class T>
CrossEntropySums run_cross_entropy(const T* x0, const int32_t* t, const T* class_weights, int64_t channels,
                                   int64_t spatial, int64_t len) {
  alignas(64) T m[kRun], total[kRun], picked[kRun], weight[kRun];
  alignas(64) double terms[kRun], weights[kRun];
  run_exp_sums(x0, channels, spatial, len, m, total);
  RunArray<T>(total, len) = RunArray<T>(total, len).log();
  pick_class_weights(t, class_weights, 1.0, channels, len, weight);
  std::fill_n(picked, len, T(0));
  for (int64_t c = 0; c < channels; ++c) {
    const T* xc = x0 + c * spatial;
    for (int64_t i = 0; i < len; ++i) picked[i] = t[i] == c ? xc[i] : picked[i];
  }
  // Both parts 0 where ignored, so that no logit there, even one that is not finite, reaches
  // the sums.
  for (int64_t i = 0; i < len; ++i) {
    const bool ignored = t[i] == kIgnoredTarget;
    total[i] = ignored ? T(0) : total[i];
    picked[i] = ignored ? T(0) : picked[i] - m[i];
  }
  for (int64_t i = 0; i < len; ++i) {
    weights[i] = static_cast<double>(weight[i]);
    terms[i] = weights[i] * (static_cast<double>(total[i]) - static_cast<double>(picked[i]));
  }
  return {ConstRunArray<double>(terms, len).sum(), ConstRunArray<double>(weights, len).sum()};
}

// dx of a run (d0: its channel 0, channels spatial apart): scale w_t (softmax_c - [c == t]),
// exact zeros where ignored (even where the logits are not finite); as run_cross_entropy, every
// loop on local arrays, so that each vectorises.
template <class T>
void run_cross_entropy_backward(const T* x0, const int32_t* t, const T* class_weights, double scale, T* d0,
                                int64_t channels, int64_t spatial, int64_t len) {
  alignas(64) T m[kRun], inverse[kRun], weight[kRun];  // weight: scale * w_t
  run_exp_sums(x0, channels, spatial, len, m, inverse);
  RunArray<T>(inverse, len) = RunArray<T>(inverse, len).inverse();
  pick_class_weights(t, class_weights, scale, channels, len, weight);
  for (int64_t c = 0; c < channels; ++c) {
    T* dc = d0 + c * spatial;
    // softmax_c = exp(x_c - m) / total, as softmax_at.
    RunArray<T>(dc, len) = (ConstRunArray<T>(x0 + c * spatial, len) - RunArray<T>(m, len)).exp() *
                           RunArray<T>(inverse, len);
    for (int64_t i = 0; i < len; ++i) {
      const T hit = t[i] == c ? T(1) : T(0);
      dc[i] = t[i] == kIgnoredTarget ? T(0) : (dc[i] - hit) * weight[i];
    }
  }
}

}  // namespace

template <class L>
int64_t class_targets(const L* labels, int64_t n, bool has_ignore, int64_t ignore_index, int64_t channels,
                      int32_t* targets) {
  // Blocks of kParallelGrain positions, each loop without a branch (so that it vectorises);
  // a block's positions are checked again one by one only when it holds an invalid label.
  const int64_t blocks = (n + kParallelGrain - 1) / kParallelGrain;
  std::vector<uint8_t> bad(static_cast<std::size_t>(blocks), 0);
  // A label is ignored or a class (one unsigned compare for 0 <= label < channels).
  const auto valid = [&](int64_t label, bool ignored) {
    return ignored | (static_cast<uint64_t>(label) < static_cast<uint64_t>(channels));
  };
  const auto convert = [&](int64_t block, auto with_ignore) {
    unsigned any = 0;
    const int64_t end = std::min(n, (block + 1) * kParallelGrain);
    for (int64_t i = block * kParallelGrain; i < end; ++i) {
      const auto label = static_cast<int64_t>(labels[i]);
      const bool ignored = with_ignore && label == ignore_index;
      targets[i] = ignored ? kIgnoredTarget : static_cast<int32_t>(label);
      any |= static_cast<unsigned>(!valid(label, ignored));
    }
    bad[static_cast<std::size_t>(block)] = static_cast<uint8_t>(any);
  };
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t block = 0; block < blocks; ++block) {
    if (has_ignore)
      convert(block, std::true_type{});
    else
      convert(block, std::false_type{});
  }
  for (int64_t block = 0; block < blocks; ++block)
    if (bad[static_cast<std::size_t>(block)])
      for (int64_t i = block * kParallelGrain;; ++i)
        if (const auto label = static_cast<int64_t>(labels[i]); !valid(label, has_ignore && label == ignore_index))
          return i;
  return -1;
}

template <class T>
CrossEntropySums cross_entropy_forward(const T* x, const int32_t* target, const T* class_weights,
                                       ChannelLayout layout) {
  const std::vector<double> sums =
      block_sum(layout.positions(), 2, [&](int64_t begin, int64_t end, double* acc) {
        for_runs(layout, x, begin, end, [&](const T* x0, int64_t p0, int64_t len) {
          const CrossEntropySums run =
              run_cross_entropy(x0, target + p0, class_weights, layout.channels, layout.spatial, len);
          acc[0] += run.loss;
          acc[1] += run.weight;
        });
      });
  return {sums[0], sums[1]};
}

template <class T>
void cross_entropy_backward(const T* x, const int32_t* target, const T* class_weights,
                            double scale, T* dx, ChannelLayout layout) {
  const int64_t blocks = (layout.positions() + kRun - 1) / kRun;
#pragma omp parallel for schedule(static) if (layout.positions() * layout.channels > kParallelGrain)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t begin = block * kRun;
    for_runs(layout, x, begin, std::min(begin + kRun, layout.positions()), [&](const T* x0, int64_t p0, int64_t len) {
      run_cross_entropy_backward(x0, target + p0, class_weights, scale, dx + (x0 - x), layout.channels, layout.spatial,
                                 len);
    });
  }
}

template <class T>
void dice_sums(const T* p, const int32_t* target, ChannelLayout layout, double* intersection,
               double* p_sum, double* g_sum) {
  const int channels = static_cast<int>(layout.channels);
  const std::vector<double> sums =
      block_sum(layout.positions(), 3 * channels, [&](int64_t begin, int64_t end, double* acc) {
        // A channel's row of a run at a time, into local sums (sums through acc wait on their stores).
        for_runs(layout, p, begin, end, [&](const T* p0, int64_t q0, int64_t len) {
          for (int c = 0; c < channels; ++c) {
            const T* pc = p0 + c * layout.spatial;
            double hits = 0, total = 0, count = 0;
            for (int64_t i = 0; i < len; ++i) {
              const double v = static_cast<double>(pc[i]);
              const bool hit = target[q0 + i] == c;
              total += v;
              hits += hit ? v : 0.0;
              count += hit ? 1.0 : 0.0;
            }
            acc[c] += hits;
            acc[channels + c] += total;
            acc[2 * channels + c] += count;
          }
        });
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
    double total = 0;  // local: a sum through acc waits on its store at every element
    for (int64_t i = begin; i < end; ++i) total += squared_error(static_cast<double>(x[i]), static_cast<double>(t[i]));
    acc[0] = total;
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
    double total = 0;
    for (int64_t i = begin; i < end; ++i)
      total += bce_with_logits(static_cast<double>(x[i]), static_cast<double>(t[i]),
                               class_weight_of(pos_weight, layout.channel_of(i)));
    acc[0] = total;
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
template int64_t class_targets<int32_t>(const int32_t*, int64_t, bool, int64_t, int64_t, int32_t*);
template int64_t class_targets<int64_t>(const int64_t*, int64_t, bool, int64_t, int64_t, int32_t*);
template int64_t class_targets<uint8_t>(const uint8_t*, int64_t, bool, int64_t, int64_t, int32_t*);

}  // namespace med3d::kernels::cpu
