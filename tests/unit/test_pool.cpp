#include <omp.h>

#include <cmath>
#include <limits>

#include "test_util.h"

using namespace med3d;
using test::gradcheck;
using Axes = std::array<int64_t, 3>;

namespace {

// The upstream gradient of a golden variant: the first numel(y) values of the fixture's `w`.
Tensor upstream(const Checkpoint& g, const Tensor& y) {
  std::vector<float> w = g.at("w").to_vector<float>();
  REQUIRE(static_cast<int64_t>(w.size()) >= y.numel());
  w.resize(static_cast<std::size_t>(y.numel()));
  return y.context().from_vector<float>(y.shape(), w);
}

// A leaf whose values are a permutation of a grid with step 0.01: no two values are closer
// than the finite-difference step, so max pooling's argmax never flips during gradcheck.
Tensor distinct_leaf(Context& context, const Shape& shape) {
  const int64_t n = shape.numel();
  std::vector<double> values(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[i] = static_cast<double>((i * 997) % n - n / 2) * 0.01;
  Tensor t = context.from_vector<double>(shape, values);
  t.set_requires_grad(true);
  return t;
}

struct Variant {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
};

// The same variants as tests/golden/gen_normpool.py.
std::vector<Variant> variants() {
  return {
      {"max_k3s2p1", [](const Tensor& x) { return max_pool3d(x, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}); }},
      {"max_k2s2", [](const Tensor& x) { return max_pool3d(x, {2, 2, 2}, {2, 2, 2}); }},
      {"max_aniso", [](const Tensor& x) { return max_pool3d(x, {3, 2, 3}, {1, 2, 2}, {1, 1, 0}); }},
      {"avg_k3s2p1_pad", [](const Tensor& x) { return avg_pool3d(x, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, true); }},
      {"avg_k3s2p1_nopad", [](const Tensor& x) { return avg_pool3d(x, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, false); }},
      {"avg_aniso_pad", [](const Tensor& x) { return avg_pool3d(x, {2, 3, 3}, {2, 1, 2}, {0, 1, 1}, true); }},
      {"avg_aniso_nopad", [](const Tensor& x) { return avg_pool3d(x, {2, 3, 3}, {2, 1, 2}, {0, 1, 1}, false); }},
      {"adaptive_1x1x1", [](const Tensor& x) { return adaptive_avg_pool3d(x, {1, 1, 1}); }},
      {"adaptive_2x3x2", [](const Tensor& x) { return adaptive_avg_pool3d(x, {2, 3, 2}); }},
      {"adaptive_6x4x9", [](const Tensor& x) { return adaptive_avg_pool3d(x, {6, 4, 9}); }},
  };
}

}  // namespace

TEST_CASE("pool: gradient check of every variant", "[pool][gradcheck]") {
  Context context(Device::cpu(), 7);
  Tensor x = distinct_leaf(context, {2, 3, 5, 7, 6});
  for (const Variant& v : variants()) {
    INFO(v.name);
    gradcheck(context, [&](const auto& in) { return v.op(in[0]); }, {x});
  }
}

TEST_CASE("pool: golden comparison with PyTorch", "[pool][golden]") {
  Context context;
  Checkpoint g = test::load_golden(context, "pool");
  for (const Variant& v : variants()) {
    INFO(v.name);
    const std::string name = v.name;
    Tensor x = g.at("x").clone().set_requires_grad(true);
    Tensor y = v.op(x);
    test::require_close(y, g.at(name + ".y"), test::kGoldenTolerance, name + ".y");
    backward(y, upstream(g, y));
    test::require_close(x.grad(), g.at(name + ".dx"), test::kGoldenTolerance, name + ".dx");
  }
}

TEST_CASE("pool: hand-computed windows", "[pool]") {
  Context context;
  // One 1x1x4 row: 1, 5, 2, -3.
  Tensor x = context.from_vector<double>({1, 1, 1, 1, 4}, {1, 5, 2, -3});
  SECTION("max pool pads with -inf, not 0") {
    Tensor y = max_pool3d(mul_scalar(x, -1.0), {1, 1, 3}, {1, 1, 2}, {0, 0, 1});
    REQUIRE(y.to_vector<double>() == std::vector<double>{-1, 3});
  }
  SECTION("avg pool divisors with and without padding") {
    // Windows [-1, 2) and [1, 4): sums 6 and 4.
    REQUIRE(avg_pool3d(x, {1, 1, 3}, {1, 1, 2}, {0, 0, 1}, true).to_vector<double>() ==
            std::vector<double>{2, 4.0 / 3});
    REQUIRE(avg_pool3d(x, {1, 1, 3}, {1, 1, 2}, {0, 0, 1}, false).to_vector<double>() ==
            std::vector<double>{3, 4.0 / 3});
  }
  SECTION("adaptive windows overlap like PyTorch's") {
    // 4 -> 3: [0, 2), [1, 3), [2, 4).
    REQUIRE(adaptive_avg_pool3d(x, {1, 1, 3}).to_vector<double>() == std::vector<double>{3, 3.5, -0.5});
  }
  SECTION("max pool propagates NaN and gives ties to the first maximum") {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    Tensor y = max_pool3d(context.from_vector<double>({1, 1, 1, 1, 4}, {7, 7, nan, 1}), {1, 1, 2},
                          {1, 1, 2});
    REQUIRE(y.to_vector<double>()[0] == 7);
    REQUIRE(std::isnan(y.to_vector<double>()[1]));
    Tensor t = context.from_vector<double>({1, 1, 1, 1, 2}, {7, 7});
    t.set_requires_grad(true);
    backward(sum(max_pool3d(t, {1, 1, 2}, {1, 1, 2})));
    REQUIRE(t.grad().to_vector<double>() == std::vector<double>{1, 0});
  }
}

TEST_CASE("pool: max pool equals a per-output scan on data full of ties and NaNs", "[pool]") {
  Context context(Device::cpu(), 5);
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // All negative: a window at an edge must not see its padding as a 0 (or as anything).
  const std::vector<std::vector<double>> palettes{{-inf, -1, 0, 0, 1, 2, 2, nan}, {-inf, -3, -2, -2, -1}};
  struct Config {
    Axes kernel, stride, pad;
  };
  for (const Config& c : {Config{{3, 3, 3}, {2, 2, 2}, {1, 1, 1}}, Config{{2, 2, 2}, {2, 2, 2}, {0, 0, 0}},
                          Config{{3, 2, 3}, {1, 2, 2}, {1, 1, 0}}, Config{{1, 3, 5}, {1, 1, 3}, {0, 1, 2}}}) {
    for (const auto& [dtype, palette] : {std::pair{DType::f32, palettes[0]}, std::pair{DType::f64, palettes[0]},
                                         std::pair{DType::f32, palettes[1]}}) {
      const Axes in{5, 6, 11};
      const int64_t planes = 3, in_plane = in[0] * in[1] * in[2];
      std::vector<double> xv(static_cast<std::size_t>(planes * in_plane));
      for (std::size_t i = 0; i < xv.size(); ++i) xv[i] = palette[(i * 7919 + i / 5) % palette.size()];
      Tensor x = context.from_vector<double>({1, planes, in[0], in[1], in[2]}, xv).to(dtype);
      x.set_requires_grad(true);
      Tensor y = max_pool3d(x, c.kernel, c.stride, c.pad);
      Axes out{};
      for (int a = 0; a < 3; ++a) out[a] = (in[a] + 2 * c.pad[a] - c.kernel[a]) / c.stride[a] + 1;
      // dy = 1, 2, 3, ...: dx then shows which input each output picked.
      std::vector<double> dyv(static_cast<std::size_t>(y.numel()));
      for (std::size_t i = 0; i < dyv.size(); ++i) dyv[i] = static_cast<double>(i + 1);
      backward(y, context.from_vector<double>(y.shape(), dyv).to(dtype));
      // The reference: each window scanned in (d, h, w) order from its first element.
      std::vector<double> y_ref, dx_ref(xv.size(), 0.0);
      for (int64_t p = 0; p < planes; ++p)
        for (int64_t od = 0; od < out[0]; ++od)
          for (int64_t oh = 0; oh < out[1]; ++oh)
            for (int64_t ow = 0; ow < out[2]; ++ow) {
              const Axes o{od, oh, ow};
              Axes lo{}, hi{};
              for (int a = 0; a < 3; ++a) {
                lo[a] = std::max<int64_t>(o[a] * c.stride[a] - c.pad[a], 0);
                hi[a] = std::min(o[a] * c.stride[a] - c.pad[a] + c.kernel[a], in[a]);
              }
              int64_t best = p * in_plane + (lo[0] * in[1] + lo[1]) * in[2] + lo[2];
              for (int64_t d = lo[0]; d < hi[0]; ++d)
                for (int64_t h = lo[1]; h < hi[1]; ++h)
                  for (int64_t w = lo[2]; w < hi[2]; ++w) {
                    const int64_t i = p * in_plane + (d * in[1] + h) * in[2] + w;
                    if (xv[i] > xv[best] || std::isnan(xv[i])) best = i;
                  }
              y_ref.push_back(xv[best]);
              dx_ref[best] += static_cast<double>(y_ref.size());
            }
      INFO("kernel " << c.kernel[2] << " stride " << c.stride[2] << " dtype " << dtype_name(dtype));
      const std::vector<double> yv = y.to_vector<double>();
      REQUIRE(yv.size() == y_ref.size());
      for (std::size_t i = 0; i < yv.size(); ++i) {
        INFO("output " << i);
        REQUIRE((std::isnan(y_ref[i]) ? std::isnan(yv[i]) : yv[i] == y_ref[i]));
      }
      REQUIRE(x.grad().to_vector<double>() == dx_ref);
    }
  }
}

TEST_CASE("pool: results do not depend on the thread count", "[pool]") {
  Context context(Device::cpu(), 8);
  Tensor x = test::random_leaf(context, {2, 4, 17, 20, 24}, DType::f32);
  for (const Variant& v : variants()) {
    INFO(v.name);
    auto run = [&](int threads) {
      const int previous = omp_get_max_threads();
      omp_set_num_threads(threads);
      x.zero_grad();
      Tensor y = v.op(x);
      backward(y, mul_scalar(y.detach(), 3.0));
      omp_set_num_threads(previous);
      return std::vector<std::vector<float>>{y.to_vector<float>(), x.grad().to_vector<float>()};
    };
    REQUIRE(run(1) == run(2));
  }
}

TEST_CASE("pool: bad arguments give clear errors", "[pool]") {
  Context context;
  Tensor x = context.randn({2, 3, 5, 7, 6});
  REQUIRE_THROWS_WITH(max_pool3d(context.ones({3, 5, 7, 6}), {2, 2, 2}, {2, 2, 2}),
                      Catch::Contains("[N, C, D, H, W]"));
  REQUIRE_THROWS_WITH(avg_pool3d(context.ones({2, 3, 0, 7, 6}), {2, 2, 2}, {2, 2, 2}),
                      Catch::Contains("empty"));
  REQUIRE_THROWS_WITH(max_pool3d(x, {2, 0, 2}, {2, 2, 2}), Catch::Contains("kernel must be >= 1"));
  REQUIRE_THROWS_WITH(avg_pool3d(x, {2, 2, 2}, {2, 2, 0}), Catch::Contains("stride must be >= 1"));
  REQUIRE_THROWS_WITH(max_pool3d(x, {3, 3, 3}, {2, 2, 2}, {2, 1, 1}),
                      Catch::Contains("padding must be between 0 and half the kernel"));
  REQUIRE_THROWS_WITH(avg_pool3d(x, {3, 3, 3}, {2, 2, 2}, {1, -1, 1}),
                      Catch::Contains("padding must be between 0 and half the kernel"));
  REQUIRE_THROWS_WITH(max_pool3d(x, {6, 2, 2}, {1, 1, 1}), Catch::Contains("output would be empty"));
  REQUIRE_THROWS_WITH(avg_pool3d(x, {2, 2, 8}, {1, 1, 1}, {0, 0, 0}),
                      Catch::Contains("output would be empty"));
  REQUIRE_THROWS_WITH(adaptive_avg_pool3d(x, {1, 0, 1}), Catch::Contains("output_size must be >= 1"));
  REQUIRE_THROWS_WITH(adaptive_avg_pool3d(x.to(DType::u8), {1, 1, 1}), Catch::Contains("f32 or f64"));
  // The largest legal padding (kernel / 2) and a kernel as large as the input are accepted.
  REQUIRE(max_pool3d(x, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}).shape() == Shape{2, 3, 6, 8, 7});
  REQUIRE(avg_pool3d(x, {5, 7, 6}, {1, 1, 1}).shape() == Shape{2, 3, 1, 1, 1});
}
