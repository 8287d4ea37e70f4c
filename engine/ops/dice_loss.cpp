// Soft Dice loss: softmax (its own recorded op), then the Dice of the probabilities against
// one-hot labels, whose forward and backward live here.
#include <vector>

#include "engine/ops/channel_util.h"
#include "engine/src/op_util.h"
#include "med3d/kernels/cpu/loss.h"
#include "med3d/kernels/cuda/loss.h"
#include "med3d/ops/loss.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;

namespace {

// dice_of_probabilities on CUDA: the sums, the loss and the gradient coefficients stay on the
// device (the coefficients in the workspace the backward reads).
Tensor dice_on_device(const Tensor& p, const Tensor& targets, kernels::ChannelLayout layout,
                      int64_t first, double smooth) {
  Tensor loss = detail::empty_like(p, {1}, p.dtype());
  Tensor workspace;
  if constexpr (detail::kWithCuda) {
    workspace = detail::empty_like(
        p, {kernels::cuda::loss_workspace_elements(layout.positions(), layout.channels)}, DType::f64);
    kernels::cuda::dice_forward(detail::cuda_stream(p), detail::device_data<float>(p),
                                detail::device_data<int32_t>(targets), layout, first, smooth,
                                detail::device_data<float>(loss),
                                detail::device_data<double>(workspace));
  }
  const Shape shape = p.shape();
  record("soft_dice", {p}, {loss}, {targets, workspace}, [layout, shape](const BackwardArgs& g) {
    Tensor dp = detail::empty_like(g.dy[0], shape, g.dy[0].dtype());
    if constexpr (detail::kWithCuda)
      kernels::cuda::dice_backward(detail::cuda_stream(dp), detail::device_data<int32_t>(g.saved[0]),
                                   detail::device_data<double>(g.saved[1]),
                                   detail::device_data<float>(g.dy[0]),
                                   detail::device_data<float>(dp), layout);
    return std::vector<Tensor>{dp};
  });
  return loss;
}

// 1 - mean Dice of probabilities p [N, C, ...] over the included classes; see loss.h.
Tensor dice_of_probabilities(const Tensor& p, const Tensor& targets, kernels::ChannelLayout layout,
                             const SoftDiceOptions& options) {
  const int64_t channels = layout.channels;
  const int64_t first = options.include_background ? 0 : 1;
  if (p.device().is_cuda()) return dice_on_device(p, targets, layout, first, options.smooth);
  const double included = static_cast<double>(channels - first);
  std::vector<double> intersection(channels), p_sum(channels), g_sum(channels);
  dispatch_floating(p.dtype(), "soft_dice_loss", [&]<class T>() {
    kernels::cpu::dice_sums(p.data<T>(), targets.data<int32_t>(), layout, intersection.data(),
                            p_sum.data(), g_sum.data());
  });
  double dice_total = 0;
  std::vector<kernels::DiceCoefficients> coefficients(channels);  // zero for excluded classes
  for (int64_t c = first; c < channels; ++c) {
    dice_total += (2 * intersection[c] + options.smooth) / (p_sum[c] + g_sum[c] + options.smooth);
    coefficients[c] = kernels::dice_gradient_coefficients(intersection[c], p_sum[c], g_sum[c],
                                                          options.smooth, included);
  }
  Tensor loss = detail::empty_like(p, {1}, p.dtype());
  loss.fill(1.0 - dice_total / included);

  const Shape shape = p.shape();
  record("soft_dice", {p}, {loss}, {targets}, [layout, coefficients, shape](const BackwardArgs& g) {
    const double dy = g.dy[0].item<double>();
    Tensor dp = detail::empty_like(g.dy[0], shape, g.dy[0].dtype());
    dispatch_floating(dp.dtype(), "soft_dice backward", [&]<class T>() {
      kernels::cpu::dice_backward(g.saved[0].data<int32_t>(), coefficients.data(), dy,
                                  dp.data<T>(), layout);
    });
    return std::vector<Tensor>{dp};
  });
  return loss;
}

}  // namespace

Tensor soft_dice_loss(const Tensor& logits, const Tensor& labels, const SoftDiceOptions& options) {
  constexpr const char* op = "soft_dice_loss";
  detail::check_floating(op, "logits", logits);
  const kernels::ChannelLayout layout = detail::channel_layout(op, logits);
  MED3D_CHECK(options.include_background || layout.channels >= 2, op,
              ": include_background = false needs at least 2 channels, logits are ",
              logits.shape().str());
  MED3D_CHECK(options.smooth >= 0, op, ": smooth must be >= 0, got ", options.smooth);
  const Tensor targets = detail::class_targets(op, logits, labels, std::nullopt);
  return dice_of_probabilities(softmax(logits), targets, layout, options);
}

}  // namespace med3d
