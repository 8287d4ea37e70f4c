#include "engine/src/op_util.h"

#include <cstring>

#include "med3d/kernels/cuda/elementwise.h"

namespace med3d::detail {

void check_cpu_floating(const char* op, const char* arg, const Tensor& t) {
  MED3D_CHECK(t.defined(), op, ": ", arg, " is an undefined tensor; pass a tensor made by a Context");
  MED3D_CHECK(t.device().is_cpu(), op, ": ", arg, " is on ", t.device().str(), " but ", op,
              " has no CUDA kernel yet; move it with .to(Device::cpu())");
  MED3D_CHECK(is_floating(t.dtype()), op, ": ", arg, " must be f32 or f64, got ",
              dtype_name(t.dtype()), "; convert with .to(DType::f32)");
}

void check_floating(const char* op, const char* arg, const Tensor& t) {
  MED3D_CHECK(t.defined(), op, ": ", arg, " is an undefined tensor; pass a tensor made by a Context");
  if (t.device().is_cpu()) {
    check_cpu_floating(op, arg, t);
    return;
  }
  MED3D_CHECK(t.dtype() == DType::f32, op, ": ", arg, " is ", dtype_name(t.dtype()), " on ",
              t.device().str(), " but the CUDA kernels take f32; convert with .to(DType::f32)");
}

void fill_zero(Tensor& t) {
  if (t.device().is_cpu()) {
    std::memset(t.raw_data(), 0, t.nbytes());
    return;
  }
  if constexpr (kWithCuda) kernels::cuda::fill_zero(t.raw_data(), t.nbytes(), cuda_stream(t));
}

void check_compatible(const char* op, const Tensor& a, const char* a_name, const Tensor& b,
                      const char* b_name) {
  MED3D_CHECK(a.impl()->context.lock() == b.impl()->context.lock(), op, ": ", a_name, " and ",
              b_name, " come from different Contexts; create all tensors of a graph with one Context");
  MED3D_CHECK(a.device() == b.device(), op, ": ", a_name, " is on ", a.device().str(), " but ",
              b_name, " is on ", b.device().str(), "; move both to one device");
  MED3D_CHECK(a.dtype() == b.dtype(), op, ": ", a_name, " is ", dtype_name(a.dtype()), " but ",
              b_name, " is ", dtype_name(b.dtype()), "; convert one with .to(DType)");
}

void check_rank(const char* op, const char* arg, const Tensor& t, int rank) {
  MED3D_CHECK(t.rank() == rank, op, ": ", arg, " must have ", rank, " dimensions, got ",
              t.shape().str());
}

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  MED3D_CHECK(a.shape() == b.shape(), op, ": shapes must match, got ", a.shape().str(), " and ",
              b.shape().str());
}

Tensor empty_like(const Tensor& like, const Shape& shape, DType dtype) {
  return make_tensor(like.context().state(), shape, dtype, like.device());
}

Tensor zeros_like(const Tensor& like, const Shape& shape, DType dtype) {
  Tensor t = empty_like(like, shape, dtype);
  fill_zero(t);
  return t;
}

void accumulate_into(Tensor& dst, const Tensor& src) {
  check_same_shape("gradient accumulation", dst, src);
  MED3D_CHECK(dst.dtype() == src.dtype(), "gradient accumulation: dtype ", dtype_name(src.dtype()),
              " into ", dtype_name(dst.dtype()));
  MED3D_CHECK(dst.device() == src.device(), "gradient accumulation: a gradient on ",
              src.device().str(), " for a tensor on ", dst.device().str(),
              "; keep a graph on one device");
  if (dst.device().is_cuda()) {
    check_floating("gradient accumulation", "gradient", dst);
    if constexpr (kWithCuda)
      kernels::cuda::binary(cuda_stream(dst), kernels::cuda::BinaryOp::add, device_data<float>(dst),
                            device_data<float>(src), device_data<float>(dst), dst.numel());
    return;
  }
  dispatch_floating(dst.dtype(), "gradient accumulation", [&]<class T>() {
    T* d = dst.data<T>();
    const T* s = src.data<T>();
    const int64_t n = dst.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) d[i] += s[i];
  });
}

void convert_elements(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t count) {
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, static_cast<std::size_t>(count) * dtype_size(src_dtype));
    return;
  }
  dispatch_any(src_dtype, [&]<class S>() {
    dispatch_any(dst_dtype, [&]<class D>() {
      const S* s = static_cast<const S*>(src);
      D* d = static_cast<D*>(dst);
      for (int64_t i = 0; i < count; ++i) d[i] = static_cast<D>(s[i]);
    });
  });
}

}  // namespace med3d::detail
