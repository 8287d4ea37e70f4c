#include "med3d/models/lung_decoder.h"

#include "med3d/models/med3d_net.h"
#include "med3d/ops/elementwise.h"

namespace med3d {

LungDecoderGroup::LungDecoderGroup(Context context, int64_t in_channels, int64_t out_channels) : Module(context) {
  up = register_module("up", std::make_shared<ConvTranspose3d>(context, in_channels, out_channels, Extent3{3, 3, 3},
                                                               ConvTranspose3dOptions::uniform(2, 1, 1), /*bias=*/false));
  up_bn = register_module("up_bn", std::make_shared<BatchNorm3d>(context, out_channels));
  conv = register_module("conv", std::make_shared<Conv3d>(context, out_channels, out_channels, Extent3{3, 3, 3},
                                                          Conv3dOptions::uniform(1, 1), /*bias=*/false));
  conv_bn = register_module("conv_bn", std::make_shared<BatchNorm3d>(context, out_channels));
  kaiming_normal_fan_out(conv->weight);
}

Tensor LungDecoderGroup::forward(const Tensor& x) {
  Tensor h = up_bn->forward_relu(up->forward(x));
  return conv_bn->forward_relu(conv->forward(h));
}

LungDecoder::LungDecoder(Context context, int64_t in_channels, int64_t classes) : Module(context) {
  MED3D_CHECK(in_channels >= 512 && in_channels % 512 == 0, "LungDecoder: in_channels ", in_channels,
              " must be a positive multiple of 512 (a ResNet3d encoder's output)");
  MED3D_CHECK(classes >= 1, "LungDecoder: classes ", classes, " must be at least 1");
  const int64_t expansion = in_channels / 512;
  groups = register_module("groups", std::make_shared<ModuleList<LungDecoderGroup>>(context));
  int64_t channels = in_channels;
  for (int64_t width : {256, 128, 64}) {
    groups->push_back(std::make_shared<LungDecoderGroup>(context, channels, width * expansion));
    channels = width * expansion;
  }
  classifier = register_module("classifier", make_pointwise_classifier(context, channels, classes));
}

Tensor LungDecoder::forward(const Tensor& x) {
  Tensor h = x;
  for (std::size_t g = 0; g < groups->size(); ++g) h = (*groups)[g].forward(h);
  return classifier->forward(h);
}

LungSegmentationNet::LungSegmentationNet(Context context, int depth, int64_t classes,
                                         std::optional<ShortcutType> shortcut, int64_t in_channels)
    : Module(context) {
  encoder = register_module("", std::make_shared<ResNet3d>(context, depth, shortcut, in_channels));
  decoder = register_module("decoder", std::make_shared<LungDecoder>(context, encoder->out_channels(), classes));
}

Tensor LungSegmentationNet::forward(const Tensor& x) { return decoder->forward(encoder->forward(x)); }

}  // namespace med3d
