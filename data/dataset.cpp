// MSD-layout datasets, multi-domain sets, case loading with checks, seeded splits.
#include "med3d/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "med3d/error.h"
#include "med3d/kernels/philox.h"

namespace med3d {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string case_id_of(const std::string& path) {
  std::string name = fs::path(path).filename().string();
  for (const char* suffix : {".nii.gz", ".nii"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0)
      return name.substr(0, name.size() - s.size());
  }
  return name;
}

json read_json_file(const char* op, const std::string& path) {
  std::ifstream in(path);
  MED3D_CHECK(in.good(), op, ": cannot open '", path,
              "'; an MSD dataset folder needs a dataset.json (see data/dataset.h)");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    detail::throw_error(op, ": '", path, "' is not valid JSON: ", e.what());
  }
}

// An integer key of dataset.json "labels" or "modality" ("0", "1", ...).
int32_t parse_index_key(const std::string& json_path, const char* field,
                        const std::string& key) {
  std::size_t used = 0;
  long value = 0;
  bool ok = !key.empty();
  try {
    value = std::stol(key, &used);
  } catch (const std::exception&) {
    ok = false;
  }
  MED3D_CHECK(ok && used == key.size() && value >= 0 && value <= 1000000, "load_msd_dataset: '",
              json_path, "' field \"", field, "\": key '", key,
              "' is not a non-negative integer such as \"1\"");
  return static_cast<int32_t>(value);
}

std::string resolve(const fs::path& root, const std::string& relative) {
  return (root / fs::path(relative)).lexically_normal().string();
}

json case_to_json(const DatasetCase& c) {
  return json{{"id", c.id},
              {"image", c.image_path},
              {"label", c.label_path},
              {"domain", c.domain},
              {"label_values", c.label_values},
              {"class", c.class_label}};
}

DatasetCase case_from_json(const std::string& path, const std::string& field, const json& j) {
  const char* op = "read_split";
  MED3D_CHECK(j.is_object(), op, ": '", path, "' field \"", field,
              "\": each entry must be an object");
  DatasetCase c;
  try {
    c.id = j.at("id").get<std::string>();
    c.image_path = j.at("image").get<std::string>();
    c.label_path = j.at("label").get<std::string>();
    c.domain = j.at("domain").get<int>();
    c.label_values = j.at("label_values").get<std::vector<int32_t>>();
    c.class_label = j.value("class", -1);  // absent in splits written before classification
  } catch (const json::exception& e) {
    detail::throw_error(op, ": '", path, "' field \"", field, "\": ", e.what(),
                        " (entries need id, image, label, domain, label_values)");
  }
  return c;
}

}  // namespace

std::vector<int32_t> Dataset::label_values() const {
  std::vector<int32_t> values;
  for (const auto& [value, name] : labels) values.push_back(value);
  return values;  // std::map keeps them ascending
}

int Dataset::num_classes() const { return labels.empty() ? 0 : labels.rbegin()->first + 1; }

Dataset load_msd_dataset(const std::string& folder, int domain) {
  const char* op = "load_msd_dataset";
  const fs::path root(folder);
  const std::string json_path = (root / "dataset.json").string();
  MED3D_CHECK(fs::is_regular_file(json_path), op, ": '", json_path,
              "' not found; an MSD dataset folder needs dataset.json, imagesTr/ and labelsTr/");
  const json j = read_json_file(op, json_path);
  MED3D_CHECK(j.is_object(), op, ": '", json_path, "': the top level must be a JSON object");

  Dataset d;
  d.root = root.string();
  d.domain = domain;
  if (j.contains("name") && j["name"].is_string())
    d.name = j["name"].get<std::string>();
  else
    d.name = root.lexically_normal().filename().string();
  if (d.name.empty()) d.name = root.parent_path().filename().string();

  MED3D_CHECK(j.contains("labels"), op, ": '", json_path, "' has no field \"labels\"");
  const json& labels = j["labels"];
  MED3D_CHECK(labels.is_object() && !labels.empty(), op, ": '", json_path,
              "' field \"labels\" must be a non-empty object {\"0\": \"background\", ...}");
  for (const auto& [key, value] : labels.items()) {
    MED3D_CHECK(value.is_string(), op, ": '", json_path, "' field \"labels\": value of '", key,
                "' must be a string (the class name)");
    d.labels[parse_index_key(json_path, "labels", key)] = value.get<std::string>();
  }

  if (j.contains("modality")) {
    const json& modality = j["modality"];
    MED3D_CHECK(modality.is_object(), op, ": '", json_path,
                "' field \"modality\" must be an object {\"0\": \"CT\"}");
    for (const auto& [key, value] : modality.items()) {
      MED3D_CHECK(value.is_string(), op, ": '", json_path, "' field \"modality\": value of '",
                  key, "' must be a string");
      d.modality[parse_index_key(json_path, "modality", key)] = value.get<std::string>();
    }
  }

  MED3D_CHECK(j.contains("training"), op, ": '", json_path, "' has no field \"training\"");
  const json& training = j["training"];
  MED3D_CHECK(training.is_array(), op, ": '", json_path,
              "' field \"training\" must be an array of {\"image\", \"label\"} objects");
  const std::vector<int32_t> label_values = d.label_values();
  // The first entry decides the kind; every other entry must agree (checked below).
  d.classification = !training.empty() && training[0].is_object() && training[0].contains("label") &&
                     training[0]["label"].is_number_integer();
  if (d.classification) {
    // Class ids index the network's outputs: they must be exactly 0..K-1.
    int32_t expected = 0;
    for (const auto& [value, name] : d.labels) {
      MED3D_CHECK(value == expected, op, ": '", json_path, "' field \"labels\" of a classification ",
                  "dataset must declare the classes 0..K-1 without gaps; class ", expected,
                  " is missing");
      ++expected;
    }
    MED3D_CHECK(d.labels.size() >= 2, op, ": '", json_path, "' field \"labels\" declares ",
                d.labels.size(), " class; classification needs at least 2");
  }
  std::set<std::string> ids;
  for (std::size_t n = 0; n < training.size(); ++n) {
    const json& entry = training[n];
    MED3D_CHECK(entry.is_object() && entry.contains("image") && entry["image"].is_string() &&
                    entry.contains("label") &&
                    (entry["label"].is_string() || entry["label"].is_number_integer()),
                op, ": '", json_path, "' field \"training\"[", n,
                "] must be an object with a string \"image\" and a \"label\" that is a file ",
                "(segmentation) or an integer class id (classification)");
    const bool is_class = entry["label"].is_number_integer();
    DatasetCase c;
    c.image_path = resolve(root, entry["image"].get<std::string>());
    MED3D_CHECK(is_class == d.classification, op, ": '", json_path, "' field \"training\"[", n,
                "] (image '", c.image_path, "') has a ", is_class ? "class id" : "label file",
                " but entry 0 has a ", d.classification ? "class id" : "label file",
                "; a dataset is either segmentation (label files) or classification (class ids)");
    c.id = case_id_of(c.image_path);
    c.domain = domain;
    c.label_values = label_values;
    MED3D_CHECK(fs::is_regular_file(c.image_path), op, ": '", json_path, "' field \"training\"[",
                n, "].image: file '", c.image_path, "' not found");
    if (is_class) {
      const int64_t k = entry["label"].get<int64_t>();
      MED3D_CHECK(d.labels.count(static_cast<int32_t>(k)) > 0 && k >= 0, op, ": '", json_path,
                  "' field \"training\"[", n, "].label: class ", k, " of image '", c.image_path,
                  "' is not declared in \"labels\" (classes 0..", d.labels.rbegin()->first,
                  "); fix the entry or add the class");
      c.class_label = static_cast<int32_t>(k);
    } else {
      c.label_path = resolve(root, entry["label"].get<std::string>());
      MED3D_CHECK(fs::is_regular_file(c.label_path), op, ": '", json_path, "' field \"training\"[",
                  n, "].label: file '", c.label_path, "' not found");
    }
    MED3D_CHECK(ids.insert(c.id).second, op, ": '", json_path, "' field \"training\"[", n,
                "]: case id '", c.id, "' appears twice");
    d.cases.push_back(std::move(c));
  }
  MED3D_CHECK(!d.cases.empty(), op, ": '", json_path, "' field \"training\" lists no cases");
  return d;
}

std::vector<Dataset> load_multi_domain_dataset(const std::vector<std::string>& folders) {
  MED3D_CHECK(!folders.empty(), "load_multi_domain_dataset: no folders given");
  std::vector<Dataset> domains;
  for (std::size_t n = 0; n < folders.size(); ++n)
    domains.push_back(load_msd_dataset(folders[n], static_cast<int>(n)));
  return domains;
}

void check_label_values(const Tensor& label, const std::vector<int32_t>& label_values,
                        const std::string& path) {
  MED3D_CHECK(label.defined() && label.dtype() == DType::i32, "check_label_values: '", path,
              "': expected an i32 label tensor");
  if (label_values.empty()) return;
  const int32_t* v = label.data<int32_t>();
  const int64_t n = label.numel();
  int32_t last_ok = label_values.front();
  for (int64_t i = 0; i < n; ++i) {
    if (v[i] == last_ok) continue;  // labels come in long runs: one search per run
    MED3D_CHECK(std::binary_search(label_values.begin(), label_values.end(), v[i]),
                "load_case: label file '", path, "' holds value ", v[i], " at voxel ", i,
                " which is not in dataset.json field \"labels\" (", label_values.size(),
                " values from ", label_values.front(), " to ", label_values.back(),
                "); fix the label file or add the class to \"labels\"");
    last_ok = v[i];
  }
}

CaseVolumes load_case(const Context& context, const DatasetCase& c,
                      const NiftiReadOptions& options) {
  CaseVolumes out{read_nifti(context, c.image_path, options),
                  read_label_nifti(context, c.label_path, options)};
  check_same_geometry(out.image, out.label);
  check_label_values(out.label.data, c.label_values, c.label_path);
  return out;
}

Split make_split(const std::vector<Dataset>& domains, double validation_fraction,
                 uint64_t seed) {
  const char* op = "make_split";
  MED3D_CHECK(std::isfinite(validation_fraction) && validation_fraction >= 0 &&
                  validation_fraction < 1,
              op, ": validation_fraction must be in [0, 1), got ", validation_fraction);
  Split split;
  split.seed = seed;
  split.validation_fraction = validation_fraction;
  for (std::size_t domain = 0; domain < domains.size(); ++domain) {
    const std::vector<DatasetCase>& cases = domains[domain].cases;
    const std::size_t n = cases.size();
    std::vector<std::size_t> order(n);
    for (std::size_t i = 0; i < n; ++i) order[i] = i;
    // Fisher-Yates; each domain draws from its own stretch of the stream.
    const uint64_t offset = static_cast<uint64_t>(domain) << 32;
    for (std::size_t i = n; i > 1; --i) {
      const double u = kernels::philox_uniform(seed, offset, i);
      const std::size_t j = std::min(i - 1, static_cast<std::size_t>(u * static_cast<double>(i)));
      std::swap(order[i - 1], order[j]);
    }
    std::size_t num_validation = static_cast<std::size_t>(
        std::llround(validation_fraction * static_cast<double>(n)));
    if (validation_fraction > 0 && n >= 2)
      num_validation = std::clamp<std::size_t>(num_validation, 1, n - 1);
    std::vector<bool> is_validation(n, false);
    for (std::size_t i = 0; i < num_validation && i < n; ++i) is_validation[order[i]] = true;
    for (std::size_t i = 0; i < n; ++i)
      (is_validation[i] ? split.validation : split.train).push_back(cases[i]);
  }
  return split;
}

Split make_split(const Dataset& dataset, double validation_fraction, uint64_t seed) {
  return make_split(std::vector<Dataset>{dataset}, validation_fraction, seed);
}

void write_split(const std::string& path, const Split& split) {
  json j;
  j["seed"] = split.seed;
  j["validation_fraction"] = split.validation_fraction;
  j["train"] = json::array();
  j["validation"] = json::array();
  for (const DatasetCase& c : split.train) j["train"].push_back(case_to_json(c));
  for (const DatasetCase& c : split.validation) j["validation"].push_back(case_to_json(c));
  const fs::path target(path);
  if (target.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
  }
  std::ofstream out(path, std::ios::trunc);
  MED3D_CHECK(out.good(), "write_split: cannot open '", path, "' for writing");
  out << j.dump(1) << "\n";
  out.close();
  MED3D_CHECK(out.good(), "write_split: writing '", path, "' failed");
}

Split read_split(const std::string& path) {
  const char* op = "read_split";
  const json j = read_json_file(op, path);
  Split split;
  try {
    split.seed = j.at("seed").get<uint64_t>();
    split.validation_fraction = j.at("validation_fraction").get<double>();
  } catch (const json::exception& e) {
    detail::throw_error(op, ": '", path, "' field \"seed\" / \"validation_fraction\": ",
                        e.what());
  }
  for (const char* field : {"train", "validation"}) {
    MED3D_CHECK(j.contains(field) && j[field].is_array(), op, ": '", path, "' field \"", field,
                "\" must be an array");
    std::vector<DatasetCase>& list = std::string(field) == "train" ? split.train
                                                                   : split.validation;
    for (const json& entry : j[field]) list.push_back(case_from_json(path, field, entry));
  }
  return split;
}

}  // namespace med3d
