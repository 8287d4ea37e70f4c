// Classification network (e.g. lung nodule classification): the ResNet3d encoder, global
// average pooling over D, H, W, then a fully connected layer `fc` (Linear(C, classes), bias).
// Input [N, in_channels, D, H, W]; output logits [N, classes].
#pragma once

#include <memory>
#include <optional>

#include "med3d/models/resnet3d.h"

namespace med3d {

class ResNetClassifier : public Module {
 public:
  ResNetClassifier(Context context, int depth, int64_t classes,
                   std::optional<ShortcutType> shortcut = std::nullopt, int64_t in_channels = 1);
  Tensor forward(const Tensor& x);
  std::shared_ptr<ResNet3d> encoder;
  std::shared_ptr<Linear> fc;  // fc.{weight,bias}
};

}  // namespace med3d
