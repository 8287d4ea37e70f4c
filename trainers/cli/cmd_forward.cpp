// med3d forward: one model in eval mode on a tensor named "input" of a safetensors file; writes
// every stage (conv1, layer1..layer4, output) to another safetensors file, for checking our
// models against other implementations and for feature extraction.
#include <iostream>
#include <memory>

#include "commands.h"
#include "common.h"
#include "med3d/models/classifier.h"
#include "med3d/models/weights.h"
#include "med3d/serialize.h"
#include "med3d/trainers/model_factory.h"

namespace med3d::cli {
namespace {

struct ForwardArgs {
  CommonOptions common;
  std::string arch = "resnet18", shortcut, head = "none", weights, input, output;
  int64_t classes = 2;
};

void run_forward(const ForwardArgs& a) {
  Context context = make_context(a.common);
  const Checkpoint in = load_safetensors(context, a.input);
  MED3D_CHECK(in.contains("input"), "--input '", a.input, "' has no tensor named 'input'");
  Tensor x = in.at("input");
  MED3D_CHECK(x.rank() == 5, "--input: 'input' must be [N, C, D, H, W], got ", x.str());
  if (x.dtype() != DType::f32) x = x.to(DType::f32);
  std::optional<ShortcutType> shortcut;
  if (!a.shortcut.empty()) shortcut = trainers::parse_shortcut(a.shortcut);

  std::shared_ptr<Module> module;
  std::shared_ptr<ResNet3d> encoder;
  std::function<Tensor(const Tensor&)> head;
  trainers::ModelSpec spec;
  spec.arch = a.arch;
  spec.shortcut = shortcut;
  spec.in_channels = x.shape()[1];
  if (a.head == "none") {
    encoder = std::make_shared<ResNet3d>(context, spec.depth(), shortcut, spec.in_channels);
    module = encoder;
  } else if (a.head == "cls") {
    auto net = std::make_shared<ResNetClassifier>(context, spec.depth(), a.classes, shortcut, spec.in_channels);
    module = net;
    encoder = net->encoder;
    head = [net](const Tensor& t) { return net->forward(t); };
  } else {
    spec.head = a.head;
    spec.classes = {a.classes};
    trainers::SegModel seg = trainers::make_seg_model(context, spec);
    module = seg.module;
    encoder = seg.encoder;
    head = [seg](const Tensor& t) { return seg.logits(t, 0); };
  }
  if (!a.weights.empty()) load_state_dict(*module, a.weights, true);
  module->eval();
  NoGrad no_grad(context);
  const ResNet3dFeatures f = encoder->forward_features(x);
  NamedTensors out = {{"conv1", f.conv1}, {"layer1", f.layer1}, {"layer2", f.layer2},
                      {"layer3", f.layer3}, {"layer4", f.layer4}};
  out.emplace_back("output", head ? head(x) : f.layer4);
  save_safetensors(a.output, out, {{"arch", a.arch}, {"head", a.head}});
  for (const auto& [name, t] : out) std::cout << name << " " << t.shape().str() << "\n";
}

}  // namespace

void register_forward(CLI::App& app) {
  auto a = std::make_shared<ForwardArgs>();
  CLI::App* c = app.add_subcommand("forward", "Run one model in eval mode and write every stage output");
  add_common_options(*c, a->common);
  c->add_option("--arch", a->arch, "resnet10, 18, 34, 50, 101, 152 or 200")->capture_default_str();
  c->add_option("--shortcut", a->shortcut, "A or B (default: MedicalNet's for the depth)");
  c->add_option("--head", a->head, "none (encoder), cls, medicalnet, coarse, denseaspp, lung or med3d")
      ->capture_default_str();
  c->add_option("--classes", a->classes, "classes of the head")->capture_default_str();
  c->add_option("--weights", a->weights, "safetensors state dict (strict); none: initial weights");
  c->add_option("--input", a->input, "safetensors file with a tensor 'input' [N, C, D, H, W]")->required();
  c->add_option("--output", a->output, "safetensors file to write")->required();
  c->callback([a] { run_forward(*a); });
}

}  // namespace med3d::cli
