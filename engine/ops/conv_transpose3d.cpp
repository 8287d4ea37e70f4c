// conv_transpose3d: a transposed conv is the input gradient of a forward conv, so it reuses the
// conv3d kernels on the equivalent forward conv p (kernels::conv_transpose3d_params), whose
// input is this op's output and whose output is this op's input x:
//   forward  y  = conv3d_dgrad(p, dy := x, w)
//   backward dx = conv3d_fprop(p, x := dy, w)
//            dw = conv3d_wgrad(p, x := dy, dy := x)
//            db = sum of dy over samples and voxels
// The weight [C, K/groups, T, R, S] is used as is: it is the forward conv's [K', C'/groups, ...].
// There are no separate transposed kernels; CUDA tensors (f32) take the same passes through
// engine/ops/conv_cuda.h.
#include <algorithm>
#include <type_traits>

#include "engine/ops/conv_cuda.h"
#include "engine/ops/frozen_weights.h"
#include "engine/src/op_util.h"
#include "med3d/kernels/conv_params.h"
#include "med3d/kernels/cpu/conv3d.h"
#include "med3d/ops/conv.h"
#include "med3d/tape.h"

namespace med3d {

namespace {

constexpr const char* kOp = "conv_transpose3d";

kernels::Dims5 dims5(const Tensor& t) { return {t.dim(0), t.dim(1), t.dim(2), t.dim(3), t.dim(4)}; }

// Devices, dtypes and ranks; the shape arithmetic is checked by kernels::conv_transpose3d_params.
void check_inputs(const Tensor& x, const Tensor& w, const Tensor& b, int64_t groups) {
  detail::check_floating(kOp, "x", x);
  detail::check_floating(kOp, "w", w);
  detail::check_compatible(kOp, x, "x", w, "w");
  MED3D_CHECK(x.rank() == 5, kOp, ": x must be [N, C, D, H, W], got ", x.shape().str());
  MED3D_CHECK(w.rank() == 5, kOp, ": w must be [C, K/groups, T, R, S], got ", w.shape().str());
  if (!b.defined()) return;
  detail::check_floating(kOp, "b", b);
  detail::check_compatible(kOp, x, "x", b, "b");
  MED3D_CHECK(b.rank() == 1 && b.dim(0) == w.dim(1) * groups, kOp, ": b must be [",
              w.dim(1) * groups, "] (one value per output channel), got ", b.shape().str());
}

Tensor scratch_for(const Tensor& like, const kernels::Conv3dParams& p) {
  const int64_t elements = kernels::cpu::conv3d_scratch_elements(p);
  return detail::empty_like(like, {std::max<int64_t>(elements, 1)}, like.dtype());
}

}  // namespace

Tensor conv_transpose3d(const Tensor& x, const Tensor& w, const Tensor& b,
                        const ConvTranspose3dOptions& options) {
  check_inputs(x, w, b, options.groups);
  const kernels::Conv3dParams p =
      kernels::conv_transpose3d_params(kOp, dims5(x), dims5(w), options.stride, options.padding,
                                       options.output_padding, options.dilation, options.groups);
  const Shape y_shape{p.N, p.C, p.D, p.H, p.W};
  Tensor y;
  if (x.device().is_cuda()) {
    y = detail::cuda_conv_dgrad(p, x, w, y_shape);
    if (b.defined()) detail::cuda_add_channel_bias(y, b, p.N, p.C, p.input_spatial());
  } else {
    y = detail::empty_like(x, y_shape, x.dtype());
    detail::dispatch_floating(x.dtype(), kOp, [&]<class T>() {
      Tensor scratch = scratch_for(x, p);
      const T* packed = nullptr;
      if constexpr (std::is_same_v<T, float>)
        packed = detail::frozen_packed_weights(w, p, kernels::PackFor::dgrad, scratch.numel());
      kernels::cpu::conv3d_dgrad<T>(p, x.data<T>(), w.data<T>(), y.data<T>(), scratch.data<T>(),
                                    scratch.numel(), packed);
      if (b.defined())
        kernels::cpu::add_channel_bias<T>(p.N, p.C, p.input_spatial(), b.data<T>(), y.data<T>());
    });
  }

  // dx needs only w and dw only x: keep nothing alive that backward will not read.
  std::vector<Tensor> saved{w.requires_grad() ? x : Tensor(), x.requires_grad() ? w : Tensor()};
  record(kOp, {x, w, b}, {y}, std::move(saved), [p](const BackwardArgs& g) {
    const Tensor& dy = g.dy[0];
    const Tensor& x = g.saved[0];
    const Tensor& w = g.saved[1];
    std::vector<Tensor> grads(3);
    if (dy.device().is_cuda()) {
      if (g.needs_grad[0])
        grads[0] = detail::cuda_conv_fprop(p, dy, w, Tensor(), {p.N, p.K, p.Z, p.P, p.Q});
      if (g.needs_grad[1])
        grads[1] = detail::cuda_conv_wgrad(p, dy, x, {p.K, p.channels_per_group(), p.T, p.R, p.S});
      if (g.needs_grad[2])
        grads[2] = detail::cuda_channel_bias_grad(dy, p.N, p.C, p.input_spatial());
      return grads;
    }
    detail::dispatch_floating(dy.dtype(), kOp, [&]<class T>() {
      if (g.needs_grad[0] || g.needs_grad[1]) {
        Tensor scratch = scratch_for(dy, p);
        if (g.needs_grad[0]) {
          grads[0] = detail::empty_like(dy, {p.N, p.K, p.Z, p.P, p.Q}, dy.dtype());
          kernels::cpu::conv3d_fprop<T>(p, dy.data<T>(), w.data<T>(), nullptr, grads[0].data<T>(),
                                        scratch.data<T>(), scratch.numel());
        }
        if (g.needs_grad[1]) {
          grads[1] =
              detail::empty_like(dy, {p.K, p.channels_per_group(), p.T, p.R, p.S}, dy.dtype());
          kernels::cpu::conv3d_wgrad<T>(p, dy.data<T>(), x.data<T>(), grads[1].data<T>(),
                                        scratch.data<T>(), scratch.numel());
        }
      }
      if (g.needs_grad[2]) {
        grads[2] = detail::empty_like(dy, {p.C}, dy.dtype());
        kernels::cpu::channel_bias_grad<T>(p.N, p.C, p.input_spatial(), dy.data<T>(),
                                           grads[2].data<T>());
      }
    });
    return grads;
  });
  return y;
}

}  // namespace med3d
