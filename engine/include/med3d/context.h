// Context: owns what a computation needs besides tensors: the default device, the memory
// pool, the seeded counter-based random stream, the grad mode and the active tape.
// A Context is a handle: copies share one state. Tensors made by it keep a weak link to it.
// Nothing in med3d is global; two Contexts never see each other's tensors or tapes.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "med3d/device.h"
#include "med3d/dtype.h"
#include "med3d/shape.h"
#include "med3d/tensor.h"

namespace med3d {

class Tape;

struct MemoryStats {
  std::size_t bytes_in_use = 0;   // held by live tensors
  std::size_t peak_bytes_in_use = 0;
  std::size_t bytes_cached = 0;   // freed blocks kept for reuse
};

class Context {
 public:
  explicit Context(Device device = Device::cpu(), uint64_t seed = 0);

  Device device() const;

  // Random numbers: Philox4x32-10 keyed by the seed; each draw advances a counter, so a
  // run is reproducible from the seed alone and CPU and GPU can produce identical streams.
  void manual_seed(uint64_t seed);
  uint64_t seed() const;
  // Reserves `count` values of the stream and returns the counter of the first one.
  uint64_t take_random_offset(uint64_t count);
  // The counter of the next draw; saved in checkpoints so a resumed run continues the stream.
  uint64_t random_offset() const;
  void set_random_offset(uint64_t offset);

  bool grad_enabled() const;
  void set_grad_enabled(bool enabled);
  Tape& tape();

  // Waits until the work queued on this Context's CUDA stream has finished (no-op on the CPU,
  // where ops finish before they return). For timing; copies to the host wait by themselves.
  void synchronize() const;
  // Live tensor bytes on the Context's device (CUDA: bytes from the stream-ordered pool).
  MemoryStats memory_stats() const;
  // Returns freed blocks the pools keep for reuse: the CPU pool's, and the CUDA device pool's
  // (after the stream's queued work).
  void release_cached_memory();

  // Factories. Tensors live on the Context's device unless one is given.
  Tensor empty(const Shape& shape, DType dtype = DType::f32) const;
  Tensor zeros(const Shape& shape, DType dtype = DType::f32) const;
  Tensor ones(const Shape& shape, DType dtype = DType::f32) const;
  Tensor full(const Shape& shape, double value, DType dtype = DType::f32) const;
  Tensor arange(int64_t count, DType dtype = DType::f32) const;  // 0, 1, ..., count-1
  Tensor rand(const Shape& shape, DType dtype = DType::f32);   // uniform [0, 1)
  Tensor randn(const Shape& shape, DType dtype = DType::f32);  // standard normal
  template <class T>
  Tensor from_vector(const Shape& shape, const std::vector<T>& values) const;
  Tensor empty(const Shape& shape, DType dtype, Device device) const;

  // Internal.
  explicit Context(std::shared_ptr<detail::ContextState> state) : state_(std::move(state)) {}
  const std::shared_ptr<detail::ContextState>& state() const { return state_; }

 private:
  std::shared_ptr<detail::ContextState> state_;
};

// Disables tape recording for its lifetime (inference, optimiser updates).
class NoGrad {
 public:
  explicit NoGrad(Context context);
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  Context context_;
  bool previous_;
};

// Promises that no weight changes for its lifetime, as in inference over many windows, where the
// same weights run forward again and again: the CPU conv ops then pack each f32 weight once where
// their kernel reads it packed (kernels/cpu/conv3d.h, conv3d_packed_weights_elements) and reuse that copy,
// where they otherwise pack it at every call. The copies are freed when the outermost scope ends.
// A weight changed inside the scope keeps its old packed copy: change weights outside it.
class FrozenWeights {
 public:
  explicit FrozenWeights(Context context);
  ~FrozenWeights();
  FrozenWeights(const FrozenWeights&) = delete;
  FrozenWeights& operator=(const FrozenWeights&) = delete;

 private:
  Context context_;
  bool outermost_;
};

}  // namespace med3d
