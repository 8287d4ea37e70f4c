// Fully connected layer on Eigen GEMM: forward and backward side by side. On CUDA it is the
// 1x1x1 conv of x [N, in] viewed as [N, in, 1, 1, 1] with w [out, in] as [out, in, 1, 1, 1]
// (the same memory), so it runs the conv launchers (engine/ops/conv_cuda.h).
#include "engine/ops/conv_cuda.h"
#include "engine/src/op_util.h"
#include "med3d/kernels/conv_params.h"
#include "med3d/kernels/cpu/linear.h"
#include "med3d/ops/nn.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;

namespace {
// The 1x1x1 conv of a linear layer: n samples of one voxel, `in` channels, `out` filters.
kernels::Conv3dParams pointwise_conv(int64_t n, int64_t in, int64_t out) {
  kernels::Conv3dParams p;
  p.N = n, p.C = in, p.K = out;
  p.D = p.H = p.W = p.T = p.R = p.S = p.Z = p.P = p.Q = 1;
  return p;
}
}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  constexpr const char* op = "linear";
  detail::check_floating(op, "x", x);
  detail::check_floating(op, "w", w);
  detail::check_compatible(op, x, "x", w, "w");
  MED3D_CHECK(x.rank() == 2, op, ": x must be [N, in], got ", x.shape().str(),
              "; flatten volumes first with flatten(x)");
  MED3D_CHECK(w.rank() == 2, op, ": w must be [out, in], got ", w.shape().str());
  MED3D_CHECK(w.dim(1) == x.dim(1), op, ": x ", x.shape().str(), " has ", x.dim(1),
              " input features but w ", w.shape().str(), " expects ", w.dim(1));
  if (b.defined()) {
    detail::check_floating(op, "b", b);
    detail::check_compatible(op, x, "x", b, "b");
    MED3D_CHECK(b.rank() == 1 && b.dim(0) == w.dim(0), op, ": b must be [out] = [", w.dim(0),
                "] for w ", w.shape().str(), ", got ", b.shape().str());
  }
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  Tensor y;
  if (x.device().is_cuda()) {
    y = detail::cuda_conv_fprop(pointwise_conv(n, in, out), x, w, b, {n, out});
  } else {
    y = detail::empty_like(x, {n, out}, x.dtype());
    dispatch_floating(x.dtype(), op, [&]<class T>() {
      kernels::cpu::linear_forward(x.data<T>(), w.data<T>(), b.defined() ? b.data<T>() : nullptr,
                                   y.data<T>(), n, in, out);
    });
  }
  record(op, {x, w, b}, {y}, {x, w}, [n, in, out](const BackwardArgs& g) {
    const Tensor& dy = g.dy[0];
    const Tensor& xs = g.saved[0];
    const Tensor& ws = g.saved[1];
    std::vector<Tensor> grads(3);
    if (dy.device().is_cuda()) {
      const kernels::Conv3dParams p = pointwise_conv(n, in, out);
      if (g.needs_grad[0]) grads[0] = detail::cuda_conv_dgrad(p, dy, ws, xs.shape());
      if (g.needs_grad[1]) grads[1] = detail::cuda_conv_wgrad(p, xs, dy, ws.shape());
      if (g.needs_grad[2]) grads[2] = detail::cuda_channel_bias_grad(dy, n, out, 1);
      return grads;
    }
    dispatch_floating(dy.dtype(), "linear backward", [&]<class T>() {
      if (g.needs_grad[0]) {
        grads[0] = detail::empty_like(xs);
        kernels::cpu::linear_dgrad(dy.data<T>(), ws.data<T>(), grads[0].data<T>(), n, in, out);
      }
      if (g.needs_grad[1]) {
        grads[1] = detail::empty_like(ws);
        kernels::cpu::linear_wgrad(dy.data<T>(), xs.data<T>(), grads[1].data<T>(), n, in, out);
      }
      if (g.needs_grad[2]) {
        grads[2] = detail::empty_like(dy, {out}, dy.dtype());
        kernels::cpu::linear_bgrad(dy.data<T>(), grads[2].data<T>(), n, out);
      }
    });
    return grads;
  });
  return y;
}

}  // namespace med3d
