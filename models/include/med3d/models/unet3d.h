// 3D U-Net (Cicek et al. 2016), the network of the self-supervised work:
//   encoder: enc1 = conv(in->32), conv(32->64); max-pool 2; enc2 = 64->64->128; pool;
//            enc3 = 128->128->256; pool; enc4 (bottom) = 256->256->512
//   decoder: up3 = ConvTranspose3d(512, 512, 2, stride 2) then concat with enc3 -> dec3 =
//            conv(768->256), conv(256->256); up2 = 256->256, concat enc2 -> dec2 = 384->128->128;
//            up1 = 128->128, concat enc1 -> dec1 = 192->64->64; head = Conv3d(64, classes, 1).
// Every conv is 3x3x3, padding 1 (the paper's valid convs would crop the skips), no bias,
// followed by BN and ReLU; transposed convs and the head have a bias. Keys:
// enc1.conv1.weight, enc1.bn1.*, ..., up3.weight, dec3.conv1.weight, ..., head.weight.
// Input [N, in_channels, D, H, W] with D, H, W divisible by 8; output [N, classes, D, H, W].
#pragma once

#include <memory>

#include "med3d/models/layers.h"

namespace med3d {

// conv-BN-ReLU twice (3x3x3, padding 1).
class DoubleConv3d : public Module {
 public:
  DoubleConv3d(Context context, int64_t in_channels, int64_t mid_channels, int64_t out_channels);
  Tensor forward(const Tensor& x);
  std::shared_ptr<Conv3d> conv1, conv2;
  std::shared_ptr<BatchNorm3d> bn1, bn2;
};

struct UNet3dFeatures {
  Tensor enc1, enc2, enc3, enc4;  // 64, 128, 256, 512 channels at 1, 1/2, 1/4, 1/8 resolution
};

class UNet3d : public Module {
 public:
  UNet3d(Context context, int64_t in_channels, int64_t classes);
  Tensor forward(const Tensor& x);
  UNet3dFeatures encode(const Tensor& x);
  Tensor decode(const UNet3dFeatures& features);

  std::shared_ptr<DoubleConv3d> enc1, enc2, enc3, enc4, dec3, dec2, dec1;
  std::shared_ptr<ConvTranspose3d> up3, up2, up1;
  std::shared_ptr<Conv3d> head;
};

}  // namespace med3d
