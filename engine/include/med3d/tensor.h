// Tensor: a cheap, shared handle to a contiguous, row-major block of elements with a shape,
// a dtype and a device. Copies of a handle alias the same storage; `clone()` copies data.
// The only views are reshapes, which share storage. Tensors are created by a Context
// (see context.h) and keep a weak link to it: ops on a tensor whose Context was destroyed
// throw med3d::Error. Gradients: `requires_grad` leaves receive `grad` (accumulated with +=)
// when Tape backward runs; ops record themselves on the Context's tape.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "med3d/device.h"
#include "med3d/dtype.h"
#include "med3d/error.h"
#include "med3d/shape.h"

namespace med3d {

class Context;
namespace detail {
struct ContextState;
struct TensorImpl;
}  // namespace detail

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor (e.g. an absent bias)

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int rank() const { return shape().rank(); }
  int64_t dim(int axis) const { return shape().dim(axis); }
  int64_t numel() const { return shape().numel(); }
  DType dtype() const;
  Device device() const;
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype()); }
  // Identity of this handle's tensor on the tape (two handles of one tensor share it).
  uint64_t id() const;
  std::string str() const;  // "Tensor(f32, cpu, [2, 3])"

  // The Context that created this tensor; throws if it no longer exists.
  Context context() const;

  // Autograd.
  bool requires_grad() const;
  // Marks a leaf as a parameter to differentiate; only floating tensors can require grad.
  Tensor& set_requires_grad(bool enabled);
  bool is_leaf() const;
  Tensor grad() const;  // undefined until a backward pass reaches this leaf
  void set_grad(const Tensor& grad);
  void zero_grad();  // drops the gradient so the next backward starts from zero
  Tensor detach() const;  // same storage, no gradient history
  // Makes this leaf, through every handle that shares it, hold `source`'s values, dtype and
  // device (PyTorch's `param.data = source`): how a Module converts its parameters in place.
  // Same shape required; requires_grad is kept, the gradient is dropped. Views taken earlier
  // by reshape keep the old storage.
  void set_data(const Tensor& source);

  // Element access (CPU tensors). Throws when the dtype or device does not match.
  template <class T> T* data();
  template <class T> const T* data() const;
  void* raw_data();
  const void* raw_data() const;
  template <class T> T item() const;  // the single element of a one-element tensor
  template <class T> T at(std::initializer_list<int64_t> index) const;
  template <class T> void set(std::initializer_list<int64_t> index, T value);
  template <class T> std::vector<T> to_vector() const;

  // Copies and conversions (differentiable where both sides are floating).
  Tensor reshape(const Shape& shape) const;  // a view sharing storage (same element count)
  Tensor clone() const;
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  // Copies `src`'s values into this tensor in place (same shape; dtype converted). Not recorded.
  void copy_from(const Tensor& src);
  // Fills in place; not recorded (for initialisers and optimisers).
  void fill(double value);

  // Internal: the implementation handle, for ops and the tape.
  const std::shared_ptr<detail::TensorImpl>& impl() const { return impl_; }
  explicit Tensor(std::shared_ptr<detail::TensorImpl> impl) : impl_(std::move(impl)) {}

 private:
  void check_defined(const char* what) const;
  std::shared_ptr<detail::TensorImpl> impl_;
};

}  // namespace med3d
