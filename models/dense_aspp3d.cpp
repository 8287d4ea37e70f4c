#include "med3d/models/dense_aspp3d.h"

#include "med3d/models/med3d_net.h"
#include "med3d/ops/elementwise.h"
#include "med3d/ops/nn.h"
#include "med3d/ops/shape.h"
#include "med3d/ops/upsample.h"

namespace med3d {

DenseAsppBranch::DenseAsppBranch(Context context, int64_t in_channels, int64_t d0, int64_t d1, int64_t rate,
                                 double dropout)
    : Module(context), dropout_p(dropout) {
  bn1 = register_module("bn1", std::make_shared<BatchNorm3d>(context, in_channels));
  conv1 = register_module("conv1", std::make_shared<Conv3d>(context, in_channels, d0, Extent3{1, 1, 1}));
  bn2 = register_module("bn2", std::make_shared<BatchNorm3d>(context, d0));
  conv2 = register_module("conv2", std::make_shared<Conv3d>(context, d0, d1, Extent3{3, 3, 3},
                                                            Conv3dOptions::uniform(1, rate, rate)));
  kaiming_normal_fan_out(conv1->weight);
  kaiming_normal_fan_out(conv2->weight);
}

Tensor DenseAsppBranch::forward(const Tensor& x) {
  Tensor h = conv1->forward(bn1->forward_relu(x));
  h = conv2->forward(bn2->forward_relu(h));
  return dropout(h, dropout_p, is_training());
}

DenseAspp3d::DenseAspp3d(Context context, int depth, int64_t classes, DenseAspp3dOptions aspp_options,
                         std::optional<ShortcutType> shortcut, int64_t in_channels)
    : Module(context), options(std::move(aspp_options)) {
  MED3D_CHECK(classes >= 1, "DenseAspp3d: classes ", classes, " must be at least 1");
  MED3D_CHECK(options.dropout >= 0 && options.dropout < 1, "DenseAspp3d: dropout ", options.dropout,
              " must lie in [0, 1)");
  MED3D_CHECK(!options.rates.empty(), "DenseAspp3d: expected at least one atrous rate, got none");
  encoder = register_module("", std::make_shared<ResNet3d>(context, depth, shortcut, in_channels));
  const int64_t c = encoder->out_channels();
  if (options.d0 == 0) options.d0 = c >= 2048 ? 512 : 128;
  MED3D_CHECK(options.d0 >= 2 && options.d0 % 2 == 0, "DenseAspp3d: d0 ", options.d0,
              " must be a positive even number (d1 = d0 / 2), or 0 for the default");
  const int64_t d1 = options.d0 / 2;
  aspp = register_module("aspp", std::make_shared<ModuleList<DenseAsppBranch>>(context));
  int64_t channels = c;
  for (int64_t rate : options.rates) {
    MED3D_CHECK(rate >= 1, "DenseAspp3d: atrous rate ", rate, " must be at least 1");
    aspp->push_back(std::make_shared<DenseAsppBranch>(context, channels, options.d0, d1, rate, options.dropout));
    channels += d1;
  }
  classifier = register_module("classifier", make_pointwise_classifier(context, channels, classes));
}

Tensor DenseAspp3d::forward(const Tensor& x) {
  std::vector<Tensor> features{encoder->forward(x)};
  for (std::size_t i = 0; i < aspp->size(); ++i) {
    Tensor input = features.size() == 1 ? features[0] : concat(features, 1);
    features.push_back((*aspp)[i].forward(input));
  }
  Tensor h = dropout(concat(features, 1), options.dropout, is_training());
  return upsample_trilinear3d_scale(classifier->forward(h), {8, 8, 8}, /*align_corners=*/false);
}

}  // namespace med3d
