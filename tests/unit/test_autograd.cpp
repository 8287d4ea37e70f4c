#include "test_util.h"

using namespace med3d;

TEST_CASE("autograd: a tensor used twice (diamond) sums both paths", "[autograd]") {
  Context context;
  Tensor x = context.from_vector<double>({3}, {1, -2, 3}).set_requires_grad(true);
  Tensor h = x * 3.0;
  Tensor y = sum(mul(h, h) + relu(h));  // dy/dx = 18x + 3*[x>0]
  backward(y);
  REQUIRE(x.grad().to_vector<double>() == std::vector<double>{21, -36, 57});
  REQUIRE(context.tape().size() == 0);
}

TEST_CASE("autograd: gradients accumulate across backward passes", "[autograd]") {
  Context context;
  Tensor x = context.from_vector<double>({2}, {1, 2}).set_requires_grad(true);
  backward(sum(x * 2.0));
  backward(sum(x * x));
  REQUIRE(x.grad().to_vector<double>() == std::vector<double>{4, 6});
  x.zero_grad();
  REQUIRE_FALSE(x.grad().defined());
}

TEST_CASE("autograd: NoGrad records nothing", "[autograd]") {
  Context context;
  Tensor x = context.ones({4}).set_requires_grad(true);
  {
    NoGrad no_grad(context);
    Tensor y = relu(x) * 2.0;
    REQUIRE_FALSE(y.requires_grad());
    REQUIRE(context.tape().size() == 0);
    REQUIRE_THROWS_WITH(backward(sum(y)), Catch::Contains("does not require grad"));
  }
  REQUIRE(context.grad_enabled());
  Tensor z = relu(x);
  REQUIRE(z.requires_grad());
  REQUIRE(context.tape().size() == 1);
}

TEST_CASE("autograd: saved tensors are freed after backward", "[autograd]") {
  Context context;
  Tensor x = context.randn({64}).set_requires_grad(true);
  std::weak_ptr<detail::TensorImpl> saved;
  {
    Tensor y = relu(x);  // relu saves its output
    saved = y.impl();
    Tensor loss = sum(y);
    y = Tensor();
    REQUIRE_FALSE(saved.expired());  // kept alive by the tape
    backward(loss);
  }
  REQUIRE(saved.expired());
}

TEST_CASE("autograd: misuse gives clear errors", "[autograd]") {
  Context context;
  Tensor x = context.ones({3}).set_requires_grad(true);
  Tensor loss = sum(x * 2.0);
  backward(loss);
  REQUIRE_THROWS_WITH(backward(loss), Catch::Contains("backward already ran"));
  REQUIRE_THROWS_WITH(backward(context.ones({1})), Catch::Contains("does not require grad"));
  REQUIRE_THROWS_WITH(backward(x * 2.0), Catch::Contains("one-element loss"));
  REQUIRE_THROWS_WITH(context.ones({2}, DType::i32).set_requires_grad(true), Catch::Contains("f32/f64"));
  Tensor y = relu(x);
  REQUIRE_THROWS_WITH(y.set_requires_grad(false), Catch::Contains("leaf"));
}

TEST_CASE("autograd: a seed gradient drives backward of a non-scalar output", "[autograd]") {
  Context context;
  Tensor x = context.from_vector<double>({3}, {1, 2, 3}).set_requires_grad(true);
  backward(x * x, context.from_vector<double>({3}, {1, 0, -1}));
  REQUIRE(x.grad().to_vector<double>() == std::vector<double>{2, 0, -6});
}
