// med3d eval: scores predictions against references.
//   Segmentation (default): NIfTI label maps, paired by case name (the file name without
//   .nii / .nii.gz), on the same grid; per case and label Dice, IoU, VOE, RVD, ASSD, HD95 and
//   Hausdorff in mm (conventions: med3d/trainers/metrics.h), then the mean per label.
//   Classification (--task cls): CSV files of case,label (reference; or a classification MSD
//   folder / its dataset.json, whose integer "label" entries are the truth) and
//   case,label[,score...] (predictions; or the folder med3d predict wrote predictions.csv
//   into): accuracy, confusion matrix and ROC AUC.
// Results print as tables; --json writes them to a file (temporary file, then rename).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "med3d/data/dataset.h"
#include "med3d/data/nifti.h"
#include "med3d/error.h"
#include "med3d/trainers/metrics.h"

namespace med3d::cli {
namespace {

namespace fs = std::filesystem;
using trainers::SegmentationMetrics;
using trainers::SegmentationSummary;

struct EvalOptions {
  CommonOptions common;
  std::string task = "seg";
  std::string pred;
  std::string ref;
  std::vector<int> labels;
  std::string json;
  double affine_tolerance = 1e-3;
  bool allow_missing = false;
};

nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

std::string cell(double v, int precision = 4) {
  if (std::isnan(v)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(precision) << v;
  return s.str();
}

void write_json_atomic(const std::string& path, const nlohmann::json& j) {
  const fs::path target(path);
  const fs::path tmp = target.parent_path() / (target.filename().string() + ".tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    MED3D_CHECK(static_cast<bool>(out), "eval: cannot write '", tmp.string(),
                "'; check that the folder exists and is writable");
    out << j.dump(2) << "\n";
    out.flush();
    MED3D_CHECK(static_cast<bool>(out), "eval: writing '", tmp.string(), "' failed (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  MED3D_CHECK(!ec, "eval: cannot rename '", tmp.string(), "' to '", path, "': ", ec.message());
}

// ---- Segmentation ---------------------------------------------------------------------------

// "case.nii.gz" -> "case"; empty for files that are not NIfTI.
std::string case_name(const fs::path& file) {
  const std::string name = file.filename().string();
  for (const char* ext : {".nii.gz", ".nii"}) {
    const std::string e(ext);
    if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0)
      return name.substr(0, name.size() - e.size());
  }
  return "";
}

std::map<std::string, std::string> nifti_files(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = case_name(entry.path());
    if (name.empty()) continue;
    MED3D_CHECK(out.count(name) == 0, "eval: '", dir.string(), "' holds both ", name, ".nii and ",
                name, ".nii.gz; keep one");
    out[name] = entry.path().string();
  }
  return out;
}

struct Pair {
  std::string name, pred, ref;
};

std::vector<Pair> pair_files(const EvalOptions& o) {
  MED3D_CHECK(fs::exists(o.ref), "eval: --ref '", o.ref, "' does not exist");
  MED3D_CHECK(fs::exists(o.pred), "eval: --pred '", o.pred, "' does not exist");
  const bool ref_dir = fs::is_directory(o.ref), pred_dir = fs::is_directory(o.pred);
  MED3D_CHECK(ref_dir == pred_dir, "eval: --pred and --ref must both be files or both be "
              "folders; got pred ", pred_dir ? "folder" : "file", " '", o.pred, "' and ref ",
              ref_dir ? "folder" : "file", " '", o.ref, "'");
  if (!ref_dir) {
    const std::string name = case_name(o.ref);
    return {{name.empty() ? fs::path(o.ref).filename().string() : name, o.pred, o.ref}};
  }
  const auto refs = nifti_files(o.ref);
  const auto preds = nifti_files(o.pred);
  MED3D_CHECK(!refs.empty(), "eval: no .nii or .nii.gz files in --ref folder '", o.ref, "'");
  std::vector<Pair> pairs;
  std::vector<std::string> missing;
  for (const auto& [name, path] : refs) {
    const auto it = preds.find(name);
    if (it == preds.end()) {
      missing.push_back(name);
    } else {
      pairs.push_back({name, it->second, path});
    }
  }
  std::vector<std::string> extra;
  for (const auto& entry : preds)
    if (refs.count(entry.first) == 0) extra.push_back(entry.first);
  auto list = [](const std::vector<std::string>& names) {
    std::string s;
    for (std::size_t i = 0; i < names.size() && i < 20; ++i) s += (i ? ", " : "") + names[i];
    if (names.size() > 20) s += ", ... (" + std::to_string(names.size()) + " in all)";
    return s;
  };
  if (!extra.empty())
    std::cerr << "med3d eval: warning: " << extra.size() << " prediction(s) without a reference "
              << "are ignored: " << list(extra) << "\n";
  if (!missing.empty()) {
    MED3D_CHECK(o.allow_missing, "eval: ", missing.size(), " reference case(s) have no prediction "
                "in '", o.pred, "': ", list(missing),
                "; predict them, or pass --allow-missing to score only the pairs present");
    std::cerr << "med3d eval: warning: " << missing.size()
              << " reference case(s) without a prediction are skipped: " << list(missing) << "\n";
  }
  MED3D_CHECK(!pairs.empty(), "eval: no prediction in '", o.pred, "' matches a reference in '",
              o.ref, "' by name (case.nii.gz in both folders)");
  return pairs;
}

nlohmann::json metrics_json(const SegmentationMetrics& m) {
  return {{"label", m.label},
          {"dice", number(m.dice)},
          {"iou", number(m.iou)},
          {"voe", number(m.voe)},
          {"rvd", number(m.rvd)},
          {"assd_mm", number(m.assd)},
          {"hd95_mm", number(m.hd95)},
          {"hausdorff_mm", number(m.hausdorff)},
          {"asd_pred_to_ref_mm", number(m.asd_pred_to_ref)},
          {"asd_ref_to_pred_mm", number(m.asd_ref_to_pred)},
          {"pred_voxels", m.pred_voxels},
          {"ref_voxels", m.ref_voxels},
          {"intersection_voxels", m.intersection}};
}

void run_segmentation(const EvalOptions& o) {
  const Context context = make_context(o.common);
  const std::vector<Pair> pairs = pair_files(o);
  struct CaseResult {
    Pair pair;
    std::array<double, 3> spacing;
    std::map<int, SegmentationMetrics> by_label;
  };
  std::vector<CaseResult> results;
  std::set<int> ref_labels;
  for (std::size_t c = 0; c < pairs.size(); ++c) {
    const Pair& p = pairs[c];
    std::cerr << "[" << c + 1 << "/" << pairs.size() << "] " << p.name << "\n";
    const Volume ref = read_label_nifti(context, p.ref);
    const Volume pred = read_label_nifti(context, p.pred);
    try {
      check_same_geometry(ref, pred, o.affine_tolerance);
    } catch (const Error& e) {
      // check_same_geometry speaks of image (here: the reference) and label (the prediction).
      detail::throw_error("eval: case '", p.name, "': the prediction is not on the reference's "
                          "grid (write predictions with the reference geometry (write_like) "
                          "or resample them; --affine-tolerance ", o.affine_tolerance,
                          " mm): ", e.what());
    }
    std::vector<int> labels = o.labels;
    for (const auto& entry : trainers::label_counts(ref.data)) ref_labels.insert(entry.first);
    if (labels.empty()) {
      // Default labels are known only after every reference is read: score each label present
      // in either file now; labels absent from both are filled in below (both empty).
      std::set<int> present;
      for (const auto& entry : trainers::label_counts(ref.data)) present.insert(entry.first);
      for (const auto& entry : trainers::label_counts(pred.data)) present.insert(entry.first);
      labels.assign(present.begin(), present.end());
    }
    CaseResult r{p, ref.spacing, {}};
    if (!labels.empty())
      for (const auto& m : trainers::evaluate_segmentation(pred.data, ref.data, ref.spacing, labels))
        r.by_label[m.label] = m;
    results.push_back(std::move(r));
  }
  std::vector<int> labels = o.labels;
  if (labels.empty()) {
    labels.assign(ref_labels.begin(), ref_labels.end());
    MED3D_CHECK(!labels.empty(), "eval: the references hold no non-zero label, so there is "
                "nothing to score by default; pass --labels");
  }

  std::vector<std::vector<SegmentationMetrics>> table;
  for (CaseResult& r : results) {
    std::vector<SegmentationMetrics> row;
    for (int label : labels) {
      auto it = r.by_label.find(label);
      if (it == r.by_label.end()) {
        SegmentationMetrics empty;  // absent from both: the both-empty convention
        empty.label = label;
        empty.dice = empty.iou = 1;
        row.push_back(empty);
      } else {
        row.push_back(it->second);
      }
    }
    table.push_back(std::move(row));
  }
  const std::vector<SegmentationSummary> means = trainers::mean_over_cases(table);

  std::size_t width = 4;
  for (const CaseResult& r : results) width = std::max(width, r.pair.name.size());
  std::ostream& out = std::cout;
  auto header = [&](const char* first) {
    out << std::left << std::setw(static_cast<int>(width)) << first << std::right << std::setw(7)
        << "label" << std::setw(9) << "dice" << std::setw(9) << "iou" << std::setw(9) << "voe"
        << std::setw(9) << "rvd" << std::setw(11) << "assd_mm" << std::setw(11) << "hd95_mm"
        << std::setw(11) << "hd_mm";
  };
  header("case");
  out << "\n";
  for (std::size_t c = 0; c < results.size(); ++c)
    for (const SegmentationMetrics& m : table[c])
      out << std::left << std::setw(static_cast<int>(width)) << results[c].pair.name << std::right
          << std::setw(7) << m.label << std::setw(9) << cell(m.dice) << std::setw(9) << cell(m.iou)
          << std::setw(9) << cell(m.voe) << std::setw(9) << cell(m.rvd) << std::setw(11)
          << cell(m.assd, 3) << std::setw(11) << cell(m.hd95, 3) << std::setw(11)
          << cell(m.hausdorff, 3) << "\n";
  out << "\n";
  header("mean");
  out << std::setw(8) << "cases" << std::setw(13) << "dice_global" << "\n";
  for (const SegmentationSummary& s : means)
    out << std::left << std::setw(static_cast<int>(width)) << "mean" << std::right << std::setw(7)
        << s.label << std::setw(9) << cell(s.dice) << std::setw(9) << cell(s.iou) << std::setw(9)
        << cell(s.voe) << std::setw(9) << cell(s.rvd) << std::setw(11) << cell(s.assd, 3)
        << std::setw(11) << cell(s.hd95, 3) << std::setw(11) << cell(s.hausdorff, 3)
        << std::setw(8) << s.cases << std::setw(13) << cell(s.dice_global) << "\n";
  out << "(- : undefined, e.g. distances when exactly one mask is empty; left out of the means)\n";

  if (o.json.empty()) return;
  nlohmann::json j;
  j["task"] = "segmentation";
  j["pred"] = o.pred;
  j["ref"] = o.ref;
  j["labels"] = labels;
  j["conventions"] =
      "Surfaces: mask minus its 6-connected erosion (outside = background). Distances in mm "
      "between voxel centres with the reference's spacing. assd: mean of the pooled distances of "
      "both directions; hd95: 95th percentile of the pooled distances, linear interpolation "
      "(medpy hd95); hausdorff: maximum. Both masks empty: dice 1, distances 0. One empty: dice 0, "
      "distances null. Means skip nulls; dice_global = 2 sum|P&R| / sum(|P|+|R|).";
  nlohmann::json cases = nlohmann::json::array();
  for (std::size_t c = 0; c < results.size(); ++c) {
    nlohmann::json metrics = nlohmann::json::array();
    for (const SegmentationMetrics& m : table[c]) metrics.push_back(metrics_json(m));
    cases.push_back({{"case", results[c].pair.name},
                     {"pred", results[c].pair.pred},
                     {"ref", results[c].pair.ref},
                     {"spacing_dhw_mm", results[c].spacing},
                     {"metrics", metrics}});
  }
  j["cases"] = cases;
  nlohmann::json mean = nlohmann::json::array();
  for (const SegmentationSummary& s : means)
    mean.push_back({{"label", s.label},
                    {"cases", s.cases},
                    {"cases_with_distances", s.cases_with_distances},
                    {"dice", number(s.dice)},
                    {"iou", number(s.iou)},
                    {"voe", number(s.voe)},
                    {"rvd", number(s.rvd)},
                    {"assd_mm", number(s.assd)},
                    {"hd95_mm", number(s.hd95)},
                    {"hausdorff_mm", number(s.hausdorff)},
                    {"dice_global", number(s.dice_global)}});
  j["mean"] = mean;
  write_json_atomic(o.json, j);
  std::cerr << "wrote " << o.json << "\n";
}

// ---- Classification -------------------------------------------------------------------------

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string field;
  while (std::getline(ss, field, ',')) out.push_back(trim(field));
  if (!line.empty() && line.back() == ',') out.push_back("");
  return out;
}

bool parse_int(const std::string& s, int& v) {
  try {
    std::size_t used = 0;
    v = std::stoi(s, &used);
    return used == s.size();
  } catch (const std::exception&) {
    return false;
  }
}

struct CsvRow {
  int label = 0;
  std::vector<double> scores;
};

// case,label[,score...]; a first line whose label is not an integer is a header; empty lines
// and lines starting with '#' are skipped.
std::map<std::string, CsvRow> read_csv(const std::string& path, bool scores_allowed,
                                       std::size_t& score_columns) {
  std::ifstream in(path);
  MED3D_CHECK(static_cast<bool>(in), "eval: cannot open '", path, "'");
  std::map<std::string, CsvRow> rows;
  std::string line;
  int line_no = 0;
  bool first = true;
  score_columns = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    const std::vector<std::string> f = split_csv(t);
    CsvRow row;
    const bool label_ok = f.size() >= 2 && parse_int(f[1], row.label);
    if (first && !label_ok) {  // header
      first = false;
      continue;
    }
    first = false;
    MED3D_CHECK(label_ok, "eval: ", path, ":", line_no, ": expected case,label",
                scores_allowed ? "[,score...]" : "", " with an integer label, got '", t, "'");
    MED3D_CHECK(row.label >= 0, "eval: ", path, ":", line_no, ": class labels are 0, 1, ..., got ",
                row.label);
    MED3D_CHECK(scores_allowed || f.size() == 2, "eval: ", path, ":", line_no,
                ": reference rows are case,label; got ", f.size(), " fields");
    for (std::size_t k = 2; k < f.size(); ++k) {
      std::size_t used = 0;
      double v = 0;
      try {
        v = std::stod(f[k], &used);
      } catch (const std::exception&) {
        used = 0;
      }
      MED3D_CHECK(used == f[k].size() && !f[k].empty() && std::isfinite(v), "eval: ", path, ":",
                  line_no, ": score '", f[k], "' is not a finite number");
      row.scores.push_back(v);
    }
    if (rows.empty()) score_columns = row.scores.size();
    MED3D_CHECK(row.scores.size() == score_columns, "eval: ", path, ":", line_no, ": ",
                row.scores.size(), " scores, but the first row has ", score_columns,
                "; every row needs the same columns");
    MED3D_CHECK(rows.count(f[0]) == 0, "eval: ", path, ":", line_no, ": case '", f[0],
                "' appears twice");
    rows[f[0]] = std::move(row);
  }
  MED3D_CHECK(!rows.empty(), "eval: '", path, "' has no data rows");
  return rows;
}

// The truth of a classification dataset (dataset.json "training" entries with integer labels).
std::map<std::string, CsvRow> read_dataset_classes(const std::string& ref) {
  const fs::path folder = fs::is_directory(ref) ? fs::path(ref) : fs::path(ref).parent_path();
  const Dataset d = load_msd_dataset(folder.string());
  MED3D_CHECK(d.classification, "eval: '", (folder / "dataset.json").string(), "' lists label files, not ",
              "classes; give a CSV of case,label or use --task seg");
  std::map<std::string, CsvRow> rows;
  for (const DatasetCase& c : d.cases) rows[c.id] = CsvRow{c.class_label, {}};
  return rows;
}

void run_classification(EvalOptions o) {
  std::size_t ref_scores = 0, k_scores = 0;
  const bool ref_dataset = fs::is_directory(o.ref) || fs::path(o.ref).filename() == "dataset.json";
  const auto refs = ref_dataset ? read_dataset_classes(o.ref) : read_csv(o.ref, false, ref_scores);
  if (fs::is_directory(o.pred)) o.pred = (fs::path(o.pred) / "predictions.csv").string();
  const auto preds = read_csv(o.pred, true, k_scores);
  std::vector<std::string> names, missing;
  std::vector<int> truth, predicted;
  std::vector<std::vector<double>> scores;
  for (const auto& [name, row] : refs) {
    const auto it = preds.find(name);
    if (it == preds.end()) {
      missing.push_back(name);
      continue;
    }
    names.push_back(name);
    truth.push_back(row.label);
    predicted.push_back(it->second.label);
    scores.push_back(it->second.scores);
  }
  std::size_t extra = 0;
  for (const auto& entry : preds) extra += refs.count(entry.first) == 0;
  if (extra > 0)
    std::cerr << "med3d eval: warning: " << extra << " prediction(s) without a reference ignored\n";
  if (!missing.empty()) {
    std::string list;
    for (std::size_t i = 0; i < missing.size() && i < 20; ++i) list += (i ? ", " : "") + missing[i];
    MED3D_CHECK(o.allow_missing, "eval: ", missing.size(), " reference case(s) have no prediction in '",
                o.pred, "': ", list, "; pass --allow-missing to score only the cases present");
    std::cerr << "med3d eval: warning: " << missing.size() << " case(s) without a prediction skipped\n";
  }
  MED3D_CHECK(!names.empty(), "eval: no case of '", o.pred, "' matches a case of '", o.ref, "'");

  nlohmann::json j;
  j["task"] = "classification";
  j["pred"] = o.pred;
  j["ref"] = o.ref;
  j["cases"] = names.size();
  const double acc = trainers::accuracy(predicted, truth);
  j["accuracy"] = acc;
  int classes = 0;
  for (std::size_t i = 0; i < truth.size(); ++i)
    classes = std::max({classes, truth[i] + 1, predicted[i] + 1});
  std::vector<std::vector<int64_t>> confusion(classes, std::vector<int64_t>(classes, 0));
  for (std::size_t i = 0; i < truth.size(); ++i) ++confusion[truth[i]][predicted[i]];
  j["confusion"] = confusion;  // rows: true class, columns: predicted class

  std::cout << "cases     " << names.size() << "\naccuracy  " << cell(acc) << "\n";
  if (k_scores == 1) {
    for (std::size_t i = 0; i < truth.size(); ++i)
      MED3D_CHECK(truth[i] <= 1, "eval: one score column means a binary task (score of class 1), "
                  "but case '", names[i], "' has class ", truth[i],
                  "; give K score columns score_0..score_{K-1} for K classes");
    std::vector<double> s;
    for (const auto& row : scores) s.push_back(row[0]);
    const double auc = trainers::roc_auc(s, truth);
    j["roc_auc"] = auc;
    std::cout << "roc_auc   " << cell(auc) << " (binary, score = class 1)\n";
  } else if (k_scores >= 2) {
    const trainers::RocAuc auc = trainers::roc_auc_one_vs_rest(scores, truth);
    // Two classes: the AUC of score_1, which is what a binary AUC reports.
    const double headline = k_scores == 2 ? auc.per_class[1] : auc.macro;
    j["roc_auc"] = number(headline);
    j["roc_auc_macro_ovr"] = auc.macro;
    nlohmann::json per = nlohmann::json::array();
    for (double v : auc.per_class) per.push_back(number(v));
    j["roc_auc_per_class"] = per;
    std::cout << "roc_auc   " << cell(headline)
              << (k_scores == 2 ? " (binary, score_1)" : " (one-vs-rest, macro)") << "\n";
    for (std::size_t c = 0; c < auc.per_class.size(); ++c)
      std::cout << "  class " << c << "  " << cell(auc.per_class[c]) << "\n";
  } else {
    std::cout << "roc_auc   - (no score columns in " << o.pred << ")\n";
  }
  std::cout << "confusion (rows: true class, columns: predicted)\n";
  for (const auto& row : confusion) {
    std::cout << " ";
    for (int64_t v : row) std::cout << std::setw(7) << v;
    std::cout << "\n";
  }
  if (!o.json.empty()) {
    write_json_atomic(o.json, j);
    std::cerr << "wrote " << o.json << "\n";
  }
}

}  // namespace

void register_eval(CLI::App& app) {
  auto options = std::make_shared<EvalOptions>();
  auto* command = app.add_subcommand(
      "eval", "Score predictions against references: segmentation metrics of NIfTI label maps "
              "(default) or classification accuracy / ROC AUC from CSV files (--task cls)");
  add_common_options(*command, options->common);
  command->add_option("--task", options->task, "seg (NIfTI label maps) or cls (CSV files)")
      ->capture_default_str()
      ->check(CLI::IsMember({"seg", "cls"}));
  command->add_option("--pred", options->pred,
                      "seg: predicted label map or folder of them; cls: predictions CSV (or the "
                      "med3d predict folder holding predictions.csv)")
      ->required();
  command->add_option("--ref", options->ref,
                      "seg: reference label map or folder of them; cls: reference CSV, or a "
                      "classification dataset folder (dataset.json)")
      ->required();
  command->add_option("--labels", options->labels,
                      "seg: label values to score, e.g. 1,2 (default: every non-zero label "
                      "present in the references)")
      ->delimiter(',');
  command->add_option("--json", options->json, "write per-case and mean results to this JSON file");
  command->add_option("--affine-tolerance", options->affine_tolerance,
                      "seg: largest allowed difference of the pred and ref affines, mm")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  command->add_flag("--allow-missing", options->allow_missing,
                    "score only the cases that have both files (default: a reference without a "
                    "prediction is an error)");
  command->footer(
      "Segmentation: folders are paired by case name, the file name without .nii/.nii.gz\n"
      "(pred/case.nii.gz with ref/case.nii.gz). Both files must have the same dims and affine;\n"
      "distances use the reference's voxel spacing. Metrics per label: Dice, IoU, VOE = 1 - IoU,\n"
      "RVD = (|P|-|R|)/|R|, ASSD (pooled mean of both directions), HD95 (95th percentile,\n"
      "linear interpolation, as medpy) and Hausdorff, in mm, between surfaces (mask minus its\n"
      "6-connected erosion). Both masks empty: Dice 1, distances 0; one empty: Dice 0, distances\n"
      "undefined ('-', JSON null) and left out of the means.\n"
      "Classification: --ref CSV rows 'case,label' (label 0..K-1) or a classification MSD folder\n"
      "(dataset.json entries {\"image\": ..., \"label\": K}, case = image name); --pred CSV rows\n"
      "'case,label' (accuracy only), 'case,label,score' (binary: score of class 1), or\n"
      "'case,label,score_0,...,score_{K-1}' (one-vs-rest ROC AUC, macro mean over the classes\n"
      "present; for K = 2 the AUC of score_1). A first line with a non-integer label is a\n"
      "header; ties in scores count 1/2.\n"
      "Example: med3d eval --pred preds/ --ref labelsTr/ --labels 1,2 --json eval.json");
  command->callback([options]() {
    if (options->task == "cls") {
      MED3D_CHECK(options->labels.empty(), "eval: --labels applies to --task seg only");
      run_classification(*options);
    } else {
      run_segmentation(*options);
    }
  });
}

}  // namespace med3d::cli
