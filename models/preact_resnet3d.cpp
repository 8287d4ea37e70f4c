#include "med3d/models/preact_resnet3d.h"

#include "med3d/ops/elementwise.h"
#include "med3d/ops/pool.h"

namespace med3d {

namespace {
std::shared_ptr<Conv3d> make_conv(Context& context, int64_t in, int64_t out, int64_t kernel, int64_t stride,
                                  int64_t padding, int64_t dilation) {
  auto conv = std::make_shared<Conv3d>(context, in, out, Extent3{kernel, kernel, kernel},
                                       Conv3dOptions::uniform(stride, padding, dilation), /*bias=*/false);
  kaiming_normal_fan_out(conv->weight);
  return conv;
}
}  // namespace

PreActBottleneck::PreActBottleneck(Context context, const BlockShape& block_shape)
    : ResidualBlock(context), shape(block_shape) {
  const int64_t d = shape.dilation, out = shape.planes * kExpansion;
  bn1 = register_module("bn1", std::make_shared<BatchNorm3d>(context, shape.in_channels));
  conv1 = register_module("conv1", make_conv(context, shape.in_channels, shape.planes, 1, 1, 0, 1));
  bn2 = register_module("bn2", std::make_shared<BatchNorm3d>(context, shape.planes));
  conv2 = register_module("conv2", make_conv(context, shape.planes, shape.planes, 3, shape.stride, d, d));
  bn3 = register_module("bn3", std::make_shared<BatchNorm3d>(context, shape.planes));
  conv3 = register_module("conv3", make_conv(context, shape.planes, out, 1, 1, 0, 1));
  if (shape.needs_shortcut)
    downsample = register_module("downsample", make_conv(context, shape.in_channels, out, 1, shape.stride, 0, 1));
}

Tensor PreActBottleneck::forward(const Tensor& x) {
  const Tensor pre = bn1->forward_relu(x);
  const Tensor identity = downsample ? downsample->forward(pre) : x;
  Tensor out = conv1->forward(pre);
  out = conv2->forward(bn2->forward_relu(out));
  out = conv3->forward(bn3->forward_relu(out));
  return add(out, identity);
}

PreActResNet3d::PreActResNet3d(Context context, int depth, int64_t in_channels) : Module(context), depth_(depth) {
  MED3D_CHECK(depth == 50 || depth == 101 || depth == 152 || depth == 200, "PreActResNet3d: depth ", depth,
              " is not one of 50, 101, 152, 200 (pre-activation bottleneck networks)");
  const std::vector<int> counts = ResNet3d::block_counts(depth);
  conv1 = register_module("conv1", make_conv(context, in_channels, 64, 7, 2, 3, 1));
  bn1 = register_module("bn1", std::make_shared<BatchNorm3d>(context, 64));
  int64_t channels = 64;
  auto make_layer = [&](int64_t planes, int blocks, int64_t stride, int64_t dilation) {
    auto layer = std::make_shared<ModuleList<ResidualBlock>>(context);
    for (int b = 0; b < blocks; ++b) {
      const int64_t block_stride = b == 0 ? stride : 1;
      const int64_t out = planes * PreActBottleneck::kExpansion;
      BlockShape shape{channels, planes, block_stride, dilation, block_stride != 1 || channels != out, ShortcutType::B};
      layer->push_back(std::make_shared<PreActBottleneck>(context, shape));
      channels = out;
    }
    return layer;
  };
  layer1 = register_module("layer1", make_layer(64, counts[0], 1, 1));
  layer2 = register_module("layer2", make_layer(128, counts[1], 2, 1));
  layer3 = register_module("layer3", make_layer(256, counts[2], 1, 2));
  layer4 = register_module("layer4", make_layer(512, counts[3], 1, 4));
  final_bn = register_module("final_bn", std::make_shared<BatchNorm3d>(context, channels));
}

Tensor PreActResNet3d::forward(const Tensor& x) {
  Tensor h = max_pool3d(bn1->forward_relu(conv1->forward(x)), {3, 3, 3}, {2, 2, 2}, {1, 1, 1});
  for (auto* layer : {layer1.get(), layer2.get(), layer3.get(), layer4.get()})
    for (std::size_t i = 0; i < layer->size(); ++i) h = (*layer)[i].forward(h);
  return final_bn->forward_relu(h);
}

}  // namespace med3d
