// Device: where a tensor's storage lives. CUDA devices carry an ordinal.
#pragma once

#include <string>

namespace med3d {

enum class DeviceKind { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;

  static Device cpu() { return {DeviceKind::cpu, 0}; }
  static Device cuda(int index = 0) { return {DeviceKind::cuda, index}; }
  bool is_cpu() const { return kind == DeviceKind::cpu; }
  bool is_cuda() const { return kind == DeviceKind::cuda; }
  bool operator==(const Device&) const = default;
  std::string str() const;  // "cpu", "cuda:0"
};

// Which CUDA backend this build of med3d has: none, the real one (nvcc), or the test-only
// emulator (MED3D_CUDA=EMULATE: Device::cuda(0) is host memory, kernels run as CPU fibers,
// correct but slow; programs should not pick it by default).
enum class CudaBackend { none, native, emulated };
CudaBackend cuda_backend() noexcept;

// CUDA devices this process can use: 0 in a build without the CUDA backend, and 0 when the
// driver reports any error (no GPU, no driver): discovery never throws. The test-only
// emulated backend (MED3D_CUDA=EMULATE) reports its one device.
int cuda_device_count() noexcept;

// "cuda:0: NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)"; throws when the device is absent.
std::string cuda_device_description(int index = 0);

}  // namespace med3d
