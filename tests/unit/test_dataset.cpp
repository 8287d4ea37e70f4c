// Dataset tests: MSD dataset.json parsing, multi-domain sets, the checks of load_case
// (geometry, label set), malformed dataset.json files, and seeded splits (determinism,
// disjointness, proportions, JSON round trip).
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "med3d/data/dataset.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace med3d;
using nlohmann::json;

namespace {

using DatasetTempDir = med3d::test::ScratchDir;

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

Volume small_volume(const Context& context, DType dtype, double value,
                    std::array<int64_t, 3> shape = {3, 4, 5}) {
  Volume v;
  v.data = context.full(Shape({shape[0], shape[1], shape[2]}), value, dtype);
  v.spacing = {2, 1, 1};
  v.affine = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1};
  return v;
}

// Writes an MSD folder with `n` cases of constant images and labels (label value of case c is
// c % 3) and returns its dataset.json content.
json write_msd(const Context& context, const std::string& root, int n,
               const json& labels = {{"0", "background"}, {"1", "a"}, {"2", "b"}}) {
  fs::create_directories(fs::path(root) / "imagesTr");
  fs::create_directories(fs::path(root) / "labelsTr");
  json training = json::array();
  for (int c = 0; c < n; ++c) {
    const std::string name = "case_" + std::to_string(c) + ".nii.gz";
    write_nifti(root + "/imagesTr/" + name, small_volume(context, DType::f32, c));
    Volume label = small_volume(context, DType::i32, c % 3);
    label.data.set<int32_t>({0, 0, 0}, 0);
    write_nifti(root + "/labelsTr/" + name, label);
    training.push_back({{"image", "./imagesTr/" + name}, {"label", "./labelsTr/" + name}});
  }
  json j = {{"name", "Test"}, {"labels", labels}, {"modality", {{"0", "CT"}}},
            {"training", training}};
  std::ofstream(root + "/dataset.json") << j.dump(1);
  return j;
}

std::vector<std::string> ids(const std::vector<DatasetCase>& cases) {
  std::vector<std::string> out;
  for (const DatasetCase& c : cases) out.push_back(c.id);
  return out;
}

}  // namespace

TEST_CASE("load_msd_dataset: labels, modality and cases of dataset.json", "[dataset]") {
  Context context;
  DatasetTempDir dir;
  write_msd(context, dir.path("msd"), 4);
  const Dataset d = load_msd_dataset(dir.path("msd"));
  CHECK(d.name == "Test");
  CHECK(d.domain == 0);
  CHECK(d.labels == std::map<int32_t, std::string>{{0, "background"}, {1, "a"}, {2, "b"}});
  CHECK(d.label_values() == std::vector<int32_t>{0, 1, 2});
  CHECK(d.num_classes() == 3);
  CHECK(d.modality == std::map<int, std::string>{{0, "CT"}});
  REQUIRE(d.cases.size() == 4);
  CHECK(ids(d.cases) == std::vector<std::string>{"case_0", "case_1", "case_2", "case_3"});
  CHECK(d.cases[1].image_path == dir.path("msd/imagesTr/case_1.nii.gz"));
  CHECK(d.cases[1].label_path == dir.path("msd/labelsTr/case_1.nii.gz"));
  CHECK(d.cases[1].label_values == std::vector<int32_t>{0, 1, 2});

  const CaseVolumes v = load_case(context, d.cases[2]);
  CHECK(v.image.data.dtype() == DType::f32);
  CHECK(v.label.data.dtype() == DType::i32);
  CHECK(v.image.data.at<float>({1, 1, 1}) == 2.0f);
  CHECK(v.label.data.at<int32_t>({1, 1, 1}) == 2);
  CHECK(v.label.data.at<int32_t>({0, 0, 0}) == 0);
  CHECK(v.image.spacing == std::array<double, 3>{2, 1, 1});
}

TEST_CASE("load_multi_domain_dataset: one domain per folder with its own labels", "[dataset]") {
  Context context;
  DatasetTempDir dir;
  write_msd(context, dir.path("a"), 3);
  write_msd(context, dir.path("b"), 5, {{"0", "background"}, {"1", "x"}, {"2", "y"}, {"3", "z"}});
  const std::vector<Dataset> domains =
      load_multi_domain_dataset({dir.path("a"), dir.path("b")});
  REQUIRE(domains.size() == 2);
  CHECK(domains[0].domain == 0);
  CHECK(domains[1].domain == 1);
  CHECK(domains[0].num_classes() == 3);
  CHECK(domains[1].num_classes() == 4);
  for (const DatasetCase& c : domains[1].cases) {
    CHECK(c.domain == 1);
    CHECK(c.label_values == std::vector<int32_t>{0, 1, 2, 3});
  }
  require_error([] { load_multi_domain_dataset({}); }, {"no folders"});
}

TEST_CASE("load_msd_dataset: malformed dataset.json names the file and field", "[dataset]") {
  Context context;
  DatasetTempDir dir;
  const std::string root = dir.path("msd");
  const json good = write_msd(context, root, 2);
  const std::string file = root + "/dataset.json";
  auto with = [&](const std::string& text) { std::ofstream(file, std::ios::trunc) << text; };
  auto edited = [&](const std::function<void(json&)>& edit) {
    json j = good;
    edit(j);
    with(j.dump());
  };

  require_error([&] { load_msd_dataset(dir.path("nowhere")); },
                {"load_msd_dataset", "dataset.json", "not found"});
  with("{\"labels\": {\"0\": \"background\"}, \"training\": [");
  require_error([&] { load_msd_dataset(root); }, {file, "not valid JSON"});
  with("[1, 2]");
  require_error([&] { load_msd_dataset(root); }, {file, "top level"});
  edited([](json& j) { j.erase("labels"); });
  require_error([&] { load_msd_dataset(root); }, {file, "\"labels\""});
  edited([](json& j) { j["labels"] = json::array({"background"}); });
  require_error([&] { load_msd_dataset(root); }, {file, "\"labels\"", "non-empty object"});
  edited([](json& j) { j["labels"]["one"] = "x"; });
  require_error([&] { load_msd_dataset(root); }, {file, "\"labels\"", "'one'"});
  edited([](json& j) { j["labels"]["1"] = 1; });
  require_error([&] { load_msd_dataset(root); }, {file, "\"labels\"", "string"});
  edited([](json& j) { j["modality"]["first"] = "CT"; });
  require_error([&] { load_msd_dataset(root); }, {file, "\"modality\"", "'first'"});
  edited([](json& j) { j["modality"] = "CT"; });
  require_error([&] { load_msd_dataset(root); }, {file, "\"modality\""});
  edited([](json& j) { j.erase("training"); });
  require_error([&] { load_msd_dataset(root); }, {file, "\"training\""});
  edited([](json& j) { j["training"] = json::object(); });
  require_error([&] { load_msd_dataset(root); }, {file, "\"training\"", "array"});
  edited([](json& j) { j["training"] = json::array(); });
  require_error([&] { load_msd_dataset(root); }, {file, "\"training\"", "no cases"});
  edited([](json& j) { j["training"][1].erase("label"); });
  require_error([&] { load_msd_dataset(root); }, {file, "\"training\"[1]", "\"label\""});
  edited([](json& j) { j["training"][0]["image"] = "./imagesTr/missing.nii.gz"; });
  require_error([&] { load_msd_dataset(root); },
                {file, "\"training\"[0].image", "missing.nii.gz", "not found"});
  edited([](json& j) { j["training"][1]["label"] = "./labelsTr/missing.nii.gz"; });
  require_error([&] { load_msd_dataset(root); },
                {file, "\"training\"[1].label", "missing.nii.gz", "not found"});
  edited([](json& j) { j["training"][1] = j["training"][0]; });
  require_error([&] { load_msd_dataset(root); }, {file, "\"training\"[1]", "case_0", "twice"});
  with(good.dump());
  CHECK(load_msd_dataset(root).cases.size() == 2);
}

TEST_CASE("load_case: geometry mismatches and labels outside the label set", "[dataset]") {
  Context context;
  DatasetTempDir dir;
  const Dataset d = [&] {
    write_msd(context, dir.path("msd"), 3);
    return load_msd_dataset(dir.path("msd"));
  }();
  // A label on another grid.
  write_nifti(d.cases[0].label_path, small_volume(context, DType::i32, 0, {3, 4, 6}));
  require_error([&] { load_case(context, d.cases[0]); },
                {"check_same_geometry", d.cases[0].image_path, d.cases[0].label_path, "shape"});
  // Same shape, shifted origin.
  Volume shifted = small_volume(context, DType::i32, 0);
  shifted.affine[3] = 5;
  write_nifti(d.cases[1].label_path, shifted);
  require_error([&] { load_case(context, d.cases[1]); },
                {"check_same_geometry", d.cases[1].label_path, "affine[0][3]"});
  // Value 7 is not in "labels".
  Volume bad = small_volume(context, DType::i32, 1);
  bad.data.set<int32_t>({2, 3, 4}, 7);
  write_nifti(d.cases[2].label_path, bad);
  require_error([&] { load_case(context, d.cases[2]); },
                {"load_case", d.cases[2].label_path, "value 7", "\"labels\"", "voxel 59"});
  // An empty label set accepts anything.
  DatasetCase unchecked = d.cases[2];
  unchecked.label_values.clear();
  CHECK(load_case(context, unchecked).label.data.at<int32_t>({2, 3, 4}) == 7);
}

TEST_CASE("make_split: seeded, deterministic, disjoint, per domain", "[dataset]") {
  Context context;
  DatasetTempDir dir;
  write_msd(context, dir.path("a"), 20);
  write_msd(context, dir.path("b"), 7);
  const std::vector<Dataset> domains = load_multi_domain_dataset({dir.path("a"), dir.path("b")});

  const Split s1 = make_split(domains[0], 0.2, 42);
  const Split s2 = make_split(domains[0], 0.2, 42);
  CHECK(ids(s1.train) == ids(s2.train));
  CHECK(ids(s1.validation) == ids(s2.validation));
  CHECK(s1.validation.size() == 4);
  CHECK(s1.train.size() == 16);
  std::set<std::string> all;
  for (const auto& id : ids(s1.train)) all.insert(id);
  for (const auto& id : ids(s1.validation)) CHECK(all.insert(id).second);  // disjoint
  CHECK(all.size() == 20);                                                  // complete
  // Lists keep dataset order.
  CHECK(std::is_sorted(s1.train.begin(), s1.train.end(), [](const auto& a, const auto& b) {
    return std::stoi(a.id.substr(5)) < std::stoi(b.id.substr(5));
  }));
  // Other seeds give other splits (4 of 20 chosen: a repeat of all three is ~1e-7 likely).
  const Split s3 = make_split(domains[0], 0.2, 43);
  const Split s4 = make_split(domains[0], 0.2, 44);
  CHECK((ids(s3.validation) != ids(s1.validation) || ids(s4.validation) != ids(s1.validation)));

  // Per domain: round(0.2 * 20) = 4 and round(0.2 * 7) = 1 validation cases.
  const Split multi = make_split(domains, 0.2, 42);
  CHECK(multi.validation.size() == 5);
  CHECK(multi.train.size() == 22);
  CHECK(std::count_if(multi.validation.begin(), multi.validation.end(),
                      [](const DatasetCase& c) { return c.domain == 1; }) == 1);
  // Domain 0 draws the same stream as when split alone.
  std::vector<std::string> multi_a;
  for (const DatasetCase& c : multi.validation)
    if (c.domain == 0) multi_a.push_back(c.id);
  CHECK(multi_a == ids(s1.validation));
  // Small fractions still validate on one case; no fraction keeps all for training.
  CHECK(make_split(domains[1], 0.01, 1).validation.size() == 1);
  CHECK(make_split(domains[1], 0.0, 1).train.size() == 7);
  require_error([&] { make_split(domains[0], 1.0, 1); }, {"make_split", "[0, 1)"});
}

TEST_CASE("write_split / read_split: a split reloads as it was saved", "[dataset]") {
  Context context;
  DatasetTempDir dir;
  write_msd(context, dir.path("a"), 6);
  const Dataset d = load_msd_dataset(dir.path("a"));
  const Split split = make_split(d, 0.34, 5);
  const std::string path = dir.path("run/split.json");
  write_split(path, split);
  const Split back = read_split(path);
  CHECK(back.seed == 5);
  CHECK(back.validation_fraction == 0.34);
  CHECK(ids(back.train) == ids(split.train));
  CHECK(ids(back.validation) == ids(split.validation));
  REQUIRE(back.validation.size() == 2);
  CHECK(back.validation[0].image_path == split.validation[0].image_path);
  CHECK(back.validation[0].label_path == split.validation[0].label_path);
  CHECK(back.validation[0].label_values == std::vector<int32_t>{0, 1, 2});
  CHECK(back.validation[0].domain == 0);

  std::ofstream(path, std::ios::trunc) << R"({"seed": 1, "validation_fraction": 0.2,
      "train": [{"id": "x"}], "validation": []})";
  require_error([&] { read_split(path); }, {"read_split", path, "\"train\""});
  std::ofstream(path, std::ios::trunc) << R"({"seed": 1, "validation_fraction": 0.2})";
  require_error([&] { read_split(path); }, {"read_split", path, "\"train\"", "array"});
  require_error([&] { read_split(dir.path("none.json")); }, {"read_split", "cannot open"});
}
