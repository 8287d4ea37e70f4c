#include "test_util.h"

using namespace med3d;

TEST_CASE("shape: extents, element count, rank limit", "[tensor]") {
  Shape s{2, 1, 5, 7, 6};
  REQUIRE(s.rank() == 5);
  REQUIRE(s.numel() == 420);
  REQUIRE(s.dim(-1) == 6);
  REQUIRE(s.str() == "[2, 1, 5, 7, 6]");
  REQUIRE(Shape{}.numel() == 1);
  REQUIRE_THROWS_AS((Shape{1, 2, 3, 4, 5, 6}), Error);
  REQUIRE_THROWS_AS((Shape{2, -1}), Error);
  REQUIRE_THROWS_AS(s[5], Error);
}

TEST_CASE("tensor: factories, element access and conversions", "[tensor]") {
  Context context;
  Tensor z = context.zeros({2, 3});
  REQUIRE(z.to_vector<float>() == std::vector<float>(6, 0.f));
  Tensor f = context.full({2, 2}, 2.5, DType::f64);
  REQUIRE(f.at<double>({1, 1}) == 2.5);
  Tensor a = context.arange(5, DType::i32);
  REQUIRE(a.to_vector<int>() == std::vector<int>{0, 1, 2, 3, 4});
  REQUIRE(a.to(DType::f32).to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4});
  Tensor v = context.from_vector<float>({2, 2}, {1, 2, 3, 4});
  v.set<float>({0, 1}, 7.f);
  REQUIRE(v.to_vector<float>() == std::vector<float>{1, 7, 3, 4});
  REQUIRE_THROWS_AS(v.at<float>({2, 0}), Error);
  REQUIRE_THROWS_AS(v.data<double>(), Error);
  // Without a usable CUDA device, moving there says so (the gpu suite covers the other case).
  if (cuda_device_count() == 0) REQUIRE_THROWS_AS(v.to(Device::cuda(0)), Error);
  REQUIRE_THROWS_AS(context.from_vector<float>({3}, {1, 2}), Error);

  Tensor r = v.reshape({4});
  REQUIRE(r.shape() == Shape{4});
  r.set<float>({0}, -1.f);
  REQUIRE(v.at<float>({0, 0}) == -1.f);  // a view shares storage
  REQUIRE_THROWS_AS(v.reshape({3}), Error);
  Tensor c = v.clone();
  c.fill(0);
  REQUIRE(v.at<float>({1, 1}) == 4.f);  // a clone does not
}

TEST_CASE("tensor: random streams are seeded and reproducible", "[tensor]") {
  Context a(Device::cpu(), 42), b(Device::cpu(), 42), c(Device::cpu(), 43);
  const auto xa = a.randn({1000}).to_vector<double>();
  REQUIRE(xa == b.randn({1000}).to_vector<double>());
  REQUIRE(xa != c.randn({1000}).to_vector<double>());
  REQUIRE(xa != a.randn({1000}).to_vector<double>());  // the stream advances
  double mean = 0, var = 0;
  for (double v : xa) mean += v / xa.size();
  for (double v : xa) var += (v - mean) * (v - mean) / xa.size();
  REQUIRE(std::abs(mean) < 0.1);
  REQUIRE(std::abs(var - 1) < 0.1);
  const auto u = a.rand({1000}).to_vector<double>();
  for (double v : u) REQUIRE((v >= 0 && v < 1));
}

TEST_CASE("tensor: a tensor outliving its Context fails clearly in ops", "[tensor]") {
  Tensor x;
  {
    Context context;
    x = context.ones({3});
  }
  REQUIRE(x.to_vector<float>() == std::vector<float>(3, 1.f));  // storage is still valid
  REQUIRE_THROWS_WITH(relu(x), Catch::Contains("Context that created this tensor was destroyed"));
}

TEST_CASE("tensor: the memory pool reuses freed blocks", "[tensor]") {
  Context context;
  const void* first = nullptr;
  {
    Tensor t = context.empty({1 << 20});
    first = t.raw_data();
  }
  REQUIRE(context.memory_stats().bytes_cached >= (4u << 20));
  Tensor again = context.empty({1 << 20});
  REQUIRE(again.raw_data() == first);
  REQUIRE(context.memory_stats().bytes_cached == 0);
}

TEST_CASE("tensor: set_data rebinds every handle of a leaf and refuses bad sources", "[tensor]") {
  Context context(Device::cpu(), 3);
  Tensor p = context.ones({2, 3});
  p.set_requires_grad(true);
  Tensor alias = p;  // a module and its layer hold two handles of one parameter
  p.set_data(context.full({2, 3}, 2.5).to(DType::f64));
  REQUIRE(alias.dtype() == DType::f64);
  REQUIRE(alias.to_vector<double>() == std::vector<double>(6, 2.5));
  REQUIRE(alias.requires_grad());
  REQUIRE_THROWS_WITH(p.set_data(context.ones({3, 2})), Catch::Contains("expected a tensor of shape"));
  REQUIRE_THROWS_WITH(p.set_data(context.zeros({2, 3}, DType::i32)), Catch::Contains("must be floating"));
  Tensor y = mul_scalar(p, 2.0);
  REQUIRE_THROWS_WITH(y.set_data(context.ones({2, 3})), Catch::Contains("only a leaf"));
}
