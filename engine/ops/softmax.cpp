// Softmax, log_softmax and argmax over channels: forward and backward side by side.
#include "engine/ops/channel_util.h"
#include "engine/src/op_util.h"
#include "med3d/kernels/cpu/softmax.h"
#include "med3d/kernels/cuda/softmax.h"
#include "med3d/ops/loss.h"
#include "med3d/tape.h"

namespace med3d {

using detail::device_data;
using detail::dispatch_floating;

namespace {

// Runs the per-position kernel `Kind` on a's device: a, b (b unused by forwards) -> out.
// Kind provides cpu<T>(a, b, out, layout) and cuda(stream, a, b, out, layout).
template <class Kind>
void run_channels(const char* op, const Tensor& a, const Tensor& b, Tensor& out,
                  kernels::ChannelLayout layout) {
  if (a.device().is_cuda()) {
    if constexpr (detail::kWithCuda)
      Kind::cuda(detail::cuda_stream(a), device_data<float>(a),
                 b.defined() ? device_data<float>(b) : nullptr, device_data<float>(out), layout);
    return;
  }
  dispatch_floating(a.dtype(), op, [&]<class T>() {
    Kind::template cpu<T>(a.data<T>(), b.defined() ? b.data<T>() : nullptr, out.data<T>(), layout);
  });
}

struct SoftmaxForward {
  template <class T>
  static void cpu(const T* x, const T*, T* y, kernels::ChannelLayout l) {
    kernels::cpu::softmax_forward(x, y, l);
  }
  static void cuda(kernels::cuda::Stream s, const float* x, const float*, float* y,
                   kernels::ChannelLayout l) {
    kernels::cuda::softmax_forward(s, x, y, l);
  }
};
struct LogSoftmaxForward {
  template <class T>
  static void cpu(const T* x, const T*, T* y, kernels::ChannelLayout l) {
    kernels::cpu::log_softmax_forward(x, y, l);
  }
  static void cuda(kernels::cuda::Stream s, const float* x, const float*, float* y,
                   kernels::ChannelLayout l) {
    kernels::cuda::log_softmax_forward(s, x, y, l);
  }
};
struct SoftmaxBackward {
  template <class T>
  static void cpu(const T* y, const T* dy, T* dx, kernels::ChannelLayout l) {
    kernels::cpu::softmax_backward(y, dy, dx, l);
  }
  static void cuda(kernels::cuda::Stream s, const float* y, const float* dy, float* dx,
                   kernels::ChannelLayout l) {
    kernels::cuda::softmax_backward(s, y, dy, dx, l);
  }
};
struct LogSoftmaxBackward {
  template <class T>
  static void cpu(const T* y, const T* dy, T* dx, kernels::ChannelLayout l) {
    kernels::cpu::log_softmax_backward(y, dy, dx, l);
  }
  static void cuda(kernels::cuda::Stream s, const float* y, const float* dy, float* dx,
                   kernels::ChannelLayout l) {
    kernels::cuda::log_softmax_backward(s, y, dy, dx, l);
  }
};

// y = Forward(x), recorded with dx = Backward(y, dy).
template <class Forward, class Backward>
Tensor channel_op(const char* op, const char* backward_op, const Tensor& x) {
  detail::check_floating(op, "x", x);
  const kernels::ChannelLayout layout = detail::channel_layout(op, x);
  Tensor y = detail::empty_like(x);
  run_channels<Forward>(op, x, Tensor(), y, layout);
  record(op, {x}, {y}, {y}, [layout, backward_op](const BackwardArgs& g) {
    const Tensor& saved_y = g.saved[0];
    Tensor dx = detail::empty_like(saved_y);
    run_channels<Backward>(backward_op, saved_y, g.dy[0], dx, layout);
    return std::vector<Tensor>{dx};
  });
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x) {
  return channel_op<SoftmaxForward, SoftmaxBackward>("softmax", "softmax backward", x);
}

Tensor log_softmax(const Tensor& x) {
  return channel_op<LogSoftmaxForward, LogSoftmaxBackward>("log_softmax", "log_softmax backward", x);
}

Tensor argmax(const Tensor& logits) {
  detail::check_floating("argmax", "logits", logits);
  const kernels::ChannelLayout layout = detail::channel_layout("argmax", logits);
  std::vector<int64_t> extents{logits.dim(0)};
  for (int axis = 2; axis < logits.rank(); ++axis) extents.push_back(logits.dim(axis));
  Tensor out = detail::empty_like(logits, Shape(extents), DType::i32);
  if (logits.device().is_cuda()) {
    if constexpr (detail::kWithCuda)
      kernels::cuda::argmax_channels(detail::cuda_stream(logits), device_data<float>(logits),
                                     device_data<int32_t>(out), layout);
    return out;
  }
  dispatch_floating(logits.dtype(), "argmax", [&]<class T>() {
    kernels::cpu::argmax_channels(logits.data<T>(), out.data<int32_t>(), layout);
  });
  return out;
}

}  // namespace med3d
