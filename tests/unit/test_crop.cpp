#include <set>

#include "med3d/data/crop.h"
#include "test_util.h"

using namespace med3d;
using namespace med3d::data;

namespace {

// A label volume with foreground voxels set to `value` inside `box`.
Tensor label_with_box(Context& context, const Index3& n, const Box3& box, int32_t value = 1) {
  Tensor label = context.zeros({n[0], n[1], n[2]}, DType::i32);
  int32_t* l = label.data<int32_t>();
  for (int64_t d = box.lo[0]; d < box.hi[0]; ++d)
    for (int64_t h = box.lo[1]; h < box.hi[1]; ++h)
      for (int64_t w = box.lo[2]; w < box.hi[2]; ++w) l[(d * n[1] + h) * n[2] + w] = value;
  return label;
}

}  // namespace

TEST_CASE("crop: derived seeds depend only on (seed, epoch, sample)", "[crop]") {
  REQUIRE(derive_seed(1, 2, 3) == derive_seed(1, 2, 3));
  REQUIRE(derive_seed(1, 2, 3) != derive_seed(1, 2, 4));
  REQUIRE(derive_seed(1, 2, 3) != derive_seed(1, 3, 3));
  REQUIRE(derive_seed(1, 2, 3) != derive_seed(2, 2, 3));
  REQUIRE(splitmix64(0) == 0xE220A8397B1DCDAFull);  // reference value of splitmix64
  SampleRng a(7), b(7);
  for (int i = 0; i < 10; ++i) REQUIRE(a.uniform() == b.uniform());
  SampleRng c(7);
  for (int i = 0; i < 1000; ++i) {
    const int64_t k = c.integer(5);
    REQUIRE((k >= 0 && k < 5));
  }
}

TEST_CASE("crop: foreground box is the tight box of nonzero labels", "[crop]") {
  Context context;
  const Box3 box{{2, 3, 1}, {5, 4, 6}};
  Tensor label = label_with_box(context, {8, 7, 9}, box, 3);
  const auto found = foreground_box(label);
  REQUIRE(found.has_value());
  REQUIRE(*found == box);
  REQUIRE_FALSE(foreground_box(context.zeros({4, 4, 4}, DType::i32)).has_value());
  REQUIRE_THROWS_WITH(foreground_box(context.zeros({4, 4, 4})), Catch::Contains("i32"));
  REQUIRE_THROWS_WITH(foreground_box(context.zeros({1, 4, 4, 4}, DType::i32)), Catch::Contains("[D, H, W]"));
}

TEST_CASE("crop: Med3D crop contains 2x the foreground box and lies in the volume", "[crop]") {
  const Index3 n{40, 50, 60};
  const Box3 fg{{10, 20, 30}, {16, 30, 34}};
  // 2x the box: half its extent (3, 5, 2) added on each side.
  const Box3 doubled{{7, 15, 28}, {19, 35, 36}};
  const Box3 whole{{0, 0, 0}, n};
  bool reached_whole_lo = false, reached_tight = false;
  for (uint64_t s = 0; s < 500; ++s) {
    SampleRng rng(derive_seed(1, 0, s));
    const Box3 box = med3d_crop_box(n, fg, rng);
    REQUIRE(box.contains(doubled));
    REQUIRE(whole.contains(box));
    reached_whole_lo |= box.lo[0] == 0;
    reached_tight |= box.lo[0] == 6 || box.lo[0] == 7;
  }
  REQUIRE(reached_whole_lo);
  REQUIRE(reached_tight);
  // Clamped at the border; without foreground the whole volume.
  SampleRng rng(3);
  const Box3 edge = med3d_crop_box(n, Box3{{0, 0, 50}, {4, 10, 60}}, rng);
  REQUIRE(whole.contains(edge));
  REQUIRE(edge.contains(Box3{{0, 0, 45}, {6, 15, 60}}));
  REQUIRE(med3d_crop_box(n, std::nullopt, rng) == whole);
  REQUIRE_THROWS_WITH(med3d_crop_box(n, Box3{{0, 0, 0}, {41, 1, 1}}, rng), Catch::Contains("does not lie"));
}

TEST_CASE("crop: crop copies the box and pads outside the volume", "[crop]") {
  Context context;
  Tensor v = context.arange(2 * 3 * 4).reshape({2, 3, 4});
  Tensor inner = crop(v, Box3{{1, 1, 1}, {2, 3, 3}});
  REQUIRE(inner.shape() == Shape({1, 2, 2}));
  REQUIRE(inner.to_vector<float>() == std::vector<float>{17, 18, 21, 22});
  // Box larger than the volume on every side: the volume sits in the middle, rest is fill.
  Tensor padded = crop(v, Box3{{-1, -1, -1}, {3, 4, 5}}, -7.0);
  REQUIRE(padded.shape() == Shape({4, 5, 6}));
  for (int64_t d = 0; d < 4; ++d)
    for (int64_t h = 0; h < 5; ++h)
      for (int64_t w = 0; w < 6; ++w) {
        const bool inside = d >= 1 && d <= 2 && h >= 1 && h <= 3 && w >= 1 && w <= 4;
        const float expected = inside ? static_cast<float>(((d - 1) * 3 + (h - 1)) * 4 + (w - 1)) : -7.0f;
        REQUIRE(padded.at<float>({d, h, w}) == expected);
      }
  Tensor label = crop(context.full({2, 2, 2}, 5, DType::i32), Box3{{0, 0, -1}, {1, 1, 1}});
  REQUIRE(label.to_vector<int32_t>() == std::vector<int32_t>{0, 5});
  REQUIRE_THROWS_WITH(crop(v, Box3{{0, 0, 0}, {0, 1, 1}}), Catch::Contains("non-empty"));
  REQUIRE_THROWS_WITH(crop(v.to(DType::f64), Box3{{0, 0, 0}, {1, 1, 1}}), Catch::Contains("f32 image or an i32"));
}

TEST_CASE("crop: patches pad when the volume is smaller than the patch", "[crop]") {
  Context context;
  Tensor label = label_with_box(context, {4, 10, 3}, Box3{{1, 2, 0}, {2, 3, 1}});
  SampleRng rng(11);
  const Box3 box = sample_patch_box(label, {8, 6, 7}, 1.0, rng);
  // D: 4 < 8 -> centred, 2 voxels of padding each side; W: 3 < 7 -> lo = -2.
  REQUIRE(box.lo[0] == -2);
  REQUIRE(box.hi[0] == 6);
  REQUIRE(box.lo[2] == -2);
  REQUIRE(box.hi[2] == 5);
  // H: 10 >= 6 -> inside the volume, centred on the foreground voxel h = 2 as far as it can.
  REQUIRE(box.lo[1] == 0);
  REQUIRE(box.hi[1] == 6);
  Tensor patch = crop(label, box);
  REQUIRE(patch.shape() == Shape({8, 6, 7}));
  REQUIRE(patch.at<int32_t>({3, 2, 2}) == 1);  // the foreground voxel (1, 2, 0) moved by (2, 0, 2)
  int64_t ones = 0;
  for (int32_t x : patch.to_vector<int32_t>()) ones += x;
  REQUIRE(ones == 1);
}

TEST_CASE("crop: foreground-biased patches hit the requested fraction", "[crop]") {
  Context context;
  const Index3 n{32, 32, 32};
  // A small foreground (8 voxels of 32768): uniform patches centre on it with p ~ 2.4e-4.
  Tensor label = label_with_box(context, n, Box3{{20, 5, 9}, {22, 7, 11}}, 2);
  const Index3 patch{8, 8, 8};
  for (double fraction : {0.0, 0.33, 0.5, 1.0}) {
    const int draws = 4000;
    int on = 0;
    for (int i = 0; i < draws; ++i) {
      SampleRng rng(derive_seed(5, 0, static_cast<uint64_t>(i)));
      bool centred = false;
      const Box3 box = sample_patch_box(label, patch, fraction, rng, &centred);
      on += centred;
      REQUIRE(box.size() == patch);
      REQUIRE(Box3{{0, 0, 0}, n}.contains(box));
      if (centred) {
        // The foreground lies within the patch.
        Tensor p = crop(label, box);
        int64_t fg = 0;
        for (int32_t x : p.to_vector<int32_t>()) fg += x != 0;
        REQUIRE(fg > 0);
      }
    }
    // Binomial std at 4000 draws is <= 0.008; allow 4 sigma.
    INFO("fraction " << fraction << ", observed " << double(on) / draws);
    REQUIRE(std::abs(double(on) / draws - fraction) < 0.032);
  }
  SampleRng rng(1);
  bool centred = true;
  sample_patch_box(context.zeros({8, 8, 8}, DType::i32), {4, 4, 4}, 1.0, rng, &centred);
  REQUIRE_FALSE(centred);  // no foreground: falls back to a uniform patch
  REQUIRE_THROWS_WITH(sample_patch_box(label, patch, 1.5, rng), Catch::Contains("foreground_fraction"));
  REQUIRE_THROWS_WITH(sample_patch_box(label, {0, 8, 8}, 0.5, rng), Catch::Contains("positive"));
}
