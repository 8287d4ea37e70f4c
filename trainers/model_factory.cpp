#include "med3d/trainers/model_factory.h"

#include <algorithm>
#include <sstream>

#include "med3d/error.h"
#include "med3d/models/classifier.h"
#include "med3d/models/dense_aspp3d.h"
#include "med3d/models/heads.h"
#include "med3d/models/lung_decoder.h"
#include "med3d/models/med3d_net.h"
#include "med3d/ops/shape.h"

namespace med3d::trainers {
namespace {

const std::vector<std::string> kHeads = {"med3d", "medicalnet", "coarse", "denseaspp", "lung", "classifier"};

std::string join(const std::vector<int64_t>& values) {
  // A stream, not string concatenation: GCC 12 warns falsely (-Wrestrict, bug 105329) on
  // `"," + std::to_string(...)`.
  std::ostringstream out;
  for (std::size_t i = 0; i < values.size(); ++i) out << (i ? "," : "") << values[i];
  return out.str();
}

// Heads whose output is not the input size (MedicalNet's 1/4, the 8-aligned decoders) are
// brought to it the same way for every head: trilinear resize.
Tensor to_input_size(const Tensor& logits, const Tensor& x) {
  if (logits.shape()[2] == x.shape()[2] && logits.shape()[3] == x.shape()[3] &&
      logits.shape()[4] == x.shape()[4])
    return logits;
  return upsample_to_input(logits, x);
}

}  // namespace

int ModelSpec::depth() const {
  const std::vector<int> depths = {10, 18, 34, 50, 101, 152, 200};
  for (int d : depths)
    if (arch.starts_with("resnet") && arch.substr(6) == std::to_string(d)) return d;
  detail::throw_error("unknown --arch '", arch,
                      "'; expected one of resnet10, resnet18, resnet34, resnet50, resnet101, "
                      "resnet152, resnet200");
}

std::map<std::string, std::string> ModelSpec::to_metadata() const {
  std::map<std::string, std::string> m;
  m["model.arch"] = arch;
  std::string shortcut_name;  // empty: the depth's default
  if (shortcut) shortcut_name.push_back(*shortcut == ShortcutType::A ? 'A' : 'B');
  m["model.shortcut"] = shortcut_name;
  m["model.head"] = head;
  m["model.classes"] = join(classes);
  m["model.in_channels"] = std::to_string(in_channels);
  return m;
}

ModelSpec ModelSpec::from_metadata(const std::map<std::string, std::string>& metadata,
                                   const std::string& path) {
  auto get = [&](const std::string& key) {
    auto it = metadata.find(key);
    MED3D_CHECK(it != metadata.end(), "'", path, "' has no metadata key '", key,
                "': it is not a model saved by med3d train/pretrain (those hold model.arch, "
                "model.head, model.classes)");
    return it->second;
  };
  ModelSpec spec;
  spec.arch = get("model.arch");
  const std::string shortcut = get("model.shortcut");
  if (!shortcut.empty()) spec.shortcut = parse_shortcut(shortcut);
  spec.head = get("model.head");
  spec.classes.clear();
  const std::string classes = get("model.classes");
  std::size_t begin = 0;
  while (begin <= classes.size()) {
    const std::size_t end = std::min(classes.find(',', begin), classes.size());
    spec.classes.push_back(std::stoll(classes.substr(begin, end - begin)));
    begin = end + 1;
  }
  spec.in_channels = std::stoll(get("model.in_channels"));
  return spec;
}

ShortcutType parse_shortcut(const std::string& text) {
  if (text == "A" || text == "a") return ShortcutType::A;
  if (text == "B" || text == "b") return ShortcutType::B;
  detail::throw_error("--shortcut: expected A or B, got '", text, "'");
}

void SegModel::to(Device target) {
  if (target == device) return;
  module->to(target);
  device = target;
  auto on_device = logits;
  logits = [on_device, target](const Tensor& x, int64_t domain) {
    return on_device(x.device() == target ? x : x.to(target), domain);
  };
}

SegModel make_seg_model(Context context, const ModelSpec& spec) {
  const int depth = spec.depth();
  MED3D_CHECK(std::find(kHeads.begin(), kHeads.end(), spec.head) != kHeads.end(), "unknown --head '",
              spec.head, "'; expected med3d, medicalnet, coarse, denseaspp, lung or classifier");
  MED3D_CHECK(!spec.classes.empty(), "the model needs at least one label set");
  for (int64_t k : spec.classes)
    MED3D_CHECK(k >= 2, "a ", spec.head == "classifier" ? "classifier" : "segmentation head",
                " needs at least 2 classes, got ", k);
  MED3D_CHECK(spec.head == "med3d" || spec.classes.size() == 1, "head '", spec.head,
              "' has one output; only head med3d takes one label set per domain (got ",
              spec.classes.size(), ")");
  MED3D_CHECK(spec.head != "coarse" || spec.classes[0] == 2,
              "head coarse segments liver vs background: 2 classes, got ", spec.classes[0]);
  MED3D_CHECK(spec.in_channels >= 1, "in_channels must be >= 1, got ", spec.in_channels);

  SegModel model;
  model.spec = spec;
  const int64_t k = spec.classes[0];
  if (spec.head == "med3d") {
    auto net = std::make_shared<Med3DNet>(context, depth, spec.classes, spec.shortcut, spec.in_channels);
    model.module = net;
    model.encoder = net->encoder;
    const int64_t domains = static_cast<int64_t>(spec.classes.size());
    model.logits = [net, domains](const Tensor& x, int64_t domain) {
      MED3D_CHECK(domain >= 0 && domain < domains, "Med3DNet has ", domains,
                  " branches; domain ", domain, " does not exist");
      return net->forward(x, static_cast<std::size_t>(domain));
    };
  } else if (spec.head == "medicalnet") {
    MED3D_CHECK(spec.in_channels == 1 && !spec.shortcut,
                "head medicalnet uses MedicalNet's 1-channel encoder with its default shortcut");
    auto net = std::make_shared<MedicalNetSegmentation>(context, depth, k);
    model.module = net;
    model.encoder = net->encoder;
    model.logits = [net](const Tensor& x, int64_t) { return to_input_size(net->forward(x), x); };
  } else if (spec.head == "coarse") {
    auto net = std::make_shared<CoarseLiverNet>(context, depth, spec.shortcut, spec.in_channels);
    model.module = net;
    model.encoder = net->encoder;
    model.logits = [net](const Tensor& x, int64_t) { return net->forward(x); };
  } else if (spec.head == "denseaspp") {
    auto net = std::make_shared<DenseAspp3d>(context, depth, k, DenseAspp3dOptions{}, spec.shortcut,
                                             spec.in_channels);
    model.module = net;
    model.encoder = net->encoder;
    model.logits = [net](const Tensor& x, int64_t) { return to_input_size(net->forward(x), x); };
  } else if (spec.head == "classifier") {
    auto net = std::make_shared<ResNetClassifier>(context, depth, k, spec.shortcut, spec.in_channels);
    model.module = net;
    model.encoder = net->encoder;
    model.logits = [net](const Tensor& x, int64_t) { return net->forward(x); };
  } else {
    auto net = std::make_shared<LungSegmentationNet>(context, depth, k, spec.shortcut, spec.in_channels);
    model.module = net;
    model.encoder = net->encoder;
    model.logits = [net](const Tensor& x, int64_t) { return to_input_size(net->forward(x), x); };
  }
  return model;
}

}  // namespace med3d::trainers
