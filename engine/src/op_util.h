// Helpers shared by op implementations: dtype dispatch, argument checks, and the element-type
// conversion used by Tensor::to(DType) and the serializers. Not installed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/src/internal.h"
#include "med3d/context.h"
#include "med3d/tensor.h"

namespace med3d::detail {

// Calls `fn.template operator()<T>()` with T = float or double for a floating dtype.
template <class Fn>
decltype(auto) dispatch_floating(DType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    default:
      throw_error(op, ": expected a floating tensor (f32 or f64), got ", dtype_name(dtype),
                  "; convert with .to(DType::f32)");
  }
}

// Calls `fn.template operator()<T>()` with T the C++ type of any dtype.
template <class Fn>
decltype(auto) dispatch_any(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    case DType::i32: return fn.template operator()<int32_t>();
    case DType::i64: return fn.template operator()<int64_t>();
    case DType::u8: return fn.template operator()<uint8_t>();
  }
  throw_error("unknown dtype ", static_cast<int>(dtype));
}

// Throws unless `t` is defined, on the CPU and of a floating dtype (ops without a CUDA kernel).
void check_cpu_floating(const char* op, const char* arg, const Tensor& t);
// Throws unless `t` is defined and floating: f32 or f64 on the CPU, f32 on CUDA (the CUDA
// kernels are f32).
void check_floating(const char* op, const char* arg, const Tensor& t);

// The element pointer of a CUDA tensor (Tensor::data refuses device memory on purpose).
template <class T>
T* device_data(const Tensor& t) {
  MED3D_CHECK(t.device().is_cuda() && t.dtype() == dtype_of<T>, "device_data: expected a ",
              dtype_name(dtype_of<T>), " CUDA tensor, got ", t.str());
  return static_cast<T*>(const_cast<void*>(t.raw_data()));
}

// Zeroes every element (either device).
void fill_zero(Tensor& t);
// Throws unless both tensors share a Context, device and dtype.
void check_compatible(const char* op, const Tensor& a, const char* a_name, const Tensor& b,
                      const char* b_name);
// Throws unless `t` has rank `rank`.
void check_rank(const char* op, const char* arg, const Tensor& t, int rank);
// Throws unless the shapes are equal.
void check_same_shape(const char* op, const Tensor& a, const Tensor& b);

// A new uninitialised tensor on the same Context and device as `like`.
Tensor empty_like(const Tensor& like, const Shape& shape, DType dtype);
inline Tensor empty_like(const Tensor& like) { return empty_like(like, like.shape(), like.dtype()); }
Tensor zeros_like(const Tensor& like, const Shape& shape, DType dtype);
inline Tensor zeros_like(const Tensor& like) { return zeros_like(like, like.shape(), like.dtype()); }

// dst += src, elementwise (same shape and dtype); used by the tape to sum gradients.
void accumulate_into(Tensor& dst, const Tensor& src);

// dx = dy where y > 0, else 0: the ReLU gradient from its output y (either device), for ops
// that fuse a ReLU (batch_norm_relu3d). Not recorded on the tape.
Tensor relu_backward(const Tensor& y, const Tensor& dy);

// Converts `count` elements between dtypes.
void convert_elements(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t count);

}  // namespace med3d::detail
