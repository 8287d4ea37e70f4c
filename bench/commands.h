// The med3d-bench subcommands (one file each); each prints its report and returns an exit code.
#pragma once

#include <string>

#include "common.h"

namespace med3d::bench {

struct StepOptions {
  std::string arch = "resnet18";
  std::string input = "2x1x32x64x64";
  std::string head = "medicalnet";  // medicalnet | pointwise
  std::string device = "cpu";       // cpu | cuda
};

int run_machine(const CommonOptions& options);
int run_conv(const CommonOptions& options);
int run_ops(const CommonOptions& options);
int run_step(const CommonOptions& options, const StepOptions& step);
int run_gpu_conv(const CommonOptions& options);
int run_gemm(const CommonOptions& options);

}  // namespace med3d::bench
