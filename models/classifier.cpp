#include "med3d/models/classifier.h"

#include "med3d/ops/nn.h"
#include "med3d/ops/pool.h"

namespace med3d {

ResNetClassifier::ResNetClassifier(Context context, int depth, int64_t classes, std::optional<ShortcutType> shortcut,
                                   int64_t in_channels)
    : Module(context) {
  MED3D_CHECK(classes >= 1, "ResNetClassifier: classes ", classes, " must be at least 1");
  encoder = register_module("", std::make_shared<ResNet3d>(context, depth, shortcut, in_channels));
  fc = register_module("fc", std::make_shared<Linear>(context, encoder->out_channels(), classes));
}

Tensor ResNetClassifier::forward(const Tensor& x) {
  return fc->forward(flatten(adaptive_avg_pool3d(encoder->forward(x), {1, 1, 1})));
}

}  // namespace med3d
