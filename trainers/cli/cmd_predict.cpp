// med3d predict: sliding-window inference of a trained model (best.safetensors of a run) on
// NIfTI files; each prediction is written with its input's exact geometry (write_like), so it
// overlays the input in ITK-SNAP or 3D Slicer. A classification run (head classifier) instead
// writes OUT/predictions.csv: case,label,score_0,...,score_{K-1} (class probabilities; the
// format med3d eval --task cls reads), one row per input file.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "med3d/data/nifti.h"
#include "med3d/trainers/classify.h"
#include "med3d/trainers/evaluate.h"
#include "med3d/trainers/inference.h"
#include "med3d/trainers/run_files.h"

namespace med3d::cli {
namespace {
namespace fs = std::filesystem;

struct PredictArgs {
  CommonOptions common;
  std::string model, in, out;
  int64_t domain = 0;
  double overlap = 0.5;
  bool tta = false;
};

void predict_classes(Context& context, trainers::LoadedModel& loaded, const std::vector<std::string>& files,
                     const PreprocessOptions& prep, const std::string& out) {
  const std::string csv = (fs::path(out) / "predictions.csv").string();
  std::ostringstream text;
  text << "case,label";
  const int64_t classes = loaded.meta.spec.classes.at(0);
  for (int64_t k = 0; k < classes; ++k) text << ",score_" << k;
  text << "\n" << std::setprecision(9);
  const std::map<int32_t, std::string>& names = loaded.meta.labels.at(0);
  for (const std::string& name : files) {
    const auto start = std::chrono::steady_clock::now();
    const PreparedCase prepared = trainers::prepare_image(context, name, prep);
    const std::vector<double> p =
        trainers::classify_probabilities(context, loaded.model, prepared.image.data, loaded.meta.patch);
    const auto label = static_cast<int32_t>(std::max_element(p.begin(), p.end()) - p.begin());
    text << prepared.id << "," << label;
    for (double v : p) text << "," << v;
    text << "\n";
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto it = names.find(label);
    std::cout << fs::path(name).filename().string() << "  " << std::fixed << std::setprecision(2) << seconds
              << " s  class " << label << " (" << (it != names.end() ? it->second : "?") << ")  p "
              << std::setprecision(4) << p[static_cast<std::size_t>(label)] << "\n";
  }
  // Temporary file, then rename: a killed run never leaves a torn table.
  const std::string tmp = csv + ".tmp";
  {
    std::ofstream file(tmp, std::ios::trunc);
    MED3D_CHECK(static_cast<bool>(file), "predict: cannot write '", tmp, "'; check that the folder is writable");
    file << text.str();
    MED3D_CHECK(static_cast<bool>(file), "predict: writing '", tmp, "' failed (disk full?)");
  }
  fs::rename(tmp, csv);
  std::cout << "wrote " << csv << "\n";
}

void run_predict(const CLI::App& command, const PredictArgs& a) {
  Context context = make_context(a.common);
  trainers::LoadedModel loaded = trainers::load_model(context, a.model);
  loaded.model.to(compute_device(a.common));
  const auto domains = static_cast<int64_t>(loaded.meta.preprocess.size());
  MED3D_CHECK(a.domain >= 0 && a.domain < domains, "--domain ", a.domain, ": the model has ", domains,
              " domain(s) (0..", domains - 1, ")");
  const std::vector<std::string> files = nifti_inputs(a.in);
  fs::create_directories(a.out);
  save_resolved_config(command, (fs::path(a.out) / "predict_config.json").string());
  trainers::PredictOptions options;
  options.patch = loaded.meta.patch;
  options.overlap = a.overlap;
  options.flip_tta = a.tta;
  options.resize_whole = loaded.meta.crop == "resize";
  MED3D_CHECK(loaded.meta.roi_margin == 0, "'", a.model, "' is a region-of-interest model (a liver ",
              "cascade's stage 2); run it with med3d liver --stage1 ... --stage2 ", a.model);
  const PreprocessOptions& prep = loaded.meta.preprocess.at(static_cast<std::size_t>(a.domain));
  if (loaded.meta.spec.head == "classifier") {
    MED3D_CHECK(!a.tta, "--tta applies to segmentation models; '", a.model, "' is a classifier");
    predict_classes(context, loaded, files, prep, a.out);
    return;
  }
  for (const std::string& name : files) {
    const fs::path file(name);
    const auto start = std::chrono::steady_clock::now();
    const Volume reference = read_nifti(context, file.string());
    const PreparedCase prepared = trainers::prepare_image(context, file.string(), prep);
    const Tensor probabilities =
        trainers::predict_probabilities(context, loaded.model, a.domain, prepared.image.data, options);
    const Tensor labels = trainers::labels_to_reference_grid(probabilities, prepared, reference);
    const fs::path target = fs::path(a.out) / file.filename();
    write_like(target.string(), reference, labels);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << file.filename().string() << "  " << std::fixed << std::setprecision(2) << seconds << " s  -> "
              << target.string() << "\n";
  }
}

}  // namespace

void register_predict(CLI::App& app) {
  auto a = std::make_shared<PredictArgs>();
  CLI::App* c = app.add_subcommand("predict", "Segment NIfTI files with a trained model (sliding window), or "
                                              "classify them (classification runs: OUT/predictions.csv)");
  add_common_options(*c, a->common);
  c->add_option("--model", a->model, "RUN/best.safetensors (from med3d train or pretrain)")->required();
  c->add_option("--in", a->in, "a NIfTI file or a folder of them")->required();
  c->add_option("--out", a->out, "output folder (same file names; classifiers: predictions.csv)")->required();
  c->add_option("--domain", a->domain, "which branch of a co-trained (med3d) model")->capture_default_str();
  c->add_option("--overlap", a->overlap, "window overlap in [0, 1)")->capture_default_str()->check(CLI::Range(0.0, 0.95));
  c->add_flag("--tta", a->tta, "average the 8 flips (test-time augmentation)");
  c->callback([c, a] { run_predict(*c, *a); });
}

}  // namespace med3d::cli
