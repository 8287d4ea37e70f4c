// Networks whose head is a 1x1x1 conv on the ResNet3d encoder followed by trilinear upsampling
// (align_corners = false) back to the input's spatial size. Encoder keys stay at the top level
// of the state dict (conv1..., layer4...) as in MedicalNet, so encoder weights transfer by name.
//
// Med3DNet: the Med3D pretraining network (Chen, Ma, Zheng 2019): one shared encoder and one
//   branch per domain, `branches.<j>` = Conv3d(C, classes[j], 1, bias). forward(x, j) runs only
//   branch j, so a backward from its output reaches branch j and the encoder and leaves every
//   other branch's grad untouched (undefined if never used): a batch of domain j trains exactly
//   branch j and the shared encoder.
// CoarseLiverNet: encoder + `conv_seg` = Conv3d(C, 2, 1, bias) (background / liver).
// Input [N, in_channels, D, H, W]; output [N, classes, D, H, W].
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "med3d/models/resnet3d.h"

namespace med3d {

class Med3DNet : public Module {
 public:
  // One branch per entry of classes_per_domain (each >= 1; at least one domain).
  Med3DNet(Context context, int depth, const std::vector<int64_t>& classes_per_domain,
           std::optional<ShortcutType> shortcut = std::nullopt, int64_t in_channels = 1);
  // Logits of domain `domain` (0-based) at the input's resolution.
  Tensor forward(const Tensor& x, std::size_t domain);
  std::size_t domains() const { return branches->size(); }
  std::shared_ptr<ResNet3d> encoder;
  std::shared_ptr<ModuleList<Conv3d>> branches;  // branches.<j>.{weight,bias}
};

class CoarseLiverNet : public Module {
 public:
  CoarseLiverNet(Context context, int depth, std::optional<ShortcutType> shortcut = std::nullopt,
                 int64_t in_channels = 1);
  Tensor forward(const Tensor& x);
  std::shared_ptr<ResNet3d> encoder;
  std::shared_ptr<Conv3d> conv_seg;  // conv_seg.{weight,bias}
};

// 1x1x1 conv with bias, Kaiming fan_out weights (MedicalNet re-initialises every Conv3d so).
std::shared_ptr<Conv3d> make_pointwise_classifier(Context& context, int64_t in_channels, int64_t classes);
// Trilinear (align_corners = false) resize of `logits` to the spatial extents of `like`.
Tensor upsample_to_input(const Tensor& logits, const Tensor& like);

}  // namespace med3d
