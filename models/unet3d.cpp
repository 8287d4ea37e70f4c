#include "med3d/models/unet3d.h"

#include "med3d/ops/elementwise.h"
#include "med3d/ops/pool.h"
#include "med3d/ops/shape.h"

namespace med3d {

namespace {
std::shared_ptr<Conv3d> conv3(Context& context, int64_t in, int64_t out) {
  return std::make_shared<Conv3d>(context, in, out, Extent3{3, 3, 3}, Conv3dOptions::uniform(1, 1), /*bias=*/false);
}
std::shared_ptr<ConvTranspose3d> up2x(Context& context, int64_t channels) {
  return std::make_shared<ConvTranspose3d>(context, channels, channels, Extent3{2, 2, 2},
                                           ConvTranspose3dOptions::uniform(2), /*bias=*/true);
}
Tensor pool(const Tensor& x) { return max_pool3d(x, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}); }
}  // namespace

DoubleConv3d::DoubleConv3d(Context context, int64_t in_channels, int64_t mid_channels, int64_t out_channels)
    : Module(context) {
  conv1 = register_module("conv1", conv3(context, in_channels, mid_channels));
  bn1 = register_module("bn1", std::make_shared<BatchNorm3d>(context, mid_channels));
  conv2 = register_module("conv2", conv3(context, mid_channels, out_channels));
  bn2 = register_module("bn2", std::make_shared<BatchNorm3d>(context, out_channels));
}

Tensor DoubleConv3d::forward(const Tensor& x) {
  return bn2->forward_relu(conv2->forward(bn1->forward_relu(conv1->forward(x))));
}

UNet3d::UNet3d(Context context, int64_t in_channels, int64_t classes) : Module(context) {
  MED3D_CHECK(in_channels > 0 && classes > 0, "UNet3d: in_channels ", in_channels, " and classes ", classes,
              " must be positive");
  enc1 = register_module("enc1", std::make_shared<DoubleConv3d>(context, in_channels, 32, 64));
  enc2 = register_module("enc2", std::make_shared<DoubleConv3d>(context, 64, 64, 128));
  enc3 = register_module("enc3", std::make_shared<DoubleConv3d>(context, 128, 128, 256));
  enc4 = register_module("enc4", std::make_shared<DoubleConv3d>(context, 256, 256, 512));
  up3 = register_module("up3", up2x(context, 512));
  dec3 = register_module("dec3", std::make_shared<DoubleConv3d>(context, 512 + 256, 256, 256));
  up2 = register_module("up2", up2x(context, 256));
  dec2 = register_module("dec2", std::make_shared<DoubleConv3d>(context, 256 + 128, 128, 128));
  up1 = register_module("up1", up2x(context, 128));
  dec1 = register_module("dec1", std::make_shared<DoubleConv3d>(context, 128 + 64, 64, 64));
  head = register_module("head", std::make_shared<Conv3d>(context, 64, classes, Extent3{1, 1, 1}));
}

UNet3dFeatures UNet3d::encode(const Tensor& x) {
  MED3D_CHECK(x.defined() && x.rank() == 5, "UNet3d: expected input [N, C, D, H, W], got ",
              x.defined() ? x.str() : std::string("undefined"));
  for (int axis = 2; axis < 5; ++axis)
    MED3D_CHECK(x.dim(axis) % 8 == 0 && x.dim(axis) > 0, "UNet3d: spatial extents must be positive multiples of 8 ",
                "(three 2x poolings), got ", x.shape().str(), "; pad or crop the volume");
  UNet3dFeatures f;
  f.enc1 = enc1->forward(x);
  f.enc2 = enc2->forward(pool(f.enc1));
  f.enc3 = enc3->forward(pool(f.enc2));
  f.enc4 = enc4->forward(pool(f.enc3));
  return f;
}

Tensor UNet3d::decode(const UNet3dFeatures& f) {
  Tensor h = dec3->forward(concat({up3->forward(f.enc4), f.enc3}, 1));
  h = dec2->forward(concat({up2->forward(h), f.enc2}, 1));
  h = dec1->forward(concat({up1->forward(h), f.enc1}, 1));
  return head->forward(h);
}

Tensor UNet3d::forward(const Tensor& x) { return decode(encode(x)); }

}  // namespace med3d
