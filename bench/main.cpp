// med3d-bench: the speed harness of issue 7 (bench/README.md). Subcommands:
//   machine  the ceilings every ratio is measured against (FMA peak, sgemm, copy bandwidth)
//   conv     the Med3D conv layer table: fprop, dgrad, wgrad, against oneDNN
//   ops      batch norm, ReLU, max pool, trilinear upsampling, cross-entropy: GB/s
//   step     whole SGD training steps of a ResNet-3D + head: time and peak RSS (--device cuda)
//   gpu-conv the conv layer table on the GPU: our CUDA kernels against cuDNN
//   gemm     our f32 GEMM against Eigen's on square and conv-like shapes
#include <omp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "commands.h"

using namespace med3d::bench;

namespace med3d::bench {

int run_machine(const CommonOptions& options) {
  const Machine machine = measure_machine(options.threads, options.quick);
  print_machine(machine);
  if (!options.json_path.empty()) {
    Report empty({});
    CommonOptions json_only;
    json_only.csv = true;
    json_only.json_path = options.json_path;
    emit(empty, json_only, {{"bench", "machine"}, {"machine", to_json(machine)}},
         "", "", {});
  }
  return 0;
}

}  // namespace med3d::bench

namespace {

void add_common(CLI::App& app, CommonOptions& o, bool tables) {
  app.add_option("--threads", o.threads, "OpenMP threads (ours and the reference)")->check(CLI::Range(1, 1024));
  app.add_option("--runs", o.runs, "timed runs per measurement (median and min reported)")->check(CLI::Range(1, 100000));
  app.add_option("--warmup", o.warmup, "untimed runs first")->check(CLI::Range(0, 100000));
  app.add_flag("--quick", o.quick, "smoke run: 3 runs, 1 warm-up, halved shapes");
  app.add_flag("--csv", o.csv, "CSV instead of the aligned table");
  app.add_option("--json", o.json_path, "also write the results as JSON to this file");
  if (tables) {
    app.add_option("--plot", o.plot_path, "bar chart PNG of the ratios");
    app.add_option("--scale", o.scale, "small: the table as listed (N=2, 32x64x64 input); large: N=1, 64x128x128")
        ->check(CLI::IsMember({"small", "large"}));
    app.add_option("--only", o.only, "run only these layers (conv) or ops, e.g. --only stem,aspp_d3")->delimiter(',');
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"med3d-bench: CPU speed of med3d's kernels, ops and training steps (bench/README.md)"};
  app.require_subcommand(1);
  CommonOptions machine_o, conv_o, ops_o, step_o, gpu_conv_o, gemm_o;
  StepOptions step;
  CLI::App* machine = app.add_subcommand("machine", "measure the ceilings: FMA peak, Eigen sgemm, copy bandwidth");
  add_common(*machine, machine_o, false);
  CLI::App* conv = app.add_subcommand("conv", "Med3D conv layer table: fprop, dgrad, wgrad vs oneDNN");
  add_common(*conv, conv_o, true);
  CLI::App* ops = app.add_subcommand("ops", "batch norm, ReLU, max pool, upsampling, cross-entropy: GB/s");
  add_common(*ops, ops_o, true);
  CLI::App* gpu_conv = app.add_subcommand("gpu-conv", "Med3D conv layer table on the GPU: fprop, dgrad, wgrad vs cuDNN");
  add_common(*gpu_conv, gpu_conv_o, true);
  CLI::App* gemm = app.add_subcommand("gemm", "our f32 GEMM vs Eigen: square and conv-like shapes, 1 and N threads");
  add_common(*gemm, gemm_o, true);
  CLI::App* step_cmd = app.add_subcommand("step", "whole SGD training steps: time and peak RSS");
  add_common(*step_cmd, step_o, false);
  step_o.runs = 10;
  step_o.warmup = 2;
  step_cmd->add_option("--arch", step.arch, "resnet10, resnet18, resnet34, resnet50, ...");
  step_cmd->add_option("--input", step.input, "NxCxDxHxW");
  step_cmd->add_option("--head", step.head, "medicalnet (ConvTranspose head, 1/4 resolution) or pointwise "
                                            "(1x1x1 conv + trilinear upsampling)")
      ->check(CLI::IsMember({"medicalnet", "pointwise"}));
  step_cmd->add_option("--device", step.device, "cpu or cuda (cuda:0)")->check(CLI::IsMember({"cpu", "cuda"}));
  CLI11_PARSE(app, argc, argv);
  try {
    for (CommonOptions* o : {&machine_o, &conv_o, &ops_o, &step_o, &gpu_conv_o, &gemm_o})
      if (o->quick) o->runs = 3, o->warmup = 1;
    auto start = [](const CommonOptions& o) {
      omp_set_num_threads(o.threads);
      return o;
    };
    if (machine->parsed()) return run_machine(start(machine_o));
    if (conv->parsed()) return run_conv(start(conv_o));
    if (ops->parsed()) return run_ops(start(ops_o));
    if (gemm->parsed()) return run_gemm(start(gemm_o));
    if (gpu_conv->parsed()) return run_gpu_conv(gpu_conv_o);
    return run_step(start(step_o), step);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "med3d-bench: %s\n", e.what());
    return 1;
  }
}
