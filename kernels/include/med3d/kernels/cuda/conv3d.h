// CUDA launchers of the 3D convolution described by a Conv3dParams `p` (med3d/kernels/conv_params.h),
// f32, contiguous device pointers, queued on `stream`:
//   x [N, C, D, H, W], w [K, C/groups, T, R, S], y and dy [N, K, Z, P, Q], bias and db [K].
//   conv3d_fprop      overwrites y  = conv(x, w) + bias (bias may be null; fused in the kernel)
//   conv3d_dgrad      overwrites dx [N, C, D, H, W]; `workspace` must hold
//                     conv3d_dgrad_workspace_elements(p) floats (null when that is 0)
//   conv3d_wgrad      overwrites dw [K, C/groups, T, R, S]; `workspace` must hold
//                     conv3d_wgrad_workspace_elements(p) floats (null when that is 0)
//   conv3d_bias_grad  overwrites db [K] (sum of dy over samples and voxels, in double)
//   add_channel_bias  y[n, c, :] += bias[c] for y [N, channels, spatial] (in place)
// Transposed convs use these on their equivalent forward conv (forward = dgrad), as the CPU does.
// The tiled implicit-GEMM kernels run wherever their launch geometry fits (conv3d_tiled.cuh),
// the direct kernels elsewhere; both sum in a fixed order, so results are deterministic.
// No launcher writes outside its output and workspace; empty outputs launch nothing.
#pragma once

#include <cstdint>

#include "med3d/kernels/conv_params.h"
#include "med3d/kernels/cuda/runtime.h"

namespace med3d::kernels::cuda {

void conv3d_fprop(Stream stream, const Conv3dParams& p, const float* x, const float* w,
                  const float* bias, float* y);
int64_t conv3d_dgrad_workspace_elements(const Conv3dParams& p);
void conv3d_dgrad(Stream stream, const Conv3dParams& p, const float* dy, const float* w, float* dx,
                  float* workspace);
int64_t conv3d_wgrad_workspace_elements(const Conv3dParams& p);
void conv3d_wgrad(Stream stream, const Conv3dParams& p, const float* x, const float* dy, float* dw,
                  float* workspace);
void conv3d_bias_grad(Stream stream, int64_t N, int64_t channels, int64_t spatial, const float* dy,
                      float* db);
void add_channel_bias(Stream stream, int64_t N, int64_t channels, int64_t spatial,
                      const float* bias, float* y);

}  // namespace med3d::kernels::cuda
