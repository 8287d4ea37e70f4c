// `med3d info` and `med3d eval` run as programs (MED3D_CLI_PATH, set by tests/CMakeLists.txt
// for this file only) on NIfTI and CSV files written here with hand-computed expected metrics,
// and `med3d info` on a real scan of ../shared/data when present.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "med3d/data/nifti.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace med3d;

namespace {

class ScratchDir {
 public:
  ScratchDir() {
    std::string name = (fs::temp_directory_path() / "med3d_metrics_cli_XXXXXX").string();
    REQUIRE(::mkdtemp(name.data()) != nullptr);
    path_ = name;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

struct Run {
  int status = -1;
  std::string out;  // stdout and stderr together
};

#ifdef MED3D_CLI_PATH
Run run_med3d(const std::string& args, const ScratchDir& dir) {
  const fs::path log = dir / "output.txt";
  const std::string command =
      std::string("'") + MED3D_CLI_PATH + "' " + args + " > '" + log.string() + "' 2>&1";
  const int raw = std::system(command.c_str());
  Run r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  std::ifstream in(log);
  std::stringstream s;
  s << in.rdbuf();
  r.out = s.str();
  return r;
}
#endif

bool cli_available() {
#ifdef MED3D_CLI_PATH
  if (fs::exists(MED3D_CLI_PATH)) return true;
  WARN("skipped: the med3d program " << MED3D_CLI_PATH << " is not built");
#else
  WARN("skipped: built without the med3d program (MED3D_BUILD_CLI=OFF)");
#endif
  return false;
}

// An i32 label volume on a grid with spacing {D, H, W} (affine diag(W, H, D spacing)).
Volume label_volume(Context& ctx, std::array<int64_t, 3> dims, std::array<double, 3> spacing) {
  Volume v;
  v.data = ctx.zeros({dims[0], dims[1], dims[2]}, DType::i32);
  v.affine = {spacing[2], 0, 0, -10, 0, spacing[1], 0, 20, 0, 0, spacing[0], 30, 0, 0, 0, 1};
  v.spacing = spacing;
  return v;
}

void fill_box(Volume& v, std::array<int64_t, 3> lo, std::array<int64_t, 3> hi, int value) {
  for (int64_t d = lo[0]; d < hi[0]; ++d)
    for (int64_t h = lo[1]; h < hi[1]; ++h)
      for (int64_t w = lo[2]; w < hi[2]; ++w) v.data.set<int32_t>({d, h, w}, value);
}

const nlohmann::json& metric(const nlohmann::json& report, const std::string& name, int label) {
  for (const auto& c : report["cases"])
    if (c["case"] == name)
      for (const auto& m : c["metrics"])
        if (m["label"] == label) return m;
  FAIL("case " << name << " label " << label << " not in the report");
  throw;
}

}  // namespace

TEST_CASE("metrics cli: med3d eval scores NIfTI folders with hand-computed values", "[metrics][cli]") {
  if (!cli_available()) return;
#ifdef MED3D_CLI_PATH
  Context ctx;
  ScratchDir dir;
  fs::create_directories(dir / "pred");
  fs::create_directories(dir / "ref");
  // Case a: a row of voxels, 2 mm along W. P = w in [0, 5), R = w in [0, 3): Dice 6/8, pooled
  // distances 0 x6, 2, 4 mm -> HD95 = 2 + 0.65 * 2 = 3.3, ASSD 6/8, Hausdorff 4.
  Volume pa = label_volume(ctx, {1, 1, 10}, {7, 5, 2});
  Volume ra = label_volume(ctx, {1, 1, 10}, {7, 5, 2});
  fill_box(pa, {0, 0, 0}, {1, 1, 5}, 1);
  fill_box(ra, {0, 0, 0}, {1, 1, 3}, 1);
  write_nifti((dir / "pred" / "a.nii.gz").string(), pa);
  write_nifti((dir / "ref" / "a.nii").string(), ra);  // paired by name without extension
  // Case b: 3x3x3 cubes offset by one voxel (1 mm): Dice 2/3, ASSD 20/52, HD95 1. Label 2 is
  // one reference voxel the prediction misses: Dice 0, distances undefined.
  Volume pb = label_volume(ctx, {8, 8, 8}, {1, 1, 1});
  Volume rb = label_volume(ctx, {8, 8, 8}, {1, 1, 1});
  fill_box(pb, {1, 1, 1}, {4, 4, 4}, 1);
  fill_box(rb, {1, 1, 2}, {4, 4, 5}, 1);
  rb.data.set<int32_t>({6, 6, 6}, 2);
  write_nifti((dir / "pred" / "b.nii.gz").string(), pb);
  write_nifti((dir / "ref" / "b.nii.gz").string(), rb);

  const std::string json = (dir / "eval.json").string();
  const Run ok = run_med3d("eval --pred '" + (dir / "pred").string() + "' --ref '" +
                               (dir / "ref").string() + "' --json '" + json + "' --threads 1",
                           dir);
  INFO(ok.out);
  REQUIRE(ok.status == 0);
  CHECK(ok.out.find("mean") != std::string::npos);
  std::ifstream in(json);
  const nlohmann::json report = nlohmann::json::parse(in);
  CHECK(report["labels"] == nlohmann::json::array({1, 2}));  // default: labels in the refs
  REQUIRE(report["cases"].size() == 2);
  const auto& a1 = metric(report, "a", 1);
  CHECK(a1["dice"].get<double>() == Approx(0.75).epsilon(1e-12));
  CHECK(a1["iou"].get<double>() == Approx(0.6).epsilon(1e-12));
  CHECK(a1["rvd"].get<double>() == Approx(2.0 / 3.0).epsilon(1e-12));
  CHECK(a1["hd95_mm"].get<double>() == Approx(3.3).epsilon(1e-12));
  CHECK(a1["assd_mm"].get<double>() == Approx(0.75).epsilon(1e-12));
  CHECK(a1["hausdorff_mm"].get<double>() == Approx(4.0).epsilon(1e-12));
  const auto& a2 = metric(report, "a", 2);  // absent from both
  CHECK(a2["dice"].get<double>() == 1.0);
  CHECK(a2["hd95_mm"].get<double>() == 0.0);
  const auto& b1 = metric(report, "b", 1);
  CHECK(b1["dice"].get<double>() == Approx(2.0 / 3.0).epsilon(1e-12));
  CHECK(b1["assd_mm"].get<double>() == Approx(20.0 / 52.0).epsilon(1e-12));
  CHECK(b1["hd95_mm"].get<double>() == Approx(1.0).epsilon(1e-12));
  const auto& b2 = metric(report, "b", 2);
  CHECK(b2["dice"].get<double>() == 0.0);
  CHECK(b2["rvd"].get<double>() == -1.0);
  CHECK(b2["hd95_mm"].is_null());
  CHECK(b2["assd_mm"].is_null());

  REQUIRE(report["mean"].size() == 2);
  const auto& m1 = report["mean"][0];
  CHECK(m1["label"] == 1);
  CHECK(m1["dice"].get<double>() == Approx((0.75 + 2.0 / 3.0) / 2).epsilon(1e-12));
  CHECK(m1["hd95_mm"].get<double>() == Approx((3.3 + 1.0) / 2).epsilon(1e-12));
  // dice_global: 2 (3 + 18) / (8 + 54).
  CHECK(m1["dice_global"].get<double>() == Approx(42.0 / 62.0).epsilon(1e-12));
  const auto& m2 = report["mean"][1];
  CHECK(m2["dice"].get<double>() == Approx(0.5).epsilon(1e-12));
  CHECK(m2["cases_with_distances"] == 1);
  CHECK(m2["hd95_mm"].get<double>() == 0.0);
  CHECK(!fs::exists(json + ".tmp"));

  // --labels picks labels; one file pair works too.
  const Run one = run_med3d("eval --pred '" + (dir / "pred" / "b.nii.gz").string() + "' --ref '" +
                                (dir / "ref" / "b.nii.gz").string() + "' --labels 1 --json '" +
                                json + "'",
                            dir);
  INFO(one.out);
  REQUIRE(one.status == 0);
  std::ifstream in2(json);
  const nlohmann::json single = nlohmann::json::parse(in2);
  CHECK(single["labels"] == nlohmann::json::array({1}));
  CHECK(metric(single, "b", 1)["dice"].get<double>() == Approx(2.0 / 3.0).epsilon(1e-12));

  // A reference without a prediction is an error naming the case, unless --allow-missing.
  write_nifti((dir / "ref" / "c_missing.nii.gz").string(), rb);
  const Run missing = run_med3d("eval --pred '" + (dir / "pred").string() + "' --ref '" +
                                    (dir / "ref").string() + "'",
                                dir);
  CHECK(missing.status == 1);
  CHECK(missing.out.find("c_missing") != std::string::npos);
  CHECK(missing.out.find("--allow-missing") != std::string::npos);
  const Run allowed = run_med3d("eval --allow-missing --pred '" + (dir / "pred").string() +
                                    "' --ref '" + (dir / "ref").string() + "'",
                                dir);
  CHECK(allowed.status == 0);
  fs::remove(dir / "ref" / "c_missing.nii.gz");

  // Different grids are refused.
  write_nifti((dir / "pred" / "a.nii.gz").string(), label_volume(ctx, {1, 1, 9}, {7, 5, 2}));
  const Run mismatch = run_med3d("eval --pred '" + (dir / "pred").string() + "' --ref '" +
                                     (dir / "ref").string() + "'",
                                 dir);
  INFO(mismatch.out);
  CHECK(mismatch.status == 1);
  CHECK(mismatch.out.find("case 'a': the prediction is not on the reference's grid") !=
        std::string::npos);
#endif
}

TEST_CASE("metrics cli: med3d eval --task cls computes accuracy and ROC AUC", "[metrics][cli]") {
  if (!cli_available()) return;
#ifdef MED3D_CLI_PATH
  ScratchDir dir;
  {
    std::ofstream ref(dir / "labels.csv");
    ref << "case,label\nc0,0\nc1,1\nc2,2\nc3,2\n";
    std::ofstream pred(dir / "preds.csv");
    pred << "case,label,score_0,score_1,score_2\n"
            "c0,0,0.5,0.3,0.2\nc1,0,0.5,0.3,0.2\nc2,1,0.2,0.4,0.4\nc3,2,0.3,0.1,0.6\n";
  }
  const std::string json = (dir / "cls.json").string();
  const Run r = run_med3d("eval --task cls --pred '" + (dir / "preds.csv").string() + "' --ref '" +
                              (dir / "labels.csv").string() + "' --json '" + json + "'",
                          dir);
  INFO(r.out);
  REQUIRE(r.status == 0);
  std::ifstream in(json);
  const nlohmann::json report = nlohmann::json::parse(in);
  CHECK(report["accuracy"].get<double>() == 0.5);  // c0 and c3 right
  // One-vs-rest AUCs 5/6, 1/2, 1 (worked out in test_metrics.cpp).
  CHECK(report["roc_auc"].get<double>() == Approx((5.0 / 6.0 + 0.5 + 1.0) / 3).epsilon(1e-12));
  CHECK(report["roc_auc_per_class"][1].get<double>() == Approx(0.5).epsilon(1e-12));
  CHECK(report["confusion"] == nlohmann::json::parse("[[1,0,0],[1,0,0],[0,1,1]]"));

  // Binary with one score column; ties count 1/2: positives {0.5, 0.8}, negatives {0.5, 0.2}.
  {
    std::ofstream ref(dir / "labels.csv");
    ref << "a,1\nb,0\nc,0\nd,1\n";
    std::ofstream pred(dir / "preds.csv");
    pred << "a,1,0.5\nb,1,0.5\nc,0,0.2\nd,1,0.8\n";
  }
  const Run b = run_med3d("eval --task cls --pred '" + (dir / "preds.csv").string() + "' --ref '" +
                              (dir / "labels.csv").string() + "' --json '" + json + "'",
                          dir);
  INFO(b.out);
  REQUIRE(b.status == 0);
  std::ifstream in2(json);
  const nlohmann::json binary = nlohmann::json::parse(in2);
  CHECK(binary["roc_auc"].get<double>() == Approx(0.875).epsilon(1e-12));
  CHECK(binary["accuracy"].get<double>() == 0.75);
#endif
}

TEST_CASE("metrics cli: med3d info reports a real scan's geometry", "[metrics][cli][data]") {
  if (!cli_available()) return;
#ifdef MED3D_CLI_PATH
  const fs::path file = fs::path(MED3D_SHARED_DATA_DIR) / "spleen-ct" / "sub-spleen2_ct.nii.gz";
  if (!fs::exists(file)) {
    WARN("skipped: " << file << " not found (real data lives beside the repository)");
    return;
  }
  ScratchDir dir;
  const Run text = run_med3d("info '" + file.string() + "'", dir);
  INFO(text.out);
  REQUIRE(text.status == 0);
  CHECK(text.out.find("164 x 166 x 26") != std::string::npos);
  const Run json = run_med3d("info --json '" + file.string() + "'", dir);
  INFO(json.out);
  REQUIRE(json.status == 0);
  const nlohmann::json j = nlohmann::json::parse(json.out);
  REQUIRE(j.size() == 1);
  CHECK(j[0]["dims"] == nlohmann::json::array({164, 166, 26}));
  CHECK(j[0]["spacing"][0].get<double>() == Approx(0.794922).epsilon(1e-5));
  CHECK(j[0]["spacing"][2].get<double>() == Approx(5.0).epsilon(1e-9));
  // sform diag(0.794922, 0.794922, 5) with positive axes (read with Python from the header).
  CHECK(j[0]["orientation"] == "RAS");
  CHECK(j[0]["sform_code"] == 2);
  CHECK(j[0]["qform_code"] == 0);
  CHECK(text.out.find("orientation  RAS") != std::string::npos);
#endif
}
