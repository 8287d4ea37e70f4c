#include "test_util.h"

using namespace med3d;
using test::gradcheck;
using test::random_leaf;

TEST_CASE("elementwise: gradient check of every op", "[elementwise][gradcheck]") {
  Context context(Device::cpu(), 1);
  Tensor a = random_leaf(context, {2, 3, 5, 7, 6});
  Tensor b = random_leaf(context, {2, 3, 5, 7, 6});
  gradcheck(context, [](const auto& in) { return add(in[0], in[1]); }, {a, b});
  gradcheck(context, [](const auto& in) { return sub(in[0], in[1]); }, {a, b});
  gradcheck(context, [](const auto& in) { return mul(in[0], in[1]); }, {a, b});
  gradcheck(context, [](const auto& in) { return add_scalar(in[0], 3.0); }, {a});
  gradcheck(context, [](const auto& in) { return mul_scalar(in[0], -1.5); }, {a});
  gradcheck(context, [](const auto& in) { return relu(in[0]); }, {a});
  gradcheck(context, [](const auto& in) { return sigmoid(in[0]); }, {a});
  gradcheck(context, [](const auto& in) { return sum(in[0]); }, {a});
  gradcheck(context, [](const auto& in) { return mean(in[0]); }, {a});
  gradcheck(context, [](const auto& in) { return in[0].reshape({6, 210}); }, {a});
  gradcheck(context, [](const auto& in) { return in[0].to(DType::f32).to(DType::f64); }, {a}, 1e-3, 1e-3);
}

TEST_CASE("elementwise: gradient reversal flips and scales the gradient", "[elementwise]") {
  Context context;
  Tensor x = random_leaf(context, {4}, DType::f32);
  Tensor y = gradient_reversal(x, 0.5);
  REQUIRE(y.to_vector<float>() == x.to_vector<float>());
  backward(sum(y));
  REQUIRE(x.grad().to_vector<float>() == std::vector<float>(4, -0.5f));
}

TEST_CASE("elementwise: golden comparison with PyTorch", "[elementwise][golden]") {
  Context context;
  Checkpoint g = test::load_golden(context, "elementwise");
  Tensor a = g.at("a").clone().set_requires_grad(true);
  Tensor b = g.at("b").clone().set_requires_grad(true);
  Tensor y = (relu(a) + sigmoid(b)) * a - b * 2.0 + 0.5;
  Tensor loss = sum(y * g.at("w")) + mean(y);
  test::require_close(y, g.at("y"), test::kGoldenTolerance, "y");
  test::require_close(loss, g.at("loss"), test::kGoldenTolerance, "loss");
  backward(loss);
  test::require_close(a.grad(), g.at("da"), test::kGoldenTolerance, "da");
  test::require_close(b.grad(), g.at("db"), test::kGoldenTolerance, "db");
}

TEST_CASE("elementwise: mismatched arguments give clear errors", "[elementwise]") {
  Context context, other;
  Tensor a = context.ones({2, 3});
  REQUIRE_THROWS_WITH(add(a, context.ones({3, 2})), Catch::Contains("shapes must match"));
  REQUIRE_THROWS_WITH(add(a, context.ones({2, 3}, DType::f64)), Catch::Contains("f32"));
  REQUIRE_THROWS_WITH(add(a, other.ones({2, 3})), Catch::Contains("different Contexts"));
  REQUIRE_THROWS_WITH(relu(context.ones({2}, DType::i32)), Catch::Contains("f32 or f64"));
  REQUIRE_THROWS_WITH(relu(Tensor()), Catch::Contains("undefined"));
}
