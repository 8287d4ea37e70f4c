// Layer modules with PyTorch's parameter names and default initialisation, so state dicts
// line up key for key: Conv3d/ConvTranspose3d (weight, bias), BatchNorm3d (weight, bias,
// running_mean, running_var, num_batches_tracked), Linear (weight, bias).
#pragma once

#include <array>

#include "med3d/models/module.h"
#include "med3d/ops/conv.h"

namespace med3d {

using Extent3 = std::array<int64_t, 3>;

// How a layer fills its weights at construction: `standard` is the layer's documented init
// (PyTorch's default, or Kaiming for ResNet convs); `zeros` skips the random draw for weights
// that will be loaded right after (a ResNet-200 would draw 127 M values for nothing).
enum class Init { standard, zeros };

// Fills `weight` in place with N(0, 2 / fan_out) (He et al., fan_out mode: MedicalNet's init).
void kaiming_normal_fan_out(Tensor& weight);

class Conv3d : public Module {
 public:
  // PyTorch's default init: weight and bias uniform in +-1/sqrt(fan_in).
  Conv3d(Context context, int64_t in_channels, int64_t out_channels, Extent3 kernel,
         Conv3dOptions options = {}, bool bias = true, Init init = Init::standard);
  Tensor forward(const Tensor& x) const { return conv3d(x, weight, bias, options); }
  Tensor weight, bias;  // [out, in/groups, T, R, S], [out] or undefined
  Conv3dOptions options;
};

class ConvTranspose3d : public Module {
 public:
  ConvTranspose3d(Context context, int64_t in_channels, int64_t out_channels, Extent3 kernel,
                  ConvTranspose3dOptions options = {}, bool bias = true, Init init = Init::standard);
  Tensor forward(const Tensor& x) const { return conv_transpose3d(x, weight, bias, options); }
  Tensor weight, bias;  // [in, out/groups, T, R, S], [out] or undefined
  ConvTranspose3dOptions options;
};

class BatchNorm3d : public Module {
 public:
  BatchNorm3d(Context context, int64_t channels, double momentum = 0.1, double eps = 1e-5);
  // Training mode normalises with batch statistics and updates the running ones in place.
  Tensor forward(const Tensor& x);
  // relu(forward(x)) in one pass (batch_norm_relu3d).
  Tensor forward_relu(const Tensor& x);
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  double momentum, eps;
};

class Linear : public Module {
 public:
  Linear(Context context, int64_t in_features, int64_t out_features, bool bias = true,
         Init init = Init::standard);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;  // [out, in], [out] or undefined
};

}  // namespace med3d
