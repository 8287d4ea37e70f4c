// The CUDA passes of the conv-family ops (conv3d, conv_transpose3d; linear uses the bias ones)
// over the launchers of med3d/kernels/cuda/conv3d.h. Tensors are f32 on one CUDA Context (the
// ops check that); each function allocates its result on the device of its first tensor
// argument, with the given shape, and returns it (an undefined Tensor in builds without CUDA,
// where no CUDA tensor can exist). Not installed.
#pragma once

#include <cstdint>

#include "engine/src/op_util.h"
#include "med3d/kernels/conv_params.h"
#include "med3d/kernels/cuda/conv3d.h"

namespace med3d::detail {

// A split-K workspace of `elements` floats on the device of `like` (undefined when 0), and the
// pointer a launcher takes for it (null when undefined).
inline Tensor cuda_workspace(const Tensor& like, int64_t elements) {
  return elements > 0 ? empty_like(like, {elements}, like.dtype()) : Tensor();
}
inline float* workspace_data(const Tensor& workspace) {
  return workspace.defined() ? device_data<float>(workspace) : nullptr;
}

// conv(x, w) + bias for the forward conv p (bias may be undefined).
inline Tensor cuda_conv_fprop(const kernels::Conv3dParams& p, const Tensor& x, const Tensor& w,
                              const Tensor& bias, const Shape& shape) {
  Tensor y;
  if constexpr (kWithCuda) {
    y = empty_like(x, shape, x.dtype());
    kernels::cuda::conv3d_fprop(cuda_stream(x), p, device_data<float>(x), device_data<float>(w),
                                bias.defined() ? device_data<float>(bias) : nullptr,
                                device_data<float>(y));
  }
  return y;
}

// The input gradient of the forward conv p, with its split-K workspace from the Context.
inline Tensor cuda_conv_dgrad(const kernels::Conv3dParams& p, const Tensor& dy, const Tensor& w,
                              const Shape& shape) {
  Tensor dx;
  if constexpr (kWithCuda) {
    dx = empty_like(dy, shape, dy.dtype());
    const Tensor workspace = cuda_workspace(dy, kernels::cuda::conv3d_dgrad_workspace_elements(p));
    kernels::cuda::conv3d_dgrad(cuda_stream(dy), p, device_data<float>(dy), device_data<float>(w),
                                device_data<float>(dx), workspace_data(workspace));
  }
  return dx;
}

// The weight gradient of the forward conv p, with its split-K workspace from the Context.
inline Tensor cuda_conv_wgrad(const kernels::Conv3dParams& p, const Tensor& x, const Tensor& dy,
                              const Shape& shape) {
  Tensor dw;
  if constexpr (kWithCuda) {
    dw = empty_like(x, shape, x.dtype());
    const Tensor workspace = cuda_workspace(x, kernels::cuda::conv3d_wgrad_workspace_elements(p));
    kernels::cuda::conv3d_wgrad(cuda_stream(x), p, device_data<float>(x), device_data<float>(dy),
                                device_data<float>(dw), workspace_data(workspace));
  }
  return dw;
}

// db [channels] = sum of dy [N, channels, spatial] over samples and voxels.
inline Tensor cuda_channel_bias_grad(const Tensor& dy, int64_t N, int64_t channels,
                                     int64_t spatial) {
  Tensor db;
  if constexpr (kWithCuda) {
    db = empty_like(dy, {channels}, dy.dtype());
    kernels::cuda::conv3d_bias_grad(cuda_stream(dy), N, channels, spatial, device_data<float>(dy),
                                    device_data<float>(db));
  }
  return db;
}

// y [N, channels, spatial] += bias [channels], in place.
inline void cuda_add_channel_bias(Tensor& y, const Tensor& bias, int64_t N, int64_t channels,
                                  int64_t spatial) {
  if constexpr (kWithCuda)
    kernels::cuda::add_channel_bias(cuda_stream(y), N, channels, spatial, device_data<float>(bias),
                                    device_data<float>(y));
}

}  // namespace med3d::detail
