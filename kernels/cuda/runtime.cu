// Checked wrappers of the CUDA runtime (see med3d/kernels/cuda/runtime.h).
#include "cuda_common.cuh"

#include <cstdint>
#include <sstream>

#include "med3d/error.h"
#include "med3d/kernels/cuda/runtime.h"

namespace med3d::kernels::cuda {

namespace {

void check(cudaError_t status, const char* call, int device) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so later calls do not report it again
  detail::throw_error(call, " failed on cuda:", device, ": ", cudaGetErrorName(status), " (",
                      cudaGetErrorString(status), ")");
}

int current_device() {
  int device = -1;
  cudaGetDevice(&device);
  return device;
}

}  // namespace

int device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

std::string device_description(int device) {
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties", device);
  std::ostringstream out;
  out.precision(3);
  out << prop.name << " (sm_" << prop.major << prop.minor << ", " << prop.multiProcessorCount
      << " SMs, " << static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0)
      << " GiB)";
  return out.str();
}

void set_device(int device) { check(cudaSetDevice(device), "cudaSetDevice", device); }

Stream create_stream(int device) {
  set_device(device);
  // The stream-ordered pool returns freed memory to the driver at every synchronisation unless
  // told to keep it; a training step frees and reallocates the same activations every step.
  cudaMemPool_t pool = nullptr;
  check(cudaDeviceGetDefaultMemPool(&pool, device), "cudaDeviceGetDefaultMemPool", device);
  uint64_t keep = UINT64_MAX;
  check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute",
        device);
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags",
        device);
  return stream;
}

void destroy_stream(int device, Stream stream) noexcept {
  // Destructors cannot throw; a failure here means the device already failed, which the
  // previous checked call reported.
  if (cudaSetDevice(device) != cudaSuccess) return;
  cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
}

void* allocate(std::size_t bytes, int device, Stream stream) {
  if (bytes == 0) return nullptr;
  set_device(device);
  void* pointer = nullptr;
  const cudaError_t status = cudaMallocAsync(&pointer, bytes, stream);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    detail::throw_error("cudaMallocAsync: out of memory on cuda:", device, " asking for ", bytes,
                        " bytes (", free_bytes, " of ", total_bytes,
                        " bytes free); use a smaller batch or patch, or release cached memory");
  }
  check(status, "cudaMallocAsync", device);
  return pointer;
}

void trim_pool(int device, Stream stream) {
  set_device(device);
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize", device);
  cudaMemPool_t pool = nullptr;
  check(cudaDeviceGetDefaultMemPool(&pool, device), "cudaDeviceGetDefaultMemPool", device);
  check(cudaMemPoolTrimTo(pool, 0), "cudaMemPoolTrimTo", device);
}

void release(void* pointer, int device, Stream stream) noexcept {
  if (pointer == nullptr) return;
  if (cudaSetDevice(device) != cudaSuccess) return;
  cudaFreeAsync(pointer, stream);
}

void copy_to_device(void* device_dst, const void* host_src, std::size_t bytes, Stream stream) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync (host to device)", current_device());
}

void copy_to_host(void* host_dst, const void* device_src, std::size_t bytes, Stream stream) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, stream),
        "cudaMemcpyAsync (device to host)", current_device());
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize", current_device());
}

void copy_on_device(void* dst, const void* src, std::size_t bytes, Stream stream) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream),
        "cudaMemcpyAsync (device to device)", current_device());
}

void fill_zero(void* device_dst, std::size_t bytes, Stream stream) {
  if (bytes == 0) return;
  check(cudaMemsetAsync(device_dst, 0, bytes, stream), "cudaMemsetAsync", current_device());
}

void synchronize(Stream stream) {
  check(cudaStreamSynchronize(stream), "cudaStreamSynchronize", current_device());
}

void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return;
  detail::throw_error("launching CUDA kernel ", kernel, " failed on cuda:", current_device(), ": ",
                      cudaGetErrorName(status), " (", cudaGetErrorString(status), ")");
}

}  // namespace med3d::kernels::cuda
