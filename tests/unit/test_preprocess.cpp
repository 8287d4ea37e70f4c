// Preprocessing tests: resampling (exact identity, linear functions reproduced exactly,
// nearest taps, affine update), header-only median spacing, exact percentiles, the three
// intensity normalisations, prepare_case on a synthetic set and on ../shared/data/hippocampus.
// Expected values are computed here from the definitions in preprocess.h (numpy conventions).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "med3d/data/dataset.h"
#include "med3d/data/preprocess.h"
#include "med3d/data/synth.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace med3d;

namespace {

using PreprocessTempDir = med3d::test::ScratchDir;

template <class Fn>
void require_error(Fn&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string message = e.what();
    INFO("message: " << message);
    for (const std::string& part : parts) CHECK(message.find(part) != std::string::npos);
    return;
  }
  FAIL("expected med3d::Error");
}

// A volume [D, H, W] filled by f(d, h, w) with a diagonal affine (spacing along i, j, k =
// W, H, D) and origin `origin`.
template <class T, class Fn>
Volume make_volume(const Context& context, std::array<int64_t, 3> shape,
                   std::array<double, 3> spacing, std::array<double, 3> origin, Fn&& f) {
  std::vector<T> values;
  for (int64_t d = 0; d < shape[0]; ++d)
    for (int64_t h = 0; h < shape[1]; ++h)
      for (int64_t w = 0; w < shape[2]; ++w) values.push_back(static_cast<T>(f(d, h, w)));
  Volume v;
  v.data = context.from_vector<T>(Shape({shape[0], shape[1], shape[2]}), values);
  v.spacing = spacing;
  v.affine = {spacing[2], 0, 0, origin[0], 0, spacing[1], 0, origin[1],
              0, 0, spacing[0], origin[2], 0, 0, 0, 1};
  return v;
}

}  // namespace

TEST_CASE("resample: the same spacing gives back the input exactly", "[preprocess]") {
  Context context(Device::cpu(), 7);
  Volume image;
  image.data = context.randn({5, 7, 6});
  image.spacing = {2.0, 1.5, 0.8};
  image.affine = {0, 0, -2.0, 10, -0.8, 0, 0, 20, 0, 1.5, 0, -5, 0, 0, 0, 1};  // permuted axes
  const Volume same = resample(image, image.spacing, Interpolation::linear);
  REQUIRE(same.data.shape() == image.data.shape());
  CHECK(same.data.to_vector<float>() == image.data.to_vector<float>());
  CHECK(same.affine == image.affine);
  CHECK(same.spacing == image.spacing);

  Volume label = make_volume<int32_t>(context, {5, 7, 6}, {2.0, 1.5, 0.8}, {0, 0, 0},
                                      [](int64_t d, int64_t h, int64_t w) {
                                        return (d + h * w) % 3;
                                      });
  const Volume same_label = resample(label, label.spacing, Interpolation::nearest);
  CHECK(same_label.data.to_vector<int32_t>() == label.data.to_vector<int32_t>());
  CHECK(same_label.affine == label.affine);
}

TEST_CASE("resample: a linear ramp stays the same ramp in world coordinates", "[preprocess]") {
  Context context;
  // value = world x along W (spacing 1, origin 0): upsampled to 0.5 mm, output voxel o sits at
  // input index 0.5 * o - 0.25; its value is that index (clamped at the edges) and equals the
  // world x the new affine gives it.
  Volume ramp = make_volume<float>(context, {4, 3, 8}, {1, 1, 1}, {0, 0, 0},
                                   [](int64_t, int64_t, int64_t w) { return w; });
  const Volume up = resample(ramp, {1, 1, 0.5}, Interpolation::linear);
  REQUIRE(up.data.shape() == Shape({4, 3, 16}));
  CHECK(up.spacing == std::array<double, 3>{1, 1, 0.5});
  CHECK(up.affine[0] == 0.5);
  CHECK(up.affine[3] == -0.25);  // world x of output voxel 0
  for (int64_t o = 0; o < 16; ++o) {
    const double index = std::clamp(0.5 * static_cast<double>(o) - 0.25, 0.0, 7.0);
    CHECK(up.data.at<float>({2, 1, o}) == static_cast<float>(index));
    if (o > 0 && o < 15) CHECK(up.data.at<float>({2, 1, o}) == up.affine[3] + up.affine[0] * o);
  }
  // Downsampled to 2 mm along D: voxel o sits at index 2 o + 0.5.
  Volume along_d = make_volume<float>(context, {8, 2, 2}, {1, 1, 1}, {0, 0, 0},
                                      [](int64_t d, int64_t, int64_t) { return 3 * d; });
  const Volume down = resample(along_d, {2, 1, 1}, Interpolation::linear);
  REQUIRE(down.data.shape() == Shape({4, 2, 2}));
  for (int64_t o = 0; o < 4; ++o)
    CHECK(down.data.at<float>({o, 1, 0}) == Approx(3.0 * (2.0 * o + 0.5)).margin(1e-6));
  CHECK(down.affine[11] == 0.5);  // world z of output voxel 0: input index 0.5
  CHECK(down.affine[10] == 2.0);

  // A linear function of all three axes is reproduced exactly by trilinear interpolation
  // wherever no index is clamped.
  auto f = [](double d, double h, double w) { return 3.0 * d - 2.0 * h + 0.5 * w + 1.0; };
  Volume linear = make_volume<double>(context, {6, 5, 7}, {2.0, 1.0, 1.0}, {0, 0, 0}, f);
  const std::array<double, 3> target{0.7, 1.3, 0.6};
  const Volume r = resample(linear, target, Interpolation::linear);
  const std::array<int64_t, 3> expected_shape = resampled_shape({6, 5, 7}, {2, 1, 1}, target);
  CHECK(expected_shape == std::array<int64_t, 3>{17, 4, 12});  // round(12/0.7), round(5/1.3)...
  REQUIRE(r.data.shape() == Shape({17, 4, 12}));
  int checked = 0;
  for (int64_t d = 0; d < 17; ++d)
    for (int64_t h = 0; h < 4; ++h)
      for (int64_t w = 0; w < 12; ++w) {
        const double xd = (d + 0.5) * 0.7 / 2.0 - 0.5, xh = (h + 0.5) * 1.3 - 0.5,
                     xw = (w + 0.5) * 0.6 - 0.5;
        if (xd < 0 || xd > 5 || xh < 0 || xh > 4 || xw < 0 || xw > 6) continue;
        CHECK(r.data.at<double>({d, h, w}) == Approx(f(xd, xh, xw)).margin(1e-12));
        ++checked;
      }
  CHECK(checked > 400);
}

TEST_CASE("resample: nearest picks the voxel whose centre is nearest", "[preprocess]") {
  Context context;
  Volume label = make_volume<int32_t>(context, {1, 1, 4}, {1, 1, 1}, {0, 0, 0},
                                      [](int64_t, int64_t, int64_t w) { return w; });
  const Volume up = resample(label, {1, 1, 0.5}, Interpolation::nearest);
  CHECK(up.data.to_vector<int32_t>() == std::vector<int32_t>{0, 0, 1, 1, 2, 2, 3, 3});
  Volume wide = make_volume<int32_t>(context, {1, 1, 8}, {1, 1, 1}, {0, 0, 0},
                                     [](int64_t, int64_t, int64_t w) { return w; });
  const Volume down = resample(wide, {1, 1, 2}, Interpolation::nearest);
  CHECK(down.data.to_vector<int32_t>() == std::vector<int32_t>{1, 3, 5, 7});
  const Volume third = resample(wide, {1, 1, 3}, Interpolation::nearest);  // round(8/3) = 3
  CHECK(third.data.to_vector<int32_t>() == std::vector<int32_t>{1, 4, 7});
}

TEST_CASE("resample: bad arguments are clear errors", "[preprocess]") {
  Context context;
  Volume label = make_volume<int32_t>(context, {2, 2, 2}, {1, 1, 1}, {0, 0, 0},
                                      [](int64_t, int64_t, int64_t) { return 1; });
  require_error([&] { resample(label, {1, 1, 1}, Interpolation::linear); },
                {"resample", "linear interpolation needs an f32 or f64 image", "nearest"});
  require_error([&] { resample(label, {1, 0, 1}, Interpolation::nearest); },
                {"resample", "axis 1", "target 0"});
  Volume empty;
  require_error([&] { resample(empty, {1, 1, 1}, Interpolation::nearest); },
                {"resample", "[D, H, W]"});
}

TEST_CASE("percentile: exact values with numpy's linear interpolation", "[preprocess]") {
  Context context;
  const Tensor t = context.from_vector<float>({8}, {3, 1, 4, 1, 5, 9, 2, 6});
  // sorted 1 1 2 3 4 5 6 9; rank p/100 * 7
  CHECK(percentile(t, 0) == 1.0);
  CHECK(percentile(t, 100) == 9.0);
  CHECK(percentile(t, 25) == Approx(1.75).epsilon(1e-15));  // rank 1.75 between 1 and 2
  CHECK(percentile(t, 50) == Approx(3.5).epsilon(1e-15));
  CHECK(percentile(t, 90) == Approx(6.9).epsilon(1e-15));  // rank 6.3 between 6 and 9
  std::vector<float> ramp(100);
  for (int i = 0; i < 100; ++i)  // 1..100 in a scrambled order
    ramp[static_cast<std::size_t>((i * 37) % 100)] = static_cast<float>(i + 1);
  const auto [lo, hi] = percentiles(context.from_vector<float>({100}, ramp), 0.5, 99.5);
  CHECK(lo == Approx(1.495).epsilon(1e-14));   // np.percentile(np.arange(1, 101), 0.5)
  CHECK(hi == Approx(99.505).epsilon(1e-14));  // np.percentile(np.arange(1, 101), 99.5)
  require_error([&] { percentile(t, 101); }, {"percentile", "[0, 100]"});
  require_error([&] { percentiles(t, 60, 40); }, {"percentiles", "lower <= upper"});
}

TEST_CASE("normalize_intensity: percentile clip then z-score (Med3D)", "[preprocess]") {
  Context context;
  std::vector<float> values(1000);
  for (int i = 0; i < 1000; ++i) values[static_cast<std::size_t>(i)] = static_cast<float>(i);
  values[500] = 1e6f;  // an outlier the 99.5 percentile clips
  const Tensor image = context.from_vector<float>({10, 10, 10}, values);
  const Tensor out = normalize_intensity(image, {});
  // Expected from the definition: sorted values are 0..999 without 500, plus 1e6.
  std::vector<double> sorted(values.begin(), values.end());
  std::sort(sorted.begin(), sorted.end());
  auto at_rank = [&](double rank) {
    const auto k = static_cast<std::size_t>(rank);
    return sorted[k] + (sorted[k + 1] - sorted[k]) * (rank - static_cast<double>(k));
  };
  const double lo = at_rank(0.005 * 999), hi = at_rank(0.995 * 999);
  CHECK(lo == Approx(4.995));
  CHECK(hi == Approx(995.005));
  std::vector<double> clipped;
  double mean = 0;
  for (float v : values) clipped.push_back(std::clamp(static_cast<double>(v), lo, hi));
  for (double v : clipped) mean += v / 1000.0;
  double var = 0;
  for (double v : clipped) var += (v - mean) * (v - mean) / 1000.0;
  const std::vector<float> got = out.to_vector<float>();
  for (std::size_t i : {std::size_t{0}, std::size_t{3}, std::size_t{250}, std::size_t{500},
                        std::size_t{999}})
    CHECK(got[i] == Approx((clipped[i] - mean) / std::sqrt(var)).margin(1e-6));
  double m = 0, s = 0;
  for (float v : got) m += v / 1000.0;
  for (float v : got) s += (v - m) * (v - m) / 1000.0;
  CHECK(std::abs(m) < 1e-6);
  CHECK(std::sqrt(s) == Approx(1.0).margin(1e-6));
  CHECK(image.to_vector<float>()[500] == 1e6f);  // the input is not modified

  require_error([&] { normalize_intensity(context.full({3, 3, 3}, 5.0), {}); },
                {"normalize_intensity", "constant"});
}

TEST_CASE("normalize_intensity: CT window [-200, 250] HU to [0, 1] (LiTS)", "[preprocess]") {
  Context context;
  const Tensor hu = context.from_vector<float>({6}, {-1000, -200, 25, 250, 1000, -87.5});
  IntensityOptions options;
  options.mode = IntensityMode::ct_window;
  const std::vector<float> out = normalize_intensity(hu, options).to_vector<float>();
  CHECK(out == std::vector<float>{0.0f, 0.0f, 0.5f, 1.0f, 1.0f, 0.25f});
  options.window_min = 10;
  options.window_max = 10;
  require_error([&] { normalize_intensity(hu, options); },
                {"CT window", "window_min < window_max"});
}

TEST_CASE("normalize_intensity: MedicalNet statistics over voxels > 0", "[preprocess]") {
  Context context;
  const Tensor image = context.from_vector<float>({5}, {0, 0, 1, 2, 3});
  IntensityOptions options;
  options.mode = IntensityMode::nonzero_zscore;
  const std::vector<float> out = normalize_intensity(image, options).to_vector<float>();
  const double sd = std::sqrt(2.0 / 3.0);  // of {1, 2, 3}, mean 2
  CHECK(out[0] == 0.0f);
  CHECK(out[1] == 0.0f);
  CHECK(out[2] == Approx(-1.0 / sd).epsilon(1e-6));
  CHECK(out[3] == 0.0f);
  CHECK(out[4] == Approx(1.0 / sd).epsilon(1e-6));
  require_error([&] { normalize_intensity(context.zeros({4}), options); },
                {"nonzero_zscore", "0 voxels > 0"});
}

TEST_CASE("median_spacing: per-axis median over headers, in RAS tensor order", "[preprocess]") {
  Context context;
  PreprocessTempDir dir;
  fs::create_directories(dir.path("imagesTr"));
  fs::create_directories(dir.path("labelsTr"));
  // Spacings {D, H, W} as stored. Case c is stored with voxel axis i along world z (S),
  // j along y (A) and k along x (L): after reorientation to RAS its tensor spacing is
  // {s_i, s_j, s_k} = {stored W, stored H, stored D}.
  const std::vector<std::array<double, 3>> stored{{1, 2, 3}, {1, 2, 5}, {2, 2, 4}, {1, 3, 4}};
  nlohmann::json training = nlohmann::json::array();
  for (std::size_t n = 0; n < stored.size(); ++n) {
    Volume v = make_volume<float>(context, {3, 4, 5}, stored[n], {0, 0, 0},
                                  [](int64_t d, int64_t h, int64_t w) { return d + h + w; });
    if (n == 2) {
      const auto s = stored[n];  // i -> S, j -> A, k -> L
      v.affine = {0, 0, -s[0], 0, 0, s[1], 0, 0, s[2], 0, 0, 0, 0, 0, 0, 1};
    }
    Volume label = v;
    label.data = context.zeros({3, 4, 5}, DType::i32);
    const std::string name = "case_" + std::to_string(n) + ".nii";
    write_nifti(dir.path("imagesTr/" + name), v);
    write_nifti(dir.path("labelsTr/" + name), label);
    training.push_back({{"image", "imagesTr/" + name}, {"label", "labelsTr/" + name}});
  }
  std::ofstream(dir.path("dataset.json"))
      << nlohmann::json{{"labels", {{"0", "background"}}}, {"training", training}}.dump();
  const Dataset dataset = load_msd_dataset(dir.path());
  // RAS tensor spacings: {1,2,3}, {1,2,5}, {4,2,2}, {1,3,4} -> medians {1, 2, 3.5}.
  CHECK(median_spacing(dataset) == std::array<double, 3>{1.0, 2.0, 3.5});
  const NiftiHeaderInfo permuted = read_nifti_header(dataset.cases[2].image_path);
  CHECK(header_spacing(permuted, "") == std::array<double, 3>{2, 2, 4});
  CHECK(header_spacing(permuted, "RAS") == std::array<double, 3>{4, 2, 2});
  // The header rule agrees with what reorient_to does to the voxels.
  const Volume ras = reorient_to(read_nifti(context, dataset.cases[2].image_path), "RAS");
  CHECK(ras.spacing == std::array<double, 3>{4, 2, 2});
  CHECK(header_spacing(permuted, "LPI") == std::array<double, 3>{4, 2, 2});
  require_error([&] { header_spacing(permuted, "RAX"); }, {"header_spacing", "RAX"});
}

TEST_CASE("prepare_case: synthetic CT resampled to the median spacing", "[preprocess]") {
  Context context;
  PreprocessTempDir dir;
  SynthOptions synth;
  synth.num_cases = 3;
  synth.shape = {20, 24, 22};
  synth.seed = 11;
  const Dataset dataset = write_synthetic_dataset(context, dir.path("synth"), synth);
  const std::array<double, 3> target = median_spacing(dataset);
  PreprocessOptions options;
  options.target_spacing = target;
  options.intensity.mode = IntensityMode::ct_window;
  for (const DatasetCase& c : dataset.cases) {
    const PreparedCase p = prepare_case(context, c, options);
    INFO(c.id);
    CHECK(p.id == c.id);
    CHECK(orientation_code(p.image.affine) == "RAS");
    CHECK(p.image.spacing == target);
    CHECK(p.label.spacing == target);
    const std::array<int64_t, 3> shape = resampled_shape(p.original_shape, p.original_spacing,
                                                         target);
    REQUIRE(p.image.data.shape() == Shape({shape[0], shape[1], shape[2]}));
    REQUIRE(p.label.data.shape() == p.image.data.shape());
    CHECK(p.image.affine == p.label.affine);
    CHECK(p.image.data.dtype() == DType::f32);
    CHECK(p.label.data.dtype() == DType::i32);
    const std::vector<float> v = p.image.data.to_vector<float>();
    CHECK(*std::min_element(v.begin(), v.end()) == 0.0f);  // air clipped to -200 HU
    CHECK(*std::max_element(v.begin(), v.end()) == 1.0f);  // bone clipped to 250 HU
    const std::vector<int32_t> l = p.label.data.to_vector<int32_t>();
    const std::set<int32_t> labels(l.begin(), l.end());
    CHECK(labels == std::set<int32_t>{0, 1, 2});
    // Liver voxels hold 60 HU + noise: (60 + 200) / 450 on average.
    double liver = 0;
    int64_t count = 0;
    for (std::size_t i = 0; i < v.size(); ++i)
      if (l[i] == 1) {
        liver += v[i];
        ++count;
      }
    CHECK(liver / static_cast<double>(count) == Approx(260.0 / 450.0).margin(0.03));
  }
}

TEST_CASE("prepare_case: ../shared/data/hippocampus, first cases", "[preprocess][shared]") {
  const std::string folder = std::string(MED3D_SHARED_DATA_DIR) + "/hippocampus";
  if (!fs::is_regular_file(folder + "/dataset.json")) {
    WARN("skipped: " << folder << " not present");
    return;
  }
  Context context;
  const Dataset dataset = load_msd_dataset(folder);
  CHECK(dataset.cases.size() == 195);
  CHECK(dataset.label_values() == std::vector<int32_t>{0, 1, 2});
  CHECK(dataset.modality.at(0) == "MRI");
  PreprocessOptions options;
  options.target_spacing = std::array<double, 3>{1.0, 1.0, 1.0};  // the Task04 spacing
  for (std::size_t n = 0; n < 3; ++n) {
    const DatasetCase& c = dataset.cases[n];
    INFO(c.id);
    const NiftiHeaderInfo header = read_nifti_header(c.image_path);
    const PreparedCase p = prepare_case(context, c, options);
    CHECK(orientation_code(p.image.affine) == "RAS");
    // 1 mm isotropic already: resampling keeps the (reoriented) shape.
    CHECK(p.original_spacing == std::array<double, 3>{1.0, 1.0, 1.0});
    REQUIRE(p.image.data.shape() == Shape({p.original_shape[0], p.original_shape[1],
                                           p.original_shape[2]}));
    CHECK(p.image.data.numel() == header.dim[1] * header.dim[2] * header.dim[3]);
    CHECK(p.label.data.shape() == p.image.data.shape());
    const std::vector<int32_t> l = p.label.data.to_vector<int32_t>();
    CHECK(std::set<int32_t>(l.begin(), l.end()) == std::set<int32_t>{0, 1, 2});
    const std::vector<float> v = p.image.data.to_vector<float>();
    double mean = 0, var = 0;
    for (float x : v) mean += x;
    mean /= static_cast<double>(v.size());
    for (float x : v) var += (x - mean) * (x - mean);
    var /= static_cast<double>(v.size());
    CHECK(std::abs(mean) < 1e-5);
    CHECK(std::sqrt(var) == Approx(1.0).margin(1e-5));
  }
  // The Med3D target spacing of the first cases, from headers only.
  Dataset first = dataset;
  first.cases.resize(10);
  CHECK(median_spacing(first) == std::array<double, 3>{1.0, 1.0, 1.0});
}

TEST_CASE("percentile: non-finite values are a clear error", "[preprocess]") {
  Context context;
  const Tensor t = context.from_vector<float>({3}, {1.0f, std::nanf(""), 2.0f});
  require_error([&] { percentile(t, 50); }, {"percentile", "value 1", "finite"});
}
