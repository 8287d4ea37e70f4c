// Whole networks against the PyTorch definitions of tests/golden/medicalnet_torch.py
// (fixtures by tests/golden/gen_models.py, which documents the shared generator). Both sides
// build identical weights from a seeded Philox generator; the fixture holds the input, the
// output and, per parameter gradient (and per running statistic after a training step), the
// signature [L2 norm, 4 dot products with fixed pseudo-random vectors]. Everything is compared
// to 1e-4 relative (our f32 against PyTorch's f64), in eval mode and in train mode.
#include <cmath>
#include <string>
#include <vector>

#include "med3d/kernels/philox.h"
#include "med3d/models/classifier.h"
#include "med3d/models/dense_aspp3d.h"
#include "med3d/models/heads.h"
#include "med3d/models/lung_decoder.h"
#include "med3d/models/med3d_net.h"
#include "test_util.h"

using namespace med3d;

namespace {

constexpr uint64_t kWeightSeed = 1234, kInputSeed = 1235, kUpstreamSeed = 1236, kProjectionSeed = 1237;
constexpr double kModelTolerance = 1e-4;
constexpr double kResNet50TrainTolerance = 5e-3;
// The lung decoder in training mode (1x16^3: batch statistics over 8 voxels in layer4) is
// ill-conditioned in f32 too: PyTorch's own f32 gradients differ from its f64 ones by up to
// 3.2e-4 of their norm and 5.1e-3 in their projections (decoder.groups.2.up_bn.bias; conv1.weight
// 6.1e-4). Ours with the Winograd 3x3x3 convs: conv1.weight 1.4e-4 in norm, 2.2e-3 in projections
// (each conv matches the f64 kernels to under 1e-6, test_conv.cpp). In f32 that case compares at
// kLungTrainTolerance; the network converted to f64 meets 1e-4 in everything.
constexpr double kLungTrainTolerance = 1e-2;
constexpr double kZeroGradient = 1e-10, kZeroNoise = 1e-5;

double u(uint64_t seed, uint64_t counter) { return kernels::philox_uniform(seed, 0, counter); }

bool is_floating(const Tensor& t) { return t.dtype() == DType::f32 || t.dtype() == DType::f64; }

// value = center + spread * (u - 0.5); see gen_models.py for the table.
void init_state(Module& net) {
  uint64_t offset = 0;
  for (auto& [name, tensor] : net.state_dict()) {
    if (!is_floating(tensor)) continue;
    const int64_t n = tensor.numel();
    double center = 0, spread = 0.2;
    auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    if (tensor.rank() >= 2) spread = 2 * std::sqrt(6.0 / static_cast<double>(n / tensor.dim(0)));
    else if (ends_with("running_var")) center = 1, spread = 0.5;
    else if (ends_with("running_mean")) center = 0, spread = 0.2;
    else if (ends_with("weight")) center = 1, spread = 0.5;
    std::vector<double> values(static_cast<std::size_t>(n));
    // Rounded to f32 as gen_models.py does, so that an f64 network holds the same weights.
    for (int64_t j = 0; j < n; ++j)
      values[j] = static_cast<float>(center + spread * (u(kWeightSeed, offset + j) - 0.5));
    tensor.copy_from(net.context().from_vector<double>(tensor.shape(), values));
    offset += static_cast<uint64_t>(n);
  }
}

std::vector<double> signature(const Tensor& g) {
  const std::vector<double> v = g.to_vector<double>();
  std::vector<double> s(5, 0.0);
  for (std::size_t j = 0; j < v.size(); ++j) {
    const kernels::Philox4x32 r = kernels::philox4x32_10(j, kProjectionSeed);
    s[0] += v[j] * v[j];
    for (int k = 0; k < 4; ++k) s[1 + k] += v[j] * (static_cast<double>(r.v[k]) * (1.0 / 4294967296.0) - 0.5);
  }
  s[0] = std::sqrt(s[0]);
  return s;
}

void require_signature(const Tensor& actual, const Tensor& expected, const std::string& what,
                       double tolerance = kModelTolerance) {
  INFO(what);
  REQUIRE(actual.defined());
  REQUIRE(expected.numel() == 5);
  const std::vector<double> a = signature(actual), e = expected.to_vector<double>();
  INFO("norm " << a[0] << " vs " << e[0]);
  if (e[0] < kZeroGradient) {
    // Zero in exact arithmetic (a bias before a training-mode BN): PyTorch's f64 leaves ~1e-16,
    // our f32 leaves rounding noise; require that noise to stay small.
    REQUIRE(a[0] < kZeroNoise);
    return;
  }
  REQUIRE(std::abs(a[0] - e[0]) <= tolerance * std::max(e[0], 1e-12));
  double diff = 0, norm = 0;
  for (int k = 1; k < 5; ++k) diff += (a[k] - e[k]) * (a[k] - e[k]), norm += e[k] * e[k];
  INFO("projections " << a[1] << " " << a[2] << " " << a[3] << " " << a[4] << " vs " << e[1] << " " << e[2] << " "
                      << e[3] << " " << e[4]);
  REQUIRE(std::sqrt(diff) <= tolerance * std::max(std::sqrt(norm), 1e-12));
}

template <class Forward>
void check_golden(Module& net, const std::string& name, bool train, Forward forward,
                  double tolerance = kModelTolerance, bool compare_gradients = true) {
  INFO("fixture model_" << name << (train ? "_train" : "_eval"));
  Context context = net.context();
  const Checkpoint golden = test::load_golden(context, "model_" + name + (train ? "_train" : "_eval"));

  // The numpy Philox of the generator script equals ours.
  const std::vector<int64_t> counters = golden.at("gen.counters").to_vector<int64_t>();
  const std::vector<double> expected_u = golden.at("gen.u").to_vector<double>();
  for (std::size_t i = 0; i < counters.size(); ++i)
    REQUIRE(u(kWeightSeed, static_cast<uint64_t>(counters[i])) == expected_u[i]);
  const std::vector<float> xs = golden.at("x").to_vector<float>();
  for (std::size_t j = 0; j < xs.size(); ++j)
    REQUIRE(xs[j] == static_cast<float>(2 * (u(kInputSeed, j) - 0.5)));
  const Tensor x = golden.at("x").to(net.named_parameters().front().second.dtype());

  init_state(net);
  net.train(train);
  for (auto& [key, p] : net.named_parameters()) p.zero_grad();
  Tensor y = forward(x);
  test::require_close(y, golden.at("y"), tolerance, "output");
  std::vector<double> w(static_cast<std::size_t>(y.numel()));
  for (std::size_t j = 0; j < w.size(); ++j) w[j] = u(kUpstreamSeed, j) - 0.5;
  backward(y, context.from_vector<double>(y.shape(), w).to(y.dtype()));

  // Same parameters, same names, same order as PyTorch's named_parameters(); "nograd." marks
  // the ones no gradient reached (Med3D's other branches).
  std::vector<std::pair<std::string, bool>> golden_params;  // name, has a gradient
  for (const auto& [key, t] : golden.tensors) {
    if (key.rfind("grad.", 0) == 0) golden_params.emplace_back(key.substr(5), true);
    if (key.rfind("nograd.", 0) == 0) golden_params.emplace_back(key.substr(7), false);
  }
  const NamedTensors params = net.named_parameters();
  REQUIRE(golden_params.size() == params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    INFO("parameter " << params[i].first);
    REQUIRE(params[i].first == golden_params[i].first);
    REQUIRE(params[i].second.grad().defined() == golden_params[i].second);
    if (golden_params[i].second && compare_gradients)
      require_signature(params[i].second.grad(), golden.at("grad." + params[i].first), "grad of " + params[i].first,
                        tolerance);
  }
  if (train) {
    for (const auto& [key, buffer] : net.named_buffers())
      if (is_floating(buffer)) require_signature(buffer, golden.at("state." + key), "running statistic " + key, tolerance);
  }
}

}  // namespace

TEST_CASE("model golden: MedicalNet segmentation on ResNet-10-B", "[models][golden]") {
  Context context;
  MedicalNetSegmentation net(context, 10, 2, ShortcutType::B);
  for (bool train : {false, true}) check_golden(net, "seg_resnet10b", train, [&](const Tensor& x) { return net.forward(x); });
}

TEST_CASE("model golden: MedicalNet segmentation on ResNet-18-A", "[models][golden]") {
  Context context;
  MedicalNetSegmentation net(context, 18, 2, ShortcutType::A);
  for (bool train : {false, true}) check_golden(net, "seg_resnet18a", train, [&](const Tensor& x) { return net.forward(x); });
}

TEST_CASE("model golden: MedicalNet segmentation on ResNet-50-B", "[models][golden]") {
  Context context;
  MedicalNetSegmentation net(context, 50, 2, ShortcutType::B);
  check_golden(net, "seg_resnet50b", false, [&](const Tensor& x) { return net.forward(x); });
  // Training mode here is ill-conditioned in f32 (batch statistics over 8 voxels of 1x16^3
  // through 50 layers; the weight gradients reach 8e4): PyTorch's own f32 run differs from its
  // f64 one by 1.4e-3 in the output and by up to 14% (median 9%) in the gradients, so no f32
  // implementation can meet 1e-4 against f64 here. In f32 this case compares the output and the
  // running statistics at kResNet50TrainTolerance and which parameters receive gradients.
  check_golden(net, "seg_resnet50b", true, [&](const Tensor& x) { return net.forward(x); }, kResNet50TrainTolerance,
               /*compare_gradients=*/false);
  // The same network converted to f64 (as the fixture was computed) meets 1e-4 in everything,
  // every parameter gradient included.
  net.to(DType::f64);
  check_golden(net, "seg_resnet50b", true, [&](const Tensor& x) { return net.forward(x); });
}

TEST_CASE("model golden: Med3D with 3 branches (domain 1) on ResNet-10-B", "[models][golden]") {
  Context context;
  Med3DNet net(context, 10, {2, 3, 4}, ShortcutType::B);
  for (bool train : {false, true})
    check_golden(net, "med3d_resnet10b", train, [&](const Tensor& x) { return net.forward(x, 1); });
}

TEST_CASE("model golden: lung segmentation decoder on ResNet-10-B", "[models][golden]") {
  Context context;
  LungSegmentationNet net(context, 10, 2, ShortcutType::B);
  check_golden(net, "lung_resnet10b", false, [&](const Tensor& x) { return net.forward(x); });
  check_golden(net, "lung_resnet10b", true, [&](const Tensor& x) { return net.forward(x); }, kLungTrainTolerance);
  net.to(DType::f64);
  check_golden(net, "lung_resnet10b", true, [&](const Tensor& x) { return net.forward(x); });
}

TEST_CASE("model golden: classifier on ResNet-10-B", "[models][golden]") {
  Context context;
  ResNetClassifier net(context, 10, 3, ShortcutType::B);
  for (bool train : {false, true})
    check_golden(net, "classifier_resnet10b", train, [&](const Tensor& x) { return net.forward(x); });
}

TEST_CASE("model golden: DenseASPP-3D on ResNet-10-B", "[models][golden]") {
  Context context;
  {
    DenseAspp3d net(context, 10, 2, DenseAspp3dOptions{}, ShortcutType::B);  // dropout 0.1: inactive in eval
    check_golden(net, "dense_aspp_resnet10b", false, [&](const Tensor& x) { return net.forward(x); });
  }
  DenseAspp3d net(context, 10, 2, DenseAspp3dOptions{.dropout = 0}, ShortcutType::B);
  check_golden(net, "dense_aspp_resnet10b", true, [&](const Tensor& x) { return net.forward(x); });
}
