#include <bit>
#include <cstdlib>

#include "engine/src/internal.h"

namespace med3d::detail {
namespace {

constexpr std::size_t kAlignment = 64;

std::size_t size_class(std::size_t bytes) {
  if (bytes <= kAlignment) return kAlignment;
  const std::size_t top = std::bit_floor(bytes);
  const std::size_t step = top >= 8 * kAlignment ? top / 8 : kAlignment;
  return (bytes + step - 1) / step * step;
}

}  // namespace

CpuPool::~CpuPool() { release_cached(); }

std::shared_ptr<void> CpuPool::allocate(std::size_t bytes) {
  const std::size_t size = size_class(bytes);
  void* block = nullptr;
  {
    std::lock_guard lock(mutex_);
    auto it = free_blocks_.find(size);
    if (it != free_blocks_.end()) {
      block = it->second;
      free_blocks_.erase(it);
      stats_.bytes_cached -= size;
    }
  }
  if (!block) {
    block = std::aligned_alloc(kAlignment, size);
    MED3D_CHECK(block != nullptr, "CPU allocation of ", size,
                " bytes failed: the machine is out of memory; reduce the batch or patch size");
  }
  {
    std::lock_guard lock(mutex_);
    stats_.bytes_in_use += size;
    if (stats_.bytes_in_use > stats_.peak_bytes_in_use) stats_.peak_bytes_in_use = stats_.bytes_in_use;
  }
  // The deleter keeps the pool alive, so tensors may outlive their Context.
  std::shared_ptr<CpuPool> self = shared_from_this();
  return std::shared_ptr<void>(block, [self, size](void* p) { self->give_back(p, size); });
}

void CpuPool::give_back(void* block, std::size_t size) {
  std::lock_guard lock(mutex_);
  stats_.bytes_in_use -= size;
  stats_.bytes_cached += size;
  free_blocks_.emplace(size, block);
}

MemoryStats CpuPool::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void CpuPool::release_cached() {
  std::lock_guard lock(mutex_);
  for (auto& [size, block] : free_blocks_) std::free(block);
  free_blocks_.clear();
  stats_.bytes_cached = 0;
}

}  // namespace med3d::detail
