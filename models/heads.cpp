#include "med3d/models/heads.h"

#include "med3d/ops/elementwise.h"

namespace med3d {

namespace {
// conv_seg is an nn.Sequential in MedicalNet: its ReLUs hold the unused indices 2 and 5.
class SequentialSlots : public Module {
 public:
  using Module::Module;
  template <class M>
  std::shared_ptr<M> slot(int index, std::shared_ptr<M> module) {
    return register_module(std::to_string(index), std::move(module));
  }
};
}  // namespace

MedicalNetSegmentation::MedicalNetSegmentation(Context context, int depth, int64_t classes,
                                               std::optional<ShortcutType> shortcut, int64_t in_channels,
                                               Init init)
    : Module(context) {
  encoder = register_module("", std::make_shared<ResNet3d>(context, depth, shortcut, in_channels, init));
  auto seq = register_module("conv_seg", std::make_shared<SequentialSlots>(context));
  up = seq->slot(0, std::make_shared<ConvTranspose3d>(context, encoder->out_channels(), 32, Extent3{2, 2, 2},
                                                      ConvTranspose3dOptions{.stride = {2, 2, 2}}, true, init));
  up_bn = seq->slot(1, std::make_shared<BatchNorm3d>(context, 32));
  refine = seq->slot(3, std::make_shared<Conv3d>(context, 32, 32, Extent3{3, 3, 3},
                                                 Conv3dOptions{.padding = {1, 1, 1}}, /*bias=*/false, Init::zeros));
  refine_bn = seq->slot(4, std::make_shared<BatchNorm3d>(context, 32));
  classifier = seq->slot(6, std::make_shared<Conv3d>(context, 32, classes, Extent3{1, 1, 1}, Conv3dOptions{},
                                                     /*bias=*/false, Init::zeros));
  // MedicalNet re-initialises every nn.Conv3d (not the transposed one) with Kaiming fan_out.
  if (init == Init::standard) {
    kaiming_normal_fan_out(refine->weight);
    kaiming_normal_fan_out(classifier->weight);
  }
}

Tensor MedicalNetSegmentation::forward(const Tensor& x) {
  Tensor h = encoder->forward(x);
  h = up_bn->forward_relu(up->forward(h));
  h = refine_bn->forward_relu(refine->forward(h));
  return classifier->forward(h);
}

}  // namespace med3d
