#include "med3d/context.h"

#include <cstring>

#include "engine/src/internal.h"
#include "engine/src/op_util.h"
#include "med3d/kernels/philox.h"

namespace med3d {
namespace detail {

Tensor make_tensor(const std::shared_ptr<ContextState>& context, const Shape& shape, DType dtype,
                   Device device) {
  MED3D_CHECK(context != nullptr, "make_tensor: no Context");
  MED3D_CHECK(device.is_cpu(), "cannot allocate on ", device.str(),
              ": this build of med3d has no CUDA backend; use Device::cpu()");
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->context = context;
  auto storage = std::make_shared<Storage>();
  storage->bytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
  storage->device = device;
  storage->data = context->cpu_pool->allocate(storage->bytes);
  impl->storage = std::move(storage);
  {
    std::lock_guard lock(context->mutex);
    impl->id = context->next_tensor_id++;
  }
  return Tensor(std::move(impl));
}

Tensor make_view(const Tensor& base, const Shape& shape) {
  MED3D_CHECK(shape.numel() == base.numel(), "reshape: cannot view ", base.shape().str(), " (",
              base.numel(), " elements) as ", shape.str(), " (", shape.numel(), " elements)");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl()->storage;
  impl->shape = shape;
  impl->dtype = base.dtype();
  impl->context = base.impl()->context;
  auto context = impl->context.lock();
  MED3D_CHECK(context != nullptr, "reshape: the tensor's Context was destroyed");
  {
    std::lock_guard lock(context->mutex);
    impl->id = context->next_tensor_id++;
  }
  return Tensor(std::move(impl));
}

}  // namespace detail

Context::Context(Device device, uint64_t seed) : state_(std::make_shared<detail::ContextState>()) {
  MED3D_CHECK(device.is_cpu(), "Context: this build of med3d has no CUDA backend, asked for ",
              device.str(), "; use Device::cpu()");
  state_->device = device;
  state_->seed = seed;
}

Device Context::device() const { return state_->device; }

void Context::manual_seed(uint64_t seed) {
  std::lock_guard lock(state_->mutex);
  state_->seed = seed;
  state_->random_offset = 0;
}

uint64_t Context::seed() const { return state_->seed; }

uint64_t Context::random_offset() const {
  std::lock_guard lock(state_->mutex);
  return state_->random_offset;
}

void Context::set_random_offset(uint64_t offset) {
  std::lock_guard lock(state_->mutex);
  state_->random_offset = offset;
}

uint64_t Context::take_random_offset(uint64_t count) {
  std::lock_guard lock(state_->mutex);
  const uint64_t offset = state_->random_offset;
  state_->random_offset += count;
  return offset;
}

bool Context::grad_enabled() const { return state_->grad_enabled; }
void Context::set_grad_enabled(bool enabled) { state_->grad_enabled = enabled; }
Tape& Context::tape() { return state_->tape; }

MemoryStats Context::memory_stats() const { return state_->cpu_pool->stats(); }
void Context::release_cached_memory() { state_->cpu_pool->release_cached(); }

Tensor Context::empty(const Shape& shape, DType dtype) const { return empty(shape, dtype, device()); }

Tensor Context::empty(const Shape& shape, DType dtype, Device device) const {
  return detail::make_tensor(state_, shape, dtype, device);
}

Tensor Context::zeros(const Shape& shape, DType dtype) const {
  Tensor t = empty(shape, dtype);
  std::memset(t.raw_data(), 0, t.nbytes());
  return t;
}

Tensor Context::ones(const Shape& shape, DType dtype) const { return full(shape, 1.0, dtype); }

Tensor Context::full(const Shape& shape, double value, DType dtype) const {
  Tensor t = empty(shape, dtype);
  t.fill(value);
  return t;
}

Tensor Context::arange(int64_t count, DType dtype) const {
  MED3D_CHECK(count >= 0, "arange: count must be >= 0, got ", count);
  Tensor t = empty({count}, dtype);
  detail::dispatch_any(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (int64_t i = 0; i < count; ++i) p[i] = static_cast<T>(i);
  });
  return t;
}

Tensor Context::rand(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  const uint64_t offset = take_random_offset(static_cast<uint64_t>(t.numel()));
  const uint64_t seed = state_->seed;
  detail::dispatch_floating(dtype, "rand", [&]<class T>() {
    T* p = t.data<T>();
    const int64_t n = t.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i)
      p[i] = static_cast<T>(kernels::philox_uniform(seed, offset, static_cast<uint64_t>(i)));
  });
  return t;
}

Tensor Context::randn(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  const uint64_t offset = take_random_offset(static_cast<uint64_t>(t.numel()));
  const uint64_t seed = state_->seed;
  detail::dispatch_floating(dtype, "randn", [&]<class T>() {
    T* p = t.data<T>();
    const int64_t n = t.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i)
      p[i] = static_cast<T>(kernels::philox_normal(seed, offset, static_cast<uint64_t>(i)));
  });
  return t;
}

template <class T>
Tensor Context::from_vector(const Shape& shape, const std::vector<T>& values) const {
  MED3D_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "from_vector: shape ",
              shape.str(), " holds ", shape.numel(), " elements, got ", values.size(), " values");
  Tensor t = empty(shape, dtype_of<T>);
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  return t;
}

template Tensor Context::from_vector(const Shape&, const std::vector<float>&) const;
template Tensor Context::from_vector(const Shape&, const std::vector<double>&) const;
template Tensor Context::from_vector(const Shape&, const std::vector<int32_t>&) const;
template Tensor Context::from_vector(const Shape&, const std::vector<int64_t>&) const;
template Tensor Context::from_vector(const Shape&, const std::vector<uint8_t>&) const;

NoGrad::NoGrad(Context context) : context_(std::move(context)), previous_(context_.grad_enabled()) {
  context_.set_grad_enabled(false);
}

NoGrad::~NoGrad() { context_.set_grad_enabled(previous_); }

}  // namespace med3d
