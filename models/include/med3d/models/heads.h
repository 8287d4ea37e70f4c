// Networks built on a ResNet3d encoder. Each keeps the encoder's keys at the top level of its
// state dict (conv1..., layer4...) as MedicalNet does, so encoder weights transfer by name.
#pragma once

#include <memory>

#include "med3d/models/resnet3d.h"

namespace med3d {

// MedicalNet's segmentation network: encoder + conv_seg =
// ConvTranspose3d(C, 32, 2, stride 2, bias) -> BN -> ReLU -> Conv3d(32, 32, 3, pad 1) -> BN ->
// ReLU -> Conv3d(32, classes, 1); keys conv_seg.{0,1,3,4,6}.*. Output at 1/4 input resolution.
class MedicalNetSegmentation : public Module {
 public:
  MedicalNetSegmentation(Context context, int depth, int64_t classes,
                         std::optional<ShortcutType> shortcut = std::nullopt, int64_t in_channels = 1,
                         Init init = Init::standard);
  Tensor forward(const Tensor& x);
  std::shared_ptr<ResNet3d> encoder;
  std::shared_ptr<ConvTranspose3d> up;        // conv_seg.0
  std::shared_ptr<BatchNorm3d> up_bn;         // conv_seg.1
  std::shared_ptr<Conv3d> refine;             // conv_seg.3
  std::shared_ptr<BatchNorm3d> refine_bn;     // conv_seg.4
  std::shared_ptr<Conv3d> classifier;         // conv_seg.6
};

}  // namespace med3d
