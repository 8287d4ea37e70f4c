// 3D U-Net: parameter count against the PyTorch definition, shapes, forward/backward, errors.
#include <cmath>

#include "med3d/models/unet3d.h"
#include "test_util.h"

using namespace med3d;

TEST_CASE("unet3d: parameter and state counts equal the PyTorch definition", "[unet3d]") {
  // From `/usr/bin/python3 tests/golden/gen_weights.py --counts` (PyTorch 1.13, class UNet3d
  // there mirrors models/unet3d.cpp): trainable parameters, floating state.
  Context context;
  UNet3d a(context, 1, 2);
  REQUIRE(a.count_parameters() == 19071394);
  REQUIRE(a.count_state() == 19076066);
  UNet3d b(context, 4, 3);
  REQUIRE(b.count_parameters() == 19074051);
  REQUIRE(b.count_state() == 19078723);
}

TEST_CASE("unet3d: encoder 32/64, 128, 256, 512 and decoder shapes, keys", "[unet3d]") {
  Context context(Device::cpu(), 41);
  UNet3d net(context, 1, 3);
  auto find = [&](const std::string& name) {
    for (const auto& [key, tensor] : net.state_dict())
      if (key == name) return tensor;
    FAIL("missing key " << name);
    return Tensor();
  };
  REQUIRE(find("enc1.conv1.weight").shape() == Shape{32, 1, 3, 3, 3});
  REQUIRE(find("enc1.conv2.weight").shape() == Shape{64, 32, 3, 3, 3});
  REQUIRE(find("enc4.conv2.weight").shape() == Shape{512, 256, 3, 3, 3});
  REQUIRE(find("up3.weight").shape() == Shape{512, 512, 2, 2, 2});
  REQUIRE(find("dec3.conv1.weight").shape() == Shape{256, 768, 3, 3, 3});
  REQUIRE(find("dec1.conv1.weight").shape() == Shape{64, 192, 3, 3, 3});
  REQUIRE(find("head.weight").shape() == Shape{3, 64, 1, 1, 1});

  Tensor x = context.randn({2, 1, 16, 8, 24});
  UNet3dFeatures f = net.encode(x);
  REQUIRE(f.enc1.shape() == Shape{2, 64, 16, 8, 24});
  REQUIRE(f.enc2.shape() == Shape{2, 128, 8, 4, 12});
  REQUIRE(f.enc3.shape() == Shape{2, 256, 4, 2, 6});
  REQUIRE(f.enc4.shape() == Shape{2, 512, 2, 1, 3});
  REQUIRE(net.decode(f).shape() == Shape{2, 3, 16, 8, 24});
}

TEST_CASE("unet3d: one forward/backward gives finite outputs and every gradient", "[unet3d]") {
  Context context(Device::cpu(), 42);
  UNet3d net(context, 1, 2);
  Tensor y = net.forward(context.randn({1, 1, 16, 16, 16}));
  REQUIRE(y.shape() == Shape{1, 2, 16, 16, 16});
  for (float v : y.to_vector<float>()) REQUIRE(std::isfinite(v));
  backward(sum(mul(y, context.randn(y.shape()))));
  for (const auto& [name, p] : net.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
    double total = 0;
    for (float g : p.grad().to_vector<float>()) {
      if (!std::isfinite(g)) FAIL("non-finite gradient");
      total += std::abs(g);
    }
    REQUIRE(total > 0);
  }
}

TEST_CASE("unet3d: clear errors", "[unet3d]") {
  Context context;
  UNet3d net(context, 1, 2);
  REQUIRE_THROWS_WITH(net.forward(context.randn({1, 1, 12, 16, 16})), Catch::Contains("multiples of 8"));
  REQUIRE_THROWS_WITH(net.forward(context.randn({1, 16, 16, 16})), Catch::Contains("[N, C, D, H, W]"));
  REQUIRE_THROWS_WITH(UNet3d(context, 0, 2), Catch::Contains("must be positive"));
}
