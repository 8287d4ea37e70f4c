// med3d synth: writes a seeded synthetic MSD dataset (data/synth.h) for demos, tests and
// benchmarks of any size.
#include <chrono>
#include <iostream>
#include <memory>

#include "commands.h"
#include "common.h"
#include "med3d/data/synth.h"

namespace med3d::cli {
namespace {

struct SynthArgs {
  CommonOptions common;
  std::string out;
  std::string kind = "ct-liver";
  int cases = 4;
  std::vector<int64_t> shape{64, 64, 64};
  bool isotropic = false;
  bool keep_orientation = false;
  bool gzip = false;
};

void run_synth(const CLI::App& command, const SynthArgs& a) {
  Context context = make_context(a.common);
  SynthOptions o;
  MED3D_CHECK(a.kind == "ct-liver" || a.kind == "mri-brain" || a.kind == "ct-nodule",
              "--kind: expected ct-liver, mri-brain or ct-nodule, got '", a.kind, "'");
  o.modality = a.kind == "mri-brain" ? SynthModality::mri : SynthModality::ct;
  o.num_cases = a.cases;
  o.shape = {a.shape[0], a.shape[1], a.shape[2]};
  o.seed = a.common.seed;
  o.anisotropic = !a.isotropic;
  o.random_orientation = !a.keep_orientation;
  o.compress = a.gzip;
  o.name = "synthetic-" + a.kind;
  const auto start = std::chrono::steady_clock::now();
  const Dataset dataset = a.kind == "ct-nodule" ? write_synthetic_nodule_dataset(context, a.out, o)
                                                : write_synthetic_dataset(context, a.out, o);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  save_resolved_config(command, a.out + "/synth_config.json");
  std::cout << "wrote " << dataset.cases.size() << " " << a.kind << " cases of " << a.shape[0] << "x"
            << a.shape[1] << "x" << a.shape[2] << " to " << a.out << " in " << seconds << " s\n";
}

}  // namespace

void register_synth(CLI::App& app) {
  auto args = std::make_shared<SynthArgs>();
  CLI::App* c = app.add_subcommand("synth", "Write a synthetic MSD-format dataset (images, labels, dataset.json)");
  add_common_options(*c, args->common);
  c->add_option("--out", args->out, "output folder (created)")->required();
  c->add_option("--kind", args->kind, "ct-liver (HU, liver 1, kidney 2), mri-brain, or ct-nodule "
                                     "(classification: class 1 = a bright nodule, every odd case)")->capture_default_str();
  c->add_option("--cases", args->cases, "number of cases")->capture_default_str()->check(CLI::PositiveNumber);
  c->add_option("--shape", args->shape, "voxels D H W")->expected(3)->capture_default_str();
  c->add_flag("--isotropic", args->isotropic, "1 mm voxels instead of random anisotropic spacing");
  c->add_flag("--keep-orientation", args->keep_orientation, "RAS files instead of random orientation codes");
  c->add_flag("--gzip", args->gzip, "write .nii.gz");
  c->callback([c, args] { run_synth(*c, *args); });
}

}  // namespace med3d::cli
