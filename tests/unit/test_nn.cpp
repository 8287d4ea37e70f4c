#include <cmath>
#include <limits>

#include "test_util.h"

using namespace med3d;
using test::gradcheck;
using test::random_leaf;

TEST_CASE("nn: gradient check of linear", "[nn][gradcheck]") {
  Context context(Device::cpu(), 11);
  Tensor x = random_leaf(context, {5, 7});
  Tensor w = random_leaf(context, {3, 7});
  Tensor b = random_leaf(context, {3});
  gradcheck(context, [](const auto& in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  gradcheck(context, [](const auto& in) { return linear(in[0], in[1]); }, {x, w});
}

TEST_CASE("nn: linear values on a hand-computed example", "[nn]") {
  Context context;
  Tensor x = context.from_vector<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor w = context.from_vector<float>({2, 3}, {1, 0, -1, 0.5f, 0.5f, 0.5f});
  Tensor b = context.from_vector<float>({2}, {10, 20});
  REQUIRE(linear(x, w, b).to_vector<float>() == std::vector<float>{8, 23, 8, 27.5f});
  REQUIRE(linear(x, w).to_vector<float>() == std::vector<float>{-2, 3, -2, 7.5f});
}

TEST_CASE("nn: golden comparison of linear with PyTorch", "[nn][golden]") {
  Context context;
  Checkpoint g = test::load_golden(context, "lossnn_linear");
  Tensor x = g.at("x").clone().set_requires_grad(true);
  Tensor w = g.at("w").clone().set_requires_grad(true);
  Tensor b = g.at("b").clone().set_requires_grad(true);
  Tensor y = linear(x, w, b);
  test::require_close(y, g.at("y"), test::kGoldenTolerance, "y");
  backward(sum(y * g.at("g")));
  test::require_close(x.grad(), g.at("dx"), test::kGoldenTolerance, "dx");
  test::require_close(w.grad(), g.at("dw"), test::kGoldenTolerance, "dw");
  test::require_close(b.grad(), g.at("db"), test::kGoldenTolerance, "db");
}

TEST_CASE("nn: gradient check of dropout with a fixed seed", "[nn][gradcheck]") {
  Context context(Device::cpu(), 12);
  Tensor x = random_leaf(context, {2, 3, 5, 7, 6});
  // Reseeding inside the op gives every call of the check the same mask.
  gradcheck(context, [&](const auto& in) {
    context.manual_seed(99);
    return dropout(in[0], 0.3, true);
  }, {x});
}

TEST_CASE("nn: dropout keeps 1-p of the elements, scaled by 1/(1-p), reproducibly", "[nn]") {
  Context context(Device::cpu(), 13);
  const int64_t n = 100000;
  for (const double p : {0.2, 0.5, 0.8}) {
    INFO("p = " << p);
    Tensor x = context.ones({n}).set_requires_grad(true);
    context.manual_seed(42);
    Tensor y = dropout(x, p, true);
    const std::vector<float> values = y.to_vector<float>();
    const float scale = static_cast<float>(1.0 / (1.0 - p));
    int64_t kept = 0;
    for (float v : values) {
      REQUIRE((v == 0.0f || v == scale));
      kept += v != 0.0f;
    }
    // 5 standard deviations of a binomial proportion at n = 1e5 is below 0.008.
    REQUIRE(std::abs(static_cast<double>(kept) / n - (1 - p)) < 0.008);

    // Backward applies the same mask and scale.
    backward(sum(y));
    REQUIRE(x.grad().to_vector<float>() == values);

    // Same seed: same mask. The next draw of the stream: a different mask.
    context.manual_seed(42);
    REQUIRE(dropout(x, p, true).to_vector<float>() == values);
    REQUIRE(dropout(x, p, true).to_vector<float>() != values);
  }
}

TEST_CASE("nn: dropout is the identity when not training or p == 0", "[nn]") {
  Context context(Device::cpu(), 14);
  Tensor x = context.randn({3, 4, 5});
  const uint64_t before = context.take_random_offset(0);
  Tensor eval = dropout(x, 0.5, false);
  Tensor zero = dropout(x, 0.0, true);
  REQUIRE(eval.to_vector<float>() == x.to_vector<float>());
  REQUIRE(zero.to_vector<float>() == x.to_vector<float>());
  REQUIRE(context.take_random_offset(0) == before);  // no random numbers consumed
}

TEST_CASE("nn: gradient check of flatten, a view sharing storage", "[nn][gradcheck]") {
  Context context(Device::cpu(), 15);
  Tensor x = random_leaf(context, {2, 3, 5, 7, 6});
  gradcheck(context, [](const auto& in) { return flatten(in[0]); }, {x});
  Tensor y = flatten(x);
  REQUIRE(y.shape() == Shape{2, 630});
  REQUIRE(y.raw_data() == x.raw_data());
  REQUIRE(flatten(context.ones({4, 3})).shape() == Shape{4, 3});
}

TEST_CASE("nn: golden comparison of flatten with PyTorch", "[nn][golden]") {
  Context context;
  Checkpoint g = test::load_golden(context, "lossnn_shape");
  Tensor x = g.at("flat_x").clone().set_requires_grad(true);
  Tensor y = flatten(x);
  test::require_close(y, g.at("flat_y"), test::kGoldenTolerance, "y");
  backward(sum(y * g.at("flat_w")));
  test::require_close(x.grad(), g.at("flat_dx"), test::kGoldenTolerance, "dx");
}

TEST_CASE("nn: bad arguments give clear errors", "[nn]") {
  Context context;
  Tensor x = context.ones({4, 5});
  REQUIRE_THROWS_WITH(linear(x, context.ones({3, 6})),
                      Catch::Contains("has 5 input features but w [3, 6] expects 6"));
  REQUIRE_THROWS_WITH(linear(x, context.ones({3, 5}), context.ones({4})),
                      Catch::Contains("b must be [out] = [3]"));
  REQUIRE_THROWS_WITH(linear(context.ones({2, 4, 5}), context.ones({3, 5})),
                      Catch::Contains("x must be [N, in]"));
  REQUIRE_THROWS_WITH(linear(x, context.ones({5})), Catch::Contains("w must be [out, in]"));
  REQUIRE_THROWS_WITH(linear(x, context.ones({3, 5}, DType::f64)), Catch::Contains("f64"));
  for (const double p : {-0.1, 1.0, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    REQUIRE_THROWS_WITH(dropout(x, p, true), Catch::Contains("p must lie in [0, 1)"));
    REQUIRE_THROWS_WITH(dropout(x, p, false), Catch::Contains("p must lie in [0, 1)"));
  }
  REQUIRE_THROWS_WITH(dropout(context.ones({3}, DType::i32), 0.5, true), Catch::Contains("f32 or f64"));
  REQUIRE_THROWS_WITH(flatten(context.ones({5})), Catch::Contains("at least 2 dimensions"));
}
