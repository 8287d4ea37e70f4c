// Mean squared error and binary cross-entropy with logits: forward and backward side by side.
#include "engine/src/op_util.h"
#include "med3d/kernels/cpu/loss.h"
#include "med3d/kernels/cuda/loss.h"
#include "med3d/ops/loss.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;

namespace {
void check_pair(const char* op, const Tensor& x, const Tensor& target) {
  detail::check_floating(op, "x", x);
  detail::check_floating(op, "target", target);
  detail::check_compatible(op, x, "x", target, "target");
  detail::check_same_shape(op, x, target);
  MED3D_CHECK(x.numel() > 0, op, ": x is empty (shape ", x.shape().str(), "); the mean needs elements");
}

template <class T>
T* data_if(Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
float* device_data_if(const Tensor& t) { return t.defined() ? detail::device_data<float>(t) : nullptr; }

// The [1] loss tensor and the workspace of a CUDA loss over `count` items.
struct DeviceLoss {
  Tensor loss;
  Tensor workspace;
};
DeviceLoss device_loss(const Tensor& x, int64_t count) {
  DeviceLoss out{detail::empty_like(x, {1}, x.dtype()), Tensor()};
  if constexpr (detail::kWithCuda)
    out.workspace =
        detail::empty_like(x, {kernels::cuda::loss_workspace_elements(count, 1)}, DType::f64);
  return out;
}
}  // namespace

Tensor mse_loss(const Tensor& x, const Tensor& target) {
  check_pair("mse_loss", x, target);
  const int64_t n = x.numel();
  if (x.device().is_cuda()) {
    DeviceLoss d = device_loss(x, n);
    if constexpr (detail::kWithCuda)
      kernels::cuda::mse_forward(detail::cuda_stream(x), detail::device_data<float>(x),
                                 detail::device_data<float>(target), n,
                                 detail::device_data<float>(d.loss),
                                 detail::device_data<double>(d.workspace));
    record("mse_loss", {x, target}, {d.loss}, {x, target}, [n](const BackwardArgs& g) {
      const Tensor& xs = g.saved[0];
      Tensor dx = g.needs_grad[0] ? detail::empty_like(xs) : Tensor();
      Tensor dt = g.needs_grad[1] ? detail::empty_like(xs) : Tensor();
      if constexpr (detail::kWithCuda)
        kernels::cuda::mse_backward(detail::cuda_stream(xs), detail::device_data<float>(xs),
                                    detail::device_data<float>(g.saved[1]),
                                    detail::device_data<float>(g.dy[0]), device_data_if(dx),
                                    device_data_if(dt), n);
      return std::vector<Tensor>{dx, dt};
    });
    return d.loss;
  }
  Tensor loss = detail::empty_like(x, {1}, x.dtype());
  dispatch_floating(x.dtype(), "mse_loss", [&]<class T>() {
    loss.fill(kernels::cpu::squared_error_sum(x.data<T>(), target.data<T>(), n) / static_cast<double>(n));
  });
  record("mse_loss", {x, target}, {loss}, {x, target}, [n](const BackwardArgs& g) {
    const Tensor& xs = g.saved[0];
    const Tensor& ts = g.saved[1];
    Tensor dx = g.needs_grad[0] ? detail::empty_like(xs) : Tensor();
    Tensor dt = g.needs_grad[1] ? detail::empty_like(ts) : Tensor();
    const double scale = 2.0 * g.dy[0].item<double>() / static_cast<double>(n);
    dispatch_floating(xs.dtype(), "mse_loss backward", [&]<class T>() {
      kernels::cpu::squared_error_backward(xs.data<T>(), ts.data<T>(), scale, data_if<T>(dx),
                                           data_if<T>(dt), n);
    });
    return std::vector<Tensor>{dx, dt};
  });
  return loss;
}

Tensor binary_cross_entropy_with_logits(const Tensor& x, const Tensor& target,
                                        const Tensor& pos_weight) {
  constexpr const char* op = "binary_cross_entropy_with_logits";
  check_pair(op, x, target);
  const int64_t channels = x.rank() >= 2 ? x.dim(1) : 1;
  if (pos_weight.defined()) {
    detail::check_floating(op, "pos_weight", pos_weight);
    detail::check_compatible(op, x, "x", pos_weight, "pos_weight");
    MED3D_CHECK(x.rank() >= 2, op, ": pos_weight applies along the channel axis 1, so x needs ",
                "at least 2 dimensions, got ", x.shape().str());
    MED3D_CHECK(pos_weight.rank() == 1 && pos_weight.dim(0) == channels, op,
                ": pos_weight must hold one weight per channel, shape [", channels, "] for x ",
                x.shape().str(), ", got ", pos_weight.shape().str());
  }
  const kernels::ChannelLayout layout{x.dim(0), channels, x.numel() / (x.dim(0) * channels)};
  const int64_t n = x.numel();
  if (x.device().is_cuda()) {
    DeviceLoss d = device_loss(x, n);
    if constexpr (detail::kWithCuda)
      kernels::cuda::bce_with_logits_forward(
          detail::cuda_stream(x), detail::device_data<float>(x), detail::device_data<float>(target),
          device_data_if(pos_weight), layout, detail::device_data<float>(d.loss),
          detail::device_data<double>(d.workspace));
    record(op, {x, target}, {d.loss}, {x, target, pos_weight}, [layout](const BackwardArgs& g) {
      const Tensor& xs = g.saved[0];
      Tensor dx = g.needs_grad[0] ? detail::empty_like(xs) : Tensor();
      Tensor dt = g.needs_grad[1] ? detail::empty_like(xs) : Tensor();
      if constexpr (detail::kWithCuda)
        kernels::cuda::bce_with_logits_backward(
            detail::cuda_stream(xs), detail::device_data<float>(xs),
            detail::device_data<float>(g.saved[1]), device_data_if(g.saved[2]),
            detail::device_data<float>(g.dy[0]), device_data_if(dx), device_data_if(dt), layout);
      return std::vector<Tensor>{dx, dt};
    });
    return d.loss;
  }
  Tensor loss = detail::empty_like(x, {1}, x.dtype());
  dispatch_floating(x.dtype(), op, [&]<class T>() {
    const T* pw = pos_weight.defined() ? pos_weight.data<T>() : nullptr;
    loss.fill(kernels::cpu::bce_with_logits_sum(x.data<T>(), target.data<T>(), pw, layout) /
              static_cast<double>(n));
  });
  // pos_weight is a constant, as in PyTorch: saved, not an input of the node.
  record(op, {x, target}, {loss}, {x, target, pos_weight}, [layout, n](const BackwardArgs& g) {
    const Tensor& xs = g.saved[0];
    const Tensor& ts = g.saved[1];
    const Tensor& pws = g.saved[2];
    Tensor dx = g.needs_grad[0] ? detail::empty_like(xs) : Tensor();
    Tensor dt = g.needs_grad[1] ? detail::empty_like(ts) : Tensor();
    const double scale = g.dy[0].item<double>() / static_cast<double>(n);
    dispatch_floating(xs.dtype(), "binary_cross_entropy_with_logits backward", [&]<class T>() {
      const T* pw = pws.defined() ? pws.data<T>() : nullptr;
      kernels::cpu::bce_with_logits_backward(xs.data<T>(), ts.data<T>(), pw, scale,
                                             data_if<T>(dx), data_if<T>(dt), layout);
    });
    return std::vector<Tensor>{dx, dt};
  });
  return loss;
}

}  // namespace med3d
