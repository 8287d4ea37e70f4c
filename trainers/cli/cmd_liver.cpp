// med3d liver: the two-stage liver cascade (trainers/liver.h) on NIfTI files. The stages are
// trained with med3d train (see --help); the outputs overlay their inputs exactly.
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>

#include "commands.h"
#include "common.h"
#include "med3d/trainers/liver.h"

namespace med3d::cli {
namespace {
namespace fs = std::filesystem;

struct LiverArgs {
  CommonOptions common;
  std::string stage1, stage2, in, out;
  int64_t margin = -1;
};

// A run folder stands for its best model.
std::string model_file(const std::string& run) {
  return fs::is_directory(run) ? (fs::path(run) / "best.safetensors").string() : run;
}

void run_liver(const CLI::App& command, const LiverArgs& a) {
  Context context = make_context(a.common);
  trainers::LoadedModel stage1 = trainers::load_model(context, model_file(a.stage1));
  trainers::LoadedModel stage2 = trainers::load_model(context, model_file(a.stage2));
  stage1.model.to(compute_device(a.common));
  stage2.model.to(compute_device(a.common));
  const std::vector<std::string> files = nifti_inputs(a.in);
  fs::create_directories(a.out);
  save_resolved_config(command, (fs::path(a.out) / "liver_config.json").string());
  trainers::LiverOptions options;
  options.margin = a.margin;
  for (const std::string& file : files) {
    const auto start = std::chrono::steady_clock::now();
    const Volume reference = read_nifti(context, file);
    const trainers::LiverResult r = trainers::liver_cascade(context, stage1, stage2, file, reference, options);
    const fs::path target = fs::path(a.out) / fs::path(file).filename();
    write_like(target.string(), reference, r.labels);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << fs::path(file).filename().string() << "  " << std::fixed << std::setprecision(2) << seconds << " s  ";
    if (r.box)
      std::cout << "box [" << r.box->lo[0] << ":" << r.box->hi[0] << ", " << r.box->lo[1] << ":" << r.box->hi[1]
                << ", " << r.box->lo[2] << ":" << r.box->hi[2] << "]";
    else
      std::cout << "stage 1 found no liver: empty result";
    std::cout << "  -> " << target.string() << "\n";
  }
}

}  // namespace

void register_liver(CLI::App& app) {
  auto a = std::make_shared<LiverArgs>();
  CLI::App* c = app.add_subcommand(
      "liver",
      "Two-stage liver segmentation: coarse whole volume, then DenseASPP-3D on the liver's box.\n"
      "Train the stages with the same --spacing/--intensity, e.g. for labels liver 1 (+ tumour 2):\n"
      "  med3d train --data DIR --head coarse --crop resize --patch 64 64 64 --foreground-labels 1,2 --out RUN1\n"
      "  med3d train --data DIR --head denseaspp --roi-margin 8 --patch 48 48 48 --foreground-labels 1,2 --out RUN2");
  add_common_options(*c, a->common);
  c->add_option("--stage1", a->stage1, "stage-1 run folder or .safetensors (--head coarse --crop resize)")->required();
  c->add_option("--stage2", a->stage2, "stage-2 run folder or .safetensors (--roi-margin > 0)")->required();
  c->add_option("--in", a->in, "a NIfTI file or a folder of them")->required();
  c->add_option("--out", a->out, "output folder (same file names)")->required();
  c->add_option("--margin", a->margin, "box margin in voxels (default: stage 2's --roi-margin)");
  c->callback([c, a] { run_liver(*c, *a); });
}

}  // namespace med3d::cli
