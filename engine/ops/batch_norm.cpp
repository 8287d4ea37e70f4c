// Batch normalisation, alone or fused with the ReLU that follows it: forward (training and
// eval) and backward side by side. The fused op applies relu in the normalising pass and saves
// its output, whose sign masks dy before the batch-norm backward.
#include <cmath>
#include <utility>
#include <vector>

#include "engine/src/op_util.h"
#include "med3d/kernels/batch_norm.h"
#include "med3d/kernels/cpu/batch_norm.h"
#include "med3d/kernels/cuda/batch_norm.h"
#include "med3d/ops/norm.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;
using kernels::cpu::BatchNormShape;

namespace {

// Checks that an optional per-channel tensor is absent or a [C] tensor matching x.
void check_channel_tensor(const char* op, const Tensor& t, const char* name, const Tensor& x,
                          int64_t channels) {
  if (!t.defined()) return;
  detail::check_floating(op, name, t);
  detail::check_compatible(op, x, "x", t, name);
  MED3D_CHECK(t.rank() == 1 && t.dim(0) == channels, op, ": ", name, " must have shape [",
              channels, "] (one value per channel of x ", x.shape().str(), "), got ",
              t.shape().str());
}

// The f32 device pointer of an optional CUDA tensor (nullptr when undefined).
float* cuda_data(const Tensor& t) { return t.defined() ? detail::device_data<float>(t) : nullptr; }

// The CUDA path: statistics stay on the device (a [2 * C] f64 tensor of mean and invstd, saved
// for backward), so a training step makes no host round trip.
Tensor batch_norm3d_cuda(const char* op, const Tensor& x, const BatchNormShape& shape,
                         const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                         Tensor& running_var, bool training, bool relu, double momentum,
                         double eps) {
  Tensor y = detail::empty_like(x);
  Tensor stats = detail::empty_like(x, {2 * shape.c}, DType::f64);
  const kernels::cuda::BatchNormSize size{shape.n, shape.c, shape.spatial};
  if constexpr (detail::kWithCuda) {
    Tensor workspace =
        detail::empty_like(x, {kernels::cuda::batch_norm_workspace_elements(size)}, DType::f64);
    if (training)
      kernels::cuda::batch_norm_forward_train(
          detail::cuda_stream(x), size, cuda_data(x), cuda_data(weight), cuda_data(bias),
          cuda_data(running_mean), cuda_data(running_var), momentum, eps, relu, cuda_data(y),
          detail::device_data<double>(stats), detail::device_data<double>(workspace));
    else
      kernels::cuda::batch_norm_forward_eval(
          detail::cuda_stream(x), size, cuda_data(x), cuda_data(weight), cuda_data(bias),
          cuda_data(running_mean), cuda_data(running_var), eps, relu, cuda_data(y),
          detail::device_data<double>(stats), detail::device_data<double>(workspace));
  }
  std::vector<Tensor> saved{x, weight, stats};
  if (relu) saved.push_back(y);
  record(op, {x, weight, bias}, {y}, saved, [size, training, relu](const BackwardArgs& g) {
    const Tensor& x = g.saved[0];
    const Tensor& weight = g.saved[1];
    const Tensor& stats = g.saved[2];
    const Tensor dy = relu ? detail::relu_backward(g.saved[3], g.dy[0]) : g.dy[0];
    std::vector<Tensor> grads(3);
    for (std::size_t i = 0; i < grads.size(); ++i)
      if (g.needs_grad[i])
        grads[i] = i == 0 ? detail::empty_like(x) : detail::empty_like(x, {size.c}, x.dtype());
    if constexpr (detail::kWithCuda) {
      Tensor workspace =
          detail::empty_like(x, {kernels::cuda::batch_norm_workspace_elements(size)}, DType::f64);
      kernels::cuda::batch_norm_backward(
          detail::cuda_stream(x), size, training, cuda_data(x), cuda_data(dy),
          cuda_data(weight), detail::device_data<double>(stats), cuda_data(grads[0]),
          cuda_data(grads[1]), cuda_data(grads[2]), detail::device_data<double>(workspace));
    }
    return grads;
  });
  return y;
}

template <class T>
std::vector<double> to_doubles(const Tensor& t, int64_t count, double absent) {
  if (!t.defined()) return std::vector<double>(count, absent);
  const T* p = t.data<T>();
  return std::vector<double>(p, p + count);
}

// batch_norm3d and batch_norm_relu3d (relu = true) under the op name op.
Tensor batch_norm(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias,
                  Tensor running_mean, Tensor running_var, bool training, bool relu,
                  double momentum, double eps) {
  detail::check_floating(op, "x", x);
  MED3D_CHECK(x.rank() == 5 || x.rank() == 2, op, ": x must be [N, C, D, H, W] or [N, C], got ",
              x.shape().str());
  MED3D_CHECK(x.numel() > 0, op, ": x is empty, got ", x.shape().str());
  const int64_t channels = x.dim(1);
  const BatchNormShape shape{x.dim(0), channels, x.numel() / (x.dim(0) * channels)};
  check_channel_tensor(op, weight, "weight", x, channels);
  check_channel_tensor(op, bias, "bias", x, channels);
  check_channel_tensor(op, running_mean, "running_mean", x, channels);
  check_channel_tensor(op, running_var, "running_var", x, channels);
  MED3D_CHECK(running_mean.defined() == running_var.defined(), op,
              ": pass both running_mean and running_var or neither");
  MED3D_CHECK(training || running_mean.defined(), op,
              ": eval mode (training = false) normalises with running_mean and running_var; "
              "pass them, or use training = true");
  const int64_t count = shape.n * shape.spatial;  // values per channel
  MED3D_CHECK(!training || count > 1, op,
              ": expected more than 1 value per channel when training, got input of shape ",
              x.shape().str(), "; use a larger batch or volume, or eval mode");
  MED3D_CHECK(eps > 0 && std::isfinite(eps), op, ": eps must be positive, got ", eps);
  MED3D_CHECK(momentum >= 0 && momentum <= 1, op, ": momentum must be in [0, 1], got ", momentum);

  if (x.device().is_cuda())
    return batch_norm3d_cuda(op, x, shape, weight, bias, running_mean, running_var, training,
                             relu, momentum, eps);

  Tensor y = detail::empty_like(x);
  // Per-channel statistics the backward needs: the mean and invstd that normalised x.
  std::vector<double> mean(channels), invstd(channels);
  dispatch_floating(x.dtype(), op, [&]<class T>() {
    std::vector<double> var(channels);
    const std::vector<double> w = to_doubles<T>(weight, channels, 1);
    const std::vector<double> b = to_doubles<T>(bias, channels, 0);
    if (training) {
      kernels::cpu::batch_norm_train_forward(shape, x.data<T>(), w.data(), b.data(), eps, relu, mean.data(),
                                             var.data(), invstd.data(), y.data<T>());
      if (running_mean.defined()) {
        T* rm = running_mean.data<T>();
        T* rv = running_var.data<T>();
        for (int64_t c = 0; c < channels; ++c) {
          rm[c] = static_cast<T>(kernels::running_stat_update(rm[c], mean[c], momentum));
          rv[c] = static_cast<T>(kernels::running_stat_update(
              rv[c], kernels::unbiased_variance(var[c], count), momentum));
        }
      }
      return;
    }
    mean = to_doubles<T>(running_mean, channels, 0);
    var = to_doubles<T>(running_var, channels, 0);
    std::vector<double> scale(channels);
    for (int64_t c = 0; c < channels; ++c) {
      MED3D_CHECK(var[c] + eps > 0, op, ": running_var[", c, "] = ", var[c],
                  " makes var + eps non-positive; running variances must be >= 0");
      invstd[c] = kernels::batch_norm_invstd(var[c], eps);
      scale[c] = w[c] * invstd[c];
    }
    kernels::cpu::batch_norm_apply(shape, x.data<T>(), mean.data(), scale.data(), b.data(), relu,
                                   y.data<T>());
  });

  std::vector<Tensor> saved{x, weight};
  if (relu) saved.push_back(y);
  record(op, {x, weight, bias}, {y}, saved,
         [op, shape, training, relu, mean, invstd](const BackwardArgs& g) {
           const Tensor& x = g.saved[0];
           const Tensor& weight = g.saved[1];
           const int64_t channels = shape.c;
           std::vector<Tensor> grads(3);
           dispatch_floating(x.dtype(), op, [&]<class T>() {
             std::vector<double> sum_dy(channels), sum_dy_xmu(channels);
             const std::vector<double> w = to_doubles<T>(weight, channels, 1);
             if (g.needs_grad[0]) grads[0] = detail::empty_like(x);
             if (training) {
               // One pass per channel; the fused relu's mask is applied on the fly.
               kernels::cpu::batch_norm_train_backward(shape, x.data<T>(), g.dy[0].data<T>(),
                                                       relu ? g.saved[2].data<T>() : nullptr, mean.data(),
                                                       invstd.data(), w.data(), sum_dy.data(), sum_dy_xmu.data(),
                                                       g.needs_grad[0] ? grads[0].data<T>() : nullptr);
             } else {
               const Tensor dy = relu ? detail::relu_backward(g.saved[2], g.dy[0]) : g.dy[0];
               // Eval mode needs the per-channel sums only for dweight and dbias.
               if (g.needs_grad[1] || g.needs_grad[2])
                 kernels::cpu::batch_norm_reduce_grad(shape, x.data<T>(), dy.data<T>(), mean.data(),
                                                      sum_dy.data(), sum_dy_xmu.data());
               std::vector<double> scale(channels);
               for (int64_t c = 0; c < channels; ++c) scale[c] = w[c] * invstd[c];
               if (g.needs_grad[0])
                 kernels::cpu::batch_norm_backward_eval(shape, dy.data<T>(), scale.data(), grads[0].data<T>());
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

}  // namespace

Tensor batch_norm3d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                    Tensor running_mean, Tensor running_var, bool training, double momentum,
                    double eps) {
  return batch_norm("batch_norm3d", x, weight, bias, std::move(running_mean),
                    std::move(running_var), training, false, momentum, eps);
}

Tensor batch_norm_relu3d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                         Tensor running_mean, Tensor running_var, bool training, double momentum,
                         double eps) {
  return batch_norm("batch_norm_relu3d", x, weight, bias, std::move(running_mean),
                    std::move(running_var), training, true, momentum, eps);
}

}  // namespace med3d
