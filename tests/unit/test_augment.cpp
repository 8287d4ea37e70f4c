#include <set>

#include "med3d/data/augment.h"
#include "test_util.h"

using namespace med3d;
using namespace med3d::data;

namespace {

// Image with distinct values v = 1000 d + 100 h + w, label with a few classes.
std::pair<Tensor, Tensor> known_pair(Context& context, const Index3& n) {
  Tensor image = context.empty({n[0], n[1], n[2]}, DType::f32);
  Tensor label = context.zeros({n[0], n[1], n[2]}, DType::i32);
  for (int64_t d = 0; d < n[0]; ++d)
    for (int64_t h = 0; h < n[1]; ++h)
      for (int64_t w = 0; w < n[2]; ++w) {
        image.set<float>({d, h, w}, static_cast<float>(1000 * d + 100 * h + w));
        label.set<int32_t>({d, h, w}, static_cast<int32_t>((d + 2 * h + 3 * w) % 4 == 0 ? 0 : (d + h + w) % 3 + 1));
      }
  return {image, label};
}

std::set<int32_t> label_set(const Tensor& label) {
  const std::vector<int32_t> v = label.to_vector<int32_t>();
  return {v.begin(), v.end()};
}

}  // namespace

TEST_CASE("augment: rotation 0, scale 1, no translation is the identity exactly", "[augment]") {
  Context context;
  auto [image, label] = known_pair(context, {5, 7, 6});
  AugmentParams identity;
  identity.centre = {2.0, 3.0, 2.5};
  auto [out_image, out_label] = resample(image, label, augment_map(identity, {5, 7, 6}), {5, 7, 6}, -1.0);
  REQUIRE(out_image.to_vector<float>() == image.to_vector<float>());
  REQUIRE(out_label.to_vector<int32_t>() == label.to_vector<int32_t>());
  // The same through augment() with every random part switched off.
  AugmentOptions off;
  off.max_rotation_degrees = 0;
  off.scale_min = off.scale_max = 1;
  off.max_translation_fraction = 0;
  off.flip_probability = {0, 0, 0};
  off.noise_probability = 0;
  off.gamma_probability = 0;
  auto [a_image, a_label] = augment(image, label, off, 1234);
  REQUIRE(a_image.to_vector<float>() == image.to_vector<float>());
  REQUIRE(a_label.to_vector<int32_t>() == label.to_vector<int32_t>());
}

TEST_CASE("augment: a 90-degree rotation permutes voxels exactly", "[augment]") {
  Context context;
  const int64_t n = 5;
  auto [image, label] = known_pair(context, {3, n, n});
  AugmentParams p;
  p.rotation_degrees = {90, 0, 0};  // in the (H, W) plane
  p.centre = {1, 2, 2};              // the volume centre
  auto [out_image, out_label] = resample(image, label, augment_map(p, {3, n, n}), {3, n, n}, -1.0);
  for (int64_t d = 0; d < 3; ++d)
    for (int64_t h = 0; h < n; ++h)
      for (int64_t w = 0; w < n; ++w) {
        // out(d, h, w) = in(d, w, n-1-h), as documented in augment.h.
        REQUIRE(out_image.at<float>({d, h, w}) == image.at<float>({d, w, n - 1 - h}));
        REQUIRE(out_label.at<int32_t>({d, h, w}) == label.at<int32_t>({d, w, n - 1 - h}));
      }
  // Known values: out(0, 0, 0) = in(0, 0, 4) = 4; out(2, 1, 3) = in(2, 3, 3) = 2303.
  REQUIRE(out_image.at<float>({0, 0, 0}) == 4.0f);
  REQUIRE(out_image.at<float>({2, 1, 3}) == 2303.0f);
  // Four quarter turns and a 180-degree turn in the (D, H) plane return exact permutations.
  AugmentParams half;
  half.rotation_degrees = {0, 0, 180};
  half.centre = {1, 2, 2};
  auto [h_image, h_label] = resample(image, label, augment_map(half, {3, n, n}), {3, n, n}, -1.0);
  for (int64_t d = 0; d < 3; ++d)
    for (int64_t h = 0; h < n; ++h)
      for (int64_t w = 0; w < n; ++w)
        REQUIRE(h_image.at<float>({d, h, w}) == image.at<float>({2 - d, n - 1 - h, w}));
}

TEST_CASE("augment: flips are involutive and mirror exactly", "[augment]") {
  Context context;
  const Index3 n{4, 5, 6};
  auto [image, label] = known_pair(context, n);
  AugmentParams p;
  p.flip = {true, false, true};
  p.centre = {1.5, 2, 2.5};
  const Affine3 map = augment_map(p, n);
  auto [once_image, once_label] = resample(image, label, map, n, 0.0);
  REQUIRE(once_image.at<float>({0, 1, 0}) == image.at<float>({3, 1, 5}));
  REQUIRE(once_image.to_vector<float>() != image.to_vector<float>());
  auto [twice_image, twice_label] = resample(once_image, once_label, map, n, 0.0);
  REQUIRE(twice_image.to_vector<float>() == image.to_vector<float>());
  REQUIRE(twice_label.to_vector<int32_t>() == label.to_vector<int32_t>());
}

TEST_CASE("augment: random augmentation keeps the label set and is reproducible", "[augment]") {
  Context context;
  const Index3 n{12, 14, 13};
  auto [image, label] = known_pair(context, n);
  const std::set<int32_t> labels = label_set(label);
  REQUIRE(labels == std::set<int32_t>{0, 1, 2, 3});
  AugmentOptions options;  // defaults: +-5 degrees, 0.8-1.2, 10% translation, flips, noise, gamma
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto [a_image, a_label] = augment(image, label, options, seed);
    REQUIRE(a_label.shape() == label.shape());
    const std::set<int32_t> out = label_set(a_label);
    // Nearest-neighbour labels: only values of the input (0 included) can appear.
    for (int32_t v : out) REQUIRE(labels.count(v) == 1);
    REQUIRE(out.size() >= 3);
    auto [b_image, b_label] = augment(image, label, options, seed);
    REQUIRE(a_image.to_vector<float>() == b_image.to_vector<float>());
    REQUIRE(a_label.to_vector<int32_t>() == b_label.to_vector<int32_t>());
  }
  auto [x, y] = augment(image, label, options, 1);
  auto [z, w] = augment(image, label, options, 2);
  REQUIRE(x.to_vector<float>() != z.to_vector<float>());
}

TEST_CASE("augment: drawn parameters respect their ranges", "[augment]") {
  AugmentOptions options;
  const std::optional<Box3> fg = Box3{{10, 10, 10}, {30, 20, 50}};
  int flips = 0;
  for (uint64_t s = 0; s < 300; ++s) {
    SampleRng rng(derive_seed(9, 1, s));
    const AugmentParams p = draw_augment_params(options, {64, 64, 64}, fg, rng);
    for (int a = 0; a < 3; ++a) {
      REQUIRE(std::abs(p.rotation_degrees[a]) <= 5.0);
      REQUIRE(std::abs(p.translation[a]) <= 0.1 * static_cast<double>(fg->size()[a]));
      flips += p.flip[a];
    }
    REQUIRE((p.scale >= 0.8 && p.scale <= 1.2));
    REQUIRE((p.gamma == 1.0 || (p.gamma >= 0.7 && p.gamma <= 1.5)));
    REQUIRE((p.noise_std >= 0 && p.noise_std <= 0.1));
    REQUIRE(p.centre == std::array<double, 3>{19.5, 14.5, 29.5});
  }
  REQUIRE((flips > 350 && flips < 550));  // 900 flips at p = 0.5
  SampleRng rng(0);
  AugmentOptions bad;
  bad.scale_min = 0;
  REQUIRE_THROWS_WITH(draw_augment_params(bad, {4, 4, 4}, std::nullopt, rng), Catch::Contains("scale_min"));
  bad = AugmentOptions{};
  bad.flip_probability = {0.5, 2.0, 0.5};
  REQUIRE_THROWS_WITH(draw_augment_params(bad, {4, 4, 4}, std::nullopt, rng), Catch::Contains("flip_probability"));
}

TEST_CASE("augment: gamma and noise change only the image, with known values", "[augment]") {
  Context context;
  Tensor image = context.from_vector<float>({1, 1, 3}, {0.0f, 0.5f, 1.0f});
  AugmentParams p;
  p.gamma = 2.0;
  apply_intensity(image, p, 0);
  REQUIRE(image.to_vector<float>() == std::vector<float>{0.0f, 0.25f, 1.0f});
  p.gamma = 1.0;
  p.noise_std = 0.5;
  Tensor noisy = context.zeros({10, 10, 10});
  apply_intensity(noisy, p, 42);
  const std::vector<float> v = noisy.to_vector<float>();
  double mean = 0, var = 0;
  for (float x : v) mean += x;
  mean /= static_cast<double>(v.size());
  for (float x : v) var += (x - mean) * (x - mean);
  var /= static_cast<double>(v.size());
  REQUIRE(std::abs(mean) < 0.05);
  REQUIRE(std::abs(std::sqrt(var) - 0.5) < 0.05);
  AugmentParams bad;
  bad.gamma = 0.0;
  REQUIRE_THROWS_WITH(apply_intensity(noisy, bad, 0), Catch::Contains("gamma > 0"));
}

TEST_CASE("augment: a crop box resized by box_map reads the right voxels", "[augment]") {
  Context context;
  auto [image, label] = known_pair(context, {6, 6, 6});
  // Same size: a pure shift by box.lo.
  const Affine3 shift = box_map(Box3{{1, 2, 3}, {4, 5, 6}}, {3, 3, 3});
  auto [s_image, s_label] = resample(image, label, shift, {3, 3, 3}, 0.0);
  REQUIRE(s_image.at<float>({0, 0, 0}) == 1203.0f);
  REQUIRE(s_image.at<float>({2, 2, 2}) == 3405.0f);
  // Halving: output voxel w covers source 2w, 2w+1, read at 2w + 0.5 (average of the two).
  const Affine3 half = box_map(Box3{{0, 0, 0}, {6, 6, 6}}, {3, 3, 3});
  auto [h_image, h_label] = resample(image, label, half, {3, 3, 3}, 0.0);
  REQUIRE(h_image.at<float>({0, 0, 0}) == 550.5f);  // mean over d, h, w in {0, 1}
  REQUIRE_THROWS_WITH(resample(image, context.zeros({6, 6, 5}, DType::i32), half, {3, 3, 3}, 0.0),
                      Catch::Contains("label must be an i32"));
}

TEST_CASE("augment: a map far outside the volume gives fill and background", "[augment]") {
  Context context;
  auto [image, label] = known_pair(context, {4, 4, 4});
  Affine3 far;
  far.offset = {1e300, -1e300, 3.0};
  auto [f_image, f_label] = resample(image, label, far, {2, 3, 2}, -5.0);
  REQUIRE(f_image.to_vector<float>() == std::vector<float>(12, -5.0f));
  REQUIRE(f_label.to_vector<int32_t>() == std::vector<int32_t>(12, 0));
}
