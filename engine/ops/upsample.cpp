// 3D upsampling (trilinear, nearest): forward and backward side by side.
#include <algorithm>
#include <cmath>
#include <sstream>

#include "engine/src/op_util.h"
#include "med3d/kernels/cpu/upsample.h"
#include "med3d/kernels/cuda/upsample.h"
#include "med3d/kernels/upsample.h"
#include "med3d/ops/upsample.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;
using kernels::cpu::UpsampleGeometry;

namespace {

template <class V>
std::string str(const std::array<V, 3>& a) {
  std::ostringstream s;
  s << "{" << a[0] << ", " << a[1] << ", " << a[2] << "}";
  return s.str();
}

UpsampleGeometry input_geometry(const char* op, const Tensor& x, bool align_corners) {
  detail::check_floating(op, "x", x);
  MED3D_CHECK(x.rank() == 5, op, ": x must be [N, C, D, H, W], got ", x.shape().str());
  MED3D_CHECK(x.numel() > 0, op, ": x is empty, got ", x.shape().str());
  UpsampleGeometry g;
  g.planes = x.dim(0) * x.dim(1);
  g.in = {x.dim(2), x.dim(3), x.dim(4)};
  g.align_corners = align_corners;
  return g;
}

UpsampleGeometry by_size(const char* op, const Tensor& x, const std::array<int64_t, 3>& size,
                         bool align_corners) {
  UpsampleGeometry g = input_geometry(op, x, align_corners);
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(size[a] >= 1, op, ": size must be >= 1 on every axis, got ", str(size));
  g.out = size;
  return g;
}

UpsampleGeometry by_scale(const char* op, const Tensor& x, const std::array<double, 3>& scale,
                          bool align_corners) {
  UpsampleGeometry g = input_geometry(op, x, align_corners);
  for (int a = 0; a < 3; ++a) {
    MED3D_CHECK(std::isfinite(scale[a]) && scale[a] > 0, op,
                ": scale must be positive and finite on every axis, got ", str(scale));
    g.out[a] = kernels::scaled_size(g.in[a], scale[a]);
    MED3D_CHECK(g.out[a] >= 1, op, ": scale ", str(scale), " turns the spatial extents ",
                str(g.in), " of x into an empty output ", str(g.out), "; use a larger scale");
  }
  // align_corners maps corners onto corners, which only the sizes determine (as in PyTorch).
  if (!align_corners) g.scale = scale;
  return g;
}

// A scratch tensor of `elements` values for a kernel (from the Context's pool: allocating
// fresh pages every call is slow on these machines); an empty placeholder when none is needed.
Tensor workspace(const Tensor& like, int64_t elements) {
  return detail::empty_like(like, {std::max<int64_t>(elements, 1)}, like.dtype());
}

enum class Mode { trilinear, nearest };

// The CUDA kernels: forward reads x and writes y; backward (`transpose`) reads dy and writes
// dx. They need no workspace: their backward passes are gathers.
void run_cuda(Mode mode, bool transpose, const UpsampleGeometry& g, const Tensor& src, Tensor& dst) {
  if constexpr (detail::kWithCuda) {
    kernels::cuda::UpsampleShape s;
    s.planes = g.planes;
    for (int a = 0; a < 3; ++a) {
      s.in[a] = g.in[a];
      s.out[a] = g.out[a];
      s.scale[a] = g.scale[a];
    }
    s.align_corners = g.align_corners;
    const kernels::cuda::Stream stream = detail::cuda_stream(src);
    const float* from = detail::device_data<float>(src);
    float* to = detail::device_data<float>(dst);
    if (mode == Mode::trilinear) {
      if (transpose)
        kernels::cuda::upsample_trilinear3d_backward(stream, s, from, to);
      else
        kernels::cuda::upsample_trilinear3d_forward(stream, s, from, to);
    } else if (transpose) {
      kernels::cuda::upsample_nearest3d_backward(stream, s, from, to);
    } else {
      kernels::cuda::upsample_nearest3d_forward(stream, s, from, to);
    }
  }
}

// Runs forward(g, x, y, ws) and records backward(g, dy, dx) for the geometry g, where ws is a
// workspace of `workspace_elements` values; CUDA tensors take the kernels of `mode`.
template <class Forward, class Backward>
Tensor run(const char* op, Mode mode, const Tensor& x, const UpsampleGeometry& g,
           int64_t workspace_elements, Forward forward, Backward backward) {
  Tensor y = detail::empty_like(x, {x.dim(0), x.dim(1), g.out[0], g.out[1], g.out[2]}, x.dtype());
  if (x.device().is_cuda()) {
    run_cuda(mode, false, g, x, y);
  } else {
    dispatch_floating(x.dtype(), op, [&]<class T>() {
      Tensor ws = workspace(x, workspace_elements);
      forward(g, x.data<T>(), y.data<T>(), ws.data<T>());
    });
  }
  const Shape x_shape = x.shape();
  record(op, {x}, {y}, {}, [op, mode, g, x_shape, backward](const BackwardArgs& args) {
    const Tensor& dy = args.dy[0];
    Tensor dx = detail::empty_like(dy, x_shape, dy.dtype());
    if (dy.device().is_cuda()) {
      run_cuda(mode, true, g, dy, dx);
      return std::vector<Tensor>{dx};
    }
    dispatch_floating(dx.dtype(), op, [&]<class T>() { backward(g, dy.template data<T>(), dx.template data<T>()); });
    return std::vector<Tensor>{dx};
  });
  return y;
}

// Generic lambdas forward to the kernels so one `run` serves both dtypes.
const auto trilinear_forward = [](const UpsampleGeometry& g, const auto* x, auto* y, auto* ws) {
  kernels::cpu::upsample_trilinear3d_forward(g, x, y, ws);
};
const auto trilinear_backward = [](const UpsampleGeometry& g, const auto* dy, auto* dx) {
  kernels::cpu::upsample_trilinear3d_backward(g, dy, dx);
};
const auto nearest_forward = [](const UpsampleGeometry& g, const auto* x, auto* y, auto*) {
  kernels::cpu::upsample_nearest3d_forward(g, x, y);
};
const auto nearest_backward = [](const UpsampleGeometry& g, const auto* dy, auto* dx) {
  kernels::cpu::upsample_nearest3d_backward(g, dy, dx);
};

}  // namespace

Tensor upsample_trilinear3d(const Tensor& x, std::array<int64_t, 3> size, bool align_corners) {
  constexpr const char* op = "upsample_trilinear3d";
  const UpsampleGeometry g = by_size(op, x, size, align_corners);
  return run(op, Mode::trilinear, x, g, kernels::cpu::upsample_trilinear3d_workspace(g), trilinear_forward,
             trilinear_backward);
}

Tensor upsample_trilinear3d_scale(const Tensor& x, std::array<double, 3> scale, bool align_corners) {
  constexpr const char* op = "upsample_trilinear3d";
  const UpsampleGeometry g = by_scale(op, x, scale, align_corners);
  return run(op, Mode::trilinear, x, g, kernels::cpu::upsample_trilinear3d_workspace(g), trilinear_forward,
             trilinear_backward);
}

Tensor upsample_nearest3d(const Tensor& x, std::array<int64_t, 3> size) {
  constexpr const char* op = "upsample_nearest3d";
  return run(op, Mode::nearest, x, by_size(op, x, size, false), 0, nearest_forward, nearest_backward);
}

Tensor upsample_nearest3d_scale(const Tensor& x, std::array<double, 3> scale) {
  constexpr const char* op = "upsample_nearest3d";
  return run(op, Mode::nearest, x, by_scale(op, x, scale, false), 0, nearest_forward, nearest_backward);
}

}  // namespace med3d
