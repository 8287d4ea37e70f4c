// Engine internals shared by engine/src and engine/ops: the tensor and context state and
// the reusing CPU memory pool. Not installed.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>

#include "med3d/context.h"
#include "med3d/tape.h"
#include "med3d/tensor.h"

namespace med3d::detail {

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

struct ContextState {
  Device device;
  uint64_t seed = 0;
  uint64_t random_offset = 0;
  bool grad_enabled = true;
  uint64_t next_tensor_id = 1;
  Tape tape;
  std::shared_ptr<CpuPool> cpu_pool = std::make_shared<CpuPool>();
  std::mutex mutex;  // guards ids and the random offset (loaders may allocate from threads)
};

// Makes a tensor of `shape` on `device` with uninitialised storage.
Tensor make_tensor(const std::shared_ptr<ContextState>& context, const Shape& shape, DType dtype,
                   Device device);
// A tensor sharing `storage` with a new shape (same element count) and a fresh id.
Tensor make_view(const Tensor& base, const Shape& shape);

}  // namespace med3d::detail
