// Per-element update math of the optimisers, shared by the CPU loops (engine/src/optim.cpp)
// and a later CUDA backend, which can fuse a whole update into one kernel per parameter.
//
// The arithmetic mirrors torch.optim (PyTorch 1.13, single-tensor path) operation by
// operation: the scalars are computed in double on the host, as Python does, and cast once to
// the element type T, as PyTorch does when a Python float meets a tensor; then each in-place
// tensor op becomes one line below in the same evaluation order. Each function overwrites
// `param` and its state elements in place; nothing else is touched.
#pragma once

#include <cmath>
#include <cstdint>

#include "med3d/kernels/hd.h"

namespace med3d::kernels {

// torch.optim.SGD. `momentum_buffer` is used only when momentum != 0; `first_update` says the
// buffer does not exist yet, and PyTorch then starts it from the gradient itself (no dampening).
template <class T>
struct SgdScalars {
  T neg_lr;               // -lr
  T weight_decay;         // L2 term added to the gradient
  T momentum;
  T one_minus_dampening;  // 1 - dampening
  bool nesterov;
  bool first_update;
};

template <class T>
SgdScalars<T> make_sgd_scalars(double lr, double weight_decay, double momentum, double dampening,
                               bool nesterov, bool first_update) {
  return {static_cast<T>(-lr), static_cast<T>(weight_decay), static_cast<T>(momentum),
          static_cast<T>(1 - dampening), nesterov, first_update};
}

template <class T>
MED3D_HD inline void sgd_update(const SgdScalars<T>& s, T& param, T grad, T& momentum_buffer) {
  T d = grad;
  if (s.weight_decay != T(0)) d = d + s.weight_decay * param;  // d_p.add(param, alpha=wd)
  if (s.momentum != T(0)) {
    momentum_buffer =
        s.first_update ? d : momentum_buffer * s.momentum + s.one_minus_dampening * d;
    d = s.nesterov ? d + s.momentum * momentum_buffer : momentum_buffer;
  }
  param = param + s.neg_lr * d;  // param.add_(d_p, alpha=-lr)
}

// torch.optim.Adam (L2 weight decay added to the gradient) and torch.optim.AdamW (decoupled
// decay: the parameter shrinks by lr * weight_decay before the moment update).
template <class T>
struct AdamScalars {
  T decay_factor;     // AdamW: 1 - lr * weight_decay; Adam: 1
  T l2_weight_decay;  // Adam: weight_decay; AdamW: 0
  T beta1, one_minus_beta1;
  T beta2, one_minus_beta2;
  T bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  T eps;
  T neg_step_size;          // -lr / (1 - beta1^step)
};

// `step` counts this update too (1 on the first update of a parameter).
template <class T>
AdamScalars<T> make_adam_scalars(double lr, double beta1, double beta2, double eps,
                                 double weight_decay, bool decoupled, int64_t step) {
  const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(step));
  return {static_cast<T>(decoupled ? 1 - lr * weight_decay : 1.0),
          static_cast<T>(decoupled ? 0.0 : weight_decay),
          static_cast<T>(beta1),
          static_cast<T>(1 - beta1),
          static_cast<T>(beta2),
          static_cast<T>(1 - beta2),
          static_cast<T>(std::sqrt(bias_correction2)),
          static_cast<T>(eps),
          static_cast<T>(-(lr / bias_correction1))};
}

template <class T>
MED3D_HD inline void adam_update(const AdamScalars<T>& s, T& param, T grad, T& exp_avg,
                                 T& exp_avg_sq) {
  if (s.decay_factor != T(1)) param = param * s.decay_factor;            // param.mul_(1 - lr*wd)
  if (s.l2_weight_decay != T(0)) grad = grad + s.l2_weight_decay * param;  // grad.add(param, alpha=wd)
  exp_avg = exp_avg * s.beta1 + s.one_minus_beta1 * grad;
  exp_avg_sq = exp_avg_sq * s.beta2 + s.one_minus_beta2 * grad * grad;  // addcmul_(grad, grad, value)
  const T denom = std::sqrt(exp_avg_sq) / s.bias_correction2_sqrt + s.eps;
  param = param + s.neg_step_size * exp_avg / denom;  // addcdiv_(exp_avg, denom, value=-step_size)
}

}  // namespace med3d::kernels
