// conv3d: forward is conv3d_fprop; backward computes dx with conv3d_dgrad, dw with
// conv3d_wgrad and db as the sum of dy over samples and voxels, each only where needed.
// CUDA tensors (f32) take the launchers of med3d/kernels/cuda/conv3d.h (engine/ops/conv_cuda.h).
#include "med3d/kernels/cpu/conv3d.h"

#include <algorithm>
#include <array>
#include <mutex>
#include <type_traits>
#include <vector>

#include "engine/ops/conv_cuda.h"
#include "engine/ops/frozen_weights.h"
#include "engine/src/internal.h"
#include "engine/src/op_util.h"
#include "med3d/kernels/conv_params.h"
#include "med3d/kernels/cpu/conv3d_direct.h"
#include "med3d/ops/conv.h"
#include "med3d/tape.h"

namespace med3d {

namespace {

constexpr const char* kOp = "conv3d";

kernels::Dims5 dims5(const Tensor& t) { return {t.dim(0), t.dim(1), t.dim(2), t.dim(3), t.dim(4)}; }

// Devices, dtypes and ranks; the shape arithmetic is checked by kernels::conv3d_params.
void check_inputs(const Tensor& x, const Tensor& w, const Tensor& b) {
  detail::check_floating(kOp, "x", x);
  detail::check_floating(kOp, "w", w);
  detail::check_compatible(kOp, x, "x", w, "w");
  MED3D_CHECK(x.rank() == 5, kOp, ": x must be [N, C, D, H, W], got ", x.shape().str());
  MED3D_CHECK(w.rank() == 5, kOp, ": w must be [K, C/groups, T, R, S], got ", w.shape().str());
  if (!b.defined()) return;
  detail::check_floating(kOp, "b", b);
  detail::check_compatible(kOp, x, "x", b, "b");
  MED3D_CHECK(b.rank() == 1 && b.dim(0) == w.dim(0), kOp, ": b must be [", w.dim(0),
              "] (one value per output channel), got ", b.shape().str());
}

// The column-matrix buffer of the kernels, from the Context's pool.
Tensor scratch_for(const Tensor& like, const kernels::Conv3dParams& p) {
  const int64_t elements = kernels::cpu::conv3d_scratch_elements(p);
  return detail::empty_like(like, {std::max<int64_t>(elements, 1)}, like.dtype());
}

}  // namespace

namespace detail {

const float* frozen_packed_weights(const Tensor& w, const kernels::Conv3dParams& p, kernels::PackFor pass,
                                   int64_t scratch_elements) {
  const std::shared_ptr<PackedWeightCache> cache = w.context().state()->frozen_weights;
  if (!cache || w.dtype() != DType::f32 || !w.device().is_cpu()) return nullptr;
  // By tensor and shape (the batch size aside: the packing does not depend on it). Whether the
  // pass reads packed weights is decided on the first call only; an empty entry records "not".
  const std::array<int64_t, 24> fields = kernels::fields_but_batch(p);
  std::vector<int64_t> key{static_cast<int64_t>(w.id()), static_cast<int64_t>(pass)};
  key.insert(key.end(), fields.begin(), fields.end());
  const std::lock_guard<std::mutex> lock(cache->mutex);
  auto [entry, added] = cache->entries.try_emplace(std::move(key));
  if (added) {
    try {
      const int64_t elements = kernels::cpu::conv3d_packed_weights_elements(p, pass, scratch_elements);
      entry->second.resize(static_cast<std::size_t>(elements));
      if (elements > 0)
        kernels::cpu::conv3d_pack_weights(p, pass, scratch_elements, w.data<float>(), entry->second.data());
    } catch (...) {
      cache->entries.erase(entry);  // no half-made entry for the next call
      throw;
    }
  }
  return entry->second.empty() ? nullptr : entry->second.data();
}

}  // namespace detail

Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv3dOptions& options) {
  check_inputs(x, w, b);
  const kernels::Conv3dParams p = kernels::conv3d_params(
      kOp, dims5(x), dims5(w), options.stride, options.padding, options.dilation, options.groups);
  const Shape y_shape{p.N, p.K, p.Z, p.P, p.Q};
  Tensor y;
  if (x.device().is_cuda()) {
    y = detail::cuda_conv_fprop(p, x, w, b, y_shape);
  } else {
    y = detail::empty_like(x, y_shape, x.dtype());
    detail::dispatch_floating(x.dtype(), kOp, [&]<class T>() {
      Tensor scratch = scratch_for(x, p);
      const T* packed = nullptr;
      if constexpr (std::is_same_v<T, float>)
        packed = detail::frozen_packed_weights(w, p, kernels::PackFor::fprop, scratch.numel());
      kernels::cpu::conv3d_fprop<T>(p, x.data<T>(), w.data<T>(),
                                    b.defined() ? b.data<T>() : nullptr, y.data<T>(),
                                    scratch.data<T>(), scratch.numel(), packed);
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
      if (g.needs_grad[0]) grads[0] = detail::cuda_conv_dgrad(p, dy, w, {p.N, p.C, p.D, p.H, p.W});
      if (g.needs_grad[1])
        grads[1] = detail::cuda_conv_wgrad(p, x, dy, {p.K, p.channels_per_group(), p.T, p.R, p.S});
      if (g.needs_grad[2]) grads[2] = detail::cuda_channel_bias_grad(dy, p.N, p.K, p.output_spatial());
      return grads;
    }
    detail::dispatch_floating(dy.dtype(), kOp, [&]<class T>() {
      if (g.needs_grad[0] || g.needs_grad[1]) {
        Tensor scratch = scratch_for(dy, p);
        if (g.needs_grad[0]) {
          grads[0] = detail::empty_like(dy, {p.N, p.C, p.D, p.H, p.W}, dy.dtype());
          kernels::cpu::conv3d_dgrad<T>(p, dy.data<T>(), w.data<T>(), grads[0].data<T>(),
                                        scratch.data<T>(), scratch.numel());
        }
        if (g.needs_grad[1]) {
          grads[1] =
              detail::empty_like(dy, {p.K, p.channels_per_group(), p.T, p.R, p.S}, dy.dtype());
          kernels::cpu::conv3d_wgrad<T>(p, x.data<T>(), dy.data<T>(), grads[1].data<T>(),
                                        scratch.data<T>(), scratch.numel());
        }
      }
      if (g.needs_grad[2]) {
        grads[2] = detail::empty_like(dy, {p.K}, dy.dtype());
        kernels::cpu::channel_bias_grad<T>(p.N, p.K, p.output_spatial(), dy.data<T>(),
                                           grads[2].data<T>());
      }
    });
    return grads;
  });
  return y;
}

}  // namespace med3d
