#include <omp.h>

#include <random>
#include <string>
#include <vector>

#include "med3d/kernels/cpu/upsample.h"

#include "test_util.h"

using namespace med3d;
using test::gradcheck;
using test::random_leaf;
using Size = std::array<int64_t, 3>;
using Scale = std::array<double, 3>;

namespace {

// The upstream gradient of a golden variant: the first numel(y) values of the fixture's `w`.
Tensor upstream(const Checkpoint& g, const Tensor& y) {
  std::vector<float> w = g.at("w").to_vector<float>();
  REQUIRE(static_cast<int64_t>(w.size()) >= y.numel());
  w.resize(static_cast<std::size_t>(y.numel()));
  return y.context().from_vector<float>(y.shape(), w);
}

struct Variant {
  std::string name;
  std::string input;  // x: 2x3x5x7x6, xs: 1x2x3x4x3, x8: 1x1x2x3x2 (scale 8 stays small)
  std::function<Tensor(const Tensor&)> op;
};

// The same variants as tests/golden/gen_normpool.py.
std::vector<Variant> trilinear_variants() {
  std::vector<Variant> v;
  for (bool ac : {false, true}) {
    const std::string s = ac ? "_ac1" : "_ac0";
    v.push_back({"trilinear_size_up_down" + s, "x",
                 [ac](const Tensor& x) { return upsample_trilinear3d(x, Size{9, 4, 11}, ac); }});
    v.push_back({"trilinear_size_mixed" + s, "x",
                 [ac](const Tensor& x) { return upsample_trilinear3d(x, Size{5, 1, 13}, ac); }});
    v.push_back({"trilinear_scale2" + s, "xs",
                 [ac](const Tensor& x) { return upsample_trilinear3d_scale(x, Scale{2, 2, 2}, ac); }});
    v.push_back({"trilinear_scale8" + s, "x8",
                 [ac](const Tensor& x) { return upsample_trilinear3d_scale(x, Scale{8, 8, 8}, ac); }});
    v.push_back({"trilinear_scale_odd" + s, "x",
                 [ac](const Tensor& x) { return upsample_trilinear3d_scale(x, Scale{1.1, 2.5, 0.75}, ac); }});
  }
  return v;
}

std::vector<Variant> nearest_variants() {
  return {
      {"nearest_size_up_down", "x", [](const Tensor& x) { return upsample_nearest3d(x, Size{9, 4, 11}); }},
      {"nearest_size_double", "x", [](const Tensor& x) { return upsample_nearest3d(x, Size{10, 14, 3}); }},
      {"nearest_scale2", "xs", [](const Tensor& x) { return upsample_nearest3d_scale(x, Scale{2, 2, 2}); }},
      {"nearest_scale8", "x8", [](const Tensor& x) { return upsample_nearest3d_scale(x, Scale{8, 8, 8}); }},
      {"nearest_scale_odd", "x", [](const Tensor& x) { return upsample_nearest3d_scale(x, Scale{1.3, 2.5, 0.75}); }},
  };
}

void check_golden(const std::string& fixture, const std::vector<Variant>& variants) {
  Context context;
  Checkpoint g = test::load_golden(context, fixture);
  for (const Variant& v : variants) {
    INFO(v.name);
    Tensor x = g.at(v.input).clone().set_requires_grad(true);
    Tensor y = v.op(x);
    test::require_close(y, g.at(v.name + ".y"), test::kGoldenTolerance, v.name + ".y");
    backward(y, upstream(g, y));
    test::require_close(x.grad(), g.at(v.name + ".dx"), test::kGoldenTolerance, v.name + ".dx");
  }
}

void check_gradients(const std::vector<Variant>& variants) {
  Context context(Device::cpu(), 9);
  const std::map<std::string, Tensor> inputs{{"x", random_leaf(context, {2, 3, 5, 7, 6})},
                                             {"xs", random_leaf(context, {1, 2, 3, 4, 3})},
                                             {"x8", random_leaf(context, {2, 3, 3, 2, 3})}};
  for (const Variant& v : variants) {
    INFO(v.name);
    gradcheck(context, [&](const auto& in) { return v.op(in[0]); }, {inputs.at(v.input)});
  }
}

}  // namespace

TEST_CASE("upsample: gradient check of trilinear", "[upsample][gradcheck]") {
  check_gradients(trilinear_variants());
}

TEST_CASE("upsample: gradient check of nearest", "[upsample][gradcheck]") {
  check_gradients(nearest_variants());
}

TEST_CASE("upsample: golden comparison of trilinear with PyTorch", "[upsample][golden]") {
  check_golden("upsample_trilinear", trilinear_variants());
}

TEST_CASE("upsample: golden comparison of nearest with PyTorch", "[upsample][golden]") {
  check_golden("upsample_nearest", nearest_variants());
}

// PyTorch 1.13's NCDHW nearest forward samples 5 -> 5 by scale 1.1 at 0, 0, 1, 2, 3, but its
// backward copies the gradient through (0, 1, 2, 3, 4). med3d matches the forward and
// differentiates it consistently, so only y is compared with PyTorch here.
TEST_CASE("upsample: nearest by a scale that keeps an extent", "[upsample][golden][gradcheck]") {
  auto op = [](const Tensor& x) { return upsample_nearest3d_scale(x, Scale{1.1, 1, 1}); };
  Context context;
  Checkpoint g = test::load_golden(context, "upsample_nearest");
  test::require_close(op(g.at("x")), g.at("nearest_scale_same_size.y"), test::kGoldenTolerance, "y");
  Context checks(Device::cpu(), 11);
  gradcheck(checks, [&](const auto& in) { return op(in[0]); }, {random_leaf(checks, {2, 3, 5, 7, 6})});
}

TEST_CASE("upsample: hand-computed rows", "[upsample]") {
  Context context;
  Tensor x = context.from_vector<double>({1, 1, 1, 1, 3}, {0, 3, 6});
  auto row = [](const Tensor& y) { return y.to_vector<double>(); };
  // align_corners: corners meet, step (3 - 1) / (5 - 1) = 0.5.
  REQUIRE(row(upsample_trilinear3d(x, Size{1, 1, 5}, true)) == std::vector<double>{0, 1.5, 3, 4.5, 6});
  // Half-pixel centres: sources max(0, (o + 0.5) / 2 - 0.5) = 0, 0.25, 0.75, 1.25, 1.75, 2.25.
  REQUIRE(row(upsample_trilinear3d_scale(x, Scale{1, 1, 2}, false)) ==
          std::vector<double>{0, 0.75, 2.25, 3.75, 5.25, 6});
  // An unchanged extent is copied even when the scale factor would shift it (1.2 on 3 -> 3).
  REQUIRE(row(upsample_trilinear3d_scale(x, Scale{1, 1, 1.2}, false)) == std::vector<double>{0, 3, 6});
  REQUIRE(row(upsample_nearest3d(x, Size{1, 1, 7})) == std::vector<double>{0, 0, 0, 3, 3, 6, 6});
  REQUIRE(row(upsample_nearest3d_scale(x, Scale{1, 1, 2})) == std::vector<double>{0, 0, 3, 3, 6, 6});
  REQUIRE(row(upsample_nearest3d(x, Size{1, 1, 2})) == std::vector<double>{0, 3});
  // Indices are rounded per dtype as in PyTorch: 41 * (2 / 82) is just below 1 in float
  // arithmetic but rounds to 1 when computed in double and converted to float.
  Tensor pair = context.from_vector<double>({1, 1, 1, 1, 2}, {0, 1});
  REQUIRE(upsample_nearest3d(pair, Size{1, 1, 82}).to_vector<double>()[41] == 1);
  REQUIRE(upsample_nearest3d(pair.to(DType::f32), Size{1, 1, 82}).to_vector<float>()[41] == 0);
  // Scale 1.2 on 3 keeps 3 voxels but samples at steps of 1 / 1.2 (PyTorch's NCDHW forward).
  REQUIRE(row(upsample_nearest3d_scale(x, Scale{1, 1, 1.2})) == std::vector<double>{0, 0, 3});
}

TEST_CASE("upsample: doubling rows by hand through the pattern loops", "[upsample]") {
  // Scale 2 without corner alignment along a width of 5 takes the pattern loops inside (forward:
  // inputs 1 to 3, backward: 2 and 3) and the tables at the edges. x = 4 i, so y = 4 * source:
  // sources 0, 0.25, 0.75, ..., 3.75 and the last clamped to 4.
  Context context;
  Tensor x = context.from_vector<double>({1, 1, 1, 1, 5}, {0, 4, 8, 12, 16}).set_requires_grad(true);
  Tensor y = upsample_trilinear3d_scale(x, Scale{1, 1, 2}, false);
  REQUIRE(y.to_vector<double>() == std::vector<double>{0, 1, 3, 5, 7, 9, 11, 13, 15, 16});
  // dy = o + 1: dx[i] sums dy over the outputs reading input i, weighted 0.25 / 0.75 (output 0
  // reads input 0 alone, output 9 input 4 twice).
  backward(y, context.from_vector<double>(y.shape(), {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  REQUIRE(x.grad().to_vector<double>() == std::vector<double>{3.25, 7, 11, 15, 18.75});
  // All three axes doubled on an input with every axis at least 4 wide.
  Context checked(Device::cpu(), 4);
  gradcheck(checked, [](const auto& in) { return upsample_trilinear3d_scale(in[0], Scale{2, 2, 2}, false); },
            {random_leaf(checked, {1, 2, 4, 5, 6})});
}

TEST_CASE("upsample: results do not depend on the thread count", "[upsample]") {
  Context context(Device::cpu(), 10);
  // Outputs large enough for the parallel loops (one thread sums the workspace rows by rows,
  // two by planes, in register chunks: the same sums either way).
  Tensor x = random_leaf(context, {2, 3, 8, 9, 10}, DType::f32);
  const std::vector<std::function<Tensor(const Tensor&)>> ops{
      [](const Tensor& t) { return upsample_trilinear3d_scale(t, Scale{2, 2, 2}, false); },
      [](const Tensor& t) { return upsample_trilinear3d(t, Size{17, 19, 30}, true); },
      // Rows of 70: a full register chunk and a tail in the gathers of the planes-parallel path.
      [](const Tensor& t) { return upsample_trilinear3d(t, Size{9, 10, 70}, false); },
      [](const Tensor& t) { return upsample_nearest3d_scale(t, Scale{3, 2.5, 2}); }};
  for (const auto& op : ops) {
    auto run = [&](int threads) {
      const int previous = omp_get_max_threads();
      omp_set_num_threads(threads);
      x.zero_grad();
      Tensor y = op(x);
      backward(y, mul_scalar(y.detach(), -2.0));
      omp_set_num_threads(previous);
      return std::vector<std::vector<float>>{y.to_vector<float>(), x.grad().to_vector<float>()};
    };
    REQUIRE(run(1) == run(2));
  }
}

TEST_CASE("upsample: outputs of 4 MiB and more, streamed past the caches, are exact", "[upsample]") {
  // The trilinear forward writes a y of 4 MiB or more with non-temporal stores (vector builds), in
  // the order of the scalar blend: 32 planes of 8x16x32 doubled (4 MiB, planes across the threads)
  // must give the bits of each plane alone (128 KiB, cached stores), with y one float past a 64-byte
  // line (rows start mid-line); one plane of 32x64x35 to 64x128x70 (4.4 MiB, its rows across the
  // threads, rows of 70 with a vector tail) the same bits on 1 and 3 threads, close to f64.
  namespace k = kernels::cpu;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  auto run = [](const k::UpsampleGeometry& g, const std::vector<float>& x, int threads, int64_t skew) {
    std::vector<float> y(static_cast<std::size_t>(g.planes * g.out[0] * g.out[1] * g.out[2] + 16));
    float* at = y.data() + (16 - reinterpret_cast<uintptr_t>(y.data()) % 64 / 4) % 16 + skew;
    std::vector<float> workspace(static_cast<std::size_t>(k::upsample_trilinear3d_workspace(g)));
    test::with_threads(threads, [&] { k::upsample_trilinear3d_forward(g, x.data(), at, workspace.data()); });
    return std::vector<float>(at, at + g.planes * g.out[0] * g.out[1] * g.out[2]);
  };
  k::UpsampleGeometry many{32, {8, 16, 32}, {16, 32, 64}, {2, 2, 2}, false};
  std::vector<float> x(static_cast<std::size_t>(32 * 8 * 16 * 32));
  for (float& v : x) v = uniform(rng);
  const std::vector<float> all = run(many, x, 2, 1);
  k::UpsampleGeometry one = many;
  one.planes = 1;
  const int64_t in_plane = 8 * 16 * 32, out_plane = 16 * 32 * 64;
  for (int64_t p = 0; p < many.planes; ++p) {
    const std::vector<float> plane(x.begin() + p * in_plane, x.begin() + (p + 1) * in_plane);
    INFO("plane " << p);
    REQUIRE(run(one, plane, 2, 0) == std::vector<float>(all.begin() + p * out_plane, all.begin() + (p + 1) * out_plane));
  }
  const k::UpsampleGeometry wide{1, {32, 64, 35}, {64, 128, 70}, {2, 2, 2}, false};
  std::vector<float> xw(static_cast<std::size_t>(32 * 64 * 35));
  for (float& v : xw) v = uniform(rng);
  const std::vector<float> three = run(wide, xw, 3, 0);
  REQUIRE(run(wide, xw, 1, 3) == three);
  const std::vector<double> xd(xw.begin(), xw.end());
  std::vector<double> yd(three.size()), wd(static_cast<std::size_t>(k::upsample_trilinear3d_workspace(wide)));
  k::upsample_trilinear3d_forward(wide, xd.data(), yd.data(), wd.data());
  for (std::size_t i = 0; i < yd.size(); i += 97) REQUIRE(std::abs(three[i] - yd[i]) < 1e-5);
}

TEST_CASE("upsample: bad arguments give clear errors", "[upsample]") {
  Context context;
  Tensor x = context.randn({2, 3, 5, 7, 6});
  REQUIRE_THROWS_WITH(upsample_trilinear3d(context.ones({3, 5, 7, 6}), Size{2, 2, 2}, false),
                      Catch::Contains("[N, C, D, H, W]"));
  REQUIRE_THROWS_WITH(upsample_nearest3d(context.ones({2, 3, 5, 0, 6}), Size{2, 2, 2}),
                      Catch::Contains("empty"));
  REQUIRE_THROWS_WITH(upsample_trilinear3d(x, Size{2, 0, 2}, true), Catch::Contains("size must be >= 1"));
  REQUIRE_THROWS_WITH(upsample_nearest3d(x, Size{-1, 2, 2}), Catch::Contains("size must be >= 1"));
  REQUIRE_THROWS_WITH(upsample_trilinear3d_scale(x, Scale{2, 0, 2}, false),
                      Catch::Contains("scale must be positive and finite"));
  REQUIRE_THROWS_WITH(upsample_nearest3d_scale(x, Scale{2, 2, std::nan("")}),
                      Catch::Contains("scale must be positive and finite"));
  REQUIRE_THROWS_WITH(upsample_trilinear3d_scale(x, Scale{0.1, 1, 1}, false),
                      Catch::Contains("empty output"));
  REQUIRE_THROWS_WITH(upsample_nearest3d_scale(x.to(DType::i32), Scale{2, 2, 2}),
                      Catch::Contains("f32 or f64"));
}
