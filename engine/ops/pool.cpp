// 3D pooling (max, average, adaptive average): forward and backward side by side.
#include <sstream>
#include <string>

#include "engine/src/op_util.h"
#include "med3d/kernels/cpu/pool.h"
#include "med3d/kernels/cuda/pool.h"
#include "med3d/ops/pool.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;
using kernels::cpu::PoolPlan;
using kernels::cuda::PoolShape;
using Axes = std::array<int64_t, 3>;

namespace {

constexpr const char* kAxis[3] = {"D", "H", "W"};

std::string str(const Axes& a) {
  std::ostringstream s;
  s << "{" << a[0] << ", " << a[1] << ", " << a[2] << "}";
  return s.str();
}

void check_volume(const char* op, const Tensor& x) {
  detail::check_floating(op, "x", x);
  MED3D_CHECK(x.rank() == 5, op, ": x must be [N, C, D, H, W], got ", x.shape().str());
  MED3D_CHECK(x.numel() > 0, op, ": x is empty, got ", x.shape().str());
}

Axes spatial(const Tensor& x) { return {x.dim(2), x.dim(3), x.dim(4)}; }

// PyTorch's limits on a pooling window, then a positive output extent per axis.
void check_window(const char* op, const Tensor& x, const Axes& kernel, const Axes& stride,
                  const Axes& padding) {
  const Axes in = spatial(x);
  for (int a = 0; a < 3; ++a) {
    MED3D_CHECK(kernel[a] >= 1, op, ": kernel must be >= 1 on every axis, got ", str(kernel));
    MED3D_CHECK(stride[a] >= 1, op, ": stride must be >= 1 on every axis, got ", str(stride));
    MED3D_CHECK(padding[a] >= 0 && 2 * padding[a] <= kernel[a], op,
                ": padding must be between 0 and half the kernel on every axis, got padding ",
                str(padding), " for kernel ", str(kernel));
    MED3D_CHECK(in[a] + 2 * padding[a] >= kernel[a], op, ": the output would be empty: axis ",
                kAxis[a], " of x ", x.shape().str(), " plus padding ", str(padding),
                " is smaller than kernel ", str(kernel), "; use a smaller kernel or more padding");
  }
}

Shape output_shape(const Tensor& x, const Axes& out) {
  return {x.dim(0), x.dim(1), out[0], out[1], out[2]};
}

// The CUDA kernels' description of a plan's pooling (they compute the windows themselves).
PoolShape cuda_shape(const PoolPlan& plan, const Axes& kernel, const Axes& stride,
                     const Axes& padding, bool count_include_pad) {
  PoolShape s;
  s.planes = plan.planes;
  for (int a = 0; a < 3; ++a) {
    s.in[a] = plan.in[a];
    s.out[a] = plan.out[a];
    s.kernel[a] = kernel[a];
    s.stride[a] = stride[a];
    s.padding[a] = padding[a];
  }
  s.count_include_pad = count_include_pad;
  return s;
}

PoolShape adaptive_cuda_shape(const PoolPlan& plan) {
  PoolShape s = cuda_shape(plan, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, true);
  s.adaptive = true;
  return s;
}

// Average pooling of every kind runs from a plan (CPU) or its shape (CUDA); so does its
// backward.
Tensor average(const char* op, const Tensor& x, const PoolPlan& plan, const PoolShape& shape) {
  Tensor y = detail::empty_like(x, output_shape(x, plan.out), x.dtype());
  if (x.device().is_cuda()) {
    if constexpr (detail::kWithCuda)
      kernels::cuda::avg_pool3d_forward(detail::cuda_stream(x), shape, detail::device_data<float>(x),
                                        detail::device_data<float>(y));
  } else {
    dispatch_floating(x.dtype(), op, [&]<class T>() {
      kernels::cpu::avg_pool3d_forward(plan, x.data<T>(), y.data<T>());
    });
  }
  const Shape x_shape = x.shape();
  record(op, {x}, {y}, {}, [op, plan, shape, x_shape](const BackwardArgs& g) {
    const Tensor& dy = g.dy[0];
    Tensor dx = detail::empty_like(dy, x_shape, dy.dtype());
    if (dy.device().is_cuda()) {
      if constexpr (detail::kWithCuda)
        kernels::cuda::avg_pool3d_backward(detail::cuda_stream(dy), shape,
                                           detail::device_data<float>(dy),
                                           detail::device_data<float>(dx));
      return std::vector<Tensor>{dx};
    }
    dispatch_floating(dx.dtype(), op, [&]<class T>() {
      kernels::cpu::avg_pool3d_backward(plan, dy.data<T>(), dx.data<T>());
    });
    return std::vector<Tensor>{dx};
  });
  return y;
}

}  // namespace

Tensor max_pool3d(const Tensor& x, Axes kernel, Axes stride, Axes padding) {
  constexpr const char* op = "max_pool3d";
  check_volume(op, x);
  check_window(op, x, kernel, stride, padding);
  const PoolPlan plan =
      kernels::cpu::make_pool_plan(x.dim(0) * x.dim(1), spatial(x), kernel, stride, padding, true);
  const Shape y_shape = output_shape(x, plan.out);
  Tensor y = detail::empty_like(x, y_shape, x.dtype());
  Tensor argmax = detail::empty_like(x, y_shape, DType::i64);
  const PoolShape shape = cuda_shape(plan, kernel, stride, padding, true);
  if (x.device().is_cuda()) {
    if constexpr (detail::kWithCuda)
      kernels::cuda::max_pool3d_forward(detail::cuda_stream(x), shape, detail::device_data<float>(x),
                                        detail::device_data<float>(y),
                                        detail::device_data<int64_t>(argmax));
  } else {
    dispatch_floating(x.dtype(), op, [&]<class T>() {
      kernels::cpu::max_pool3d_forward(plan, x.data<T>(), y.data<T>(), argmax.data<int64_t>());
    });
  }
  const Shape x_shape = x.shape();
  record(op, {x}, {y}, {argmax}, [plan, shape, x_shape](const BackwardArgs& g) {
    const Tensor& dy = g.dy[0];
    Tensor dx = detail::empty_like(dy, x_shape, dy.dtype());
    if (dy.device().is_cuda()) {
      if constexpr (detail::kWithCuda)
        kernels::cuda::max_pool3d_backward(detail::cuda_stream(dy), shape,
                                           detail::device_data<float>(dy),
                                           detail::device_data<int64_t>(g.saved[0]),
                                           detail::device_data<float>(dx));
      return std::vector<Tensor>{dx};
    }
    dispatch_floating(dx.dtype(), op, [&]<class T>() {
      kernels::cpu::max_pool3d_backward(plan, dy.data<T>(), g.saved[0].data<int64_t>(),
                                        dx.data<T>());
    });
    return std::vector<Tensor>{dx};
  });
  return y;
}

Tensor avg_pool3d(const Tensor& x, Axes kernel, Axes stride, Axes padding, bool count_include_pad) {
  constexpr const char* op = "avg_pool3d";
  check_volume(op, x);
  check_window(op, x, kernel, stride, padding);
  const PoolPlan plan = kernels::cpu::make_pool_plan(x.dim(0) * x.dim(1), spatial(x), kernel, stride,
                                                     padding, count_include_pad);
  return average(op, x, plan, cuda_shape(plan, kernel, stride, padding, count_include_pad));
}

Tensor adaptive_avg_pool3d(const Tensor& x, Axes output_size) {
  constexpr const char* op = "adaptive_avg_pool3d";
  check_volume(op, x);
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(output_size[a] >= 1, op, ": output_size must be >= 1 on every axis, got ",
                str(output_size));
  const PoolPlan plan =
      kernels::cpu::make_adaptive_pool_plan(x.dim(0) * x.dim(1), spatial(x), output_size);
  return average(op, x, plan, adaptive_cuda_shape(plan));
}

}  // namespace med3d
