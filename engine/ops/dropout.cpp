// Inverted dropout: forward and backward side by side. Backward regenerates the mask from the
// (seed, offset) pair the forward drew, so nothing but two integers is saved.
#include "engine/src/op_util.h"
#include "med3d/context.h"
#include "med3d/kernels/cpu/dropout.h"
#include "med3d/ops/nn.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;

Tensor dropout(const Tensor& x, double p, bool training) {
  detail::check_cpu_floating("dropout", "x", x);
  // Written so that NaN fails too.
  MED3D_CHECK(p >= 0 && p < 1, "dropout: p must lie in [0, 1), got ", p,
              "; p is the probability of zeroing an element");
  if (!training || p == 0) return x;
  Context context = x.context();
  const uint64_t seed = context.seed();
  const uint64_t offset = context.take_random_offset(static_cast<uint64_t>(x.numel()));
  Tensor y = detail::empty_like(x);
  dispatch_floating(x.dtype(), "dropout", [&]<class T>() {
    kernels::cpu::dropout_apply(x.data<T>(), y.data<T>(), x.numel(), p, seed, offset);
  });
  record("dropout", {x}, {y}, {}, [p, seed, offset](const BackwardArgs& g) {
    const Tensor& dy = g.dy[0];
    Tensor dx = detail::empty_like(dy);
    dispatch_floating(dy.dtype(), "dropout backward", [&]<class T>() {
      kernels::cpu::dropout_apply(dy.data<T>(), dx.data<T>(), dy.numel(), p, seed, offset);
    });
    return std::vector<Tensor>{dx};
  });
  return y;
}

}  // namespace med3d
