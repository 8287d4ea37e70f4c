#include "med3d/context.h"

#include <cstring>

#include "engine/src/internal.h"
#include "engine/src/op_util.h"
#include "med3d/kernels/philox.h"

namespace med3d {
namespace detail {

CudaStreamState::~CudaStreamState() {
  if constexpr (kWithCuda) {
    kernels::cuda::destroy_blas(device, blas);  // before the stream it works on
    kernels::cuda::destroy_stream(device, stream);
  }
}

void cuda_check_built(Device device) {
  MED3D_CHECK(kWithCuda, "cannot use ", device.str(),
              ": this build of med3d has no CUDA backend (configure with -DMED3D_CUDA=ON on a "
              "machine with the CUDA toolkit); use Device::cpu()");
}

namespace {

// Device memory from the stream-ordered pool; the deleter queues the free on the same stream.
std::shared_ptr<void> cuda_allocate(ContextState& context, Device device, std::size_t bytes) {
  cuda_stream_state(context, device);
  std::shared_ptr<CudaStreamState> cuda = context.cuda;
  void* pointer = nullptr;
  if constexpr (kWithCuda) pointer = kernels::cuda::allocate(bytes, cuda->device, cuda->stream);
  {
    std::lock_guard lock(cuda->mutex);
    cuda->stats.bytes_in_use += bytes;
    cuda->stats.peak_bytes_in_use = std::max(cuda->stats.peak_bytes_in_use, cuda->stats.bytes_in_use);
  }
  return std::shared_ptr<void>(pointer, [cuda, bytes](void* p) {
    if constexpr (kWithCuda) kernels::cuda::release(p, cuda->device, cuda->stream);
    std::lock_guard lock(cuda->mutex);
    cuda->stats.bytes_in_use -= bytes;
  });
}

}  // namespace

CudaStreamState& cuda_stream_state(ContextState& context, Device device) {
  cuda_check_built(device);
  std::lock_guard lock(context.mutex);
  if constexpr (kWithCuda) {
    if (!context.cuda) {
      const int count = kernels::cuda::device_count();
      MED3D_CHECK(device.index >= 0 && device.index < count, "cannot use ", device.str(), ": ",
                  count, " CUDA device(s) visible; pick an index in [0, ", count,
                  ") or use Device::cpu()");
      context.cuda = std::make_shared<CudaStreamState>(device.index,
                                                       kernels::cuda::create_stream(device.index));
    }
    MED3D_CHECK(context.cuda->device == device.index, "this Context works on cuda:",
                context.cuda->device, ", asked for ", device.str(),
                "; use one Context per CUDA device");
    kernels::cuda::set_device(device.index);
  }
  return *context.cuda;
}

namespace {

// The stream state of a CUDA tensor's Context (its storage holds the state: alive while t is).
CudaStreamState& tensor_stream_state(const Tensor& t, const char* caller) {
  MED3D_CHECK(t.device().is_cuda(), caller, ": ", t.str(), " is not a CUDA tensor");
  auto state = t.impl()->context.lock();
  MED3D_CHECK(state != nullptr, "the Context that created ", t.str(), " was destroyed");
  return cuda_stream_state(*state, t.device());
}

}  // namespace

kernels::cuda::Stream cuda_stream(const Tensor& t) {
  return tensor_stream_state(t, "cuda_stream").stream;
}

kernels::cuda::Blas cuda_blas(const Tensor& t) {
  CudaStreamState& cuda = tensor_stream_state(t, "cuda_blas");
  if constexpr (kWithCuda) {
    std::lock_guard lock(cuda.mutex);
    if (cuda.blas == nullptr) cuda.blas = kernels::cuda::create_blas(cuda.device, cuda.stream);
  }
  return cuda.blas;
}

Tensor make_tensor(const std::shared_ptr<ContextState>& context, const Shape& shape, DType dtype,
                   Device device) {
  MED3D_CHECK(context != nullptr, "make_tensor: no Context");
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->context = context;
  auto storage = std::make_shared<Storage>();
  storage->bytes = static_cast<std::size_t>(shape.numel()) * dtype_size(dtype);
  storage->device = device;
  storage->data = device.is_cpu() ? context->cpu_pool->allocate(storage->bytes)
                                  : cuda_allocate(*context, device, storage->bytes);
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

CudaBackend cuda_backend() noexcept {
#if MED3D_CUDA_EMULATED
  return CudaBackend::emulated;
#else
  return detail::kWithCuda ? CudaBackend::native : CudaBackend::none;
#endif
}

int cuda_device_count() noexcept {
  if constexpr (detail::kWithCuda) return kernels::cuda::device_count();
  return 0;
}

std::string cuda_device_description(int index) {
  detail::cuda_check_built(Device::cuda(index));
  MED3D_CHECK(index >= 0 && index < cuda_device_count(), "cuda_device_description: no ",
              Device::cuda(index).str(), " (", cuda_device_count(), " CUDA device(s) visible)");
  std::string description;
  if constexpr (detail::kWithCuda) description = kernels::cuda::device_description(index);
  return "cuda:" + std::to_string(index) + ": " + description;
}

Context::Context(Device device, uint64_t seed) : state_(std::make_shared<detail::ContextState>()) {
  state_->device = device;
  state_->seed = seed;
  if (device.is_cuda()) detail::cuda_stream_state(*state_, device);  // fail here, not later
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

void Context::synchronize() const {
  if (!state_->cuda) return;
  if constexpr (detail::kWithCuda)
    kernels::cuda::synchronize(detail::cuda_stream_state(*state_, Device::cuda(state_->cuda->device)).stream);
}

MemoryStats Context::memory_stats() const {
  if (state_->device.is_cpu()) return state_->cpu_pool->stats();
  detail::CudaStreamState& cuda = detail::cuda_stream_state(*state_, state_->device);
  std::lock_guard lock(cuda.mutex);
  return cuda.stats;
}
void Context::release_cached_memory() {
  state_->cpu_pool->release_cached();
  if constexpr (detail::kWithCuda)
    if (state_->cuda) kernels::cuda::trim_pool(state_->cuda->device, state_->cuda->stream);
}

Tensor Context::empty(const Shape& shape, DType dtype) const { return empty(shape, dtype, device()); }

Tensor Context::empty(const Shape& shape, DType dtype, Device device) const {
  return detail::make_tensor(state_, shape, dtype, device);
}

Tensor Context::zeros(const Shape& shape, DType dtype) const {
  Tensor t = empty(shape, dtype);
  detail::fill_zero(t);
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
  Tensor t = empty({count}, dtype, Device::cpu());
  detail::dispatch_any(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (int64_t i = 0; i < count; ++i) p[i] = static_cast<T>(i);
  });
  return t.to(device());
}

Tensor Context::rand(const Shape& shape, DType dtype) {
  // Philox is counter-based: drawing on the host and copying gives CUDA tensors the values a
  // CPU Context draws.
  Tensor t = empty(shape, dtype, Device::cpu());
  const uint64_t offset = take_random_offset(static_cast<uint64_t>(t.numel()));
  const uint64_t seed = state_->seed;
  detail::dispatch_floating(dtype, "rand", [&]<class T>() {
    T* p = t.data<T>();
    const int64_t n = t.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i)
      p[i] = static_cast<T>(kernels::philox_uniform(seed, offset, static_cast<uint64_t>(i)));
  });
  return t.to(device());
}

Tensor Context::randn(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype, Device::cpu());
  const uint64_t offset = take_random_offset(static_cast<uint64_t>(t.numel()));
  const uint64_t seed = state_->seed;
  detail::dispatch_floating(dtype, "randn", [&]<class T>() {
    T* p = t.data<T>();
    const int64_t n = t.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i)
      p[i] = static_cast<T>(kernels::philox_normal(seed, offset, static_cast<uint64_t>(i)));
  });
  return t.to(device());
}

template <class T>
Tensor Context::from_vector(const Shape& shape, const std::vector<T>& values) const {
  MED3D_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "from_vector: shape ",
              shape.str(), " holds ", shape.numel(), " elements, got ", values.size(), " values");
  Tensor t = empty(shape, dtype_of<T>, Device::cpu());
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  return t.to(device());
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

FrozenWeights::FrozenWeights(Context context)
    : context_(std::move(context)), outermost_(context_.state()->frozen_weights == nullptr) {
  if (outermost_) context_.state()->frozen_weights = std::make_shared<detail::PackedWeightCache>();
}

FrozenWeights::~FrozenWeights() {
  if (outermost_) context_.state()->frozen_weights.reset();
}

}  // namespace med3d
