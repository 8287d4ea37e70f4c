// Inverted dropout: forward and backward side by side. Backward regenerates the mask from the
// (seed, offset) pair the forward drew, so nothing but two integers is saved.
#include "engine/src/op_util.h"
#include "med3d/context.h"
#include "med3d/kernels/cpu/dropout.h"
#include "med3d/kernels/cuda/dropout.h"
#include "med3d/ops/nn.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;

namespace {

// out = in with the mask of (seed, offset) applied; on CUDA bit-identical to the CPU loop.
Tensor apply_mask(const Tensor& in, double p, uint64_t seed, uint64_t offset) {
  Tensor out = detail::empty_like(in);
  if (in.device().is_cuda()) {
    if constexpr (detail::kWithCuda)
      kernels::cuda::dropout_apply(detail::cuda_stream(in), detail::device_data<float>(in),
                                   detail::device_data<float>(out), in.numel(), p, seed, offset);
    return out;
  }
  dispatch_floating(in.dtype(), "dropout", [&]<class T>() {
    kernels::cpu::dropout_apply(in.data<T>(), out.data<T>(), in.numel(), p, seed, offset);
  });
  return out;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training) {
  detail::check_floating("dropout", "x", x);
  // Written so that NaN fails too.
  MED3D_CHECK(p >= 0 && p < 1, "dropout: p must lie in [0, 1), got ", p,
              "; p is the probability of zeroing an element");
  if (!training || p == 0) return x;
  Context context = x.context();
  const uint64_t seed = context.seed();
  const uint64_t offset = context.take_random_offset(static_cast<uint64_t>(x.numel()));
  Tensor y = apply_mask(x, p, seed, offset);
  record("dropout", {x}, {y}, {}, [p, seed, offset](const BackwardArgs& g) {
    return std::vector<Tensor>{apply_mask(g.dy[0], p, seed, offset)};
  });
  return y;
}

}  // namespace med3d
