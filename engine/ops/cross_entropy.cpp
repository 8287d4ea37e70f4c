// Cross-entropy over channels with ignore_index and class weights: forward and backward.
#include <limits>

#include "engine/ops/channel_util.h"
#include "engine/src/op_util.h"
#include "med3d/kernels/cpu/loss.h"
#include "med3d/kernels/cuda/loss.h"
#include "med3d/ops/loss.h"
#include "med3d/tape.h"

namespace med3d {

using detail::device_data;
using detail::dispatch_floating;

namespace {
template <class T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
const float* device_data_or_null(const Tensor& t) {
  return t.defined() ? device_data<float>(t) : nullptr;
}
}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, const CrossEntropyOptions& options) {
  constexpr const char* op = "cross_entropy";
  detail::check_floating(op, "logits", logits);
  const kernels::ChannelLayout layout = detail::channel_layout(op, logits);
  const Tensor& weights = options.class_weights;
  if (weights.defined()) {
    detail::check_floating(op, "class_weights", weights);
    detail::check_compatible(op, logits, "logits", weights, "class_weights");
    MED3D_CHECK(weights.rank() == 1 && weights.dim(0) == layout.channels, op,
                ": class_weights must hold one weight per channel, shape [", layout.channels,
                "] for logits ", logits.shape().str(), ", got ", weights.shape().str());
  }
  const Tensor targets = detail::class_targets(op, logits, labels, options.ignore_index);

  Tensor loss = detail::empty_like(logits, {1}, logits.dtype());
  if (logits.device().is_cuda()) {
    // The weight sum stays on the device too: workspace[0] after the forward.
    Tensor workspace;
    if constexpr (detail::kWithCuda) {
      workspace = detail::empty_like(
          logits, {kernels::cuda::loss_workspace_elements(layout.positions(), layout.channels)},
          DType::f64);
      kernels::cuda::cross_entropy_forward(detail::cuda_stream(logits), device_data<float>(logits),
                                           device_data<int32_t>(targets),
                                           device_data_or_null(weights), layout,
                                           device_data<float>(loss), device_data<double>(workspace));
    }
    record(op, {logits}, {loss}, {logits, targets, weights, workspace},
           [layout](const BackwardArgs& g) {
             const Tensor& x = g.saved[0];
             Tensor dx = detail::empty_like(x);
             if constexpr (detail::kWithCuda)
               kernels::cuda::cross_entropy_backward(
                   detail::cuda_stream(x), device_data<float>(x), device_data<int32_t>(g.saved[1]),
                   device_data_or_null(g.saved[2]), device_data<float>(g.dy[0]),
                   device_data<double>(g.saved[3]), device_data<float>(dx), layout);
             return std::vector<Tensor>{dx};
           });
    return loss;
  }

  const double weight_sum = dispatch_floating(logits.dtype(), op, [&]<class T>() {
    const kernels::cpu::CrossEntropySums sums = kernels::cpu::cross_entropy_forward(
        logits.data<T>(), targets.data<int32_t>(), data_or_null<T>(weights), layout);
    // Every position ignored: 0 / 0, which PyTorch reports as NaN too.
    loss.fill(sums.weight != 0 ? sums.loss / sums.weight : std::numeric_limits<double>::quiet_NaN());
    return sums.weight;
  });

  record(op, {logits}, {loss}, {logits, targets, weights},
         [layout, weight_sum](const BackwardArgs& g) {
           const Tensor& x = g.saved[0];
           const double scale = weight_sum != 0 ? g.dy[0].item<double>() / weight_sum : 0.0;
           Tensor dx = detail::empty_like(x);
           dispatch_floating(x.dtype(), "cross_entropy backward", [&]<class T>() {
             kernels::cpu::cross_entropy_backward(x.data<T>(), g.saved[1].data<int32_t>(),
                                                  data_or_null<T>(g.saved[2]), scale,
                                                  dx.data<T>(), layout);
           });
           return std::vector<Tensor>{dx};
         });
  return loss;
}

}  // namespace med3d
