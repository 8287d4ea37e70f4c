// Evaluation metrics (trainers/metrics.h). Expected values are worked out by hand in the
// comments, or computed here by brute force (surfaces by direct 6-neighbour checks, distances
// by an O(n^2) search over all voxel pairs), independently of the library's distance transform.
#include <cmath>
#include <limits>
#include <random>

#include "med3d/trainers/metrics.h"
#include "test_util.h"

using namespace med3d;
using namespace med3d::trainers;

namespace {

// i32 labels [d, h, w] with `value` in the box [lo, hi) (per axis D, H, W).
Tensor box_labels(Context& ctx, std::array<int64_t, 3> dims, std::array<int64_t, 3> lo,
                  std::array<int64_t, 3> hi, int value = 1) {
  Tensor t = ctx.zeros({dims[0], dims[1], dims[2]}, DType::i32);
  int32_t* p = t.data<int32_t>();
  for (int64_t d = lo[0]; d < hi[0]; ++d)
    for (int64_t h = lo[1]; h < hi[1]; ++h)
      for (int64_t w = lo[2]; w < hi[2]; ++w) p[(d * dims[1] + h) * dims[2] + w] = value;
  return t;
}

// Independent reference: surface by the definition, distances by exhaustive search.
struct Brute {
  std::array<int64_t, 3> dims;
  Spacing spacing;
  bool in(const std::vector<uint8_t>& m, int64_t d, int64_t h, int64_t w) const {
    if (d < 0 || h < 0 || w < 0 || d >= dims[0] || h >= dims[1] || w >= dims[2]) return false;
    return m[(d * dims[1] + h) * dims[2] + w] != 0;
  }
  std::vector<std::array<int64_t, 3>> surface(const std::vector<uint8_t>& m) const {
    std::vector<std::array<int64_t, 3>> out;
    for (int64_t d = 0; d < dims[0]; ++d)
      for (int64_t h = 0; h < dims[1]; ++h)
        for (int64_t w = 0; w < dims[2]; ++w) {
          if (!in(m, d, h, w)) continue;
          const bool interior = in(m, d - 1, h, w) && in(m, d + 1, h, w) && in(m, d, h - 1, w) &&
                                in(m, d, h + 1, w) && in(m, d, h, w - 1) && in(m, d, h, w + 1);
          if (!interior) out.push_back({d, h, w});
        }
    return out;
  }
  double sq(const std::array<int64_t, 3>& a, const std::array<int64_t, 3>& b) const {
    double s = 0;
    for (int k = 0; k < 3; ++k) {
      const double x = static_cast<double>(a[k] - b[k]) * spacing[k];
      s += x * x;
    }
    return s;
  }
  std::vector<double> distances(const std::vector<std::array<int64_t, 3>>& from,
                                const std::vector<std::array<int64_t, 3>>& to) const {
    std::vector<double> out;
    for (const auto& a : from) {
      double best = std::numeric_limits<double>::infinity();
      for (const auto& b : to) best = std::min(best, sq(a, b));
      out.push_back(std::sqrt(best));
    }
    return out;
  }
};

std::vector<uint8_t> as_mask(const Tensor& labels, int label) {
  std::vector<uint8_t> m;
  for (int32_t v : labels.to_vector<int32_t>()) m.push_back(v == label);
  return m;
}

}  // namespace

TEST_CASE("metrics: two 3x3x3 cubes offset by one voxel give hand-computed values", "[metrics]") {
  Context ctx;
  // P = [1,4)^3, R = the same cube moved by +1 along W. |P| = |R| = 27, |P∩R| = 3*3*2 = 18.
  const Tensor pred = box_labels(ctx, {8, 8, 8}, {1, 1, 1}, {4, 4, 4});
  const Tensor ref = box_labels(ctx, {8, 8, 8}, {1, 1, 2}, {4, 4, 5});
  const SegmentationMetrics m = segmentation_metrics(pred, ref, {1, 1, 1}, 1);
  CHECK(m.pred_voxels == 27);
  CHECK(m.ref_voxels == 27);
  CHECK(m.intersection == 18);
  CHECK(m.dice == Approx(36.0 / 54.0).epsilon(1e-15));
  CHECK(m.iou == Approx(0.5).epsilon(1e-15));
  CHECK(m.voe == Approx(0.5).epsilon(1e-15));
  CHECK(m.rvd == 0.0);
  // Each surface is the cube without its centre: 26 voxels. From S(P): the 9 voxels of the
  // face w = 1 lie 1 from R's face w = 2; the voxel (2, 2, 3) is R's centre (not on S(R)) and
  // lies 1 from its neighbours; the other 16 lie on S(R). Symmetrically for S(R). Pooled: 52
  // distances, 20 of 1 and 32 of 0.
  CHECK(m.pred_surface_voxels == 26);
  CHECK(m.ref_surface_voxels == 26);
  CHECK(m.asd_pred_to_ref == Approx(10.0 / 26.0).epsilon(1e-14));
  CHECK(m.asd_ref_to_pred == Approx(10.0 / 26.0).epsilon(1e-14));
  CHECK(m.assd == Approx(20.0 / 52.0).epsilon(1e-14));
  CHECK(m.hausdorff == 1.0);
  CHECK(m.hd95 == 1.0);  // position 0.95 * 51 = 48.45 lies among the ones (indices 32..51)

  SECTION("anisotropic spacing: the same offset along D with 3 mm slices") {
    const Tensor p = box_labels(ctx, {8, 8, 8}, {1, 1, 1}, {4, 4, 4});
    const Tensor r = box_labels(ctx, {8, 8, 8}, {2, 1, 1}, {5, 4, 4});
    // The 9 face voxels are now 3 mm from the other face; the centre voxel is still 1 mm from
    // its in-plane neighbours (1 mm < 3 mm). Pooled: 18 of 3, 2 of 1, 32 of 0.
    const SegmentationMetrics a = segmentation_metrics(p, r, {3, 1, 1}, 1);
    CHECK(a.dice == Approx(2.0 / 3.0).epsilon(1e-15));
    CHECK(a.hausdorff == 3.0);
    CHECK(a.hd95 == 3.0);
    CHECK(a.assd == Approx((18 * 3.0 + 2 * 1.0) / 52.0).epsilon(1e-14));
    // With 0.5 mm slices the face voxels are 0.5 mm away and the centre voxel 0.5 mm too.
    const SegmentationMetrics b = segmentation_metrics(p, r, {0.5, 1, 1}, 1);
    CHECK(b.hausdorff == 0.5);
    CHECK(b.assd == Approx(20 * 0.5 / 52.0).epsilon(1e-14));
  }
}

TEST_CASE("metrics: HD95 interpolates linearly between order statistics", "[metrics]") {
  Context ctx;
  // A row of voxels, D = H = 1, so every mask voxel is on the surface. P = w in [0, 5),
  // R = w in [0, 3). P->R: 0 0 0 1 2, R->P: 0 0 0. Pooled sorted: 0 0 0 0 0 0 1 2;
  // position 0.95 * 7 = 6.65 -> 1 + 0.65 * (2 - 1) = 1.65 (numpy.percentile(..., 95)).
  const Tensor pred = box_labels(ctx, {1, 1, 10}, {0, 0, 0}, {1, 1, 5}, 2);
  const Tensor ref = box_labels(ctx, {1, 1, 10}, {0, 0, 0}, {1, 1, 3}, 2);
  const SegmentationMetrics m = segmentation_metrics(pred, ref, {1, 1, 1}, 2);
  CHECK(m.label == 2);
  CHECK(m.dice == Approx(6.0 / 8.0).epsilon(1e-15));
  CHECK(m.iou == Approx(3.0 / 5.0).epsilon(1e-15));
  CHECK(m.rvd == Approx(2.0 / 3.0).epsilon(1e-15));
  CHECK(m.hd95 == Approx(1.65).epsilon(1e-14));
  CHECK(m.hausdorff == 2.0);
  CHECK(m.assd == Approx(3.0 / 8.0).epsilon(1e-14));
  CHECK(m.asd_pred_to_ref == Approx(3.0 / 5.0).epsilon(1e-14));
  CHECK(m.asd_ref_to_pred == 0.0);
  // 2 mm along W doubles every distance; spacing along D and H does not matter here.
  const SegmentationMetrics s = segmentation_metrics(pred, ref, {7, 5, 2}, 2);
  CHECK(s.hd95 == Approx(3.3).epsilon(1e-14));
  CHECK(s.hausdorff == 4.0);
  CHECK(s.assd == Approx(0.75).epsilon(1e-14));
  // Another label in the same tensors is absent from both: the both-empty convention.
  CHECK(segmentation_metrics(pred, ref, {1, 1, 1}, 1).dice == 1.0);

  std::vector<double> v{10, 1, 9, 2, 8, 3, 7, 4, 6, 5};
  CHECK(percentile_linear(v, 95) == Approx(9.55).epsilon(1e-14));  // 9 + 0.55 * (10 - 9)
  CHECK(percentile_linear(v, 0) == 1.0);
  CHECK(percentile_linear(v, 100) == 10.0);
  CHECK(percentile_linear({4.0}, 95) == 4.0);
}

TEST_CASE("metrics: empty masks follow the documented conventions", "[metrics]") {
  Context ctx;
  const Tensor empty = ctx.zeros({4, 4, 4}, DType::u8);
  const Tensor cube = [&] {
    Tensor t = ctx.zeros({4, 4, 4}, DType::u8);
    t.set<uint8_t>({1, 1, 1}, 3);
    t.set<uint8_t>({1, 1, 2}, 3);
    return t;
  }();
  const SegmentationMetrics both = segmentation_metrics(empty, empty, {1, 1, 1}, 3);
  CHECK(both.dice == 1.0);
  CHECK(both.iou == 1.0);
  CHECK(both.voe == 0.0);
  CHECK(both.rvd == 0.0);
  CHECK(both.assd == 0.0);
  CHECK(both.hd95 == 0.0);
  CHECK(both.hausdorff == 0.0);

  const SegmentationMetrics no_pred = segmentation_metrics(empty, cube, {1, 1, 1}, 3);
  CHECK(no_pred.dice == 0.0);
  CHECK(no_pred.iou == 0.0);
  CHECK(no_pred.voe == 1.0);
  CHECK(no_pred.rvd == -1.0);
  CHECK(std::isnan(no_pred.assd));
  CHECK(std::isnan(no_pred.hd95));
  CHECK(std::isnan(no_pred.hausdorff));

  const SegmentationMetrics no_ref = segmentation_metrics(cube, empty, {1, 1, 1}, 3);
  CHECK(no_ref.dice == 0.0);
  CHECK(std::isnan(no_ref.rvd));
  CHECK(std::isnan(no_ref.hd95));
  CHECK(no_ref.pred_voxels == 2);

  // The mean over cases skips NaN per metric; dice_global pools voxel counts.
  const auto summary = mean_over_cases({{both}, {no_pred}, {no_ref}});
  REQUIRE(summary.size() == 1);
  CHECK(summary[0].label == 3);
  CHECK(summary[0].cases == 3);
  CHECK(summary[0].cases_with_distances == 1);
  CHECK(summary[0].dice == Approx(1.0 / 3.0).epsilon(1e-15));
  CHECK(summary[0].hd95 == 0.0);  // only the both-empty case has distances
  CHECK(summary[0].rvd == Approx(-0.5).epsilon(1e-15));  // (0 + -1) / 2, NaN skipped
  CHECK(summary[0].dice_global == 0.0);
  CHECK(std::isnan(mean_skip_nan({std::nan(""), std::nan("")})));
  CHECK(mean_skip_nan({1.0, std::nan(""), 2.0}) == 1.5);
}

TEST_CASE("metrics: surface uses face-connected erosion with background outside", "[metrics]") {
  Context ctx;
  // A 3D plus: centre and its 6 face neighbours. Face-connected erosion keeps the centre, so
  // the surface has 6 voxels (a 26-connected erosion would give 7).
  Tensor plus = ctx.zeros({5, 5, 5}, DType::i32);
  const int64_t c = 2;
  plus.set<int32_t>({c, c, c}, 1);
  for (int a = 0; a < 3; ++a)
    for (int s : {-1, 1}) {
      int64_t x[3] = {c, c, c};
      x[a] += s;
      plus.set<int32_t>({x[0], x[1], x[2]}, 1);
    }
  const Tensor s = surface_mask(plus, 1);
  CHECK(s.at<uint8_t>({c, c, c}) == 0);
  int64_t n = 0;
  for (uint8_t v : s.to_vector<uint8_t>()) n += v;
  CHECK(n == 6);
  // A mask filling the whole 4x4x4 volume: voxels on the volume's faces are surface (scipy's
  // border_value 0), only the inner 2x2x2 is not: 64 - 8.
  const Tensor full = box_labels(ctx, {4, 4, 4}, {0, 0, 0}, {4, 4, 4});
  int64_t m = 0;
  for (uint8_t v : surface_mask(full, 1).to_vector<uint8_t>()) m += v;
  CHECK(m == 56);
}

TEST_CASE("metrics: distance transform equals brute force on random masks", "[metrics]") {
  Context ctx;
  std::mt19937 rng(1234);
  std::uniform_real_distribution<double> spacing_dist(0.3, 4.0);
  std::uniform_int_distribution<int> dim_dist(1, 9);
  for (int trial = 0; trial < 40; ++trial) {
    const std::array<int64_t, 3> dims{dim_dist(rng), dim_dist(rng), dim_dist(rng)};
    const Spacing spacing{spacing_dist(rng), spacing_dist(rng), spacing_dist(rng)};
    const double density = trial % 4 == 0 ? 0.02 : 0.2;
    std::bernoulli_distribution on(density);
    Tensor f = ctx.zeros({dims[0], dims[1], dims[2]}, DType::u8);
    std::vector<std::array<int64_t, 3>> features;
    for (int64_t d = 0; d < dims[0]; ++d)
      for (int64_t h = 0; h < dims[1]; ++h)
        for (int64_t w = 0; w < dims[2]; ++w)
          if (on(rng)) {
            f.set<uint8_t>({d, h, w}, 1);
            features.push_back({d, h, w});
          }
    const std::vector<double> got = squared_distance_transform(f, spacing).to_vector<double>();
    Brute brute{dims, spacing};
    std::size_t i = 0;
    for (int64_t d = 0; d < dims[0]; ++d)
      for (int64_t h = 0; h < dims[1]; ++h)
        for (int64_t w = 0; w < dims[2]; ++w, ++i) {
          double best = std::numeric_limits<double>::infinity();
          for (const auto& p : features) best = std::min(best, brute.sq({d, h, w}, p));
          INFO("trial " << trial << " voxel " << d << "," << h << "," << w);
          if (std::isinf(best)) {
            REQUIRE(std::isinf(got[i]));
          } else {
            REQUIRE(std::abs(got[i] - best) <= 1e-9);
          }
        }
  }
}

TEST_CASE("metrics: random masks match brute-force surfaces and distances", "[metrics]") {
  Context ctx;
  std::mt19937 rng(99);
  std::uniform_real_distribution<double> spacing_dist(0.4, 3.5);
  std::uniform_int_distribution<int> dim_dist(2, 10);
  for (int trial = 0; trial < 25; ++trial) {
    const std::array<int64_t, 3> dims{dim_dist(rng), dim_dist(rng), dim_dist(rng)};
    const Spacing spacing{spacing_dist(rng), spacing_dist(rng), spacing_dist(rng)};
    std::bernoulli_distribution on(0.45);
    Tensor pred = ctx.zeros({dims[0], dims[1], dims[2]}, DType::i32);
    Tensor ref = ctx.zeros({dims[0], dims[1], dims[2]}, DType::i32);
    int32_t* p = pred.data<int32_t>();
    int32_t* r = ref.data<int32_t>();
    for (int64_t i = 0; i < pred.numel(); ++i) {
      p[i] = on(rng) ? 1 : 2;
      r[i] = on(rng) ? 1 : 0;
    }
    p[0] = r[0] = 1;  // both masks non-empty
    const Brute brute{dims, spacing};
    const auto sp = brute.surface(as_mask(pred, 1));
    const auto sr = brute.surface(as_mask(ref, 1));
    const std::vector<double> a = brute.distances(sp, sr);
    const std::vector<double> b = brute.distances(sr, sp);
    std::vector<double> pooled = a;
    pooled.insert(pooled.end(), b.begin(), b.end());
    std::sort(pooled.begin(), pooled.end());
    double sum = 0;
    for (double x : pooled) sum += x;
    const double pos = 0.95 * static_cast<double>(pooled.size() - 1);
    const std::size_t k = static_cast<std::size_t>(pos);
    const double hd95 = k + 1 < pooled.size()
                            ? pooled[k] + (pos - static_cast<double>(k)) * (pooled[k + 1] - pooled[k])
                            : pooled[k];
    INFO("trial " << trial);
    const SegmentationMetrics m = evaluate_segmentation(pred, ref, spacing, {1}).at(0);
    CHECK(m.pred_surface_voxels == static_cast<int64_t>(sp.size()));
    CHECK(m.ref_surface_voxels == static_cast<int64_t>(sr.size()));
    CHECK(std::abs(m.assd - sum / static_cast<double>(pooled.size())) <= 1e-9);
    CHECK(std::abs(m.hd95 - hd95) <= 1e-9);
    CHECK(std::abs(m.hausdorff - pooled.back()) <= 1e-9);
    // The directed distances of the building block, in memory order.
    Tensor fs = surface_mask(pred, 1), ts = surface_mask(ref, 1);
    const std::vector<double> d = directed_distances(fs, ts, spacing);
    REQUIRE(d.size() == a.size());
    for (std::size_t i = 0; i < d.size(); ++i) REQUIRE(std::abs(d[i] - a[i]) <= 1e-9);
  }
}

TEST_CASE("metrics: label counts and multi-label evaluation", "[metrics]") {
  Context ctx;
  const Tensor ref = ctx.from_vector<int32_t>({1, 2, 4}, {0, 2, 2, 5, 0, 2, 7, 7});
  const auto counts = label_counts(ref);
  REQUIRE(counts.size() == 3);
  CHECK(counts[0] == std::pair<int, int64_t>{2, 3});
  CHECK(counts[1] == std::pair<int, int64_t>{5, 1});
  CHECK(counts[2] == std::pair<int, int64_t>{7, 2});
  const Tensor pred = ctx.from_vector<int32_t>({1, 2, 4}, {0, 2, 0, 5, 5, 2, 7, 7});
  const auto all = evaluate_segmentation(pred, ref, {1, 1, 1}, {2, 5, 7});
  REQUIRE(all.size() == 3);
  CHECK(all[0].label == 2);
  CHECK(all[0].dice == Approx(2.0 * 2 / 5).epsilon(1e-15));  // |P| 2, |R| 3, overlap 2
  CHECK(all[1].dice == Approx(2.0 * 1 / 3).epsilon(1e-15));  // |P| 2, |R| 1, overlap 1
  CHECK(all[1].rvd == 1.0);
  CHECK(all[2].dice == 1.0);
  CHECK(all[2].hausdorff == 0.0);
}

TEST_CASE("metrics: bad inputs give clear errors", "[metrics]") {
  Context ctx;
  const Tensor a = ctx.zeros({2, 3, 4}, DType::i32);
  const Tensor b = ctx.zeros({2, 4, 3}, DType::i32);
  CHECK_THROWS_WITH(segmentation_metrics(a, b, {1, 1, 1}, 1), Catch::Contains("shapes differ"));
  CHECK_THROWS_WITH(segmentation_metrics(a, a, {1, 0, 1}, 1), Catch::Contains("spacing"));
  CHECK_THROWS_WITH(segmentation_metrics(a, a, {1, -2, 1}, 1), Catch::Contains("> 0"));
  CHECK_THROWS_WITH(evaluate_segmentation(a, a, {1, 1, 1}, {}), Catch::Contains("no labels"));
  CHECK_THROWS_WITH(segmentation_metrics(ctx.zeros({2, 3, 4}), a, {1, 1, 1}, 1),
                    Catch::Contains("i32 or u8"));
  CHECK_THROWS_WITH(segmentation_metrics(ctx.zeros({6, 4}, DType::i32), a, {1, 1, 1}, 1),
                    Catch::Contains("[D, H, W]"));
  CHECK_THROWS_AS(directed_distances(ctx.ones({2, 2, 2}, DType::u8), ctx.zeros({2, 2, 2}, DType::u8),
                                     {1, 1, 1}),
                  Error);
}

TEST_CASE("metrics: accuracy and ROC AUC with ties", "[metrics]") {
  CHECK(accuracy({1, 2, 0, 1}, {1, 0, 0, 1}) == 0.75);
  CHECK_THROWS_AS(accuracy({1, 2}, {1}), Error);
  CHECK_THROWS_AS(accuracy({}, {}), Error);

  // sklearn's documented example: 0.75.
  CHECK(roc_auc({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}) == Approx(0.75).epsilon(1e-15));
  // Positives {0.5, 0.8}, negatives {0.5, 0.2}: pairs 1/2 (tie) + 1 + 1 + 1 = 3.5 of 4.
  CHECK(roc_auc({0.5, 0.5, 0.2, 0.8}, {1, 0, 0, 1}) == Approx(0.875).epsilon(1e-15));
  CHECK(roc_auc({0.3, 0.3, 0.3}, {1, 0, 1}) == 0.5);  // all tied
  CHECK(roc_auc({0.9, 0.1}, {0, 1}) == 0.0);
  CHECK_THROWS_WITH(roc_auc({0.1, 0.2}, {1, 1}), Catch::Contains("both classes"));
  CHECK_THROWS_AS(roc_auc({0.1, 0.2}, {1, 2}), Error);

  // One-vs-rest, truth {0, 1, 2, 2}:
  //   class 0: positive 0.5 vs negatives {0.5, 0.2, 0.3}: 1/2 + 1 + 1 = 5/6
  //   class 1: positive 0.3 vs negatives {0.3, 0.4, 0.1}: 1/2 + 0 + 1 = 1/2
  //   class 2: positives {0.4, 0.6} vs negatives {0.2, 0.2}: 1
  const RocAuc ovr = roc_auc_one_vs_rest(
      {{0.5, 0.3, 0.2}, {0.5, 0.3, 0.2}, {0.2, 0.4, 0.4}, {0.3, 0.1, 0.6}}, {0, 1, 2, 2});
  REQUIRE(ovr.per_class.size() == 3);
  CHECK(ovr.per_class[0] == Approx(5.0 / 6.0).epsilon(1e-15));
  CHECK(ovr.per_class[1] == Approx(0.5).epsilon(1e-15));
  CHECK(ovr.per_class[2] == 1.0);
  CHECK(ovr.macro == Approx((5.0 / 6.0 + 0.5 + 1.0) / 3.0).epsilon(1e-15));
  // A class without positives is left out of the macro mean.
  const RocAuc partial = roc_auc_one_vs_rest({{0.9, 0.1, 0.0}, {0.2, 0.8, 0.0}}, {0, 1});
  CHECK(std::isnan(partial.per_class[2]));
  CHECK(partial.classes_defined == 2);
  CHECK(partial.macro == 1.0);
  CHECK_THROWS_WITH(roc_auc_one_vs_rest({{0.5, 0.5}}, {3}), Catch::Contains("outside [0, 2)"));
}
