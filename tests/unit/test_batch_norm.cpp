#include <algorithm>

#include "test_util.h"

using namespace med3d;
using test::gradcheck;
using test::random_leaf;

namespace {

// The upstream gradient of a golden variant: the first numel(y) values of the fixture's `w`.
Tensor upstream(const Checkpoint& g, const Tensor& y) {
  std::vector<float> w = g.at("w").to_vector<float>();
  REQUIRE(static_cast<int64_t>(w.size()) >= y.numel());
  w.resize(static_cast<std::size_t>(y.numel()));
  return y.context().from_vector<float>(y.shape(), w);
}

Tensor param(Context& context, const std::vector<double>& values) {
  return context.from_vector<double>({static_cast<int64_t>(values.size())}, values);
}

}  // namespace

TEST_CASE("batch_norm: gradient check in training mode", "[batch_norm][gradcheck]") {
  Context context(Device::cpu(), 3);
  Tensor x = random_leaf(context, {2, 3, 5, 7, 6});
  Tensor weight = random_leaf(context, {3});
  Tensor bias = random_leaf(context, {3});
  SECTION("affine") {
    gradcheck(context, [](const auto& in) {
      return batch_norm3d(in[0], in[1], in[2], {}, {}, true);
    }, {x, weight, bias});
  }
  SECTION("affine with running stats (updated each call, not differentiated)") {
    Tensor rm = param(context, {0.1, -0.2, 0.3}), rv = param(context, {1.0, 2.0, 0.5});
    gradcheck(context, [&](const auto& in) {
      return batch_norm3d(in[0], in[1], in[2], rm, rv, true, 0.2);
    }, {x, weight, bias});
  }
  SECTION("weight only") {
    gradcheck(context, [](const auto& in) { return batch_norm3d(in[0], in[1], {}, {}, {}, true); },
              {x, weight});
  }
  SECTION("not affine") {
    gradcheck(context, [](const auto& in) { return batch_norm3d(in[0], {}, {}, {}, {}, true); },
              {x});
  }
  SECTION("[N, C] features") {
    Tensor f = random_leaf(context, {5, 3});
    gradcheck(context, [](const auto& in) {
      return batch_norm3d(in[0], in[1], in[2], {}, {}, true);
    }, {f, weight, bias});
  }
}

TEST_CASE("batch_norm: gradient check in eval mode", "[batch_norm][gradcheck]") {
  Context context(Device::cpu(), 4);
  Tensor x = random_leaf(context, {2, 3, 5, 7, 6});
  Tensor weight = random_leaf(context, {3});
  Tensor bias = random_leaf(context, {3});
  Tensor rm = param(context, {0.5, -1.0, 2.0}), rv = param(context, {0.25, 1.5, 3.0});
  gradcheck(context, [&](const auto& in) {
    return batch_norm3d(in[0], in[1], in[2], rm, rv, false);
  }, {x, weight, bias});
  gradcheck(context, [&](const auto& in) { return batch_norm3d(in[0], {}, {}, rm, rv, false); },
            {x});
  // Eval mode never changes the running statistics.
  REQUIRE(rm.to_vector<double>() == std::vector<double>{0.5, -1.0, 2.0});
  REQUIRE(rv.to_vector<double>() == std::vector<double>{0.25, 1.5, 3.0});
}

TEST_CASE("batch_norm: training normalises each channel and updates running stats",
          "[batch_norm]") {
  Context context;
  // Channel 0: 1, 2, 3, 4 (mean 2.5, biased var 1.25, unbiased 5/3); channel 1: constant 7.
  Tensor x = context.from_vector<double>({2, 2, 1, 1, 2}, {1, 2, 7, 7, 3, 4, 7, 7});
  Tensor rm = param(context, {0, 1}), rv = param(context, {1, 1});
  const double eps = 1e-6;
  Tensor y = batch_norm3d(x, param(context, {2, 1}), param(context, {1, -1}), rm, rv, true, 0.5, eps);
  const double s = 2 / std::sqrt(1.25 + eps);
  const std::vector<double> expected{1 - 1.5 * s, 1 - 0.5 * s, -1, -1, 1 + 0.5 * s, 1 + 1.5 * s, -1, -1};
  const std::vector<double> actual = y.to_vector<double>();
  for (std::size_t i = 0; i < actual.size(); ++i) REQUIRE(actual[i] == Approx(expected[i]).epsilon(1e-12));
  REQUIRE(rm.to_vector<double>()[0] == Approx(1.25).epsilon(1e-14));
  REQUIRE(rm.to_vector<double>()[1] == Approx(4.0).epsilon(1e-14));
  REQUIRE(rv.to_vector<double>()[0] == Approx(0.5 + 0.5 * 5.0 / 3.0).epsilon(1e-14));
  REQUIRE(rv.to_vector<double>()[1] == Approx(0.5).epsilon(1e-14));
}

TEST_CASE("batch_norm: statistics stay exact for a large mean in f32", "[batch_norm]") {
  Context context(Device::cpu(), 5);
  // std 1 around 1e4: a naive f32 sum of squares would lose every digit of the variance.
  Tensor x = add_scalar(context.randn({4, 2, 8, 8, 8}), 1e4);
  Tensor y = batch_norm3d(x, {}, {}, {}, {}, true);
  const std::vector<float> v = y.to_vector<float>();
  for (int c = 0; c < 2; ++c) {
    double total = 0, squares = 0;
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 512; ++i) {
        const double value = v[(n * 2 + c) * 512 + i];
        total += value;
        squares += value * value;
      }
    REQUIRE(std::abs(total / 2048) < 1e-3);
    REQUIRE(squares / 2048 == Approx(1.0).epsilon(1e-3));
  }
}

TEST_CASE("batch_norm: golden comparison with PyTorch", "[batch_norm][golden]") {
  Context context;
  Checkpoint g = test::load_golden(context, "batch_norm");
  const double tol = test::kGoldenTolerance;
  auto leaf = [&](const char* name) { return g.at(name).clone().set_requires_grad(true); };
  // Checks y and, after backward, the gradients of x and (when given) weight and bias against
  // the fixture's `<variant>.*`.
  auto require_variant = [&](const std::string& variant, const Tensor& y, const Tensor& x,
                             const Tensor& weight, const Tensor& bias) {
    test::require_close(y, g.at(variant + ".y"), tol, "y");
    backward(y, upstream(g, y));
    test::require_close(x.grad(), g.at(variant + ".dx"), tol, "dx");
    if (weight.defined()) test::require_close(weight.grad(), g.at(variant + ".dweight"), tol, "dw");
    if (bias.defined()) test::require_close(bias.grad(), g.at(variant + ".dbias"), tol, "dbias");
  };
  Tensor x = leaf("x"), weight = leaf("weight"), bias = leaf("bias");
  Tensor rm = g.at("running_mean").clone(), rv = g.at("running_var").clone();
  SECTION("training, affine, running stats updated with momentum 0.3") {
    Tensor y = batch_norm3d(x, weight, bias, rm, rv, true, 0.3, 1e-5);
    test::require_close(rm, g.at("train_affine.running_mean"), tol, "running_mean");
    test::require_close(rv, g.at("train_affine.running_var"), tol, "running_var");
    require_variant("train_affine", y, x, weight, bias);
  }
  SECTION("training, not affine, no running stats") {
    require_variant("train_plain", batch_norm3d(x, {}, {}, {}, {}, true), x, {}, {});
  }
  SECTION("eval, affine, eps 1e-3") {
    Tensor y = batch_norm3d(x, weight, bias, rm, rv, false, 0.1, 1e-3);
    require_variant("eval_affine", y, x, weight, bias);
  }
  SECTION("training on [N, C] features") {
    Tensor x2 = leaf("x2");
    require_variant("features", batch_norm3d(x2, weight, bias, {}, {}, true), x2, weight, bias);
  }
  SECTION("fused with relu, training, running stats updated with momentum 0.3") {
    Tensor y = batch_norm_relu3d(x, weight, bias, rm, rv, true, 0.3, 1e-5);
    test::require_close(rm, g.at("train_relu.running_mean"), tol, "running_mean");
    test::require_close(rv, g.at("train_relu.running_var"), tol, "running_var");
    require_variant("train_relu", y, x, weight, bias);
  }
  SECTION("fused with relu, eval, eps 1e-3") {
    Tensor y = batch_norm_relu3d(x, weight, bias, rm, rv, false, 0.1, 1e-3);
    require_variant("eval_relu", y, x, weight, bias);
  }
}

TEST_CASE("batch_norm_relu: gradient check and bit-equality with relu of batch_norm",
          "[batch_norm][gradcheck]") {
  Context context(Device::cpu(), 8);
  Tensor x = random_leaf(context, {2, 3, 4, 5, 3});
  Tensor weight = random_leaf(context, {3});
  Tensor bias = random_leaf(context, {3});
  for (bool training : {true, false}) {
    INFO("training = " << training);
    Tensor rm = param(context, {0.1, -0.2, 0.3}), rv = param(context, {1.0, 2.0, 0.5});
    gradcheck(context, [&](const auto& in) {
      return batch_norm_relu3d(in[0], in[1], in[2], rm, rv, training, 0.2);
    }, {x, weight, bias});
  }
  for (DType dtype : {DType::f32, DType::f64}) {
    for (bool training : {true, false}) {
      INFO("dtype " << dtype_name(dtype) << " training = " << training);
      const Tensor xv = context.randn({3, 4, 5, 2, 7}, dtype);
      const Tensor wv = context.randn({4}, dtype), bv = context.randn({4}, dtype);
      const Tensor dy = context.randn({3, 4, 5, 2, 7}, dtype);
      std::vector<Tensor> grads[2];
      Tensor y[2];
      for (int fused = 0; fused < 2; ++fused) {
        Tensor xi = xv.clone().set_requires_grad(true), wi = wv.clone().set_requires_grad(true);
        Tensor bi = bv.clone().set_requires_grad(true);
        Tensor rm = context.zeros({4}, dtype), rv = context.ones({4}, dtype);
        y[fused] = fused ? batch_norm_relu3d(xi, wi, bi, rm, rv, training)
                         : relu(batch_norm3d(xi, wi, bi, rm, rv, training));
        backward(y[fused], dy);
        grads[fused] = {xi.grad(), wi.grad(), bi.grad(), rm, rv};
      }
      REQUIRE(y[0].to_vector<double>() == y[1].to_vector<double>());
      for (std::size_t i = 0; i < grads[0].size(); ++i)
        REQUIRE(grads[0][i].to_vector<double>() == grads[1][i].to_vector<double>());
      // ReLU clipped part of the output, so the mask mattered.
      const std::vector<double> out = y[1].to_vector<double>();
      REQUIRE(std::count(out.begin(), out.end(), 0.0) > static_cast<long>(out.size() / 5));
    }
  }
}

TEST_CASE("batch_norm: results do not depend on the thread count", "[batch_norm]") {
  Context context(Device::cpu(), 6);
  // Large enough for the parallel loops.
  Tensor x = random_leaf(context, {2, 5, 9, 20, 24}, DType::f32);
  Tensor weight = random_leaf(context, {5}, DType::f32);
  Tensor bias = random_leaf(context, {5}, DType::f32);
  Tensor seed = context.randn(x.shape());
  auto run = [&](int threads) {
    x.zero_grad();
    weight.zero_grad();
    bias.zero_grad();
    Tensor y = test::with_threads(threads, [&] {
      Tensor out = batch_norm3d(x, weight, bias, {}, {}, true);
      backward(out, seed);
      return out;
    });
    return std::vector<std::vector<float>>{y.to_vector<float>(), x.grad().to_vector<float>(),
                                           weight.grad().to_vector<float>(),
                                           bias.grad().to_vector<float>()};
  };
  REQUIRE(run(1) == run(2));
}

TEST_CASE("batch_norm: bad arguments give clear errors", "[batch_norm]") {
  Context context;
  Tensor x = context.randn({2, 3, 4, 4, 4});
  Tensor c3 = context.ones({3});
  REQUIRE_THROWS_WITH(batch_norm3d(context.ones({2, 3, 4, 4}), c3, c3, {}, {}, true),
                      Catch::Contains("[N, C, D, H, W] or [N, C]"));
  REQUIRE_THROWS_WITH(batch_norm3d(x, context.ones({4}), c3, {}, {}, true),
                      Catch::Contains("weight must have shape [3]"));
  REQUIRE_THROWS_WITH(batch_norm3d(x, c3, context.ones({1, 3}), {}, {}, true),
                      Catch::Contains("bias must have shape [3]"));
  REQUIRE_THROWS_WITH(batch_norm3d(x, c3, c3, context.zeros({2}), context.ones({2}), false),
                      Catch::Contains("running_mean must have shape [3]"));
  REQUIRE_THROWS_WITH(batch_norm3d(x, c3, c3, context.zeros({3}), context.ones({3, 1}), true),
                      Catch::Contains("running_var must have shape [3]"));
  REQUIRE_THROWS_WITH(batch_norm3d(x, c3, c3, context.zeros({3}), {}, true),
                      Catch::Contains("both running_mean and running_var"));
  REQUIRE_THROWS_WITH(batch_norm3d(x, c3, c3, {}, {}, false), Catch::Contains("eval mode"));
  REQUIRE_THROWS_WITH(batch_norm3d(x, context.ones({3}, DType::f64), c3, {}, {}, true),
                      Catch::Contains("f64"));
  REQUIRE_THROWS_WITH(batch_norm3d(context.ones({1, 3, 1, 1, 1}), c3, c3, {}, {}, true),
                      Catch::Contains("more than 1 value per channel"));
  REQUIRE_THROWS_WITH(batch_norm3d(context.ones({1, 3}), {}, {}, {}, {}, true),
                      Catch::Contains("more than 1 value per channel"));
  REQUIRE_THROWS_WITH(batch_norm3d(context.ones({0, 3, 2, 2, 2}), {}, {}, {}, {}, true),
                      Catch::Contains("empty"));
  REQUIRE_THROWS_WITH(batch_norm3d(x, {}, {}, {}, {}, true, 0.1, 0.0), Catch::Contains("eps"));
  REQUIRE_THROWS_WITH(batch_norm3d(x.to(DType::i32), {}, {}, {}, {}, true),
                      Catch::Contains("f32 or f64"));
  // One value per channel is fine in eval mode.
  REQUIRE(batch_norm3d(context.ones({1, 3, 1, 1, 1}), c3, c3, context.zeros({3}), context.ones({3}),
                       false).numel() == 3);
}
