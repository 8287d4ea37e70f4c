// DenseASPP-3D (after Yang et al., CVPR 2018) on the ResNet3d encoder (output stride 8).
// Five densely connected atrous branches `aspp.<i>` with rates 3, 6, 12, 18, 24; branch i sees
// the concatenation [encoder output, branch 0, ..., branch i-1] and computes
//   BN -> ReLU -> Conv3d 1x1x1 (d0, bias) -> BN -> ReLU -> Conv3d 3x3x3 dilation r, padding r
//   (d1 = d0 / 2, bias) -> dropout(p)
// keys aspp.<i>.{bn1,conv1,bn2,conv2}.*. Then dropout(p), `classifier` = Conv3d(C + 5 d1,
// classes, 1, bias) and trilinear upsampling x8 (align_corners = false).
// d0 defaults to 128 on 512-channel encoders and 512 on 2048-channel ones. Dropout is
// med3d::dropout (seeded by the Context, active only in training mode); p = 0 disables it.
// Input [N, in_channels, D, H, W]; output [N, classes, 8 ceil(D/8), ...]: the input size when
// it divides by 8.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "med3d/models/resnet3d.h"

namespace med3d {

struct DenseAspp3dOptions {
  int64_t d0 = 0;  // 0: 128 for 512-channel encoders, 512 for 2048-channel ones
  double dropout = 0.1;
  std::vector<int64_t> rates{3, 6, 12, 18, 24};
};

class DenseAsppBranch : public Module {
 public:
  DenseAsppBranch(Context context, int64_t in_channels, int64_t d0, int64_t d1, int64_t rate, double dropout);
  Tensor forward(const Tensor& x);
  std::shared_ptr<BatchNorm3d> bn1, bn2;
  std::shared_ptr<Conv3d> conv1, conv2;
  double dropout_p;
};

class DenseAspp3d : public Module {
 public:
  DenseAspp3d(Context context, int depth, int64_t classes, DenseAspp3dOptions options = {},
              std::optional<ShortcutType> shortcut = std::nullopt, int64_t in_channels = 1);
  Tensor forward(const Tensor& x);
  std::shared_ptr<ResNet3d> encoder;
  std::shared_ptr<ModuleList<DenseAsppBranch>> aspp;
  std::shared_ptr<Conv3d> classifier;
  DenseAspp3dOptions options;
};

}  // namespace med3d
