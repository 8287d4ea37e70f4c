#include "med3d/models/layers.h"

#include <cmath>

#include "med3d/ops/elementwise.h"
#include "med3d/ops/nn.h"
#include "med3d/ops/norm.h"

namespace med3d {

namespace {
// Uniform in [-bound, bound): PyTorch's kaiming_uniform(a=sqrt(5)) reduces to bound = 1/sqrt(fan_in).
Tensor uniform(Context& context, const Shape& shape, double bound, Init init) {
  if (init == Init::zeros) return context.zeros(shape);
  NoGrad no_grad(context);
  return add_scalar(mul_scalar(context.rand(shape), 2 * bound), -bound);
}

int64_t receptive(const Extent3& k) { return k[0] * k[1] * k[2]; }
}  // namespace

void kaiming_normal_fan_out(Tensor& weight) {
  Context context = weight.context();
  NoGrad no_grad(context);
  const double fan_out = static_cast<double>(weight.dim(0) * weight.numel() / (weight.dim(0) * weight.dim(1)));
  weight.copy_from(mul_scalar(context.randn(weight.shape(), weight.dtype()), std::sqrt(2.0 / fan_out)));
}

Conv3d::Conv3d(Context context, int64_t in_channels, int64_t out_channels, Extent3 kernel,
               Conv3dOptions conv_options, bool with_bias, Init init)
    : Module(context), options(conv_options) {
  MED3D_CHECK(in_channels > 0 && out_channels > 0 && options.groups > 0 && in_channels % options.groups == 0,
              "Conv3d: channels ", in_channels, " -> ", out_channels, " must be positive and divisible by groups ",
              options.groups);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_channels / options.groups * receptive(kernel)));
  weight = register_parameter(
      "weight", uniform(context, {out_channels, in_channels / options.groups, kernel[0], kernel[1], kernel[2]}, bound, init));
  if (with_bias) bias = register_parameter("bias", uniform(context, {out_channels}, bound, init));
}

ConvTranspose3d::ConvTranspose3d(Context context, int64_t in_channels, int64_t out_channels, Extent3 kernel,
                                 ConvTranspose3dOptions conv_options, bool with_bias, Init init)
    : Module(context), options(conv_options) {
  MED3D_CHECK(in_channels > 0 && out_channels > 0 && options.groups > 0 && out_channels % options.groups == 0,
              "ConvTranspose3d: channels ", in_channels, " -> ", out_channels,
              " must be positive and divisible by groups ", options.groups);
  // PyTorch computes fan_in of a transposed conv weight [in, out/g, k] as (out/g) * k.
  const double bound = 1.0 / std::sqrt(static_cast<double>(out_channels / options.groups * receptive(kernel)));
  weight = register_parameter(
      "weight", uniform(context, {in_channels, out_channels / options.groups, kernel[0], kernel[1], kernel[2]}, bound, init));
  if (with_bias) bias = register_parameter("bias", uniform(context, {out_channels}, bound, init));
}

BatchNorm3d::BatchNorm3d(Context context, int64_t channels, double momentum_, double eps_)
    : Module(context), momentum(momentum_), eps(eps_) {
  weight = register_parameter("weight", context.ones({channels}));
  bias = register_parameter("bias", context.zeros({channels}));
  running_mean = register_buffer("running_mean", context.zeros({channels}));
  running_var = register_buffer("running_var", context.ones({channels}));
  // A host-side counter on any device (see Module::to(Device)).
  Tensor batches = context.empty({}, DType::i64, Device::cpu());
  batches.fill(0);
  num_batches_tracked = register_buffer("num_batches_tracked", batches);
}

Tensor BatchNorm3d::forward(const Tensor& x) {
  if (is_training()) num_batches_tracked.data<int64_t>()[0] += 1;
  return batch_norm3d(x, weight, bias, running_mean, running_var, is_training(), momentum, eps);
}

Tensor BatchNorm3d::forward_relu(const Tensor& x) {
  if (is_training()) num_batches_tracked.data<int64_t>()[0] += 1;
  return batch_norm_relu3d(x, weight, bias, running_mean, running_var, is_training(), momentum,
                           eps);
}

Linear::Linear(Context context, int64_t in_features, int64_t out_features, bool with_bias, Init init)
    : Module(context) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight = register_parameter("weight", uniform(context, {out_features, in_features}, bound, init));
  if (with_bias) bias = register_parameter("bias", uniform(context, {out_features}, bound, init));
}

Tensor Linear::forward(const Tensor& x) const { return linear(x, weight, bias); }

}  // namespace med3d
