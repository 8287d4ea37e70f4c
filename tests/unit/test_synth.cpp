// Synthetic dataset tests: the folder written reads back as an MSD dataset whose files hold
// exactly the promised labels, geometry and intensities; generation is seeded; anatomy is
// consistent in world space whatever the stored orientation.
//
// Speed (Release, the 2-core development machine under a load average of ~9, measured by
// hand with std::chrono around make_synthetic_case and the two write_nifti calls, 3 runs):
// a 128^3 CT case takes 0.10-0.15 s to generate and 0.02-0.08 s to write as .nii, so
// 0.12-0.23 s in all; .nii.gz takes about 0.6 s in all. Not asserted: timings vary.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "med3d/data/dataset.h"
#include "med3d/data/synth.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace med3d;

namespace {

using SynthTempDir = med3d::test::ScratchDir;

double mean_where(const std::vector<float>& image, const std::vector<int32_t>& label,
                  int32_t value, int64_t& count) {
  double sum = 0;
  count = 0;
  for (std::size_t i = 0; i < image.size(); ++i)
    if (label[i] == value) {
      sum += image[i];
      ++count;
    }
  return count > 0 ? sum / static_cast<double>(count) : 0.0;
}

}  // namespace

TEST_CASE("write_synthetic_dataset: N CT cases read back with labels and geometry", "[synth]") {
  Context context;
  SynthTempDir dir;
  SynthOptions options;
  options.num_cases = 3;
  options.shape = {24, 28, 26};
  options.seed = 3;
  const Dataset d = write_synthetic_dataset(context, dir.path("ct"), options);
  CHECK(d.name == "synthetic");
  CHECK(d.modality.at(0) == "CT");
  CHECK(d.labels == std::map<int32_t, std::string>{{0, "background"}, {1, "liver"}, {2, "kidney"}});
  REQUIRE(d.cases.size() == 3);
  for (int n = 0; n < 3; ++n) {
    const DatasetCase& c = d.cases[static_cast<std::size_t>(n)];
    INFO(c.id);
    CHECK(c.id == "synthetic_00" + std::to_string(n));
    const SynthCase expected = make_synthetic_case(context, options, n);
    const CaseVolumes v = load_case(context, c);  // also checks geometry and label set
    CHECK(v.image.header.datatype_name == "i16");
    CHECK(v.label.header.datatype_name == "u8");
    REQUIRE(v.image.data.shape() == Shape({24, 28, 26}));
    CHECK(v.image.data.to_vector<float>() == expected.image.data.to_vector<float>());
    CHECK(v.label.data.to_vector<int32_t>() == expected.label.data.to_vector<int32_t>());
    for (int i = 0; i < 16; ++i) CHECK(v.image.affine[i] == expected.image.affine[i]);
    CHECK(v.image.spacing == expected.image.spacing);
    // Anisotropic: two in-plane spacings in [0.7, 1.0], the slice axis (D) in [1.5, 3.0].
    CHECK(v.image.spacing[1] == v.image.spacing[2]);
    CHECK(v.image.spacing[2] >= 0.7);
    CHECK(v.image.spacing[2] <= 1.0);
    CHECK(v.image.spacing[0] >= 1.5);
    CHECK(v.image.spacing[0] <= 3.0);

    const std::vector<float> image = v.image.data.to_vector<float>();
    const std::vector<int32_t> label = v.label.data.to_vector<int32_t>();
    CHECK(std::set<int32_t>(label.begin(), label.end()) == std::set<int32_t>{0, 1, 2});
    for (float x : image) REQUIRE(x == std::round(x));  // HU stored as integers
    int64_t count = 0;
    CHECK(mean_where(image, label, kSynthLiver, count) == Approx(60).margin(3));
    CHECK(count > 100);
    CHECK(mean_where(image, label, kSynthKidney, count) == Approx(150).margin(5));
    // The corner voxel is outside the body: air.
    CHECK(image.front() == Approx(-1000).margin(5 * options.noise_sd));
  }
}

TEST_CASE("make_synthetic_case: seeded, orientation codes vary, anatomy fixed in world space",
          "[synth]") {
  Context context;
  SynthOptions options;
  options.shape = {16, 18, 20};
  options.seed = 9;
  const SynthCase a = make_synthetic_case(context, options, 0);
  const SynthCase again = make_synthetic_case(context, options, 0);
  CHECK(a.image.data.to_vector<float>() == again.image.data.to_vector<float>());
  CHECK(a.image.affine == again.image.affine);
  SynthOptions other = options;
  other.seed = 10;
  CHECK(make_synthetic_case(context, other, 0).image.data.to_vector<float>() !=
        a.image.data.to_vector<float>());

  std::set<std::string> codes;
  for (int n = 0; n < 8; ++n) {
    const SynthCase c = make_synthetic_case(context, options, n);
    codes.insert(orientation_code(c.image.affine));
    // After reorientation to RAS the liver (label 1) lies on the right (+x) and the kidneys
    // (label 2) posterior (-y) to the liver: the phantom is defined in world coordinates.
    const Volume ras = reorient_to(c.label, "RAS");
    double liver_x = 0, liver_y = 0, kidney_y = 0;
    int64_t liver = 0, kidney = 0;
    const std::vector<int32_t> l = ras.data.to_vector<int32_t>();
    const int64_t nh = ras.data.dim(1), nw = ras.data.dim(2);
    for (std::size_t i = 0; i < l.size(); ++i) {
      const auto index = static_cast<int64_t>(i);
      const double w = static_cast<double>(index % nw), h = static_cast<double>((index / nw) % nh),
                   d = static_cast<double>(index / (nw * nh));
      const double x = ras.affine[0] * w + ras.affine[1] * h + ras.affine[2] * d + ras.affine[3];
      const double y = ras.affine[4] * w + ras.affine[5] * h + ras.affine[6] * d + ras.affine[7];
      if (l[i] == 1) {
        liver_x += x;
        liver_y += y;
        ++liver;
      } else if (l[i] == 2) {
        kidney_y += y;
        ++kidney;
      }
    }
    INFO("case " << n << " stored as " << orientation_code(c.image.affine));
    REQUIRE(liver > 0);
    REQUIRE(kidney > 0);
    CHECK(liver_x / static_cast<double>(liver) > 0);
    CHECK(kidney_y / static_cast<double>(kidney) < liver_y / static_cast<double>(liver));
  }
  CHECK(codes.size() >= 4);

  SynthOptions fixed = options;
  fixed.random_orientation = false;
  fixed.anisotropic = false;
  const SynthCase ras = make_synthetic_case(context, fixed, 0);
  CHECK(orientation_code(ras.image.affine) == "RAS");
  CHECK(ras.image.spacing == std::array<double, 3>{1, 1, 1});
}

TEST_CASE("write_synthetic_dataset: MRI-like, compressed", "[synth]") {
  Context context;
  SynthTempDir dir;
  SynthOptions options;
  options.num_cases = 2;
  options.shape = {12, 14, 16};
  options.modality = SynthModality::mri;
  options.compress = true;
  options.name = "mri";
  const Dataset d = write_synthetic_dataset(context, dir.path("mri"), options);
  CHECK(d.modality.at(0) == "MRI");
  REQUIRE(d.cases.size() == 2);
  CHECK(d.cases[1].image_path == dir.path("mri/imagesTr/mri_001.nii.gz"));
  const CaseVolumes v = load_case(context, d.cases[0]);
  CHECK(v.image.header.datatype_name == "f32");
  CHECK(v.image.header.gzip);
  const std::vector<float> image = v.image.data.to_vector<float>();
  CHECK(*std::min_element(image.begin(), image.end()) >= 0.0f);
  const std::vector<int32_t> label = v.label.data.to_vector<int32_t>();
  int64_t count = 0;
  // Liver 450 times a bias field within [0.8, 1.2].
  const double liver = mean_where(image, label, kSynthLiver, count);
  CHECK(liver > 0.8 * 450 - 10);
  CHECK(liver < 1.2 * 450 + 10);
}

TEST_CASE("synthetic: bad options are clear errors", "[synth]") {
  Context context;
  SynthOptions options;
  options.shape = {2, 16, 16};
  CHECK_THROWS_WITH(make_synthetic_case(context, options, 0),
                    Catch::Matchers::Contains("shape[0] = 2"));
  SynthOptions none;
  none.num_cases = 0;
  CHECK_THROWS_WITH(write_synthetic_dataset(context, "/tmp/unused_med3d_synth", none),
                    Catch::Matchers::Contains("num_cases"));
}
