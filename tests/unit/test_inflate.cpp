// 2D-to-3D inflation: exact tap values per mode, the PyTorch conv2d equivalence on a volume
// constant along depth, the 3 -> 1 channel stem, and a whole torchvision-style ResNet-18 dict.
#include <unistd.h>

#include <filesystem>

#include "med3d/models/inflate.h"
#include "med3d/models/resnet3d.h"
#include "test_util.h"

using namespace med3d;
namespace fs = std::filesystem;

namespace {

// Slice t of a 3D weight [O, I, T, kH, kW] as [O, I, kH, kW] values.
std::vector<double> tap(const Tensor& w3d, int64_t t) {
  const std::vector<double> v = w3d.to_vector<double>();
  const int64_t outer = w3d.dim(0) * w3d.dim(1), depth = w3d.dim(2), plane = w3d.dim(3) * w3d.dim(4);
  std::vector<double> out;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t p = 0; p < plane; ++p) out.push_back(v[static_cast<std::size_t>((o * depth + t) * plane + p)]);
  return out;
}

std::vector<double> scaled(const Tensor& w, double s) {
  std::vector<double> v = w.to_vector<double>();
  for (double& x : v) x *= s;
  return v;
}

void require_values(const std::vector<double>& actual, const std::vector<double>& expected, double tol = 0) {
  REQUIRE(actual.size() == expected.size());
  for (std::size_t i = 0; i < actual.size(); ++i)
    if (std::abs(actual[i] - expected[i]) > tol) FAIL("element " << i << ": " << actual[i] << " vs " << expected[i]);
}

// [N, C, H, W] -> [N, C, depth, H, W] with the image on every slice.
Tensor stack_depth(const Tensor& image, int64_t depth) {
  const std::vector<float> v = image.to_vector<float>();
  const int64_t nc = image.dim(0) * image.dim(1), plane = image.dim(2) * image.dim(3);
  std::vector<float> out;
  for (int64_t i = 0; i < nc; ++i)
    for (int64_t d = 0; d < depth; ++d)
      out.insert(out.end(), v.begin() + i * plane, v.begin() + (i + 1) * plane);
  return image.context().from_vector(Shape{image.dim(0), image.dim(1), depth, image.dim(2), image.dim(3)}, out);
}

// [N, C, D, H, W] -> slice d as [N, C, H, W].
Tensor depth_slice(const Tensor& volume, int64_t d) {
  const std::vector<float> v = volume.to_vector<float>();
  const int64_t nc = volume.dim(0) * volume.dim(1), depth = volume.dim(2), plane = volume.dim(3) * volume.dim(4);
  std::vector<float> out;
  for (int64_t i = 0; i < nc; ++i)
    out.insert(out.end(), v.begin() + (i * depth + d) * plane, v.begin() + (i * depth + d + 1) * plane);
  return volume.context().from_vector(Shape{volume.dim(0), volume.dim(1), volume.dim(3), volume.dim(4)}, out);
}

}  // namespace

TEST_CASE("inflate: exact taps for center, average and alphas", "[inflate]") {
  Context context(Device::cpu(), 21);
  const Tensor w = context.randn({2, 3, 3, 3}, DType::f64);
  const std::vector<double> zero(static_cast<std::size_t>(w.numel()), 0.0);

  Tensor center = inflate_conv_weight(w, 3, InflateMode::Center);
  REQUIRE(center.shape() == Shape{2, 3, 3, 3, 3});
  require_values(tap(center, 0), zero);
  require_values(tap(center, 1), w.to_vector<double>());
  require_values(tap(center, 2), zero);

  Tensor average = inflate_conv_weight(w, 5, InflateMode::Average);
  for (int64_t t = 0; t < 5; ++t) require_values(tap(average, t), scaled(w, 1.0 / 5));

  Tensor alphas3 = inflate_conv_weight(w, 3, InflateMode::Alphas);
  require_values(tap(alphas3, 0), scaled(w, 0.25));
  require_values(tap(alphas3, 1), scaled(w, 0.5));
  require_values(tap(alphas3, 2), scaled(w, 0.25));

  const std::vector<double> a7 = {0.05, 0.1, 0.2, 0.3, 0.2, 0.1, 0.05};
  REQUIRE(default_inflation_alphas(7) == a7);
  double total = 0;
  for (double a : a7) total += a;
  REQUIRE(total == Approx(1.0).margin(1e-15));
  Tensor alphas7 = inflate_conv_weight(w, 7, InflateMode::Alphas);
  for (int64_t t = 0; t < 7; ++t) require_values(tap(alphas7, t), scaled(w, a7[static_cast<std::size_t>(t)]));

  Tensor custom = inflate_conv_weight(w, 2, InflateMode::Alphas, {0.75, 0.25});
  require_values(tap(custom, 0), scaled(w, 0.75));
  require_values(tap(custom, 1), scaled(w, 0.25));

  // The dtype follows the 2D weight.
  REQUIRE(inflate_conv_weight(w.to(DType::f32), 3, InflateMode::Average).dtype() == DType::f32);
}

TEST_CASE("inflate: clear errors", "[inflate]") {
  Context context;
  const Tensor w = context.randn({2, 3, 3, 3});
  REQUIRE_THROWS_WITH(inflate_conv_weight(w, 5, InflateMode::Alphas), Catch::Contains("no default alphas for kernel depth 5"));
  REQUIRE_THROWS_WITH(inflate_conv_weight(w, 3, InflateMode::Alphas, {0.5, 0.5}), Catch::Contains("2 alphas for kernel depth 3"));
  REQUIRE_THROWS_WITH(inflate_conv_weight(context.randn({2, 3, 3}), 3, InflateMode::Average), Catch::Contains("[O, I, kH, kW]"));
  REQUIRE_THROWS_WITH(inflate_conv_weight(w, 0, InflateMode::Center), Catch::Contains("depth must be >= 1"));
  ResNet3d model(context, 10);
  REQUIRE_THROWS_WITH(inflate_into(model, "/nonexistent/resnet18_2d.safetensors", InflateMode::Average),
                      Catch::Contains("inflate_into: cannot read 2D checkpoint"));
}

TEST_CASE("inflate: a volume constant along depth gives PyTorch's conv2d output", "[inflate]") {
  // Golden: F.conv2d(image, w2d, bias, padding=1) (gen_weights.py). The inflated conv sees the
  // image stacked 5 times with no depth padding, so every output slice covers T real slices.
  Context context;
  const Checkpoint golden = test::load_golden(context, "weights_inflate");
  const Tensor volume = stack_depth(golden.at("image"), 5);
  for (InflateMode mode : {InflateMode::Average, InflateMode::Alphas}) {
    const Tensor w3d = inflate_conv_weight(golden.at("w2d"), 3, mode);
    Conv3dOptions options;
    options.padding = {0, 1, 1};
    const Tensor y = conv3d(volume, w3d, golden.at("bias"), options);
    REQUIRE(y.shape() == Shape{1, 4, 3, 9, 11});
    for (int64_t d = 0; d < 3; ++d) test::require_close(depth_slice(y, d), golden.at("y"), test::kGoldenTolerance, "slice");
  }
  // Center inflation on a single slice is the 2D conv too (only the middle tap sees data).
  Conv3dOptions same;
  same.padding = {1, 1, 1};
  const Tensor y1 = conv3d(stack_depth(golden.at("image"), 1), inflate_conv_weight(golden.at("w2d"), 3, InflateMode::Center),
                           golden.at("bias"), same);
  test::require_close(depth_slice(y1, 0), golden.at("y"), test::kGoldenTolerance, "center");
}

TEST_CASE("inflate: the 3-channel stem summed to 1 channel answers a grey image like RGB = grey", "[inflate]") {
  Context context;
  const Checkpoint golden = test::load_golden(context, "weights_inflate");
  const Tensor w = golden.at("w2d");
  const Tensor w1 = sum_input_channels(w);
  REQUIRE(w1.shape() == Shape{4, 1, 3, 3});
  const std::vector<double> v = w.to_vector<double>(), v1 = w1.to_vector<double>();
  for (int64_t o = 0; o < 4; ++o)
    for (int64_t p = 0; p < 9; ++p)
      REQUIRE(v1[static_cast<std::size_t>(o * 9 + p)] ==
              Approx(v[static_cast<std::size_t>((o * 3 + 0) * 9 + p)] + v[static_cast<std::size_t>((o * 3 + 1) * 9 + p)] +
                     v[static_cast<std::size_t>((o * 3 + 2) * 9 + p)]));
  // Grey = the image's first channel, fed as R = G = B to the 3-channel conv and alone to the summed one.
  const std::vector<float> image = golden.at("image").to_vector<float>();
  std::vector<float> grey(image.begin(), image.begin() + 99), rgb;
  for (int c = 0; c < 3; ++c) rgb.insert(rgb.end(), grey.begin(), grey.end());
  Conv3dOptions options;
  options.padding = {0, 1, 1};
  const Tensor y3 = conv3d(context.from_vector(Shape{1, 3, 1, 9, 11}, rgb), w.reshape({4, 3, 1, 3, 3}), {}, options);
  const Tensor y1 = conv3d(context.from_vector(Shape{1, 1, 1, 9, 11}, grey), w1.reshape({4, 1, 1, 3, 3}), {}, options);
  test::require_close(y1, y3, test::kGoldenTolerance, "grey");
}

TEST_CASE("inflate: a torchvision ResNet-18 state dict inflates into ResNet3d(18, B)", "[inflate]") {
  Context context(Device::cpu(), 22);
  ResNet3d model(context, 18, ShortcutType::B);
  // torchvision's resnet18 layout: the 3D model's keys with 2D kernels, an RGB stem, and fc.
  NamedTensors state2d;
  for (const auto& [name, tensor] : model.state_dict()) {
    if (tensor.rank() == 5) {
      const int64_t in = name == "conv1.weight" ? 3 : tensor.dim(1);
      state2d.emplace_back(name, context.randn({tensor.dim(0), in, tensor.dim(3), tensor.dim(4)}));
    } else if (tensor.dtype() == DType::i64) {
      state2d.emplace_back(name, context.full({}, 3, DType::i64));
    } else {
      state2d.emplace_back(name, add_scalar(context.rand(tensor.shape()), 0.5));
    }
  }
  state2d.emplace_back("fc.weight", context.randn({1000, 512}));
  state2d.emplace_back("fc.bias", context.randn({1000}));
  auto get = [](const NamedTensors& state, const std::string& name) {
    for (const auto& [key, tensor] : state)
      if (key == name) return tensor;
    FAIL("missing " << name);
    return Tensor();
  };
  REQUIRE(get(state2d, "conv1.weight").shape() == Shape{64, 3, 7, 7});
  REQUIRE(get(state2d, "layer2.0.downsample.0.weight").shape() == Shape{128, 64, 1, 1});

  const fs::path path = fs::temp_directory_path() / ("med3d_inflate_" + std::to_string(::getpid()) + ".safetensors");
  save_safetensors(path.string(), state2d);
  TransferReport report = inflate_into(model, path.string(), InflateMode::Average);
  fs::remove(path);
  REQUIRE(report.taken.size() == model.state_dict().size());
  REQUIRE(report.left_new.empty());
  REQUIRE(report.skipped == std::vector<std::string>{"fc.bias (not in the model)", "fc.weight (not in the model)"});

  const NamedTensors state3d = model.state_dict();
  const Tensor stem = get(state3d, "conv1.weight");
  REQUIRE(stem.shape() == Shape{64, 1, 7, 7, 7});
  const Tensor summed = sum_input_channels(get(state2d, "conv1.weight"));
  for (int64_t t = 0; t < 7; ++t) require_values(tap(stem, t), scaled(summed, 1.0 / 7), 1e-6);
  const Tensor block = get(state3d, "layer3.1.conv2.weight");
  REQUIRE(block.shape() == Shape{256, 256, 3, 3, 3});
  for (int64_t t = 0; t < 3; ++t) require_values(tap(block, t), scaled(get(state2d, "layer3.1.conv2.weight"), 1.0 / 3), 1e-6);
  REQUIRE(get(state3d, "layer2.0.downsample.0.weight").to_vector<float>() ==
          get(state2d, "layer2.0.downsample.0.weight").to_vector<float>());
  REQUIRE(get(state3d, "layer4.1.bn2.running_var").to_vector<float>() ==
          get(state2d, "layer4.1.bn2.running_var").to_vector<float>());
  REQUIRE(get(state3d, "bn1.num_batches_tracked").data<int64_t>()[0] == 3);
}
