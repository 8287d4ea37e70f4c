// Batch normalisation: forward (training and eval) and backward side by side.
#include <cmath>
#include <vector>

#include "engine/src/op_util.h"
#include "med3d/kernels/batch_norm.h"
#include "med3d/kernels/cpu/batch_norm.h"
#include "med3d/ops/norm.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;
using kernels::cpu::BatchNormShape;

namespace {

constexpr const char* kOp = "batch_norm3d";

// Checks that an optional per-channel tensor is absent or a [C] tensor matching x.
void check_channel_tensor(const Tensor& t, const char* name, const Tensor& x, int64_t channels) {
  if (!t.defined()) return;
  detail::check_cpu_floating(kOp, name, t);
  detail::check_compatible(kOp, x, "x", t, name);
  MED3D_CHECK(t.rank() == 1 && t.dim(0) == channels, kOp, ": ", name, " must have shape [",
              channels, "] (one value per channel of x ", x.shape().str(), "), got ",
              t.shape().str());
}

template <class T>
std::vector<double> to_doubles(const Tensor& t, int64_t count, double absent) {
  if (!t.defined()) return std::vector<double>(count, absent);
  const T* p = t.data<T>();
  return std::vector<double>(p, p + count);
}

}  // namespace

Tensor batch_norm3d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                    Tensor running_mean, Tensor running_var, bool training, double momentum,
                    double eps) {
  detail::check_cpu_floating(kOp, "x", x);
  MED3D_CHECK(x.rank() == 5 || x.rank() == 2, kOp, ": x must be [N, C, D, H, W] or [N, C], got ",
              x.shape().str());
  MED3D_CHECK(x.numel() > 0, kOp, ": x is empty, got ", x.shape().str());
  const int64_t channels = x.dim(1);
  const BatchNormShape shape{x.dim(0), channels, x.numel() / (x.dim(0) * channels)};
  check_channel_tensor(weight, "weight", x, channels);
  check_channel_tensor(bias, "bias", x, channels);
  check_channel_tensor(running_mean, "running_mean", x, channels);
  check_channel_tensor(running_var, "running_var", x, channels);
  MED3D_CHECK(running_mean.defined() == running_var.defined(), kOp,
              ": pass both running_mean and running_var or neither");
  MED3D_CHECK(training || running_mean.defined(), kOp,
              ": eval mode (training = false) normalises with running_mean and running_var; "
              "pass them, or use training = true");
  const int64_t count = shape.n * shape.spatial;  // values per channel
  MED3D_CHECK(!training || count > 1, kOp,
              ": expected more than 1 value per channel when training, got input of shape ",
              x.shape().str(), "; use a larger batch or volume, or eval mode");
  MED3D_CHECK(eps > 0 && std::isfinite(eps), kOp, ": eps must be positive, got ", eps);
  MED3D_CHECK(momentum >= 0 && momentum <= 1, kOp, ": momentum must be in [0, 1], got ", momentum);

  Tensor y = detail::empty_like(x);
  // Per-channel statistics the backward needs: the mean and invstd that normalised x.
  std::vector<double> mean(channels), invstd(channels);
  dispatch_floating(x.dtype(), kOp, [&]<class T>() {
    std::vector<double> var(channels);
    if (training) {
      kernels::cpu::batch_norm_stats(shape, x.data<T>(), mean.data(), var.data());
      if (running_mean.defined()) {
        T* rm = running_mean.data<T>();
        T* rv = running_var.data<T>();
        for (int64_t c = 0; c < channels; ++c) {
          rm[c] = static_cast<T>(kernels::running_stat_update(rm[c], mean[c], momentum));
          rv[c] = static_cast<T>(kernels::running_stat_update(
              rv[c], kernels::unbiased_variance(var[c], count), momentum));
        }
      }
    } else {
      mean = to_doubles<T>(running_mean, channels, 0);
      var = to_doubles<T>(running_var, channels, 0);
    }
    const std::vector<double> w = to_doubles<T>(weight, channels, 1);
    const std::vector<double> b = to_doubles<T>(bias, channels, 0);
    std::vector<double> scale(channels);
    for (int64_t c = 0; c < channels; ++c) {
      MED3D_CHECK(var[c] + eps > 0, kOp, ": running_var[", c, "] = ", var[c],
                  " makes var + eps non-positive; running variances must be >= 0");
      invstd[c] = 1 / std::sqrt(var[c] + eps);
      scale[c] = w[c] * invstd[c];
    }
    kernels::cpu::batch_norm_apply(shape, x.data<T>(), mean.data(), scale.data(), b.data(),
                                   y.data<T>());
  });

  record(kOp, {x, weight, bias}, {y}, {x, weight},
         [shape, training, mean, invstd](const BackwardArgs& g) {
           const Tensor& x = g.saved[0];
           const Tensor& weight = g.saved[1];
           const Tensor& dy = g.dy[0];
           const int64_t channels = shape.c;
           const double count = static_cast<double>(shape.n * shape.spatial);
           std::vector<Tensor> grads(3);
           dispatch_floating(x.dtype(), kOp, [&]<class T>() {
             // Eval mode needs the per-channel sums only for dweight and dbias.
             std::vector<double> sum_dy(channels), sum_dy_xmu(channels);
             if (training || g.needs_grad[1] || g.needs_grad[2])
               kernels::cpu::batch_norm_reduce_grad(shape, x.data<T>(), dy.data<T>(), mean.data(),
                                                    sum_dy.data(), sum_dy_xmu.data());
             const std::vector<double> w = to_doubles<T>(weight, channels, 1);
             std::vector<double> scale(channels);
             for (int64_t c = 0; c < channels; ++c) scale[c] = w[c] * invstd[c];
             if (g.needs_grad[0]) {
               grads[0] = detail::empty_like(x);
               if (training) {
                 std::vector<double> mean_dy(channels), proj(channels);
                 for (int64_t c = 0; c < channels; ++c) {
                   mean_dy[c] = sum_dy[c] / count;
                   proj[c] = invstd[c] * invstd[c] * sum_dy_xmu[c] / count;
                 }
                 kernels::cpu::batch_norm_backward_train(shape, x.data<T>(), dy.data<T>(),
                                                         mean.data(), scale.data(), mean_dy.data(),
                                                         proj.data(), grads[0].data<T>());
               } else {
                 kernels::cpu::batch_norm_backward_eval(shape, dy.data<T>(), scale.data(),
                                                        grads[0].data<T>());
               }
             }
             if (g.needs_grad[1]) {
               grads[1] = detail::empty_like(x, {channels}, x.dtype());
               T* dw = grads[1].data<T>();
               for (int64_t c = 0; c < channels; ++c)
                 dw[c] = static_cast<T>(sum_dy_xmu[c] * invstd[c]);
             }
             if (g.needs_grad[2]) {
               grads[2] = detail::empty_like(x, {channels}, x.dtype());
               T* db = grads[2].data<T>();
               for (int64_t c = 0; c < channels; ++c) db[c] = static_cast<T>(sum_dy[c]);
             }
           });
           return grads;
         });
  return y;
}

}  // namespace med3d
