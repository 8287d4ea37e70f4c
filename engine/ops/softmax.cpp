// Softmax, log_softmax and argmax over channels: forward and backward side by side.
#include "engine/ops/channel_util.h"
#include "engine/src/op_util.h"
#include "med3d/kernels/cpu/softmax.h"
#include "med3d/ops/loss.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;

Tensor softmax(const Tensor& x) {
  detail::check_cpu_floating("softmax", "x", x);
  const kernels::ChannelLayout layout = detail::channel_layout("softmax", x);
  Tensor y = detail::empty_like(x);
  dispatch_floating(x.dtype(), "softmax", [&]<class T>() {
    kernels::cpu::softmax_forward(x.data<T>(), y.data<T>(), layout);
  });
  record("softmax", {x}, {y}, {y}, [layout](const BackwardArgs& g) {
    const Tensor& saved_y = g.saved[0];
    Tensor dx = detail::empty_like(saved_y);
    dispatch_floating(saved_y.dtype(), "softmax backward", [&]<class T>() {
      kernels::cpu::softmax_backward(saved_y.data<T>(), g.dy[0].data<T>(), dx.data<T>(), layout);
    });
    return std::vector<Tensor>{dx};
  });
  return y;
}

Tensor log_softmax(const Tensor& x) {
  detail::check_cpu_floating("log_softmax", "x", x);
  const kernels::ChannelLayout layout = detail::channel_layout("log_softmax", x);
  Tensor y = detail::empty_like(x);
  dispatch_floating(x.dtype(), "log_softmax", [&]<class T>() {
    kernels::cpu::log_softmax_forward(x.data<T>(), y.data<T>(), layout);
  });
  record("log_softmax", {x}, {y}, {y}, [layout](const BackwardArgs& g) {
    const Tensor& saved_y = g.saved[0];
    Tensor dx = detail::empty_like(saved_y);
    dispatch_floating(saved_y.dtype(), "log_softmax backward", [&]<class T>() {
      kernels::cpu::log_softmax_backward(saved_y.data<T>(), g.dy[0].data<T>(), dx.data<T>(), layout);
    });
    return std::vector<Tensor>{dx};
  });
  return y;
}

Tensor argmax(const Tensor& logits) {
  detail::check_cpu_floating("argmax", "logits", logits);
  const kernels::ChannelLayout layout = detail::channel_layout("argmax", logits);
  std::vector<int64_t> extents{logits.dim(0)};
  for (int axis = 2; axis < logits.rank(); ++axis) extents.push_back(logits.dim(axis));
  Tensor out = detail::empty_like(logits, Shape(extents), DType::i32);
  dispatch_floating(logits.dtype(), "argmax", [&]<class T>() {
    kernels::cpu::argmax_channels(logits.data<T>(), out.data<int32_t>(), layout);
  });
  return out;
}

}  // namespace med3d
