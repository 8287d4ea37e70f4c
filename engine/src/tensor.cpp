#include "med3d/tensor.h"

#include <cstring>
#include <sstream>

#include "engine/src/internal.h"
#include "engine/src/op_util.h"
#include "med3d/kernels/cuda/elementwise.h"

namespace med3d {

void Tensor::check_defined(const char* what) const {
  MED3D_CHECK(impl_ != nullptr, "Tensor::", what, ": the tensor is undefined (default-constructed)");
}

const Shape& Tensor::shape() const {
  check_defined("shape");
  return impl_->shape;
}
DType Tensor::dtype() const {
  check_defined("dtype");
  return impl_->dtype;
}
Device Tensor::device() const {
  check_defined("device");
  return impl_->storage->device;
}
uint64_t Tensor::id() const {
  check_defined("id");
  return impl_->id;
}

std::string Tensor::str() const {
  if (!impl_) return "Tensor(undefined)";
  std::ostringstream out;
  out << "Tensor(" << dtype_name(dtype()) << ", " << device().str() << ", " << shape().str() << ")";
  return out.str();
}

Context Tensor::context() const {
  check_defined("context");
  auto state = impl_->context.lock();
  MED3D_CHECK(state != nullptr,
              "the Context that created this tensor was destroyed; keep the Context alive while "
              "its tensors are used in ops");
  return Context(std::move(state));
}

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool enabled) {
  check_defined("set_requires_grad");
  MED3D_CHECK(!enabled || is_floating(dtype()), "set_requires_grad: only f32/f64 tensors can ",
              "require grad, this one is ", dtype_name(dtype()));
  MED3D_CHECK(impl_->is_leaf, "set_requires_grad: only leaf tensors can change requires_grad; ",
              "use detach() to make a leaf from an op's output");
  impl_->requires_grad = enabled;
  return *this;
}

bool Tensor::is_leaf() const { return !impl_ || impl_->is_leaf; }

Tensor Tensor::grad() const {
  check_defined("grad");
  return impl_->grad;
}

void Tensor::set_grad(const Tensor& grad) {
  check_defined("set_grad");
  MED3D_CHECK(!grad.defined() || grad.shape() == shape(), "set_grad: gradient shape ",
              grad.shape().str(), " differs from the tensor's ", shape().str());
  impl_->grad = grad;
}

void Tensor::zero_grad() {
  check_defined("zero_grad");
  impl_->grad = Tensor();
}

void Tensor::set_data(const Tensor& source) {
  check_defined("set_data");
  MED3D_CHECK(source.defined() && source.shape() == shape(), "set_data: expected a tensor of shape ",
              shape().str(), ", got ", source.defined() ? source.shape().str() : std::string("an undefined tensor"));
  MED3D_CHECK(is_leaf(), "set_data: only a leaf tensor (a parameter or buffer) can be rebound; ", str(),
              " is the result of an op");
  MED3D_CHECK(!requires_grad() || is_floating(source.dtype()), "set_data: ", str(),
              " requires grad, so its new dtype must be floating, got ", dtype_name(source.dtype()));
  impl_->storage = source.impl_->storage;
  impl_->dtype = source.impl_->dtype;
  impl_->grad = Tensor();
}

Tensor Tensor::detach() const {
  check_defined("detach");
  Tensor view = detail::make_view(*this, shape());
  return view;
}

template <class T>
T* Tensor::data() {
  check_defined("data");
  MED3D_CHECK(dtype_of<T> == dtype(), "Tensor::data: asked for ", dtype_name(dtype_of<T>),
              " elements of a ", dtype_name(dtype()), " tensor");
  MED3D_CHECK(device().is_cpu(), "Tensor::data: the tensor is on ", device().str(),
              "; copy it with .to(Device::cpu()) first");
  return static_cast<T*>(impl_->storage->data.get());
}

template <class T>
const T* Tensor::data() const {
  return const_cast<Tensor*>(this)->data<T>();
}

void* Tensor::raw_data() {
  check_defined("raw_data");
  return impl_->storage->data.get();
}
const void* Tensor::raw_data() const {
  check_defined("raw_data");
  return impl_->storage->data.get();
}

namespace {
int64_t flat_index(const Shape& shape, std::initializer_list<int64_t> index) {
  MED3D_CHECK(static_cast<int>(index.size()) == shape.rank(), "Tensor::at: expected ", shape.rank(),
              " indices for shape ", shape.str(), ", got ", index.size());
  int64_t offset = 0;
  int axis = 0;
  for (int64_t i : index) {
    MED3D_CHECK(i >= 0 && i < shape[axis], "Tensor::at: index ", i, " out of range [0, ",
                shape[axis], ") on axis ", axis, " of ", shape.str());
    offset = offset * shape[axis] + i;
    ++axis;
  }
  return offset;
}
}  // namespace

template <class T>
T Tensor::at(std::initializer_list<int64_t> index) const {
  check_defined("at");
  MED3D_CHECK(device().is_cpu(), "Tensor::at: the tensor is on ", device().str());
  const int64_t offset = flat_index(shape(), index);
  T value{};
  detail::convert_elements(static_cast<const char*>(raw_data()) + offset * dtype_size(dtype()),
                           dtype(), &value, dtype_of<T>, 1);
  return value;
}

template <class T>
void Tensor::set(std::initializer_list<int64_t> index, T value) {
  check_defined("set");
  MED3D_CHECK(device().is_cpu(), "Tensor::set: the tensor is on ", device().str());
  const int64_t offset = flat_index(shape(), index);
  detail::convert_elements(&value, dtype_of<T>,
                           static_cast<char*>(raw_data()) + offset * dtype_size(dtype()), dtype(), 1);
}

template <class T>
T Tensor::item() const {
  check_defined("item");
  MED3D_CHECK(numel() == 1, "Tensor::item: expected one element, the tensor has ", numel(),
              " (shape ", shape().str(), ")");
  if (device().is_cuda()) return to(Device::cpu()).item<T>();  // waits for the stream
  T value{};
  detail::convert_elements(raw_data(), dtype(), &value, dtype_of<T>, 1);
  return value;
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  check_defined("to_vector");
  if (device().is_cuda()) return to(Device::cpu()).to_vector<T>();
  std::vector<T> values(static_cast<std::size_t>(numel()));
  detail::convert_elements(raw_data(), dtype(), values.data(), dtype_of<T>, numel());
  return values;
}

#define MED3D_INSTANTIATE_ACCESS(T)                                        \
  template T* Tensor::data<T>();                                           \
  template const T* Tensor::data<T>() const;                               \
  template T Tensor::at<T>(std::initializer_list<int64_t>) const;          \
  template void Tensor::set<T>(std::initializer_list<int64_t>, T);         \
  template T Tensor::item<T>() const;                                      \
  template std::vector<T> Tensor::to_vector<T>() const;
MED3D_INSTANTIATE_ACCESS(float)
MED3D_INSTANTIATE_ACCESS(double)
MED3D_INSTANTIATE_ACCESS(int32_t)
MED3D_INSTANTIATE_ACCESS(int64_t)
MED3D_INSTANTIATE_ACCESS(uint8_t)
#undef MED3D_INSTANTIATE_ACCESS

Tensor Tensor::reshape(const Shape& new_shape) const {
  check_defined("reshape");
  Tensor view = detail::make_view(*this, new_shape);
  const Shape original = shape();
  record("reshape", {*this}, {view}, {}, [original](const BackwardArgs& args) {
    return std::vector<Tensor>{args.dy[0].reshape(original)};
  });
  return view;
}

Tensor Tensor::clone() const {
  check_defined("clone");
  Tensor copy = detail::empty_like(*this);
  if (device().is_cpu()) {
    std::memcpy(copy.raw_data(), raw_data(), nbytes());
  } else if constexpr (detail::kWithCuda) {
    kernels::cuda::copy_on_device(copy.raw_data(), raw_data(), nbytes(), detail::cuda_stream(*this));
  }
  record("clone", {*this}, {copy}, {}, [](const BackwardArgs& args) {
    return std::vector<Tensor>{args.dy[0]};
  });
  return copy;
}

namespace {

// Copies between the host and a device, or between devices through the host.
void copy_across(const Tensor& src, Tensor& dst) {
  if constexpr (detail::kWithCuda) {
    if (src.device().is_cpu()) {
      kernels::cuda::copy_to_device(dst.raw_data(), src.raw_data(), src.nbytes(),
                                    detail::cuda_stream(dst));
    } else if (dst.device().is_cpu()) {
      kernels::cuda::copy_to_host(dst.raw_data(), src.raw_data(), src.nbytes(),
                                  detail::cuda_stream(src));
    } else {
      Tensor host = src.detach().to(Device::cpu());
      copy_across(host, dst);
    }
  }
}

}  // namespace

Tensor Tensor::to(Device target) const {
  check_defined("to");
  if (target == device()) return *this;
  Tensor moved = detail::make_tensor(context().state(), shape(), dtype(), target);
  copy_across(*this, moved);
  const Device source = device();
  record("to_device", {*this}, {moved}, {}, [source](const BackwardArgs& args) {
    return std::vector<Tensor>{args.dy[0].to(source)};
  });
  return moved;
}

Tensor Tensor::to(DType target) const {
  check_defined("to");
  if (target == dtype()) return *this;
  const bool floats = is_floating(dtype()) && is_floating(target);
  // Integer conversions on CUDA are rare (labels): they go through the host.
  if (device().is_cuda() && !floats) return detach().to(Device::cpu()).to(target).to(device());
  Tensor converted = detail::empty_like(*this, shape(), target);
  if (device().is_cpu()) {
    detail::convert_elements(raw_data(), dtype(), converted.raw_data(), target, numel());
  } else if constexpr (detail::kWithCuda) {
    if (dtype() == DType::f32)
      kernels::cuda::convert(detail::cuda_stream(*this), detail::device_data<float>(*this),
                             detail::device_data<double>(converted), numel());
    else
      kernels::cuda::convert(detail::cuda_stream(*this), detail::device_data<double>(*this),
                             detail::device_data<float>(converted), numel());
  }
  if (floats) {
    const DType source = dtype();
    record("to_dtype", {*this}, {converted}, {}, [source](const BackwardArgs& args) {
      return std::vector<Tensor>{args.dy[0].to(source)};
    });
  }
  return converted;
}

void Tensor::copy_from(const Tensor& src) {
  check_defined("copy_from");
  MED3D_CHECK(src.defined() && src.shape() == shape(), "copy_from: expected shape ", shape().str(),
              ", got ", src.defined() ? src.shape().str() : std::string("an undefined tensor"));
  if (device().is_cpu() && src.device().is_cpu()) {
    detail::convert_elements(src.raw_data(), src.dtype(), raw_data(), dtype(), numel());
    return;
  }
  NoGrad no_grad(context());
  const Tensor converted = src.detach().to(dtype());
  if (converted.device() == device() && device().is_cuda()) {
    if constexpr (detail::kWithCuda)
      kernels::cuda::copy_on_device(raw_data(), converted.raw_data(), nbytes(),
                                    detail::cuda_stream(*this));
  } else {
    copy_across(converted, *this);
  }
}

void Tensor::fill(double value) {
  check_defined("fill");
  if (device().is_cuda()) {
    MED3D_CHECK(dtype() == DType::f32 || value == 0.0, "Tensor::fill: CUDA tensors of dtype ",
                dtype_name(dtype()), " can only be zero-filled; fill an f32 tensor or fill on the "
                "CPU and copy");
    if (value == 0.0) {
      detail::fill_zero(*this);
    } else if constexpr (detail::kWithCuda) {
      kernels::cuda::fill(detail::cuda_stream(*this), static_cast<float>(value),
                          detail::device_data<float>(*this), numel());
    }
    return;
  }
  detail::dispatch_any(dtype(), [&]<class T>() {
    T* p = data<T>();
    const T v = static_cast<T>(value);
    const int64_t n = numel();
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  });
}

}  // namespace med3d
