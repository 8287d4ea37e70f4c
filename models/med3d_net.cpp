#include "med3d/models/med3d_net.h"

#include "med3d/ops/upsample.h"

namespace med3d {

std::shared_ptr<Conv3d> make_pointwise_classifier(Context& context, int64_t in_channels, int64_t classes) {
  auto conv = std::make_shared<Conv3d>(context, in_channels, classes, Extent3{1, 1, 1}, Conv3dOptions{}, /*bias=*/true);
  kaiming_normal_fan_out(conv->weight);
  return conv;
}

Tensor upsample_to_input(const Tensor& logits, const Tensor& like) {
  return upsample_trilinear3d(logits, {like.dim(2), like.dim(3), like.dim(4)}, /*align_corners=*/false);
}

Med3DNet::Med3DNet(Context context, int depth, const std::vector<int64_t>& classes_per_domain,
                   std::optional<ShortcutType> shortcut, int64_t in_channels)
    : Module(context) {
  MED3D_CHECK(!classes_per_domain.empty(), "Med3DNet: expected at least one domain, got none; pass one class ",
              "count per domain");
  encoder = register_module("", std::make_shared<ResNet3d>(context, depth, shortcut, in_channels));
  branches = register_module("branches", std::make_shared<ModuleList<Conv3d>>(context));
  for (std::size_t j = 0; j < classes_per_domain.size(); ++j) {
    MED3D_CHECK(classes_per_domain[j] >= 1, "Med3DNet: domain ", j, " has ", classes_per_domain[j],
                " classes; expected at least 1");
    branches->push_back(make_pointwise_classifier(context, encoder->out_channels(), classes_per_domain[j]));
  }
}

Tensor Med3DNet::forward(const Tensor& x, std::size_t domain) {
  MED3D_CHECK(domain < branches->size(), "Med3DNet::forward: domain ", domain, " out of range; the network has ",
              branches->size(), " domains (0-based)");
  MED3D_CHECK(x.rank() == 5, "Med3DNet::forward: expected input [N, C, D, H, W], got ", x.str());
  return upsample_to_input((*branches)[domain].forward(encoder->forward(x)), x);
}

CoarseLiverNet::CoarseLiverNet(Context context, int depth, std::optional<ShortcutType> shortcut, int64_t in_channels)
    : Module(context) {
  encoder = register_module("", std::make_shared<ResNet3d>(context, depth, shortcut, in_channels));
  conv_seg = register_module("conv_seg", make_pointwise_classifier(context, encoder->out_channels(), 2));
}

Tensor CoarseLiverNet::forward(const Tensor& x) {
  MED3D_CHECK(x.rank() == 5, "CoarseLiverNet::forward: expected input [N, C, D, H, W], got ", x.str());
  return upsample_to_input(conv_seg->forward(encoder->forward(x)), x);
}

}  // namespace med3d
