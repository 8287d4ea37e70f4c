// The Med3D ResNet-3D encoders, layer for layer as MedicalNet's models/resnet.py so that its
// released weights load unchanged (same parameter names and shapes):
//   conv1 7x7x7 stride 2 pad 3 (no bias) -> bn1 -> relu -> maxpool 3 stride 2 pad 1
//   layer1..4 with 64/128/256/512 planes; layer2 stride 2; layer3 dilation 2; layer4 dilation 4
//   (dilation and equal padding on every 3x3x3 conv of a stage): output stride 8.
// BasicBlock (depth 10/18/34) or Bottleneck (expansion 4, stride on the 3x3x3 conv; 50-200).
// Shortcut A = parameter-free strided subsample + zero channels, detached as in MedicalNet;
// B = 1x1x1 strided conv + BN (`downsample.0`, `downsample.1`). Defaults as MedicalNet's
// weights: A for 18 and 34, B otherwise. Init: Kaiming normal fan_out for convs, BN 1 / 0.
// Input [N, in_channels, D, H, W]; output [N, 512 * expansion, D/8, H/8, W/8] (rounded up).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "med3d/models/layers.h"

namespace med3d {

enum class ShortcutType { A, B };

// An ordered list of child modules named "0", "1", ... (PyTorch's nn.Sequential naming).
template <class M>
class ModuleList : public Module {
 public:
  explicit ModuleList(Context context) : Module(std::move(context)) {}
  M& push_back(std::shared_ptr<M> module) {
    items_.push_back(register_module(std::to_string(items_.size()), std::move(module)));
    return *items_.back();
  }
  std::size_t size() const { return items_.size(); }
  M& operator[](std::size_t i) const { return *items_.at(i); }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

class ResidualBlock : public Module {
 public:
  using Module::Module;
  virtual Tensor forward(const Tensor& x) = 0;
};

// Shortcut B: 1x1x1 strided conv + BN, named downsample.0 / downsample.1 as in MedicalNet.
class ProjectionShortcut : public Module {
 public:
  ProjectionShortcut(Context context, int64_t in_channels, int64_t out_channels, int64_t stride,
                     Init init = Init::standard);
  Tensor forward(const Tensor& x);
  std::shared_ptr<Conv3d> conv;
  std::shared_ptr<BatchNorm3d> bn;
};

struct BlockShape {
  int64_t in_channels, planes, stride, dilation;
  bool needs_shortcut;  // stride != 1 or channels change
  ShortcutType shortcut;
};

class BasicBlock : public ResidualBlock {
 public:
  static constexpr int64_t kExpansion = 1;
  BasicBlock(Context context, const BlockShape& shape, Init init = Init::standard);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<Conv3d> conv1, conv2;
  std::shared_ptr<BatchNorm3d> bn1, bn2;
  std::shared_ptr<ProjectionShortcut> downsample;  // shortcut B only
  BlockShape shape;
};

class Bottleneck : public ResidualBlock {
 public:
  static constexpr int64_t kExpansion = 4;
  Bottleneck(Context context, const BlockShape& shape, Init init = Init::standard);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<Conv3d> conv1, conv2, conv3;
  std::shared_ptr<BatchNorm3d> bn1, bn2, bn3;
  std::shared_ptr<ProjectionShortcut> downsample;
  BlockShape shape;
};

struct ResNet3dFeatures {
  Tensor conv1, layer1, layer2, layer3, layer4;  // conv1 = after stem ReLU, before max-pool
};

class ResNet3d : public Module {
 public:
  // depth: 10, 18, 34, 50, 101, 152 or 200; shortcut defaults as MedicalNet's weights.
  ResNet3d(Context context, int depth, std::optional<ShortcutType> shortcut = std::nullopt,
           int64_t in_channels = 1, Init init = Init::standard);
  Tensor forward(const Tensor& x);
  ResNet3dFeatures forward_features(const Tensor& x);
  int depth() const { return depth_; }
  ShortcutType shortcut() const { return shortcut_; }
  int64_t out_channels() const { return out_channels_; }  // 512 or 2048

  static std::vector<int> block_counts(int depth);
  static ShortcutType default_shortcut(int depth);

  std::shared_ptr<Conv3d> conv1;
  std::shared_ptr<BatchNorm3d> bn1;
  std::shared_ptr<ModuleList<ResidualBlock>> layer1, layer2, layer3, layer4;

 private:
  int depth_;
  ShortcutType shortcut_;
  int64_t out_channels_ = 0;
};

}  // namespace med3d
