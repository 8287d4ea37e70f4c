#include "med3d/models/heads.h"
#include "test_util.h"

using namespace med3d;

TEST_CASE("resnet3d: state and parameter counts equal MedicalNet's for every depth", "[models]") {
  // Counted from MedicalNet's models/resnet.py (encoder only) with PyTorch: floating state
  // entries (weights + BN running stats) and trainable parameters.
  struct Expected {
    int depth;
    ShortcutType shortcut;
    int64_t state, parameters;
  };
  const Expected table[] = {
      {10, ShortcutType::B, 14361280, 14355520},   {18, ShortcutType::A, 32993984, 32986176},
      {34, ShortcutType::A, 63311040, 63295808},   {50, ShortcutType::B, 46208192, 46155072},
      {101, ShortcutType::B, 85306560, 85201216},  {152, ShortcutType::B, 117511360, 117359936},
      {200, ShortcutType::B, 126735552, 126559552},
  };
  Context context;
  for (const Expected& e : table) {
    INFO("ResNet-" << e.depth);
    ResNet3d net(context, e.depth, std::nullopt, 1, Init::zeros);  // counts need no random draw
    REQUIRE(net.shortcut() == e.shortcut);
    REQUIRE(net.count_state() == e.state);
    REQUIRE(net.count_parameters() == e.parameters);
  }
}

TEST_CASE("resnet3d: MedicalNet key names and shapes", "[models]") {
  Context context;
  MedicalNetSegmentation net(context, 10, 3, std::nullopt, 1, Init::zeros);
  const NamedTensors state = net.state_dict();
  REQUIRE(state.front().first == "conv1.weight");
  REQUIRE(state.front().second.shape() == Shape{64, 1, 7, 7, 7});
  auto find = [&](const std::string& name) {
    for (const auto& [key, tensor] : state)
      if (key == name) return tensor;
    FAIL("missing key " << name);
    return Tensor();
  };
  REQUIRE(find("layer2.0.downsample.0.weight").shape() == Shape{128, 64, 1, 1, 1});
  REQUIRE(find("layer3.0.conv1.weight").shape() == Shape{256, 128, 3, 3, 3});
  REQUIRE(find("layer1.0.bn1.running_var").shape() == Shape{64});
  REQUIRE(find("conv_seg.0.weight").shape() == Shape{512, 32, 2, 2, 2});
  REQUIRE(find("conv_seg.0.bias").shape() == Shape{32});
  REQUIRE(find("conv_seg.6.weight").shape() == Shape{3, 32, 1, 1, 1});
}

TEST_CASE("resnet3d: Kaiming fan_out init has the right spread, Init::zeros draws nothing", "[models]") {
  Context context(Device::cpu(), 11);
  ResNet3d net(context, 10);
  const std::vector<double> w = net.layer1->operator[](0).named_parameters()[0].second.to_vector<double>();
  double sum_sq = 0;
  for (double v : w) sum_sq += v * v;
  const double expected = 2.0 / (64 * 27);  // fan_out = out channels * kernel volume
  REQUIRE(std::abs(sum_sq / w.size() - expected) < 0.05 * expected);
  ResNet3d zeros(context, 10, std::nullopt, 1, Init::zeros);
  for (const auto& [name, p] : zeros.named_parameters()) {
    INFO(name);
    const bool bn_weight = (name.find(".bn") != std::string::npos || name.find("downsample.1") != std::string::npos ||
                            name.rfind("bn1", 0) == 0) &&
                           name.ends_with("weight");
    for (double v : p.to_vector<double>()) REQUIRE(v == (bn_weight ? 1.0 : 0.0));
  }
}

TEST_CASE("resnet3d: forward shapes, output stride 8, and a training step's gradients", "[models]") {
  Context context(Device::cpu(), 3);
  MedicalNetSegmentation net(context, 18, 2);
  Tensor x = context.randn({1, 1, 16, 24, 16});
  ResNet3dFeatures f = net.encoder->forward_features(x);
  REQUIRE(f.conv1.shape() == Shape{1, 64, 8, 12, 8});
  REQUIRE(f.layer1.shape() == Shape{1, 64, 4, 6, 4});
  REQUIRE(f.layer4.shape() == Shape{1, 512, 2, 3, 2});
  Tensor logits = net.forward(x);
  REQUIRE(logits.shape() == Shape{1, 2, 4, 6, 4});
  Tensor labels = context.zeros({1, 4, 6, 4}, DType::i32);
  backward(cross_entropy(logits, labels));
  for (const auto& [name, p] : net.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
  }
}

TEST_CASE("module: state dict round trip, strict and non-strict loading, module. prefix", "[models]") {
  Context context(Device::cpu(), 5);
  MedicalNetSegmentation a(context, 10, 2), b(context, 10, 2);
  NamedTensors state = a.state_dict();
  for (auto& [name, tensor] : state) name = "module." + name;
  REQUIRE(b.load_state_dict(state).complete());
  REQUIRE(b.state_dict()[0].second.to_vector<float>() == a.state_dict()[0].second.to_vector<float>());

  MedicalNetSegmentation c(context, 10, 5);  // a different number of classes
  REQUIRE_THROWS_WITH(c.load_state_dict(a.state_dict()), Catch::Contains("conv_seg.6.weight"));
  LoadReport report = c.load_state_dict(a.state_dict(), /*strict=*/false);
  REQUIRE(report.shape_mismatched.size() == 1);
  REQUIRE(report.missing.empty());
  REQUIRE(report.loaded.size() == a.state_dict().size() - 1);
}

TEST_CASE("module: freezing and parameter groups by prefix", "[models]") {
  Context context;
  MedicalNetSegmentation net(context, 10, 2, std::nullopt, 1, Init::zeros);
  net.freeze("layer1");
  std::vector<ParamGroup> groups = net.param_groups({{"conv_seg", 1.0}}, 0.01);
  REQUIRE(groups.size() == 2);
  REQUIRE(groups[0].lr == 1.0);
  REQUIRE(groups[0].params.size() == 8);  // conv_seg.{0 w,b; 1 w,b; 3 w; 4 w,b; 6 w}
  for (const auto& [name, p] : groups[1].params) REQUIRE(name.rfind("layer1", 0) != 0);
}

TEST_CASE("module: to(f64) converts every floating tensor in place and the network runs in f64", "[models]") {
  Context context(Device::cpu(), 5);
  MedicalNetSegmentation net(context, 10, 2, ShortcutType::B);
  const NamedTensors before = net.state_dict();
  std::vector<std::vector<double>> values;
  for (const auto& [name, t] : before) values.push_back(t.to_vector<double>());
  net.to(DType::f64);
  const NamedTensors after = net.state_dict();
  REQUIRE(after.size() == before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    INFO(after[i].first);
    const bool integer = after[i].first.ends_with("num_batches_tracked");
    REQUIRE(after[i].second.dtype() == (integer ? DType::i64 : DType::f64));
    REQUIRE(after[i].second.to_vector<double>() == values[i]);  // f32 -> f64 is exact
    REQUIRE(after[i].second.requires_grad() == before[i].second.requires_grad());
  }
  // The handles the layers hold see the conversion: an f64 forward and backward work.
  Tensor x = context.randn({1, 1, 16, 16, 16}).to(DType::f64);
  Tensor y = net.forward(x);
  REQUIRE(y.dtype() == DType::f64);
  backward(sum(y));
  REQUIRE(net.named_parameters().front().second.grad().dtype() == DType::f64);
  REQUIRE_THROWS_WITH(net.to(DType::i32), Catch::Contains("floating dtype"));
  net.to(DType::f32);
  REQUIRE(net.named_parameters().front().second.dtype() == DType::f32);
  REQUIRE(net.named_parameters().front().second.to_vector<double>() == values.front());
}
