#include "test_util.h"

using namespace med3d;
using test::gradcheck;
using test::random_leaf;

TEST_CASE("shape_ops: gradient check of concat", "[shape_ops][gradcheck]") {
  Context context(Device::cpu(), 21);
  Tensor a = random_leaf(context, {2, 3, 5, 7, 6});
  Tensor b = random_leaf(context, {2, 1, 5, 7, 6});
  Tensor c = random_leaf(context, {2, 2, 5, 7, 6});
  gradcheck(context, [](const auto& in) { return concat(in, 1); }, {a, b, c});
  Tensor d = random_leaf(context, {1, 3, 5, 7, 6});
  Tensor e = random_leaf(context, {3, 3, 5, 7, 6});
  gradcheck(context, [](const auto& in) { return concat(in, 0); }, {a, d, e});
  Tensor f = random_leaf(context, {2, 3, 5, 7, 1});
  gradcheck(context, [](const auto& in) { return concat(in, -1); }, {a, f, a});
}

TEST_CASE("shape_ops: concat places every part in order along the axis", "[shape_ops]") {
  Context context;
  Tensor a = context.from_vector<float>({2, 2}, {1, 2, 3, 4});
  Tensor b = context.from_vector<float>({2, 1}, {5, 6});
  REQUIRE(concat({a, b}).to_vector<float>() == std::vector<float>{1, 2, 5, 3, 4, 6});
  REQUIRE(concat({a, b}, -1).shape() == Shape{2, 3});
  REQUIRE(concat({a, a}, 0).to_vector<float>() == std::vector<float>{1, 2, 3, 4, 1, 2, 3, 4});
  REQUIRE(concat({b}).to_vector<float>() == std::vector<float>{5, 6});
  // Only the parts that require grad receive one.
  Tensor x = context.ones({2, 2}).set_requires_grad(true);
  backward(sum(concat({a, x, b}) * 3.0));
  REQUIRE(x.grad().to_vector<float>() == std::vector<float>(4, 3.0f));
}

TEST_CASE("shape_ops: golden comparison of concat with PyTorch", "[shape_ops][golden]") {
  Context context;
  Checkpoint g = test::load_golden(context, "lossnn_shape");
  for (const int axis : {1, 0}) {
    const std::string prefix = "cat" + std::to_string(axis) + "_";
    INFO("axis " << axis);
    std::vector<Tensor> xs;
    for (int k = 0; k < 3; ++k)
      xs.push_back(g.at(prefix + "x" + std::to_string(k)).clone().set_requires_grad(true));
    Tensor y = concat(xs, axis);
    test::require_close(y, g.at(prefix + "y"), test::kGoldenTolerance, "y");
    backward(sum(y * g.at(prefix + "w")));
    for (int k = 0; k < 3; ++k)
      test::require_close(xs[k].grad(), g.at(prefix + "dx" + std::to_string(k)),
                          test::kGoldenTolerance, "dx" + std::to_string(k));
  }
}

TEST_CASE("shape_ops: shortcut A subsamples and appends zero channels", "[shape_ops]") {
  Context context(Device::cpu(), 22);
  Tensor x = context.randn({2, 3, 5, 7, 6}, DType::f64);
  Tensor y = zero_pad_channels_subsample(x, 2, 5);
  REQUIRE(y.shape() == Shape{2, 5, 3, 4, 3});
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 5; ++c)
      for (int64_t d = 0; d < 3; ++d)
        for (int64_t h = 0; h < 4; ++h)
          for (int64_t w = 0; w < 3; ++w) {
            const double expected = c < 3 ? x.at<double>({n, c, 2 * d, 2 * h, 2 * w}) : 0.0;
            REQUIRE(y.at<double>({n, c, d, h, w}) == expected);
          }
  // Stride 1: a copy with the zero channels appended.
  Tensor same = zero_pad_channels_subsample(x, 1, 3);
  REQUIRE(same.to_vector<double>() == x.to_vector<double>());
}

TEST_CASE("shape_ops: shortcut A is detached like MedicalNet's", "[shape_ops]") {
  Context context(Device::cpu(), 23);
  Tensor x = random_leaf(context, {2, 3, 5, 7, 6});
  Tensor other = random_leaf(context, {2, 6, 3, 4, 3});
  Tensor y = zero_pad_channels_subsample(x, 2, 6);
  REQUIRE_FALSE(y.requires_grad());
  backward(sum(add(y, other)));
  REQUIRE_FALSE(x.grad().defined());
  REQUIRE(other.grad().to_vector<double>() == std::vector<double>(other.numel(), 1.0));
}

TEST_CASE("shape_ops: golden comparison of shortcut A with PyTorch", "[shape_ops][golden]") {
  Context context;
  Checkpoint g = test::load_golden(context, "lossnn_shape");
  test::require_close(zero_pad_channels_subsample(g.at("shortcut_x"), 2, 5), g.at("shortcut_y"),
                      test::kGoldenTolerance, "shortcut A");
}

TEST_CASE("shape_ops: bad arguments give clear errors", "[shape_ops]") {
  Context context, other;
  Tensor a = context.ones({2, 3, 4});
  REQUIRE_THROWS_WITH(concat({a, context.ones({2, 3, 5})}, 1),
                      Catch::Contains("xs[1] has shape [2, 3, 5] but xs[0] has [2, 3, 4]") &&
                          Catch::Contains("except along axis 1"));
  REQUIRE_THROWS_WITH(concat({a, context.ones({2, 3})}), Catch::Contains("xs[1] has shape [2, 3]"));
  REQUIRE_THROWS_WITH(concat({}), Catch::Contains("at least one tensor"));
  REQUIRE_THROWS_WITH(concat({a}, 3), Catch::Contains("axis 3 is out of range"));
  REQUIRE_THROWS_WITH(concat({a}, -4), Catch::Contains("axis -4 is out of range"));
  REQUIRE_THROWS_WITH(concat({a, context.ones({2, 3, 4}, DType::f64)}), Catch::Contains("f64"));
  REQUIRE_THROWS_WITH(concat({a, other.ones({2, 3, 4})}), Catch::Contains("different Contexts"));
  REQUIRE_THROWS_WITH(concat({a, Tensor()}), Catch::Contains("xs[1] is an undefined tensor"));

  Tensor x = context.ones({2, 3, 4, 4, 4});
  REQUIRE_THROWS_WITH(zero_pad_channels_subsample(x, 2, 2),
                      Catch::Contains("out_channels (2) must be >= the input's channels (3)"));
  REQUIRE_THROWS_WITH(zero_pad_channels_subsample(x, 0, 4), Catch::Contains("stride must be >= 1"));
  REQUIRE_THROWS_WITH(zero_pad_channels_subsample(a, 1, 4), Catch::Contains("[N, C, D, H, W]"));
}
