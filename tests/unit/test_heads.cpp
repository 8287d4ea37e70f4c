// Behaviour of the network heads: output shapes, key names, Med3D's per-domain gradient
// routing, DenseASPP's dropout, and clear errors. Numerical agreement with PyTorch is in
// test_model_golden.cpp.
#include "med3d/models/classifier.h"
#include "med3d/models/dense_aspp3d.h"
#include "med3d/models/heads.h"
#include "med3d/models/lung_decoder.h"
#include "med3d/models/med3d_net.h"
#include "test_util.h"

using namespace med3d;

namespace {
Tensor find(const NamedTensors& state, const std::string& name) {
  for (const auto& [key, tensor] : state)
    if (key == name) return tensor;
  FAIL("missing key " << name);
  return Tensor();
}
}  // namespace

TEST_CASE("heads: Med3D branch j's backward reaches only branch j and the encoder", "[models][heads]") {
  Context context(Device::cpu(), 5);
  Med3DNet net(context, 10, {2, 3, 4});
  REQUIRE(net.domains() == 3);
  Tensor x = context.randn({1, 1, 16, 24, 16});
  for (std::size_t j = 0; j < 3; ++j) {
    INFO("domain " << j);
    for (auto& [name, p] : net.named_parameters()) p.zero_grad();
    Tensor y = net.forward(x, j);
    REQUIRE(y.shape() == Shape{1, static_cast<int64_t>(j) + 2, 16, 24, 16});
    backward(mean(y));
    for (const auto& [name, p] : net.named_parameters()) {
      INFO(name);
      if (name.rfind("branches.", 0) != 0) {
        REQUIRE(p.grad().defined());  // the shared encoder
      } else {
        const bool own = name.rfind("branches." + std::to_string(j) + ".", 0) == 0;
        REQUIRE(p.grad().defined() == own);
      }
    }
  }
  const NamedTensors state = net.state_dict();
  REQUIRE(find(state, "branches.2.weight").shape() == Shape{4, 512, 1, 1, 1});
  REQUIRE(find(state, "branches.0.bias").shape() == Shape{2});
  REQUIRE_THROWS_WITH(net.forward(x, 3), Catch::Contains("domain 3 out of range"));
  REQUIRE_THROWS_WITH(Med3DNet(context, 10, {}), Catch::Contains("at least one domain"));
  REQUIRE_THROWS_WITH(Med3DNet(context, 10, {2, 0}), Catch::Contains("domain 1 has 0 classes"));
}

TEST_CASE("heads: a Med3D training step on domain j changes only branch j and the encoder", "[models][heads]") {
  Context context(Device::cpu(), 9);
  Med3DNet net(context, 10, {2, 3, 2});
  Sgd sgd(net.param_groups({}, 0.1, 1e-4), SgdOptions{.momentum = 0.9, .weight_decay = 1e-4});
  std::vector<std::pair<std::string, std::vector<float>>> before;
  for (const auto& [name, p] : net.named_parameters()) before.emplace_back(name, p.to_vector<float>());
  sgd.zero_grad();
  backward(mean(net.forward(context.randn({1, 1, 16, 16, 16}), 1)));
  sgd.step();
  const NamedTensors after = net.named_parameters();
  for (std::size_t i = 0; i < after.size(); ++i) {
    const std::string& name = after[i].first;
    INFO(name);
    const bool other_branch = name.rfind("branches.", 0) == 0 && name.rfind("branches.1.", 0) != 0;
    REQUIRE((after[i].second.to_vector<float>() == before[i].second) == other_branch);
  }
}

TEST_CASE("heads: output shapes of the segmentation heads", "[models][heads]") {
  Context context(Device::cpu(), 6);
  NoGrad no_grad(context);
  Tensor x = context.randn({1, 1, 16, 24, 16});
  SECTION("MedicalNet conv_seg: 1/4 of the input") {
    MedicalNetSegmentation net(context, 10, 3);
    REQUIRE(net.forward(x).shape() == Shape{1, 3, 4, 6, 4});
  }
  SECTION("coarse liver net: 2 classes at the input size, also for sizes not divisible by 8") {
    CoarseLiverNet net(context, 10);
    REQUIRE(find(net.state_dict(), "conv_seg.weight").shape() == Shape{2, 512, 1, 1, 1});
    REQUIRE(net.forward(x).shape() == Shape{1, 2, 16, 24, 16});
    REQUIRE(net.forward(context.randn({2, 1, 13, 17, 11})).shape() == Shape{2, 2, 13, 17, 11});
  }
  SECTION("lung decoder: three x2 groups back to the input size, widths 256/128/64 times the expansion") {
    LungSegmentationNet net(context, 10, 3);
    const NamedTensors state = net.state_dict();
    REQUIRE(find(state, "decoder.groups.0.up.weight").shape() == Shape{512, 256, 3, 3, 3});
    REQUIRE(find(state, "decoder.groups.1.conv.weight").shape() == Shape{128, 128, 3, 3, 3});
    REQUIRE(find(state, "decoder.groups.2.conv_bn.running_var").shape() == Shape{64});
    REQUIRE(find(state, "decoder.classifier.weight").shape() == Shape{3, 64, 1, 1, 1});
    REQUIRE(net.forward(x).shape() == Shape{1, 3, 16, 24, 16});
    LungDecoder bottleneck(context, 2048, 2);
    REQUIRE(bottleneck.groups->size() == 3);
    REQUIRE((*bottleneck.groups)[0].up->weight.shape() == Shape{2048, 1024, 3, 3, 3});
    REQUIRE((*bottleneck.groups)[2].conv->weight.shape() == Shape{256, 256, 3, 3, 3});
    REQUIRE_THROWS_WITH(LungDecoder(context, 100, 2), Catch::Contains("multiple of 512"));
  }
  SECTION("DenseASPP-3D: input size; d0 128, d1 64 on a 512-channel encoder") {
    DenseAspp3d net(context, 10, 4);
    REQUIRE(net.options.d0 == 128);
    REQUIRE(net.aspp->size() == 5);
    const NamedTensors state = net.state_dict();
    REQUIRE(find(state, "aspp.0.conv1.weight").shape() == Shape{128, 512, 1, 1, 1});
    REQUIRE(find(state, "aspp.4.bn1.weight").shape() == Shape{512 + 4 * 64});
    REQUIRE(find(state, "aspp.4.conv2.weight").shape() == Shape{64, 128, 3, 3, 3});
    REQUIRE((*net.aspp)[3].conv2->options.dilation == std::array<int64_t, 3>{18, 18, 18});
    REQUIRE((*net.aspp)[3].conv2->options.padding == std::array<int64_t, 3>{18, 18, 18});
    REQUIRE(find(state, "classifier.weight").shape() == Shape{4, 512 + 5 * 64, 1, 1, 1});
    net.eval();
    REQUIRE(net.forward(x).shape() == Shape{1, 4, 16, 24, 16});
  }
}

TEST_CASE("heads: DenseASPP-3D defaults d0 = 512 on 2048-channel encoders", "[models][heads]") {
  Context context;
  DenseAspp3d net(context, 50, 2);
  REQUIRE(net.options.d0 == 512);
  REQUIRE((*net.aspp)[0].conv1->weight.shape() == Shape{512, 2048, 1, 1, 1});
  REQUIRE(net.classifier->weight.shape() == Shape{2, 2048 + 5 * 256, 1, 1, 1});
}

TEST_CASE("heads: DenseASPP-3D dropout is seeded, active only in training, off at p = 0", "[models][heads]") {
  Context context(Device::cpu(), 7);
  Tensor x = context.randn({2, 1, 8, 8, 8});
  NoGrad no_grad(context);
  DenseAspp3d net(context, 10, 2, DenseAspp3dOptions{.d0 = 16});
  net.eval();
  REQUIRE(test::relative_error(net.forward(x), net.forward(x)) == 0);
  net.train();
  // Training-mode outputs depend only on batch statistics and the dropout masks.
  REQUIRE(test::relative_error(net.forward(x), net.forward(x)) > 1e-3);
  context.manual_seed(11);
  Tensor a = net.forward(x);
  context.manual_seed(11);
  REQUIRE(test::relative_error(net.forward(x), a) == 0);
  net.options.dropout = 0;
  for (std::size_t i = 0; i < net.aspp->size(); ++i) (*net.aspp)[i].dropout_p = 0;
  REQUIRE(test::relative_error(net.forward(x), net.forward(x)) == 0);
  REQUIRE_THROWS_WITH(DenseAspp3d(context, 10, 2, DenseAspp3dOptions{.dropout = 1.0}), Catch::Contains("[0, 1)"));
  REQUIRE_THROWS_WITH(DenseAspp3d(context, 10, 2, DenseAspp3dOptions{.d0 = 7}), Catch::Contains("even"));
}

TEST_CASE("heads: classifier gives logits [N, K] after global average pooling", "[models][heads]") {
  Context context(Device::cpu(), 8);
  ResNetClassifier net(context, 10, 3);
  REQUIRE(net.fc->weight.shape() == Shape{3, 512});
  REQUIRE(find(net.state_dict(), "fc.bias").shape() == Shape{3});
  Tensor logits = net.forward(context.randn({2, 1, 16, 16, 24}));
  REQUIRE(logits.shape() == Shape{2, 3});
  backward(mean(logits));
  REQUIRE(net.fc->weight.grad().defined());
  REQUIRE(net.encoder->conv1->weight.grad().defined());
  REQUIRE_THROWS_WITH(ResNetClassifier(context, 10, 0), Catch::Contains("at least 1"));
}
