// Pre-activation ResNet-3D (He et al. 2016, "Identity Mappings in Deep Residual Networks"),
// depths 50/101/152/200 (block counts as ResNet3d; PreAct-200 = 3, 24, 36, 3), with the same
// stem, strides and dilations as ResNet3d so that features line up with the Med3D encoders:
//   conv1 7x7x7 stride 2 pad 3 -> bn1 -> relu -> maxpool 3 stride 2 pad 1
//   layer1..4 (64/128/256/512 planes, expansion 4; layer2 stride 2; layer3 dilation 2;
//   layer4 dilation 4) -> final_bn -> relu.
// Block: pre = relu(bn1(x)); out = conv1(pre) (1x1x1) -> bn2 -> relu -> conv2 (3x3x3, stride,
// dilation) -> bn3 -> relu -> conv3 (1x1x1); result = out + shortcut, where the shortcut is x
// itself or, when stride or channels change, a 1x1x1 strided conv `downsample` (no BN) applied
// to the PRE-ACTIVATED input `pre` (the paper's choice: both branches start from bn1-relu).
// No ReLU after the addition (the identity path stays clean). Init: Kaiming normal fan_out
// for convs, BN 1 / 0. Input [N, in_channels, D, H, W]; output [N, 2048, D/8, H/8, W/8].
#pragma once

#include <memory>

#include "med3d/models/resnet3d.h"

namespace med3d {

class PreActBottleneck : public ResidualBlock {
 public:
  static constexpr int64_t kExpansion = 4;
  PreActBottleneck(Context context, const BlockShape& shape);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<BatchNorm3d> bn1, bn2, bn3;
  std::shared_ptr<Conv3d> conv1, conv2, conv3;
  std::shared_ptr<Conv3d> downsample;  // only when shape.needs_shortcut
  BlockShape shape;
};

class PreActResNet3d : public Module {
 public:
  // depth: 50, 101, 152 or 200.
  PreActResNet3d(Context context, int depth, int64_t in_channels = 1);
  Tensor forward(const Tensor& x);
  int depth() const { return depth_; }
  int64_t out_channels() const { return 2048; }

  std::shared_ptr<Conv3d> conv1;
  std::shared_ptr<BatchNorm3d> bn1, final_bn;
  std::shared_ptr<ModuleList<ResidualBlock>> layer1, layer2, layer3, layer4;

 private:
  int depth_;
};

}  // namespace med3d
