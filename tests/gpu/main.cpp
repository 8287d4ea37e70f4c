// The gpu suite's main: exit code 77 (ctest: skipped) when no CUDA device is usable, unless
// MED3D_REQUIRE_GPU=1, which turns the skip into a failure (scripts/gpu_check.sh sets it).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <iostream>

#include "med3d/device.h"

int main(int argc, char* argv[]) {
  if (med3d::cuda_device_count() == 0) {
    const char* require = std::getenv("MED3D_REQUIRE_GPU");
    if (require != nullptr && std::strcmp(require, "1") == 0) {
      std::cerr << "med3d_gpu_tests: MED3D_REQUIRE_GPU=1 but no CUDA device is usable\n";
      return 1;
    }
    std::cout << "med3d_gpu_tests: no CUDA device: skipped\n";
    return 77;
  }
  std::cout << "med3d_gpu_tests on " << med3d::cuda_device_description(0) << "\n";
  return Catch::Session().run(argc, argv);
}
