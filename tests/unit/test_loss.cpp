#include <cmath>
#include <limits>
#include <vector>

#include "med3d/kernels/cpu/loss.h"
#include "test_util.h"

using namespace med3d;
using test::gradcheck;
using test::random_leaf;

namespace {

// Class labels [shape] uniform in [0, classes), with about `ignored` of them set to -100.
Tensor random_labels(Context& context, const Shape& shape, int classes, double ignored = 0) {
  const std::vector<double> u = context.rand(shape, DType::f64).to_vector<double>();
  const std::vector<double> v = context.rand(shape, DType::f64).to_vector<double>();
  std::vector<int32_t> labels(u.size());
  for (std::size_t i = 0; i < u.size(); ++i)
    labels[i] = v[i] < ignored ? -100 : std::min(static_cast<int32_t>(u[i] * classes), classes - 1);
  return context.from_vector<int32_t>(shape, labels);
}

int count_of(const Tensor& labels, int32_t value) {
  int count = 0;
  for (int32_t label : labels.to_vector<int32_t>()) count += label == value;
  return count;
}

}  // namespace

TEST_CASE("loss: gradient check of softmax and log_softmax", "[loss][gradcheck]") {
  Context context(Device::cpu(), 1);
  Tensor x5 = random_leaf(context, {2, 3, 5, 7, 6});
  Tensor x2 = random_leaf(context, {5, 3});
  for (const Tensor& x : {x5, x2}) {
    gradcheck(context, [](const auto& in) { return softmax(in[0]); }, {x});
    gradcheck(context, [](const auto& in) { return log_softmax(in[0]); }, {x});
  }
}

TEST_CASE("loss: gradient check of cross_entropy", "[loss][gradcheck]") {
  Context context(Device::cpu(), 2);
  Tensor x5 = random_leaf(context, {2, 3, 5, 7, 6});
  Tensor labels5 = random_labels(context, {2, 5, 7, 6}, 3, 0.15);
  REQUIRE(count_of(labels5, -100) > 0);
  Tensor weights3 = context.from_vector<double>({3}, {0.5, 2.0, 1.25});
  gradcheck(context, [&](const auto& in) { return cross_entropy(in[0], labels5); }, {x5});
  gradcheck(context, [&](const auto& in) {
    return cross_entropy(in[0], labels5, {.class_weights = weights3});
  }, {x5});

  Tensor x2 = random_leaf(context, {7, 4});
  Tensor labels2 = context.from_vector<int32_t>({7}, {0, 3, -100, 1, 2, 3, 3});
  Tensor weights4 = context.from_vector<double>({4}, {1.0, 0.25, 3.0, 0.75});
  gradcheck(context, [&](const auto& in) { return cross_entropy(in[0], labels2); }, {x2});
  gradcheck(context, [&](const auto& in) {
    return cross_entropy(in[0], labels2, {.class_weights = weights4});
  }, {x2});
}

TEST_CASE("loss: gradient check of soft_dice_loss", "[loss][gradcheck]") {
  Context context(Device::cpu(), 3);
  Tensor x = random_leaf(context, {2, 3, 5, 7, 6});
  Tensor labels = random_labels(context, {2, 5, 7, 6}, 3);
  gradcheck(context, [&](const auto& in) { return soft_dice_loss(in[0], labels); }, {x});
  gradcheck(context, [&](const auto& in) {
    return soft_dice_loss(in[0], labels, {.include_background = false});
  }, {x});
  Tensor x2 = random_leaf(context, {7, 4});
  Tensor labels2 = context.from_vector<int32_t>({7}, {0, 3, 3, 1, 2, 3, 0});
  gradcheck(context, [&](const auto& in) { return soft_dice_loss(in[0], labels2, {.smooth = 1.0}); }, {x2});
}

TEST_CASE("loss: gradient check of mse_loss and binary_cross_entropy_with_logits", "[loss][gradcheck]") {
  Context context(Device::cpu(), 4);
  Tensor x = random_leaf(context, {2, 3, 5, 7, 6});
  Tensor t = random_leaf(context, {2, 3, 5, 7, 6});
  Tensor p = context.rand({2, 3, 5, 7, 6}, DType::f64).set_requires_grad(true);
  Tensor pos_weight = context.from_vector<double>({3}, {0.5, 1.0, 3.0});
  gradcheck(context, [](const auto& in) { return mse_loss(in[0], in[1]); }, {x, t});
  gradcheck(context, [](const auto& in) { return binary_cross_entropy_with_logits(in[0], in[1]); }, {x, p});
  gradcheck(context, [&](const auto& in) {
    return binary_cross_entropy_with_logits(in[0], in[1], pos_weight);
  }, {x, p});
}

TEST_CASE("loss: values on hand-computed examples", "[loss]") {
  Context context;
  // One position, logits (0, ln 3): softmax (1/4, 3/4).
  Tensor x = context.from_vector<double>({1, 2}, {0.0, std::log(3.0)});
  REQUIRE_THAT(softmax(x).to_vector<double>(), Catch::Approx(std::vector<double>{0.25, 0.75}));
  REQUIRE(cross_entropy(x, context.from_vector<int32_t>({1}, {0})).item<double>() ==
          Approx(std::log(4.0)));
  // Stable for huge logits where a naive exp overflows.
  Tensor big = context.from_vector<float>({1, 3}, {1000.f, 1000.f, -1000.f});
  REQUIRE_THAT(softmax(big).to_vector<float>(), Catch::Approx(std::vector<float>{0.5f, 0.5f, 0.f}));
  REQUIRE(log_softmax(big).at<float>({0, 0}) == Approx(-std::log(2.0)));
  REQUIRE(cross_entropy(big, context.from_vector<int32_t>({1}, {2})).item<double>() ==
          Approx(2000 + std::log(2.0)));
  // BCE stays finite at +-100 (log(1 + exp(100)) would overflow in f32).
  Tensor bx = context.from_vector<float>({2}, {100.f, -100.f});
  Tensor bt = context.from_vector<float>({2}, {0.f, 0.f});
  REQUIRE(binary_cross_entropy_with_logits(bx, bt).item<double>() == Approx(50.0));
  REQUIRE(mse_loss(bx, bt).item<double>() == Approx(10000.0));
}

TEST_CASE("loss: argmax over channels, first maximum wins", "[loss]") {
  Context context;
  // [N=1, C=3, 4 positions]; position 1 ties channels 0 and 2, position 3 ties all.
  Tensor x = context.from_vector<float>({1, 3, 4}, {1, 5, 0, 2,  //
                                                    3, 1, 0, 2,  //
                                                    2, 5, 9, 2});
  Tensor y = argmax(x);
  REQUIRE(y.dtype() == DType::i32);
  REQUIRE(y.shape() == Shape{1, 4});
  REQUIRE(y.to_vector<int32_t>() == std::vector<int32_t>{1, 0, 2, 0});
  REQUIRE(argmax(context.from_vector<double>({2, 2}, {0, 1, 1, 0})).to_vector<int32_t>() ==
          std::vector<int32_t>{1, 0});
}

TEST_CASE("loss: cross_entropy label dtypes, ignore_index and the all-ignored NaN", "[loss]") {
  Context context(Device::cpu(), 5);
  Tensor x = random_leaf(context, {2, 3, 4, 5}, DType::f32);
  std::vector<int32_t> values = random_labels(context, {2, 4, 5}, 3, 0.2).to_vector<int32_t>();
  std::vector<uint8_t> bytes;
  std::vector<int64_t> longs;
  for (int32_t v : values) {
    bytes.push_back(v < 0 ? 255 : static_cast<uint8_t>(v));
    longs.push_back(v);
  }
  const double expected = cross_entropy(x, context.from_vector<int32_t>({2, 4, 5}, values)).item<double>();
  REQUIRE(cross_entropy(x, context.from_vector<int64_t>({2, 4, 5}, longs)).item<double>() == expected);
  REQUIRE(cross_entropy(x, context.from_vector<uint8_t>({2, 4, 5}, bytes), {.ignore_index = 255})
              .item<double>() == expected);

  // An ignore_index inside [0, C) drops that class, exactly like masking it out.
  Tensor pair = context.from_vector<double>({2, 2}, {0.0, 1.0, 2.0, 0.0});
  Tensor both = context.from_vector<int32_t>({2}, {1, 0});
  REQUIRE(cross_entropy(pair, both, {.ignore_index = 0}).item<double>() ==
          Approx(std::log(1 + std::exp(-1.0))));

  // A non-finite logit where the label is ignored changes neither the loss nor any gradient.
  std::vector<int32_t> labels = values;
  labels[0] = -100;
  std::vector<float> logits = x.to_vector<float>();
  logits[20] = 0.0f;  // sample 0, channel 1, position 0
  auto loss_and_grad = [&](float logit) {
    logits[20] = logit;
    Tensor leaf = context.from_vector<float>({2, 3, 4, 5}, logits).set_requires_grad(true);
    Tensor l = cross_entropy(leaf, context.from_vector<int32_t>({2, 4, 5}, labels));
    backward(l);
    return std::make_pair(l.item<double>(), leaf.grad().to_vector<float>());
  };
  const auto finite = loss_and_grad(0.0f);
  const auto infinite = loss_and_grad(std::numeric_limits<float>::infinity());
  REQUIRE(std::isfinite(finite.first));
  REQUIRE(infinite.first == finite.first);
  REQUIRE(infinite.second == finite.second);
  REQUIRE(finite.second[0] == 0.0f);

  // Every voxel ignored: 0 / 0, NaN as in PyTorch, and a zero gradient.
  Tensor ignored = context.full({2, 4, 5}, -100, DType::i32);
  Tensor loss = cross_entropy(x, ignored);
  REQUIRE(std::isnan(loss.item<double>()));
  backward(loss);
  for (float v : x.grad().to_vector<float>()) REQUIRE(v == 0.0f);
}

TEST_CASE("loss: results do not depend on the number of threads", "[loss]") {
  Context context(Device::cpu(), 6);
  // 40^3 positions: several sum blocks and parallel loops.
  Tensor x = random_leaf(context, {1, 3, 40, 40, 40}, DType::f32);
  Tensor labels = random_labels(context, {1, 40, 40, 40}, 3, 0.1);
  Tensor dice_labels = random_labels(context, {1, 40, 40, 40}, 3);
  auto run = [&](int threads) {
    x.zero_grad();
    Tensor loss = test::with_threads(threads, [&] {
      Tensor total = add(cross_entropy(x, labels), soft_dice_loss(x, dice_labels));
      backward(total);
      return total;
    });
    return std::make_pair(loss.item<float>(), x.grad().to_vector<float>());
  };
  const auto one = run(1);
  const auto two = run(2);
  REQUIRE(one.first == two.first);
  REQUIRE(one.second == two.second);
}

TEST_CASE("loss: golden comparison of softmax, log_softmax and argmax with PyTorch", "[loss][golden]") {
  Context context;
  Checkpoint g = test::load_golden(context, "lossnn_softmax");
  Tensor x = g.at("x").clone().set_requires_grad(true);
  Tensor y = softmax(x);
  test::require_close(y, g.at("softmax"), test::kGoldenTolerance, "softmax");
  backward(sum(y * g.at("w")));
  test::require_close(x.grad(), g.at("softmax_dx"), test::kGoldenTolerance, "softmax dx");
  x.zero_grad();
  Tensor ly = log_softmax(x);
  test::require_close(ly, g.at("log_softmax"), test::kGoldenTolerance, "log_softmax");
  backward(sum(ly * g.at("w")));
  test::require_close(x.grad(), g.at("log_softmax_dx"), test::kGoldenTolerance, "log_softmax dx");
  REQUIRE(argmax(x).to_vector<int32_t>() == g.at("argmax").to_vector<int32_t>());
}

TEST_CASE("loss: golden comparison of cross_entropy with PyTorch", "[loss][golden]") {
  Context context;
  Checkpoint g = test::load_golden(context, "lossnn_cross_entropy");
  for (const std::string rank : {"5", "2"}) {
    const Tensor& labels = g.at("labels" + rank);
    REQUIRE(count_of(labels.to(DType::i32), -100) > 0);
    for (const bool weighted : {false, true}) {
      INFO("rank " << rank << (weighted ? " weighted" : ""));
      const std::string suffix = rank + (weighted ? "_weighted" : "");
      Tensor x = g.at("x" + rank).clone().set_requires_grad(true);
      CrossEntropyOptions options;
      if (weighted) options.class_weights = g.at("weights" + rank);
      // i64 labels as stored by PyTorch, and the same labels as i32.
      for (const Tensor& l : {labels, labels.to(DType::i32)}) {
        x.zero_grad();
        Tensor loss = cross_entropy(x, l, options);
        test::require_close(loss, g.at("loss" + suffix), test::kGoldenTolerance, "loss");
        backward(loss);
        test::require_close(x.grad(), g.at("dx" + suffix), test::kGoldenTolerance, "dx");
      }
    }
  }
}

TEST_CASE("loss: golden comparison of soft_dice_loss with the PyTorch reference", "[loss][golden]") {
  Context context;
  Checkpoint g = test::load_golden(context, "lossnn_dice");
  for (const std::string rank : {"5", "2"}) {
    for (const bool background : {true, false}) {
      const std::string suffix = rank + (background ? "_bg" : "_nobg");
      INFO(suffix);
      Tensor x = g.at("x" + rank).clone().set_requires_grad(true);
      Tensor loss = soft_dice_loss(x, g.at("labels" + rank), {.include_background = background});
      test::require_close(loss, g.at("loss" + suffix), test::kGoldenTolerance, "loss");
      backward(loss);
      test::require_close(x.grad(), g.at("dx" + suffix), test::kGoldenTolerance, "dx");
    }
  }
}

TEST_CASE("loss: golden comparison of mse_loss and bce_with_logits with PyTorch", "[loss][golden]") {
  Context context;
  Checkpoint g = test::load_golden(context, "lossnn_regression");
  auto check = [&](const std::string& name, const std::string& x_name, const std::string& t_name,
                   const std::function<Tensor(const Tensor&, const Tensor&)>& op) {
    INFO(name);
    Tensor x = g.at(x_name).clone().set_requires_grad(true);
    Tensor t = g.at(t_name).clone().set_requires_grad(true);
    Tensor loss = op(x, t);
    test::require_close(loss, g.at(name), test::kGoldenTolerance, "loss");
    backward(loss);
    test::require_close(x.grad(), g.at(name + "_dx"), test::kGoldenTolerance, "dx");
    test::require_close(t.grad(), g.at(name + (t_name == "t" ? "_dt" : "_dp")),
                        test::kGoldenTolerance, "dtarget");
  };
  check("mse", "x", "t", [](const Tensor& x, const Tensor& t) { return mse_loss(x, t); });
  check("bce", "x", "p", [](const Tensor& x, const Tensor& t) {
    return binary_cross_entropy_with_logits(x, t);
  });
  check("bce_pw", "x", "p", [&](const Tensor& x, const Tensor& t) {
    return binary_cross_entropy_with_logits(x, t, g.at("pos_weight"));
  });
  check("bce2_pw", "x2", "p2", [&](const Tensor& x, const Tensor& t) {
    return binary_cross_entropy_with_logits(x, t, g.at("pos_weight2"));
  });
}

TEST_CASE("loss: class targets across blocks: ignored, valid, and the first invalid position", "[loss]") {
  // kernels::cpu::class_targets converts in blocks on all threads without a branch, then finds
  // the smallest invalid position: here past the first blocks, with a later one invalid too.
  const int64_t n = 100000, channels = 3;
  std::vector<int64_t> labels(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[static_cast<std::size_t>(i)] = i % 7 == 0 ? -100 : i % channels;
  std::vector<int32_t> targets(static_cast<std::size_t>(n), 9);
  REQUIRE(kernels::cpu::class_targets(labels.data(), n, true, -100, channels, targets.data()) == -1);
  bool converted = true;  // (a bool: Catch would print every element)
  for (int64_t i = 0; i < n; ++i)
    converted = converted && targets[static_cast<std::size_t>(i)] ==
                                 (i % 7 == 0 ? kernels::kIgnoredTarget : static_cast<int32_t>(i % channels));
  CHECK(converted);
  // Without ignore_index -100 is invalid: position 0 first.
  REQUIRE(kernels::cpu::class_targets(labels.data(), n, false, 0, channels, targets.data()) == 0);
  // A label that truncates to a valid int32 (2^32 + 1) is still invalid, and the first of two.
  labels[0] = 0;
  for (int64_t i = 1; i < n; ++i) labels[static_cast<std::size_t>(i)] = i % channels;
  labels[70001] = -5;
  labels[40000] = (int64_t(1) << 32) + 1;
  REQUIRE(kernels::cpu::class_targets(labels.data(), n, true, -100, channels, targets.data()) == 40000);
  std::vector<uint8_t> bytes(static_cast<std::size_t>(n), 2);
  bytes[99999] = 3;
  REQUIRE(kernels::cpu::class_targets(bytes.data(), n, true, 255, channels, targets.data()) == 99999);
  bytes[99999] = 255;
  REQUIRE(kernels::cpu::class_targets(bytes.data(), n, true, 255, channels, targets.data()) == -1);
  CHECK(targets[99999] == kernels::kIgnoredTarget);
  CHECK(targets[99998] == 2);
  // Through the op: the message names the label and its position.
  Context context;
  Tensor x = context.randn({1, 3, 100000});
  Tensor bad = context.zeros({1, 100000}, DType::i64);
  bad.set<int64_t>({0, 70001}, 5);
  bad.set<int64_t>({0, 65537}, -2);
  REQUIRE_THROWS_WITH(cross_entropy(x, bad), Catch::Contains("label -2 at position [0, 65537]"));
}

TEST_CASE("loss: bad arguments give clear errors", "[loss]") {
  Context context, other;
  Tensor x = context.randn({2, 3, 4, 5});
  Tensor labels = context.zeros({2, 4, 5}, DType::i32);
  labels.set<int32_t>({1, 2, 3}, 7);
  REQUIRE_THROWS_WITH(cross_entropy(x, labels),
                      Catch::Contains("label 7 at position [1, 2, 3]") && Catch::Contains("[0, 3)"));
  REQUIRE_THROWS_WITH(soft_dice_loss(x, labels), Catch::Contains("label 7 at position [1, 2, 3]"));
  labels.set<int32_t>({1, 2, 3}, -1);
  REQUIRE_THROWS_WITH(cross_entropy(x, labels), Catch::Contains("label -1"));
  REQUIRE_THROWS_WITH(soft_dice_loss(x, context.full({2, 4, 5}, -100, DType::i32)),
                      Catch::Contains("label -100"));

  REQUIRE_THROWS_WITH(cross_entropy(x, context.zeros({2, 5, 4}, DType::i32)),
                      Catch::Contains("labels [N, spatial...]") && Catch::Contains("[2, 5, 4]"));
  REQUIRE_THROWS_WITH(cross_entropy(x, context.zeros({2, 3, 4, 5}, DType::i32)),
                      Catch::Contains("without the channel axis"));
  REQUIRE_THROWS_WITH(cross_entropy(x, context.zeros({2, 4, 5}, DType::f32)),
                      Catch::Contains("i32, i64 or u8") && Catch::Contains("got f32"));
  REQUIRE_THROWS_WITH(cross_entropy(x, Tensor()), Catch::Contains("labels is an undefined"));
  REQUIRE_THROWS_WITH(cross_entropy(x, other.zeros({2, 4, 5}, DType::i32)),
                      Catch::Contains("different Contexts"));
  REQUIRE_THROWS_WITH(cross_entropy(x, context.zeros({2, 4, 5}, DType::i32),
                                    {.class_weights = context.ones({4})}),
                      Catch::Contains("class_weights must hold one weight per channel, shape [3]") &&
                          Catch::Contains("got [4]"));
  REQUIRE_THROWS_WITH(cross_entropy(x, context.zeros({2, 4, 5}, DType::i32),
                                    {.class_weights = context.ones({3}, DType::f64)}),
                      Catch::Contains("f64"));
  REQUIRE_THROWS_WITH(cross_entropy(context.zeros({2, 4, 5}, DType::i32), labels),
                      Catch::Contains("f32 or f64"));
  REQUIRE_THROWS_WITH(softmax(context.ones({6})), Catch::Contains("2 to 5 dimensions"));
  REQUIRE_THROWS_WITH(soft_dice_loss(context.ones({2, 1, 3}), context.zeros({2, 3}, DType::i32),
                                     {.include_background = false}),
                      Catch::Contains("at least 2 channels"));

  REQUIRE_THROWS_WITH(mse_loss(x, context.ones({2, 3, 4})), Catch::Contains("shapes must match"));
  REQUIRE_THROWS_WITH(binary_cross_entropy_with_logits(x, context.ones({2, 3, 4, 5}), context.ones({4})),
                      Catch::Contains("pos_weight must hold one weight per channel, shape [3]"));
  REQUIRE_THROWS_WITH(binary_cross_entropy_with_logits(context.ones({3}), context.ones({3}),
                                                       context.ones({3})),
                      Catch::Contains("at least 2 dimensions"));
}
