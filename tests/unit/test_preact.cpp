// Pre-activation ResNet-3D and the deep Med3D encoders (101/152/200): exact parameter
// counts, block structure, and one forward/backward on a small volume.
#include <cmath>

#include "med3d/models/preact_resnet3d.h"
#include "test_util.h"

using namespace med3d;

namespace {

// sum(y * w) for a random w, so no gradient is degenerate; then every parameter's gradient
// must be defined and finite, and the stem's nonzero.
template <class Net>
void forward_backward(Context& context, Net& net, const Shape& expected) {
  Tensor x = context.randn({1, 1, 16, 16, 16});
  Tensor y = net.forward(x);
  REQUIRE(y.shape() == expected);
  for (float v : y.template to_vector<float>()) REQUIRE(std::isfinite(v));
  backward(sum(mul(y, context.randn(y.shape()))));
  for (const auto& [name, p] : net.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
    for (float g : p.grad().template to_vector<float>())
      if (!std::isfinite(g)) FAIL("non-finite gradient");
  }
  double stem = 0;
  for (float g : net.conv1->weight.grad().template to_vector<float>()) stem += std::abs(g);
  REQUIRE(stem > 0);
}

}  // namespace

TEST_CASE("preact: PreAct-200 builds with PyTorch's exact counts and runs one forward/backward", "[preact]") {
  // Counts from `/usr/bin/python3 tests/golden/gen_weights.py --counts` (PyTorch 1.13; the
  // PreActResNet3d class there mirrors models/preact_resnet3d.cpp): trainable parameters and
  // floating state (parameters + BN running statistics). That command also prints
  // PreAct-101: 85193664 / 85291456 and PreAct-152: 117352384 / 117496256 (not rebuilt here
  // to keep the suite fast; 50 and 200 share every code path with them).
  Context context(Device::cpu(), 31);
  PreActResNet3d net(context, 200);
  REQUIRE(net.count_parameters() == 126552000);
  REQUIRE(net.count_state() == 126720448);

  REQUIRE(net.layer1->size() == 3);
  REQUIRE(net.layer2->size() == 24);
  REQUIRE(net.layer3->size() == 36);
  REQUIRE(net.layer4->size() == 3);
  auto find = [&](const std::string& name) {
    for (const auto& [key, tensor] : net.state_dict())
      if (key == name) return tensor;
    FAIL("missing key " << name);
    return Tensor();
  };
  // bn1 of a block normalises its INPUT (pre-activation): 64 channels entering layer1.0.
  REQUIRE(find("layer1.0.bn1.weight").shape() == Shape{64});
  REQUIRE(find("layer1.0.downsample.weight").shape() == Shape{256, 64, 1, 1, 1});
  REQUIRE(find("layer2.0.downsample.weight").shape() == Shape{512, 256, 1, 1, 1});
  REQUIRE(find("layer2.1.bn1.weight").shape() == Shape{512});
  REQUIRE(find("layer4.2.conv3.weight").shape() == Shape{2048, 512, 1, 1, 1});
  REQUIRE(find("final_bn.running_mean").shape() == Shape{2048});
  REQUIRE(dynamic_cast<const PreActBottleneck&>((*net.layer2)[1]).downsample == nullptr);
  REQUIRE(dynamic_cast<const PreActBottleneck&>((*net.layer3)[0]).conv2->options.dilation ==
          std::array<int64_t, 3>{2, 2, 2});

  forward_backward(context, net, Shape{1, 2048, 2, 2, 2});
}

TEST_CASE("preact: PreAct-50 counts and bad depths", "[preact]") {
  Context context;
  PreActResNet3d net(context, 50);
  REQUIRE(net.count_parameters() == 46147520);
  REQUIRE(net.count_state() == 46193088);
  REQUIRE_THROWS_WITH(PreActResNet3d(context, 34), Catch::Contains("not one of 50, 101, 152, 200"));
}

TEST_CASE("preact: ResNet-101, 152 and 200 run one forward/backward on 16^3", "[preact]") {
  Context context(Device::cpu(), 32);
  for (int depth : {101, 152, 200}) {
    INFO("ResNet3d(" << depth << ")");
    ResNet3d net(context, depth);
    forward_backward(context, net, Shape{1, 2048, 2, 2, 2});
  }
}
