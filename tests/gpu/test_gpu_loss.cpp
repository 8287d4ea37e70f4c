// The softmax family and the losses on CUDA against their CPU twins: every option, odd shapes,
// ignored voxels, all label dtypes, the all-ignored edge case, invalid labels and determinism.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gpu_compare.h"

using namespace med3d;
using gpu_test::compare_with_cpu;

namespace {

// Labels [shape] cycling through a scrambled pattern of [0, classes); every `ignore_every`-th
// position (0: none) holds `ignore_index` instead.
template <class L>
Tensor make_labels(const Context& context, const Shape& shape, int64_t classes,
                   int64_t ignore_every = 0, int64_t ignore_index = -100) {
  std::vector<L> values(static_cast<std::size_t>(shape.numel()));
  for (std::size_t i = 0; i < values.size(); ++i) {
    const int64_t k = static_cast<int64_t>(i);
    values[i] = ignore_every && k % ignore_every == 3 ? static_cast<L>(ignore_index)
                                                      : static_cast<L>((k * 7 + k / 5) % classes);
  }
  return context.from_vector<L>(shape, values);
}

// `cpu` on the CPU inputs, `cpu` moved to cuda:0 on the device ones (constants of an op such as
// class_weights are not inputs, so compare_with_cpu would expect gradients for them).
Tensor on_device_of(const Tensor& like, const Tensor& cpu) {
  return like.device().is_cuda() ? cpu.to(Device::cuda(0)) : cpu;
}

}  // namespace

TEST_CASE("gpu: softmax log_softmax and argmax match the CPU", "[gpu]") {
  Context cpu(Device::cpu(), 11);
  for (const Shape& shape : {Shape({2, 3, 5, 7, 6}), Shape({2, 5, 5, 7, 6}), Shape({3, 5}),
                             Shape({2, 1, 4, 3}), Shape({1, 4, 9})}) {
    INFO("shape " << shape.str());
    const Tensor x = cpu.randn(shape);
    compare_with_cpu("softmax", {x}, [](const auto& in) { return softmax(in[0]); });
    compare_with_cpu("log_softmax", {x}, [](const auto& in) { return log_softmax(in[0]); });
    const Tensor index = argmax(x.to(Device::cuda(0)));
    CHECK(index.device() == Device::cuda(0));
    CHECK(index.dtype() == DType::i32);
    CHECK(index.to(Device::cpu()).to_vector<int32_t>() == argmax(x).to_vector<int32_t>());
  }
  // Large logits: the max shift keeps exp finite.
  const Tensor big = cpu.randn({2, 5, 5, 7, 6});
  compare_with_cpu("softmax large", {big}, [](const auto& in) { return softmax(mul_scalar(in[0], 80.0)); });
  compare_with_cpu("log_softmax large", {big},
                   [](const auto& in) { return log_softmax(mul_scalar(in[0], 80.0)); });
  // Ties: the first maximum wins on both devices.
  const Tensor ties = cpu.from_vector<float>({1, 3, 2}, {1, 5, 2, 2, 2, 5});
  CHECK(argmax(ties.to(Device::cuda(0))).to(Device::cpu()).to_vector<int32_t>() ==
        std::vector<int32_t>{1, 0});
}

TEST_CASE("gpu: cross_entropy matches the CPU for every option", "[gpu]") {
  Context cpu(Device::cpu(), 12);
  const Tensor x3 = cpu.randn({2, 3, 5, 7, 6}), x5 = cpu.randn({2, 5, 5, 7, 6});
  const Tensor labels3 = make_labels<int64_t>(cpu, {2, 5, 7, 6}, 3);
  const Tensor labels5 = make_labels<int64_t>(cpu, {2, 5, 7, 6}, 5);
  compare_with_cpu("cross_entropy", {x3, labels3},
                   [](const auto& in) { return cross_entropy(in[0], in[1]); });
  compare_with_cpu("cross_entropy C=5", {x5, labels5},
                   [](const auto& in) { return cross_entropy(in[0], in[1]); });
  // Ignored voxels with the default and a custom ignore_index, in every label dtype.
  const Tensor ignored_default = make_labels<int64_t>(cpu, {2, 5, 7, 6}, 5, 4);
  compare_with_cpu("cross_entropy ignore -100", {x5, ignored_default},
                   [](const auto& in) { return cross_entropy(in[0], in[1]); });
  const Tensor ignored_i32 = make_labels<int32_t>(cpu, {2, 5, 7, 6}, 5, 3, 255);
  compare_with_cpu("cross_entropy ignore 255 i32", {x5, ignored_i32}, [](const auto& in) {
    return cross_entropy(in[0], in[1], {.ignore_index = 255});
  });
  const Tensor ignored_u8 = make_labels<uint8_t>(cpu, {2, 5, 7, 6}, 3, 5, 255);
  compare_with_cpu("cross_entropy ignore 255 u8", {x3, ignored_u8}, [](const auto& in) {
    return cross_entropy(in[0], in[1], {.ignore_index = 255});
  });
  // A class index as ignore_index: that class never contributes.
  compare_with_cpu("cross_entropy ignore class 1", {x3, labels3}, [](const auto& in) {
    return cross_entropy(in[0], in[1], {.ignore_index = 1});
  });
  // Class weights, with ignored voxels.
  const Tensor weights = cpu.from_vector<float>({5}, {0.5f, 2.0f, 1.0f, 0.25f, 3.0f});
  compare_with_cpu("cross_entropy class_weights", {x5, ignored_default}, [&](const auto& in) {
    return cross_entropy(in[0], in[1], {.class_weights = on_device_of(in[0], weights)});
  });
  // Rank 2: [N, C] logits and [N] labels.
  const Tensor x2 = cpu.randn({7, 5});
  compare_with_cpu("cross_entropy rank 2", {x2, make_labels<int64_t>(cpu, {7}, 5, 4)},
                   [](const auto& in) { return cross_entropy(in[0], in[1]); });
}

TEST_CASE("gpu: cross_entropy with every voxel ignored is NaN with a zero gradient", "[gpu]") {
  Context cpu(Device::cpu(), 13);
  Tensor x = cpu.randn({2, 3, 5, 7, 6}).to(Device::cuda(0));
  x.set_requires_grad(true);
  const Tensor labels = cpu.full({2, 5, 7, 6}, -100, DType::i64).to(Device::cuda(0));
  const Tensor loss = cross_entropy(x, labels);
  CHECK(loss.device() == Device::cuda(0));
  CHECK(std::isnan(loss.to(Device::cpu()).item<double>()));
  backward(loss);
  const std::vector<float> dx = x.grad().to(Device::cpu()).to_vector<float>();
  CHECK(std::all_of(dx.begin(), dx.end(), [](float v) { return v == 0.0f; }));
}

TEST_CASE("gpu: labels outside the classes throw as on the CPU", "[gpu]") {
  Context cpu(Device::cpu(), 14);
  const Tensor x = cpu.randn({2, 3, 5, 7, 6});
  std::vector<int64_t> values(2 * 5 * 7 * 6, 1);
  values[100] = 7;
  values[200] = -2;
  const Tensor labels = cpu.from_vector<int64_t>({2, 5, 7, 6}, values);
  const std::string message = "label 7 at position [0, 2, 2, 4] of labels [2, 5, 7, 6] is outside [0, 3)";
  CHECK_THROWS_WITH(cross_entropy(x, labels), Catch::Contains(message));
  CHECK_THROWS_WITH(cross_entropy(x.to(Device::cuda(0)), labels.to(Device::cuda(0))),
                    Catch::Contains(message));
  CHECK_THROWS_WITH(soft_dice_loss(x.to(Device::cuda(0)), labels.to(DType::u8).to(Device::cuda(0))),
                    Catch::Contains("is outside [0, 3)"));
  CHECK_THROWS_WITH(cross_entropy(x.to(Device::cuda(0)), labels),
                    Catch::Contains("move both to one device"));
}

TEST_CASE("gpu: soft_dice_loss matches the CPU for every option", "[gpu]") {
  Context cpu(Device::cpu(), 15);
  const Tensor x3 = cpu.randn({2, 3, 5, 7, 6}), x5 = cpu.randn({2, 5, 5, 7, 6});
  const Tensor labels3 = make_labels<uint8_t>(cpu, {2, 5, 7, 6}, 3);
  const Tensor labels5 = make_labels<int32_t>(cpu, {2, 5, 7, 6}, 5);
  for (const double smooth : {0.0, 1e-5, 1.0}) {
    for (const bool background : {true, false}) {
      INFO("smooth " << smooth << " include_background " << background);
      const SoftDiceOptions options{.smooth = smooth, .include_background = background};
      compare_with_cpu("soft_dice_loss C=3", {x3, labels3},
                       [&](const auto& in) { return soft_dice_loss(in[0], in[1], options); });
      compare_with_cpu("soft_dice_loss C=5", {x5, labels5},
                       [&](const auto& in) { return soft_dice_loss(in[0], in[1], options); });
    }
  }
  // A class absent from the labels (G = 0 for class 4) and rank 2.
  compare_with_cpu("soft_dice_loss absent class", {x5, labels3},
                   [](const auto& in) { return soft_dice_loss(in[0], in[1]); });
  compare_with_cpu("soft_dice_loss rank 2", {cpu.randn({7, 3}), make_labels<int64_t>(cpu, {7}, 3)},
                   [](const auto& in) { return soft_dice_loss(in[0], in[1]); });
}

TEST_CASE("gpu: mse_loss and binary_cross_entropy_with_logits match the CPU", "[gpu]") {
  Context cpu(Device::cpu(), 16);
  for (const Shape& shape : {Shape({2, 3, 5, 7, 6}), Shape({2, 5, 5, 7, 6}), Shape({13})}) {
    INFO("shape " << shape.str());
    const Tensor x = cpu.randn(shape), y = cpu.randn(shape), t = cpu.rand(shape);
    compare_with_cpu("mse_loss", {x, y}, [](const auto& in) { return mse_loss(in[0], in[1]); });
    compare_with_cpu("bce_with_logits", {mul_scalar(x, 4.0), t}, [](const auto& in) {
      return binary_cross_entropy_with_logits(in[0], in[1]);
    });
  }
  const Tensor x = cpu.randn({2, 5, 5, 7, 6}), t = cpu.rand({2, 5, 5, 7, 6});
  const Tensor pos_weight = cpu.from_vector<float>({5}, {0.5f, 2.0f, 1.0f, 4.0f, 0.1f});
  compare_with_cpu("bce_with_logits pos_weight", {mul_scalar(x, 4.0), t}, [&](const auto& in) {
    return binary_cross_entropy_with_logits(in[0], in[1], on_device_of(in[0], pos_weight));
  });
  const Tensor x2 = cpu.randn({7, 5}), t2 = cpu.rand({7, 5});
  compare_with_cpu("bce_with_logits pos_weight rank 2", {x2, t2}, [&](const auto& in) {
    return binary_cross_entropy_with_logits(in[0], in[1], on_device_of(in[0], pos_weight));
  });
}

TEST_CASE("gpu: loss sums over many blocks are deterministic", "[gpu]") {
  // 2 * 40 * 40 * 30 = 96000 positions: more than the 256 blocks of 256 threads cover at once.
  Context cpu(Device::cpu(), 17);
  const Tensor x = cpu.randn({2, 3, 40, 40, 30});
  const Tensor labels = make_labels<int64_t>(cpu, {2, 40, 40, 30}, 3, 6);
  compare_with_cpu("cross_entropy large", {x, labels},
                   [](const auto& in) { return cross_entropy(in[0], in[1]); }, 1e-5);
  const Tensor dice_labels = make_labels<int64_t>(cpu, {2, 40, 40, 30}, 3);
  compare_with_cpu("soft_dice_loss large", {x, dice_labels},
                   [](const auto& in) { return soft_dice_loss(in[0], in[1]); }, 1e-5);
  const Tensor xd = x.to(Device::cuda(0)), ld = labels.to(Device::cuda(0));
  const float first = cross_entropy(xd, ld).to(Device::cpu()).item<float>();
  for (int run = 0; run < 3; ++run)
    CHECK(cross_entropy(xd, ld).to(Device::cpu()).item<float>() == first);
  const Tensor target = cpu.randn({2, 3, 40, 40, 30}).to(Device::cuda(0));
  const float mse_first = mse_loss(xd, target).to(Device::cpu()).item<float>();
  CHECK(mse_loss(xd, target).to(Device::cpu()).item<float>() == mse_first);
}
