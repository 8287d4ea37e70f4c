// Engine internals shared by engine/src and engine/ops: the tensor and context state and
// the reusing CPU memory pool. Not installed.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "med3d/context.h"
#include "med3d/kernels/cuda/blas.h"
#include "med3d/kernels/cuda/runtime.h"
#include "med3d/tape.h"
#include "med3d/tensor.h"

#ifndef MED3D_WITH_CUDA
#define MED3D_WITH_CUDA 0
#endif

namespace med3d::detail {

// Whether this build has the CUDA backend (nvcc, or the test-only emulation). Code that calls
// kernels::cuda sits under `if constexpr (kWithCuda)`, so a CPU-only build links without it.
inline constexpr bool kWithCuda = MED3D_WITH_CUDA != 0;

// Keeps freed blocks for reuse: first touch of fresh pages costs ~10 us per 4 KiB on these
// machines, and glibc returns blocks >= 32 MiB to the kernel on free, so allocating
// activations afresh every step would pay that every step. Sizes are rounded to 1/8 steps
// of a power of two (at most 12.5% slack) so a block fits the next request of its class.
class CpuPool : public std::enable_shared_from_this<CpuPool> {
 public:
  ~CpuPool();
  std::shared_ptr<void> allocate(std::size_t bytes);
  MemoryStats stats() const;
  void release_cached();

 private:
  void give_back(void* block, std::size_t size_class);
  mutable std::mutex mutex_;
  std::multimap<std::size_t, void*> free_blocks_;
  MemoryStats stats_;
};

// A Context's CUDA stream and the accounting of its device memory. Storage deleters hold it, so
// the stream outlives every block allocated on it; destroying it waits for queued work.
struct CudaStreamState {
  int device = 0;
  kernels::cuda::Stream stream = nullptr;
  kernels::cuda::Blas blas = nullptr;  // the stream's cuBLAS handle, made by the first linear op
  std::mutex mutex;  // guards stats and the making of blas
  MemoryStats stats;  // bytes_cached stays 0: cudaMallocAsync's pool does the caching
  CudaStreamState(int device_index, kernels::cuda::Stream s) : device(device_index), stream(s) {}
  ~CudaStreamState();
  CudaStreamState(const CudaStreamState&) = delete;
  CudaStreamState& operator=(const CudaStreamState&) = delete;
};

struct Storage {
  std::shared_ptr<void> data;
  std::size_t bytes = 0;
  Device device;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  DType dtype = DType::f32;
  std::weak_ptr<ContextState> context;
  uint64_t id = 0;
  bool requires_grad = false;
  bool is_leaf = true;
  Tensor grad;
};

// The conv weights packed for the direct kernels while a FrozenWeights scope is alive
// (engine/ops/frozen_weights.h), by weight tensor id, pass and shape.
struct PackedWeightCache {
  std::mutex mutex;
  std::map<std::vector<int64_t>, std::vector<float>> entries;
};

struct ContextState {
  Device device;
  uint64_t seed = 0;
  uint64_t random_offset = 0;
  bool grad_enabled = true;
  uint64_t next_tensor_id = 1;
  Tape tape;
  std::shared_ptr<CpuPool> cpu_pool = std::make_shared<CpuPool>();
  std::shared_ptr<CudaStreamState> cuda;  // made on first use of a CUDA device
  std::mutex mutex;  // guards ids and the random offset (loaders may allocate from threads)
  std::shared_ptr<PackedWeightCache> frozen_weights;  // while a FrozenWeights scope is alive
};

// Makes a tensor of `shape` on `device` with uninitialised storage.
Tensor make_tensor(const std::shared_ptr<ContextState>& context, const Shape& shape, DType dtype,
                   Device device);
// Throws unless this build has the CUDA backend.
void cuda_check_built(Device device);
// The Context's stream on `device` (made on first use; one CUDA device per Context). Makes the
// device current for this thread, so kernels launched next run there.
CudaStreamState& cuda_stream_state(ContextState& context, Device device);
// The stream of a CUDA tensor's Context, with its device made current.
kernels::cuda::Stream cuda_stream(const Tensor& t);
// The cuBLAS handle of a CUDA tensor's Context stream (made on first use), device made current.
kernels::cuda::Blas cuda_blas(const Tensor& t);

// A tensor sharing `storage` with a new shape (same element count) and a fresh id.
Tensor make_view(const Tensor& base, const Shape& shape);

}  // namespace med3d::detail
