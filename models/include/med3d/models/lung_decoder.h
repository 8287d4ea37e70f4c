// The lung segmentation network of Med3D (Chen, Ma, Zheng 2019): the Med3D encoder followed by
// three groups of [3x3x3 transposed conv, stride 2 (x2 upsampling) -> 3x3x3 conv], then a
// 1x1x1 conv to the classes. The paper gives the structure, not the widths; our choice (stated
// here because it is a choice): group widths 256, 128, 64 times the encoder's expansion
// (512-channel encoders: 256/128/64; 2048-channel bottleneck encoders: 1024/512/256), every
// conv without bias and followed by BN + ReLU; the transposed conv has padding 1 and
// output_padding 1 so it doubles each extent exactly. The classifier has a bias.
// Keys: decoder.groups.<g>.{up,up_bn,conv,conv_bn}.*, decoder.classifier.{weight,bias}.
// Input [N, in_channels, D, H, W]; the encoder gives D/8 (rounded up), so the output is
// [N, classes, 8 ceil(D/8), 8 ceil(H/8), 8 ceil(W/8)]: the input size when it divides by 8.
#pragma once

#include <memory>
#include <optional>

#include "med3d/models/resnet3d.h"

namespace med3d {

class LungDecoderGroup : public Module {
 public:
  LungDecoderGroup(Context context, int64_t in_channels, int64_t out_channels);
  Tensor forward(const Tensor& x);
  std::shared_ptr<ConvTranspose3d> up;
  std::shared_ptr<BatchNorm3d> up_bn;
  std::shared_ptr<Conv3d> conv;
  std::shared_ptr<BatchNorm3d> conv_bn;
};

class LungDecoder : public Module {
 public:
  // Group widths 256, 128, 64 times in_channels / 512 (in_channels: 512 or 2048 in practice).
  LungDecoder(Context context, int64_t in_channels, int64_t classes);
  Tensor forward(const Tensor& x);
  std::shared_ptr<ModuleList<LungDecoderGroup>> groups;
  std::shared_ptr<Conv3d> classifier;
};

class LungSegmentationNet : public Module {
 public:
  LungSegmentationNet(Context context, int depth, int64_t classes,
                      std::optional<ShortcutType> shortcut = std::nullopt, int64_t in_channels = 1);
  Tensor forward(const Tensor& x);
  std::shared_ptr<ResNet3d> encoder;
  std::shared_ptr<LungDecoder> decoder;
};

}  // namespace med3d
