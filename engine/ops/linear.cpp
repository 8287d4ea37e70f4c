// Fully connected layer on Eigen GEMM: forward and backward side by side. On CUDA the three
// GEMMs run on cuBLAS SGEMM (med3d/kernels/cuda/blas.h, the Context stream's handle) and the
// bias add and bias gradient on the conv family's channel-bias kernels (spatial size 1).
#include "engine/ops/conv_cuda.h"
#include "engine/src/op_util.h"
#include "med3d/kernels/cpu/linear.h"
#include "med3d/kernels/cuda/blas.h"
#include "med3d/ops/nn.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;

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
    if constexpr (detail::kWithCuda) {
      y = detail::empty_like(x, {n, out}, x.dtype());
      kernels::cuda::linear_fprop(detail::cuda_blas(x), detail::cuda_stream(x),
                                  detail::device_data<float>(x), detail::device_data<float>(w),
                                  detail::device_data<float>(y), n, in, out);
      if (b.defined()) detail::cuda_add_channel_bias(y, b, n, out, 1);
    }
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
      if constexpr (detail::kWithCuda) {
        const kernels::cuda::Blas blas = detail::cuda_blas(dy);
        const kernels::cuda::Stream stream = detail::cuda_stream(dy);
        if (g.needs_grad[0]) {
          grads[0] = detail::empty_like(xs);
          kernels::cuda::linear_dgrad(blas, stream, detail::device_data<float>(dy),
                                      detail::device_data<float>(ws),
                                      detail::device_data<float>(grads[0]), n, in, out);
        }
        if (g.needs_grad[1]) {
          grads[1] = detail::empty_like(ws);
          kernels::cuda::linear_wgrad(blas, stream, detail::device_data<float>(dy),
                                      detail::device_data<float>(xs),
                                      detail::device_data<float>(grads[1]), n, in, out);
        }
        if (g.needs_grad[2]) grads[2] = detail::cuda_channel_bias_grad(dy, n, out, 1);
      }
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
