#include "med3d/models/resnet3d.h"

#include "med3d/ops/elementwise.h"
#include "med3d/ops/pool.h"
#include "med3d/ops/shape.h"

namespace med3d {

namespace {

Conv3dOptions conv_options(int64_t stride, int64_t padding, int64_t dilation) {
  return {.stride = {stride, stride, stride}, .padding = {padding, padding, padding},
          .dilation = {dilation, dilation, dilation}};
}

// MedicalNet's conv: no bias, Kaiming normal (fan_out) drawn once.
std::shared_ptr<Conv3d> make_conv(Context& context, int64_t in, int64_t out, int64_t kernel, int64_t stride,
                                  int64_t padding, int64_t dilation, Init init) {
  auto conv = std::make_shared<Conv3d>(context, in, out, Extent3{kernel, kernel, kernel},
                                       conv_options(stride, padding, dilation), /*bias=*/false, Init::zeros);
  if (init == Init::standard) kaiming_normal_fan_out(conv->weight);
  return conv;
}

Tensor shortcut(const Tensor& x, const BlockShape& shape, int64_t out_channels,
                const std::shared_ptr<ProjectionShortcut>& projection) {
  if (!shape.needs_shortcut) return x;
  if (shape.shortcut == ShortcutType::B) return projection->forward(x);
  return zero_pad_channels_subsample(x, shape.stride, out_channels);
}

}  // namespace

ProjectionShortcut::ProjectionShortcut(Context context, int64_t in_channels, int64_t out_channels, int64_t stride,
                                       Init init)
    : Module(context) {
  conv = register_module("0", make_conv(context, in_channels, out_channels, 1, stride, 0, 1, init));
  bn = register_module("1", std::make_shared<BatchNorm3d>(context, out_channels));
}

Tensor ProjectionShortcut::forward(const Tensor& x) { return bn->forward(conv->forward(x)); }

BasicBlock::BasicBlock(Context context, const BlockShape& block_shape, Init init)
    : ResidualBlock(context), shape(block_shape) {
  const int64_t d = shape.dilation;
  conv1 = register_module("conv1", make_conv(context, shape.in_channels, shape.planes, 3, shape.stride, d, d, init));
  bn1 = register_module("bn1", std::make_shared<BatchNorm3d>(context, shape.planes));
  conv2 = register_module("conv2", make_conv(context, shape.planes, shape.planes, 3, 1, d, d, init));
  bn2 = register_module("bn2", std::make_shared<BatchNorm3d>(context, shape.planes));
  if (shape.needs_shortcut && shape.shortcut == ShortcutType::B)
    downsample = register_module("downsample",
                                 std::make_shared<ProjectionShortcut>(context, shape.in_channels, shape.planes, shape.stride, init));
}

Tensor BasicBlock::forward(const Tensor& x) {
  Tensor out = bn1->forward_relu(conv1->forward(x));
  out = bn2->forward(conv2->forward(out));
  return relu(add(out, shortcut(x, shape, shape.planes, downsample)));
}

Bottleneck::Bottleneck(Context context, const BlockShape& block_shape, Init init)
    : ResidualBlock(context), shape(block_shape) {
  const int64_t d = shape.dilation, out = shape.planes * kExpansion;
  conv1 = register_module("conv1", make_conv(context, shape.in_channels, shape.planes, 1, 1, 0, 1, init));
  bn1 = register_module("bn1", std::make_shared<BatchNorm3d>(context, shape.planes));
  conv2 = register_module("conv2", make_conv(context, shape.planes, shape.planes, 3, shape.stride, d, d, init));
  bn2 = register_module("bn2", std::make_shared<BatchNorm3d>(context, shape.planes));
  conv3 = register_module("conv3", make_conv(context, shape.planes, out, 1, 1, 0, 1, init));
  bn3 = register_module("bn3", std::make_shared<BatchNorm3d>(context, out));
  if (shape.needs_shortcut && shape.shortcut == ShortcutType::B)
    downsample = register_module("downsample",
                                 std::make_shared<ProjectionShortcut>(context, shape.in_channels, out, shape.stride, init));
}

Tensor Bottleneck::forward(const Tensor& x) {
  Tensor out = bn1->forward_relu(conv1->forward(x));
  out = bn2->forward_relu(conv2->forward(out));
  out = bn3->forward(conv3->forward(out));
  return relu(add(out, shortcut(x, shape, shape.planes * kExpansion, downsample)));
}

std::vector<int> ResNet3d::block_counts(int depth) {
  switch (depth) {
    case 10: return {1, 1, 1, 1};
    case 18: return {2, 2, 2, 2};
    case 34: return {3, 4, 6, 3};
    case 50: return {3, 4, 6, 3};
    case 101: return {3, 4, 23, 3};
    case 152: return {3, 8, 36, 3};
    case 200: return {3, 24, 36, 3};
    default:
      detail::throw_error("ResNet3d: depth ", depth, " is not one of 10, 18, 34, 50, 101, 152, 200");
  }
}

ShortcutType ResNet3d::default_shortcut(int depth) {
  return depth == 18 || depth == 34 ? ShortcutType::A : ShortcutType::B;
}

ResNet3d::ResNet3d(Context context, int depth, std::optional<ShortcutType> shortcut_type, int64_t in_channels,
                   Init init)
    : Module(context), depth_(depth), shortcut_(shortcut_type.value_or(default_shortcut(depth))) {
  const std::vector<int> counts = block_counts(depth);
  const bool bottleneck = depth >= 50;
  const int64_t expansion = bottleneck ? Bottleneck::kExpansion : BasicBlock::kExpansion;
  conv1 = register_module("conv1", make_conv(context, in_channels, 64, 7, 2, 3, 1, init));
  bn1 = register_module("bn1", std::make_shared<BatchNorm3d>(context, 64));

  int64_t channels = 64;
  auto make_layer = [&](int64_t planes, int blocks, int64_t stride, int64_t dilation) {
    auto layer = std::make_shared<ModuleList<ResidualBlock>>(context);
    for (int b = 0; b < blocks; ++b) {
      const int64_t block_stride = b == 0 ? stride : 1;
      BlockShape shape{channels, planes, block_stride, dilation,
                       block_stride != 1 || channels != planes * expansion, shortcut_};
      if (bottleneck) layer->push_back(std::make_shared<Bottleneck>(context, shape, init));
      else layer->push_back(std::make_shared<BasicBlock>(context, shape, init));
      channels = planes * expansion;
    }
    return layer;
  };
  layer1 = register_module("layer1", make_layer(64, counts[0], 1, 1));
  layer2 = register_module("layer2", make_layer(128, counts[1], 2, 1));
  layer3 = register_module("layer3", make_layer(256, counts[2], 1, 2));
  layer4 = register_module("layer4", make_layer(512, counts[3], 1, 4));
  out_channels_ = channels;
}

ResNet3dFeatures ResNet3d::forward_features(const Tensor& x) {
  ResNet3dFeatures f;
  f.conv1 = bn1->forward_relu(conv1->forward(x));
  Tensor h = max_pool3d(f.conv1, {3, 3, 3}, {2, 2, 2}, {1, 1, 1});
  auto run = [](ModuleList<ResidualBlock>& layer, Tensor t) {
    for (std::size_t i = 0; i < layer.size(); ++i) t = layer[i].forward(t);
    return t;
  };
  f.layer1 = run(*layer1, h);
  f.layer2 = run(*layer2, f.layer1);
  f.layer3 = run(*layer3, f.layer2);
  f.layer4 = run(*layer4, f.layer3);
  return f;
}

Tensor ResNet3d::forward(const Tensor& x) { return forward_features(x).layer4; }

}  // namespace med3d
