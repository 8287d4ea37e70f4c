// Inference tests: sliding-window prediction against whole-volume softmax (per-voxel models),
// window placement, Gaussian blending computed by hand, flip test-time augmentation; ROI
// helpers (components, boxes, margins, crop/paste); and the way back from a prepared case to
// the input file's grid (reorientation and resampling undone).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "med3d/data/preprocess.h"
#include "med3d/trainers/inference.h"
#include "med3d/trainers/roi.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace med3d;
using namespace med3d::trainers;

namespace {

using InferenceTempDir = med3d::test::ScratchDir;

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// logits[b, k] = sum_c weight[k][c] * x[b, c] + bias[k] at every voxel, in plain loops.
LogitsFn per_voxel_model(const Context& context, int64_t in_channels, int64_t classes) {
  std::vector<float> weight, bias;
  for (int64_t k = 0; k < classes; ++k) {
    bias.push_back(0.1f * static_cast<float>(k) - 0.2f);
    for (int64_t c = 0; c < in_channels; ++c)
      weight.push_back(0.7f * static_cast<float>((k + 1) * (c + 2) % 5) - 1.2f);
  }
  return [context, in_channels, classes, weight, bias](const Tensor& x) {
    REQUIRE(x.dim(1) == in_channels);
    const int64_t batch = x.dim(0), voxels = x.dim(2) * x.dim(3) * x.dim(4);
    Tensor y = context.empty(Shape({batch, classes, x.dim(2), x.dim(3), x.dim(4)}));
    const float* in = x.data<float>();
    float* out = y.data<float>();
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t k = 0; k < classes; ++k)
        for (int64_t v = 0; v < voxels; ++v) {
          float sum = bias[static_cast<std::size_t>(k)];
          for (int64_t c = 0; c < in_channels; ++c)
            sum += weight[static_cast<std::size_t>(k * in_channels + c)] *
                   in[(b * in_channels + c) * voxels + v];
          out[(b * classes + k) * voxels + v] = sum;
        }
    return y;
  };
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  double m = 0;
  for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

}  // namespace

TEST_CASE("window_starts: nnU-Net placement covers every voxel and touches both borders",
          "[inference]") {
  CHECK(window_starts(10, 4, 0.5) == std::vector<int64_t>{0, 2, 4, 6});
  CHECK(window_starts(11, 4, 0.5) == std::vector<int64_t>{0, 2, 4, 5, 7});  // step 1.75 rounded
  CHECK(window_starts(10, 4, 0.0) == std::vector<int64_t>{0, 3, 6});
  CHECK(window_starts(4, 4, 0.5) == std::vector<int64_t>{0});
  CHECK(window_starts(5, 4, 0.0) == std::vector<int64_t>{0, 1});
  for (int64_t p = 1; p <= 9; ++p)
    for (int64_t n = p; n <= 40; ++n)
      for (double overlap : {0.0, 0.25, 0.5, 0.75}) {
        INFO("n " << n << " patch " << p << " overlap " << overlap);
        const std::vector<int64_t> s = window_starts(n, p, overlap);
        REQUIRE(!s.empty());
        CHECK(s.front() == 0);
        CHECK(s.back() == n - p);
        const double step = std::max(1.0, static_cast<double>(p) * (1 - overlap));
        CHECK(static_cast<int64_t>(s.size()) ==
              static_cast<int64_t>(std::ceil(static_cast<double>(n - p) / step)) + 1);
        std::vector<int> covered(static_cast<std::size_t>(n), 0);
        for (std::size_t i = 0; i < s.size(); ++i) {
          if (i > 0) CHECK(s[i] > s[i - 1]);
          for (int64_t x = s[i]; x < s[i] + p; ++x) covered[static_cast<std::size_t>(x)] = 1;
        }
        CHECK(std::count(covered.begin(), covered.end(), 1) == n);
      }
  CHECK_THROWS_AS(window_starts(3, 4, 0.5), Error);
  CHECK_THROWS_AS(window_starts(8, 4, 1.0), Error);
}

TEST_CASE("sliding_window_predict: a per-voxel model gives the whole-volume softmax",
          "[inference]") {
  Context context(Device::cpu(), 3);
  const LogitsFn model = per_voxel_model(context, 2, 3);
  struct Config {
    std::array<int64_t, 3> shape, patch;
    double overlap;
    WindowWeighting weighting;
    int64_t batch;
    PadValue pad;
  };
  const std::vector<Config> configs = {
      {{7, 9, 5}, {4, 4, 4}, 0.5, WindowWeighting::gaussian, 1, PadValue::zero},
      {{7, 9, 5}, {4, 6, 3}, 0.0, WindowWeighting::uniform, 3, PadValue::zero},
      {{7, 9, 5}, {4, 6, 3}, 0.5, WindowWeighting::uniform, 2, PadValue::zero},
      {{13, 10, 11}, {5, 4, 6}, 0.0, WindowWeighting::gaussian, 4, PadValue::zero},
      {{13, 10, 11}, {5, 4, 6}, 0.5, WindowWeighting::gaussian, 5, PadValue::zero},
      {{5, 3, 7}, {8, 8, 8}, 0.5, WindowWeighting::gaussian, 1, PadValue::zero},     // pad all
      {{5, 3, 7}, {8, 2, 4}, 0.5, WindowWeighting::gaussian, 2, PadValue::image_minimum},
      {{1, 1, 1}, {2, 3, 4}, 0.5, WindowWeighting::uniform, 1, PadValue::image_minimum},
  };
  for (const Config& c : configs) {
    INFO("shape " << c.shape[0] << "x" << c.shape[1] << "x" << c.shape[2] << " patch "
                  << c.patch[0] << "x" << c.patch[1] << "x" << c.patch[2] << " overlap "
                  << c.overlap << " batch " << c.batch);
    const Tensor image = context.randn(Shape({1, 2, c.shape[0], c.shape[1], c.shape[2]}));
    SlidingWindowOptions options;
    options.patch = c.patch;
    options.overlap = c.overlap;
    options.weighting = c.weighting;
    options.batch_size = c.batch;
    options.pad_value = c.pad;
    const Tensor probs = sliding_window_predict(model, image, options);
    const Tensor expected = softmax(model(image));
    REQUIRE(probs.shape() == Shape({1, 3, c.shape[0], c.shape[1], c.shape[2]}));
    CHECK(max_abs_diff(probs, expected) < 1e-6);
    CHECK(probs.requires_grad() == false);
  }
}

TEST_CASE("sliding_window_predict: the model sees each window once and batches as asked",
          "[inference]") {
  Context context;
  const Tensor image = context.randn(Shape({1, 1, 10, 4, 11}));
  std::vector<int64_t> batches;
  int64_t voxels_seen = 0;
  bool grad_mode_seen = true;
  const LogitsFn model = [&](const Tensor& x) {
    batches.push_back(x.dim(0));
    voxels_seen += x.numel();
    grad_mode_seen = context.grad_enabled();
    return context.zeros(Shape({x.dim(0), 2, x.dim(2), x.dim(3), x.dim(4)}));
  };
  SlidingWindowOptions options;
  options.patch = {4, 4, 4};
  options.batch_size = 3;
  const Tensor probs = sliding_window_predict(model, image, options);
  // D: starts {0, 2, 4, 6}; H: {0}; W: {0, 2, 4, 5, 7}: 20 windows in batches 3, ..., 3, 2.
  CHECK(batches == std::vector<int64_t>{3, 3, 3, 3, 3, 3, 2});
  CHECK(voxels_seen == 20 * 64);
  CHECK(grad_mode_seen == false);
  CHECK(context.grad_enabled());
  for (float v : probs.to_vector<float>()) CHECK(v == Approx(0.5).margin(1e-7));
  // Wrong logits shapes are reported, not silently accepted.
  const LogitsFn bad = [&](const Tensor& x) {
    return context.zeros(Shape({x.dim(0), 2, x.dim(2), x.dim(3), x.dim(4) - 1}));
  };
  CHECK_THROWS_AS(sliding_window_predict(bad, image, options), Error);
  CHECK_THROWS_AS(sliding_window_predict(model, context.randn(Shape({1, 10, 4, 11})), options),
                  Error);
  options.overlap = 1.0;
  CHECK_THROWS_AS(sliding_window_predict(model, image, options), Error);
}

TEST_CASE("sliding_window_predict: Gaussian weights blend windows as computed by hand",
          "[inference]") {
  Context context;
  // A 1-D-like case: W = 6, patch 4, overlap 0.5 -> windows at 0 and 2. The model's logits are
  // (0, j) with j the voxel's position inside its patch, so P(class 1) = sigmoid(j).
  const Tensor image = context.zeros(Shape({1, 1, 1, 1, 6}));
  const LogitsFn model = [&](const Tensor& x) {
    Tensor y = context.zeros(Shape({x.dim(0), 2, 1, 1, 4}));
    for (int64_t b = 0; b < x.dim(0); ++b)
      for (int64_t j = 0; j < 4; ++j) y.set<float>({b, 1, 0, 0, j}, static_cast<float>(j));
    return y;
  };
  SlidingWindowOptions options;
  options.patch = {1, 1, 4};
  // Gaussian along W: centre 1.5, sigma 0.5: exp(-2 (j - 1.5)^2) / exp(-0.5) -> e^-4, 1, 1, e^-4.
  const Tensor weights = window_weights(context, options.patch, WindowWeighting::gaussian);
  const double edge = std::exp(-4.0);
  CHECK(weights.at<float>({0, 0, 0}) == Approx(edge).epsilon(1e-6));
  CHECK(weights.at<float>({0, 0, 1}) == Approx(1.0).epsilon(1e-6));
  CHECK(weights.at<float>({0, 0, 2}) == Approx(1.0).epsilon(1e-6));
  CHECK(weights.at<float>({0, 0, 3}) == Approx(edge).epsilon(1e-6));

  const Tensor probs = sliding_window_predict(model, image, options);
  const std::vector<double> expected = {
      sigmoid(0), sigmoid(1),
      (1.0 * sigmoid(2) + edge * sigmoid(0)) / (1.0 + edge),  // window 0 at j = 2, 1 at j = 0
      (edge * sigmoid(3) + 1.0 * sigmoid(1)) / (edge + 1.0),
      sigmoid(2), sigmoid(3)};
  for (int64_t x = 0; x < 6; ++x) {
    INFO("x " << x);
    CHECK(probs.at<float>({0, 1, 0, 0, x}) == Approx(expected[static_cast<std::size_t>(x)]).epsilon(1e-6));
    CHECK(probs.at<float>({0, 0, 0, 0, x}) ==
          Approx(1 - expected[static_cast<std::size_t>(x)]).epsilon(1e-6));
  }
  options.weighting = WindowWeighting::uniform;
  const Tensor flat = sliding_window_predict(model, image, options);
  CHECK(flat.at<float>({0, 1, 0, 0, 2}) == Approx((sigmoid(2) + sigmoid(0)) / 2).epsilon(1e-6));
  CHECK(flat.at<float>({0, 1, 0, 0, 3}) == Approx((sigmoid(3) + sigmoid(1)) / 2).epsilon(1e-6));

  // A 3-D Gaussian is the product of the per-axis profiles; odd extents peak at 1 in the centre.
  const Tensor w3 = window_weights(context, {5, 3, 4}, WindowWeighting::gaussian);
  auto profile = [](int64_t i, int64_t p) {
    const double sigma = static_cast<double>(p) / 8, c = static_cast<double>(p - 1) / 2;
    const double peak = p % 2 ? 1.0 : std::exp(-0.5 * std::pow(0.5 / sigma, 2));
    return std::max(std::exp(-0.5 * std::pow((static_cast<double>(i) - c) / sigma, 2)) / peak,
                    0.0);
  };
  for (int64_t d = 0; d < 5; ++d)
    for (int64_t h = 0; h < 3; ++h)
      for (int64_t w = 0; w < 4; ++w) {
        const double v = std::max(profile(d, 5) * profile(h, 3) * profile(w, 4),
                                  static_cast<double>(kMinWindowWeight));
        CHECK(w3.at<float>({d, h, w}) == Approx(v).epsilon(1e-5));
      }
  CHECK(w3.at<float>({2, 1, 1}) == 1.0f);
  CHECK(w3.at<float>({0, 0, 0}) > kMinWindowWeight);  // e^-12.68: not clamped
  // Patch 8: each axis' corner is e^-6 of its peak, e^-18 together: clamped.
  const Tensor w8 = window_weights(context, {8, 8, 8}, WindowWeighting::gaussian);
  CHECK(w8.at<float>({0, 0, 0}) == kMinWindowWeight);
  CHECK(w8.at<float>({7, 7, 7}) == kMinWindowWeight);
  CHECK(w8.at<float>({3, 4, 3}) == 1.0f);
  CHECK(w8.at<float>({0, 4, 4}) == Approx(std::exp(-6.0)).epsilon(1e-5));
}

TEST_CASE("sliding_window_predict: flip TTA averages the 8 flips and undoes each",
          "[inference]") {
  Context context(Device::cpu(), 5);
  // Flip-equivariant (per-voxel) model: TTA changes nothing.
  const LogitsFn model = per_voxel_model(context, 1, 2);
  const Tensor image = context.randn(Shape({1, 1, 9, 6, 7}));
  SlidingWindowOptions options;
  options.patch = {4, 4, 4};
  options.batch_size = 2;
  const Tensor plain = sliding_window_predict(model, image, options);
  options.flip_tta = true;
  const Tensor tta = sliding_window_predict(model, image, options);
  CHECK(max_abs_diff(plain, tta) < 1e-6);

  // A model that sees positions: logits (0, w + 3 d) inside the patch. One window covers the
  // image; a flip of W maps w to 3 - w, of D maps d to 2 - d, of H changes nothing, so class 1
  // has probability mean over (fd, fw) of sigmoid(w' + 3 d') (each pair counted twice).
  const Tensor small = context.randn(Shape({1, 1, 3, 2, 4}));
  const LogitsFn positional = [&](const Tensor& x) {
    Tensor y = context.zeros(Shape({x.dim(0), 2, 3, 2, 4}));
    for (int64_t b = 0; b < x.dim(0); ++b)
      for (int64_t d = 0; d < 3; ++d)
        for (int64_t h = 0; h < 2; ++h)
          for (int64_t w = 0; w < 4; ++w)
            y.set<float>({b, 1, d, h, w}, static_cast<float>(w + 3 * d));
    return y;
  };
  options.patch = {3, 2, 4};
  const Tensor out = sliding_window_predict(positional, small, options);
  for (int64_t d = 0; d < 3; ++d)
    for (int64_t w = 0; w < 4; ++w) {
      double expected = 0;
      for (int64_t fd = 0; fd < 2; ++fd)
        for (int64_t fw = 0; fw < 2; ++fw)
          expected += sigmoid(static_cast<double>((fw ? 3 - w : w) + 3 * (fd ? 2 - d : d))) / 4;
      for (int64_t h = 0; h < 2; ++h) CHECK(out.at<float>({0, 1, d, h, w}) == Approx(expected));
    }
}

TEST_CASE("argmax_labels: first maximum per voxel", "[inference]") {
  Context context;
  const Tensor p = context.from_vector<float>(
      Shape({1, 3, 1, 1, 4}), {0.2f, 0.5f, 0.1f, 0.4f,  0.7f, 0.2f, 0.1f, 0.3f,
                               0.1f, 0.3f, 0.8f, 0.3f});
  const Tensor labels = argmax_labels(p);
  REQUIRE(labels.shape() == Shape({1, 1, 4}));
  CHECK(labels.dtype() == DType::i32);
  CHECK(labels.to_vector<int32_t>() == std::vector<int32_t>{1, 0, 2, 0});
  CHECK(argmax_labels(p.reshape(Shape({3, 1, 1, 4}))).to_vector<int32_t>() ==
        std::vector<int32_t>{1, 0, 2, 0});
  CHECK_THROWS_AS(argmax_labels(p.reshape(Shape({3, 4}))), Error);
}

// ---- ROI ----

namespace {

Tensor mask_from_voxels(const Context& context, const std::array<int64_t, 3>& shape,
                        const std::vector<std::array<int64_t, 3>>& voxels, int32_t value = 1) {
  Tensor m = context.zeros(Shape({shape[0], shape[1], shape[2]}), DType::i32);
  for (const auto& v : voxels) m.set<int32_t>({v[0], v[1], v[2]}, value);
  return m;
}

}  // namespace

TEST_CASE("connected_components: blobs and diagonal contacts under 6 and 26 connectivity",
          "[inference][roi]") {
  Context context;
  // Blob A: 2x2x2 at the origin (8 voxels); blob B: 2x3x3 at (3, 3, 4) (18 voxels).
  Tensor mask = context.zeros(Shape({5, 6, 7}), DType::u8);
  for (int64_t d = 0; d < 5; ++d)
    for (int64_t h = 0; h < 6; ++h)
      for (int64_t w = 0; w < 7; ++w) {
        const bool a = d < 2 && h < 2 && w < 2;
        const bool b = d >= 3 && h >= 3 && w >= 4;
        if (a || b) mask.set<uint8_t>({d, h, w}, 1);
      }
  for (Connectivity conn : {Connectivity::faces, Connectivity::all}) {
    const Components c = connected_components(mask, conn);
    CHECK(c.count() == 2);
    CHECK(c.sizes == std::vector<int64_t>{8, 18});
    CHECK(c.labels.at<int32_t>({1, 1, 1}) == 1);
    CHECK(c.labels.at<int32_t>({4, 5, 6}) == 2);
    CHECK(c.labels.at<int32_t>({2, 2, 2}) == 0);
  }
  const Tensor largest = largest_component(mask);
  CHECK(largest.dtype() == DType::u8);
  CHECK(largest.at<uint8_t>({0, 0, 0}) == 0);
  CHECK(largest.at<uint8_t>({3, 3, 4}) == 1);
  CHECK(bounding_box(largest) == Box3{{3, 3, 4}, {5, 6, 7}});

  // Corner contact and edge contact: one component with 26, two with 6.
  const Tensor corner = mask_from_voxels(context, {4, 4, 4}, {{1, 1, 1}, {2, 2, 2}});
  CHECK(connected_components(corner).count() == 1);
  CHECK(connected_components(corner, Connectivity::faces).count() == 2);
  const Tensor edge = mask_from_voxels(context, {4, 4, 4}, {{1, 1, 1}, {1, 2, 2}});
  CHECK(connected_components(edge).count() == 1);
  CHECK(connected_components(edge, Connectivity::faces).count() == 2);
  const Tensor face = mask_from_voxels(context, {4, 4, 4}, {{1, 1, 1}, {1, 1, 2}});
  CHECK(connected_components(face, Connectivity::faces).count() == 1);
  // Two voxels apart: never connected.
  const Tensor apart = mask_from_voxels(context, {4, 4, 4}, {{0, 0, 0}, {2, 2, 2}});
  CHECK(connected_components(apart).count() == 2);

  // Values are kept inside the largest component (a lesion label inside the organ).
  Tensor labels = mask_from_voxels(context, {3, 3, 6}, {{0, 0, 0}});
  for (int64_t w = 2; w < 6; ++w) labels.set<int32_t>({1, 1, w}, w == 4 ? 2 : 1);
  const Tensor kept = largest_component(labels);
  CHECK(kept.at<int32_t>({0, 0, 0}) == 0);
  CHECK(kept.at<int32_t>({1, 1, 4}) == 2);
  CHECK(kept.at<int32_t>({1, 1, 5}) == 1);
  // Ties: the first in scan order.
  const Tensor tie = largest_component(apart);
  CHECK(tie.at<int32_t>({0, 0, 0}) == 1);
  CHECK(tie.at<int32_t>({2, 2, 2}) == 0);
  // Empty masks.
  const Tensor empty = context.zeros(Shape({2, 3, 4}), DType::f32);
  CHECK(connected_components(empty).count() == 0);
  CHECK(!bounding_box(empty).has_value());
  CHECK(largest_component(empty).to_vector<float>() == std::vector<float>(24, 0.0f));
}

TEST_CASE("ROI boxes: bounding box, expand and clamp, crop and paste round trip",
          "[inference][roi]") {
  Context context(Device::cpu(), 9);
  const Tensor m = mask_from_voxels(context, {6, 7, 8}, {{1, 2, 3}, {4, 2, 5}, {2, 6, 3}});
  const std::optional<Box3> box = bounding_box(m);
  REQUIRE(box.has_value());
  CHECK(*box == Box3{{1, 2, 3}, {5, 7, 6}});
  const Index3 shape{6, 7, 8};
  CHECK(expand_box(*box, {1, 2, 3}, shape) == Box3{{0, 0, 0}, {6, 7, 8}});
  CHECK(expand_box(*box, {0, 1, 1}, shape) == Box3{{1, 1, 2}, {5, 7, 7}});
  CHECK_THROWS_AS(expand_box(*box, {-1, 0, 0}, shape), Error);
  CHECK_THROWS_AS(expand_box(Box3{{0, 0, 0}, {7, 1, 1}}, {0, 0, 0}, shape), Error);

  const Tensor x = context.randn(Shape({2, 6, 7, 8}));
  const Box3 b{{1, 2, 3}, {4, 7, 5}};
  const Tensor c = crop_box(x, b);
  REQUIRE(c.shape() == Shape({2, 3, 5, 2}));
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t d = 0; d < 3; ++d)
      for (int64_t h = 0; h < 5; ++h)
        for (int64_t w = 0; w < 2; ++w)
          CHECK(c.at<float>({n, d, h, w}) == x.at<float>({n, d + 1, h + 2, w + 3}));
  CHECK(paste_box(x, c, b).to_vector<float>() == x.to_vector<float>());
  const Tensor pasted = paste_box(c, b, shape, -1.0);
  REQUIRE(pasted.shape() == x.shape());
  const std::vector<float> xv = x.to_vector<float>(), pv = pasted.to_vector<float>();
  std::size_t i = 0;
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t d = 0; d < 6; ++d)
      for (int64_t h = 0; h < 7; ++h)
        for (int64_t w = 0; w < 8; ++w, ++i) {
          const bool inside = d >= 1 && d < 4 && h >= 2 && h < 7 && w >= 3 && w < 5;
          CHECK(pv[i] == (inside ? xv[i] : -1.0f));
        }
  // Labels paste into an i32 volume; a patch that does not fit the box is refused.
  const Tensor lab = crop_box(m, *box);
  CHECK(paste_box(lab, *box, shape).to_vector<int32_t>() == m.to_vector<int32_t>());
  CHECK_THROWS_AS(paste_box(x, c, Box3{{0, 0, 0}, {3, 5, 3}}), Error);
  CHECK_THROWS_AS(crop_box(x, Box3{{0, 0, 0}, {7, 1, 1}}), Error);
}

TEST_CASE("random_expand_box: margins within range and reproducible from the seed",
          "[inference][roi]") {
  const Box3 box{{20, 20, 20}, {30, 25, 40}};
  const Index3 shape{100, 100, 100};
  const Index3 lo{2, 0, 5}, hi{4, 0, 6};
  std::set<int64_t> seen_d;
  std::vector<Box3> first;
  data::SampleRng rng(42);
  for (int i = 0; i < 200; ++i) {
    const Box3 out = random_expand_box(box, lo, hi, shape, rng);
    first.push_back(out);
    for (int a = 0; a < 3; ++a) {
      CHECK(box.lo[a] - out.lo[a] >= lo[a]);
      CHECK(box.lo[a] - out.lo[a] <= hi[a]);
      CHECK(out.hi[a] - box.hi[a] >= lo[a]);
      CHECK(out.hi[a] - box.hi[a] <= hi[a]);
    }
    seen_d.insert(box.lo[0] - out.lo[0]);
    seen_d.insert(out.hi[0] - box.hi[0]);
  }
  CHECK(seen_d == std::set<int64_t>{2, 3, 4});  // every allowed margin occurs
  data::SampleRng again(42), other(43);
  bool differs = false;
  for (int i = 0; i < 200; ++i) {
    CHECK(random_expand_box(box, lo, hi, shape, again) == first[static_cast<std::size_t>(i)]);
    differs = differs ||
              !(random_expand_box(box, lo, hi, shape, other) == first[static_cast<std::size_t>(i)]);
  }
  CHECK(differs);
  // Clamped at the volume border.
  data::SampleRng near(1);
  const Box3 clamped = random_expand_box(Box3{{0, 1, 97}, {3, 4, 99}}, {5, 5, 5}, {9, 9, 9},
                                         shape, near);
  CHECK(clamped.lo[0] == 0);
  CHECK(clamped.lo[1] == 0);
  CHECK(clamped.hi[2] == 100);
  CHECK((clamped.lo[2] >= 97 - 9 && clamped.lo[2] <= 97 - 5));
  CHECK((clamped.hi[0] >= 3 + 5 && clamped.hi[0] <= 3 + 9));
  CHECK((clamped.hi[1] >= 4 + 5 && clamped.hi[1] <= 4 + 9));
  CHECK_THROWS_AS(random_expand_box(box, {3, 0, 0}, {2, 0, 0}, shape, near), Error);
}

// ---- back to the input file's grid ----

namespace {

// Affine of voxel axes (i, j, k) pointing along the world directions of `code` with the given
// spacing per voxel axis and origin.
std::array<double, 16> affine_for(const std::string& code, const std::array<double, 3>& spacing,
                                  const std::array<double, 3>& origin) {
  std::array<double, 16> a{};
  for (int v = 0; v < 3; ++v) {
    const char l = code[static_cast<std::size_t>(v)];
    const int world = (l == 'R' || l == 'L') ? 0 : (l == 'A' || l == 'P') ? 1 : 2;
    const double sign = (l == 'R' || l == 'A' || l == 'S') ? 1.0 : -1.0;
    a[static_cast<std::size_t>(4 * world + v)] = sign * spacing[static_cast<std::size_t>(v)];
  }
  for (int r = 0; r < 3; ++r) a[static_cast<std::size_t>(4 * r + 3)] = origin[static_cast<std::size_t>(r)];
  a[15] = 1;
  return a;
}

struct SyntheticCase {
  DatasetCase c;
  Tensor label;  // i32 [D, H, W] as in the file
};

// Writes an image and a label of large blobs in file order with the given orientation and
// voxel spacing (i, j, k).
SyntheticCase write_case(const Context& context, const InferenceTempDir& dir,
                         const std::string& name, const std::string& code,
                         const std::array<double, 3>& spacing, const std::array<int64_t, 3>& shape) {
  std::vector<int32_t> labels;
  std::vector<float> values;
  for (int64_t d = 0; d < shape[0]; ++d)
    for (int64_t h = 0; h < shape[1]; ++h)
      for (int64_t w = 0; w < shape[2]; ++w) {
        const double u = (static_cast<double>(d) + 0.5) / static_cast<double>(shape[0]);
        const double v = (static_cast<double>(h) + 0.5) / static_cast<double>(shape[1]);
        const double t = (static_cast<double>(w) + 0.5) / static_cast<double>(shape[2]);
        int32_t l = 0;
        if (u > 0.15 && u < 0.8 && v > 0.2 && v < 0.7 && t > 0.1 && t < 0.6) l = 1;
        if ((u - 0.6) * (u - 0.6) + (v - 0.65) * (v - 0.65) + (t - 0.7) * (t - 0.7) < 0.06)
          l = 2;
        labels.push_back(l);
        values.push_back(static_cast<float>(100 * l + d + 2 * h - w));
      }
  Volume image, label;
  image.data = context.from_vector<float>(Shape({shape[0], shape[1], shape[2]}), values);
  label.data = context.from_vector<int32_t>(Shape({shape[0], shape[1], shape[2]}), labels);
  image.affine = label.affine = affine_for(code, spacing, {-30, 12, 7});
  image.spacing = label.spacing = {spacing[2], spacing[1], spacing[0]};
  SyntheticCase out;
  out.c.id = name;
  out.c.image_path = dir.path(name + "_img.nii.gz");
  out.c.label_path = dir.path(name + "_lab.nii.gz");
  write_nifti(out.c.image_path, image);
  write_nifti(out.c.label_path, label);
  out.label = label.data;
  return out;
}

Tensor one_hot(const Context& context, const Tensor& labels, int64_t classes) {
  const Shape& s = labels.shape();
  Tensor out = context.zeros(Shape({classes, s[0], s[1], s[2]}));
  const int32_t* l = labels.data<int32_t>();
  float* o = out.data<float>();
  for (int64_t i = 0; i < labels.numel(); ++i) o[l[i] * labels.numel() + i] = 1.0f;
  return out;
}

// Voxels where `actual` differs from `expected`; each must have a voxel of another label in
// `expected` within `radius` voxels (max norm): a boundary voxel, not a misplaced blob.
int64_t boundary_mismatches(const Tensor& actual, const Tensor& expected, int64_t radius) {
  REQUIRE(actual.shape() == expected.shape());
  const Shape& s = expected.shape();
  int64_t count = 0;
  for (int64_t d = 0; d < s[0]; ++d)
    for (int64_t h = 0; h < s[1]; ++h)
      for (int64_t w = 0; w < s[2]; ++w) {
        const int32_t e = expected.at<int32_t>({d, h, w});
        if (actual.at<int32_t>({d, h, w}) == e) continue;
        ++count;
        bool near_boundary = false;
        for (int64_t a = std::max<int64_t>(0, d - radius); a <= std::min(s[0] - 1, d + radius); ++a)
          for (int64_t b = std::max<int64_t>(0, h - radius); b <= std::min(s[1] - 1, h + radius); ++b)
            for (int64_t c = std::max<int64_t>(0, w - radius); c <= std::min(s[2] - 1, w + radius); ++c)
              near_boundary = near_boundary || expected.at<int32_t>({a, b, c}) != e;
        INFO("mismatch at " << d << ", " << h << ", " << w);
        CHECK(near_boundary);
      }
  return count;
}

}  // namespace

TEST_CASE("labels_to_reference_grid: identity without reorientation or resampling",
          "[inference][regrid]") {
  Context context(Device::cpu(), 2);
  InferenceTempDir dir;
  const SyntheticCase sc = write_case(context, dir, "ras", "RAS", {1.0, 1.0, 1.0}, {9, 11, 10});
  PreprocessOptions options;
  options.intensity.mode = IntensityMode::none;
  const PreparedCase p = prepare_case(context, sc.c, options);
  const Volume reference = read_nifti(context, sc.c.image_path);
  CHECK(labels_to_reference_grid(p.label.data, p, reference).to_vector<int32_t>() ==
        sc.label.to_vector<int32_t>());
  CHECK(labels_to_reference_grid(one_hot(context, p.label.data, 3), p, reference)
            .to_vector<int32_t>() == sc.label.to_vector<int32_t>());
  // Floating values on identical grids come back bit for bit.
  const Tensor noise = context.randn(Shape({2, 9, 11, 10}));
  CHECK(resample_to_grid(noise, reference.affine, {9, 11, 10}, reference.affine,
                         Interpolation::linear)
            .to_vector<float>() == noise.to_vector<float>());
  // prepare_image is prepare_case without the label.
  const PreparedCase q = prepare_image(context, sc.c.image_path, options);
  CHECK(q.id == "ras_img");
  CHECK(q.image.data.to_vector<float>() == p.image.data.to_vector<float>());
  CHECK(q.image.affine == p.image.affine);
  CHECK(q.original_shape == p.original_shape);
  CHECK(!q.label.data.defined());
}

TEST_CASE("labels_to_reference_grid: permuted and flipped axes with exact 2x upsampling",
          "[inference][regrid]") {
  Context context;
  InferenceTempDir dir;
  // PIL: i -> Posterior, j -> Inferior, k -> Left; after RAS: W = k, H = i, D = j (flipped).
  const SyntheticCase sc = write_case(context, dir, "pil", "PIL", {2.0, 3.0, 1.5}, {8, 10, 12});
  PreprocessOptions options;
  options.intensity.mode = IntensityMode::none;
  options.target_spacing = std::array<double, 3>{1.5, 1.0, 0.75};  // half of {j, i, k}
  const PreparedCase p = prepare_case(context, sc.c, options);
  CHECK(p.original_spacing == std::array<double, 3>{3.0, 2.0, 1.5});
  CHECK(p.original_shape == std::array<int64_t, 3>{10, 12, 8});
  REQUIRE(p.label.data.shape() == Shape({20, 24, 16}));
  const Volume reference = read_nifti(context, sc.c.image_path);
  // Each original voxel is two prepared voxels per axis with its label: both ways are exact.
  const Tensor nearest = labels_to_reference_grid(p.label.data, p, reference);
  CHECK(nearest.to_vector<int32_t>() == sc.label.to_vector<int32_t>());
  const Tensor linear = labels_to_reference_grid(one_hot(context, p.label.data, 3), p, reference);
  CHECK(linear.to_vector<int32_t>() == sc.label.to_vector<int32_t>());
  // And the written file overlays the input: same voxels, same affine.
  write_like(dir.path("pred.nii.gz"), reference, linear);
  const Volume written = read_label_nifti(context, dir.path("pred.nii.gz"));
  CHECK(written.data.to_vector<int32_t>() == sc.label.to_vector<int32_t>());
  CHECK(written.affine == reference.affine);
  // A reference of another grid is refused.
  Volume wrong = reference;
  wrong.data = context.zeros(Shape({8, 10, 11}));
  CHECK_THROWS_AS(labels_to_reference_grid(p.label.data, p, wrong), Error);
  CHECK_THROWS_AS(labels_to_reference_grid(p.label.data.reshape(Shape({1, 20, 24, 16})), p,
                                           reference),
                  Error);
}

TEST_CASE("labels_to_reference_grid: LPS with anisotropic non-integer resampling",
          "[inference][regrid]") {
  Context context;
  InferenceTempDir dir;
  // LPS: i and j flipped, no permutation; voxel spacing (i, j, k) = (0.8, 0.8, 2.5).
  const SyntheticCase sc = write_case(context, dir, "lps", "LPS", {0.8, 0.8, 2.5}, {12, 30, 28});
  PreprocessOptions options;
  options.intensity.mode = IntensityMode::none;
  options.target_spacing = std::array<double, 3>{2.0, 1.2, 1.2};  // D up 1.25x, H/W down 1.5x
  const PreparedCase p = prepare_case(context, sc.c, options);
  REQUIRE(p.label.data.shape() == Shape({15, 20, 19}));
  const Volume reference = read_nifti(context, sc.c.image_path);
  const int64_t total = sc.label.numel();
  const Tensor nearest = labels_to_reference_grid(p.label.data, p, reference);
  const int64_t n_mismatch = boundary_mismatches(nearest, sc.label, 1);
  const Tensor linear = labels_to_reference_grid(one_hot(context, p.label.data, 3), p, reference);
  const int64_t l_mismatch = boundary_mismatches(linear, sc.label, 1);
  INFO("LPS round trip: " << n_mismatch << " (nearest) and " << l_mismatch
                          << " (trilinear) of " << total << " voxels differ, all at boundaries");
  // Down-sampling by 1.5 loses at most one voxel layer at a boundary, never a blob (measured:
  // 164 and 132 voxels, 1.6% and 1.3%).
  CHECK(n_mismatch < total / 40);
  CHECK(l_mismatch < total / 40);
}
