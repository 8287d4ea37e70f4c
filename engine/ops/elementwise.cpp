// Element-wise ops and reductions: forward and backward side by side.
#include "med3d/ops/elementwise.h"

#include "engine/src/op_util.h"
#include "med3d/kernels/cpu_loops.h"
#include "med3d/kernels/cuda/elementwise.h"
#include "med3d/kernels/elementwise.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;
using kernels::parallel_for;
using CudaUnary = kernels::cuda::UnaryOp;
using CudaBinary = kernels::cuda::BinaryOp;

namespace {

// out[i] = fn(a[i], b[i]) for two same-shaped tensors; `cuda_op` is the same op on CUDA.
template <class Fn>
Tensor binary(const char* op, const Tensor& a, const Tensor& b, CudaBinary cuda_op, Fn fn) {
  detail::check_floating(op, "a", a);
  detail::check_floating(op, "b", b);
  detail::check_compatible(op, a, "a", b, "b");
  detail::check_same_shape(op, a, b);
  Tensor out = detail::empty_like(a);
  if (a.device().is_cuda()) {
    if constexpr (detail::kWithCuda)
      kernels::cuda::binary(detail::cuda_stream(a), cuda_op, detail::device_data<float>(a),
                            detail::device_data<float>(b), detail::device_data<float>(out), a.numel());
    return out;
  }
  dispatch_floating(a.dtype(), op, [&]<class T>() {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* po = out.data<T>();
    parallel_for(a.numel(), [&](int64_t i) { po[i] = fn(pa[i], pb[i]); });
  });
  return out;
}

template <class Fn>
Tensor unary(const char* op, const Tensor& x, CudaUnary cuda_op, double scalar, Fn fn) {
  detail::check_floating(op, "x", x);
  Tensor out = detail::empty_like(x);
  if (x.device().is_cuda()) {
    if constexpr (detail::kWithCuda)
      kernels::cuda::unary(detail::cuda_stream(x), cuda_op, static_cast<float>(scalar),
                           detail::device_data<float>(x), detail::device_data<float>(out), x.numel());
    return out;
  }
  dispatch_floating(x.dtype(), op, [&]<class T>() {
    const T* px = x.data<T>();
    T* po = out.data<T>();
    parallel_for(x.numel(), [&](int64_t i) { po[i] = fn(px[i]); });
  });
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = binary("add", a, b, CudaBinary::add, [](auto u, auto v) { return u + v; });
  record("add", {a, b}, {y}, {}, [](const BackwardArgs& g) {
    return std::vector<Tensor>{g.dy[0], g.dy[0]};
  });
  return y;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = binary("sub", a, b, CudaBinary::sub, [](auto u, auto v) { return u - v; });
  record("sub", {a, b}, {y}, {}, [](const BackwardArgs& g) {
    return std::vector<Tensor>{g.dy[0], g.needs_grad[1] ? mul_scalar(g.dy[0], -1.0) : Tensor()};
  });
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = binary("mul", a, b, CudaBinary::mul, [](auto u, auto v) { return u * v; });
  record("mul", {a, b}, {y}, {a, b}, [](const BackwardArgs& g) {
    return std::vector<Tensor>{g.needs_grad[0] ? mul(g.dy[0], g.saved[1]) : Tensor(),
                               g.needs_grad[1] ? mul(g.dy[0], g.saved[0]) : Tensor()};
  });
  return y;
}

Tensor add_scalar(const Tensor& x, double value) {
  Tensor y = unary("add_scalar", x, CudaUnary::add_scalar, value, [value](auto u) { return u + static_cast<decltype(u)>(value); });
  record("add_scalar", {x}, {y}, {}, [](const BackwardArgs& g) {
    return std::vector<Tensor>{g.dy[0]};
  });
  return y;
}

Tensor mul_scalar(const Tensor& x, double value) {
  Tensor y = unary("mul_scalar", x, CudaUnary::mul_scalar, value, [value](auto u) { return u * static_cast<decltype(u)>(value); });
  record("mul_scalar", {x}, {y}, {}, [value](const BackwardArgs& g) {
    return std::vector<Tensor>{mul_scalar(g.dy[0], value)};
  });
  return y;
}

Tensor detail::relu_backward(const Tensor& y, const Tensor& dy) {
  return binary("relu_backward", y, dy, CudaBinary::relu_backward,
                [](auto yv, auto dyv) { return kernels::relu_backward(yv, dyv); });
}

Tensor relu(const Tensor& x) {
  Tensor y = unary("relu", x, CudaUnary::relu, 0.0, [](auto u) { return kernels::relu_forward(u); });
  record("relu", {x}, {y}, {y}, [](const BackwardArgs& g) {
    return std::vector<Tensor>{detail::relu_backward(g.saved[0], g.dy[0])};
  });
  return y;
}

Tensor sigmoid(const Tensor& x) {
  Tensor y = unary("sigmoid", x, CudaUnary::sigmoid, 0.0, [](auto u) { return kernels::sigmoid_forward(u); });
  record("sigmoid", {x}, {y}, {y}, [](const BackwardArgs& g) {
    return std::vector<Tensor>{binary("sigmoid_backward", g.saved[0], g.dy[0], CudaBinary::sigmoid_backward,
                                      [](auto yv, auto dyv) { return kernels::sigmoid_backward(yv, dyv); })};
  });
  return y;
}

namespace {
// Sum in double regardless of dtype: f32 sums of large volumes lose digits otherwise.
double sum_elements(const Tensor& x) {
  return dispatch_floating(x.dtype(), "sum", [&]<class T>() {
    const T* p = x.data<T>();
    const int64_t n = x.numel();
    double total = 0;
#pragma omp parallel for reduction(+ : total) if (n > kernels::kParallelGrain)
    for (int64_t i = 0; i < n; ++i) total += static_cast<double>(p[i]);
    return total;
  });
}

// On CUDA the sum stays on the device (no host round trip in a training step).
Tensor reduce(const char* op, const Tensor& x, double scale) {
  detail::check_floating(op, "x", x);
  Tensor y = detail::empty_like(x, {1}, x.dtype());
  if (x.device().is_cuda()) {
    if constexpr (detail::kWithCuda) {
      Tensor workspace =
          detail::empty_like(x, {kernels::cuda::sum_workspace_elements(x.numel())}, DType::f64);
      kernels::cuda::sum(detail::cuda_stream(x), detail::device_data<float>(x), x.numel(), scale,
                         detail::device_data<float>(y), detail::device_data<double>(workspace));
    }
  } else {
    y.fill(sum_elements(x) * scale);
  }
  const Shape shape = x.shape();
  record(op, {x}, {y}, {}, [shape, scale](const BackwardArgs& g) {
    Tensor dx = detail::empty_like(g.dy[0], shape, g.dy[0].dtype());
    if (dx.device().is_cuda()) {
      if constexpr (detail::kWithCuda)
        kernels::cuda::fill_scaled_scalar(detail::cuda_stream(dx), detail::device_data<float>(g.dy[0]),
                                          scale, detail::device_data<float>(dx), dx.numel());
    } else {
      dx.fill(g.dy[0].item<double>() * scale);
    }
    return std::vector<Tensor>{dx};
  });
  return y;
}
}  // namespace

Tensor sum(const Tensor& x) { return reduce("sum", x, 1.0); }

Tensor mean(const Tensor& x) {
  MED3D_CHECK(x.defined() && x.numel() > 0, "mean: the tensor is empty or undefined");
  return reduce("mean", x, 1.0 / static_cast<double>(x.numel()));
}

Tensor gradient_reversal(const Tensor& x, double lambda) {
  detail::check_floating("gradient_reversal", "x", x);
  Tensor y = x.detach().clone();
  record("gradient_reversal", {x}, {y}, {}, [lambda](const BackwardArgs& g) {
    return std::vector<Tensor>{mul_scalar(g.dy[0], -lambda)};
  });
  return y;
}

}  // namespace med3d
