// Direct f32 convolution of "same" convs: unit strides, one group, and output extents equal to
// the input extents (padding dilation * (kernel - 1) / 2 on every axis), as every 3x3x3 conv of
// Med3D's ResNets and DenseASPP's dilated branches. Then output voxel v (flat index within a
// sample) reads input voxel v + shift(tap) through every tap, so the input is read in place: no
// column matrix and no packing of it. A tile of MR output channels x NV*16 consecutive voxels
// accumulates in registers over (input channel, live tap); each tap is read with a per-lane
// mask (lanes whose shifted voxel leaves the volume along some axis read 0), and a tap whose
// mask is empty for the whole tile is skipped, which is most taps of dilated convs on small maps.
// Planes of up to 64 voxels (8x8) put 32 filters in the lanes instead, on tiles of 8 voxels of
// one line, where each tap multiplies exactly the voxels it reads inside for (no lane wasted on
// width-shifted taps). wgrad vectorises over voxels, a block of filters x channels per tap.
// x [N, C, V], w [K, C, T, R, S], y [N, K, V] contiguous; only the weights are repacked (fprop
// and dgrad, once per call, into the caller's scratch: the live taps' weights, MR output
// channels per panel). Each output element is summed by one thread in a fixed order, so
// results are deterministic.
#pragma once

#include "med3d/kernels/conv_params.h"

namespace med3d::kernels::cpu {

// Whether the direct kernels take this conv (f32 callers; see the contract above). 1x1x1 convs
// are left to the GEMM on the stored input.
bool conv3d_direct_applies(const Conv3dParams& p);

// Scratch elements the two passes below need (their packed weights).
int64_t conv3d_direct_scratch_elements(const Conv3dParams& p);

// y = conv(x, w) without bias. Overwrites y [N, K, V] and the scratch. Requires conv3d_direct_applies(p).
void conv3d_direct_fprop(const Conv3dParams& p, const float* x, const float* w, float* y, float* scratch,
                         int64_t scratch_elements);

// dx = dgrad of the conv above: the direct conv of dy with the kernel flipped and the channel
// roles swapped (a "same" conv again). Overwrites dx [N, C, V] and the scratch. Requires
// conv3d_direct_applies(p).
void conv3d_direct_dgrad(const Conv3dParams& p, const float* dy, const float* w, float* dx, float* scratch,
                         int64_t scratch_elements);

// dw = wgrad of the conv above, summed over samples: per tap, filter and channel the products of
// dy and the shifted x over the voxels where the tap reads inside. Overwrites dw [K, C, T, R, S]
// (dead taps get 0). Requires conv3d_direct_applies(p).
void conv3d_direct_wgrad(const Conv3dParams& p, const float* x, const float* dy, float* dw);

}  // namespace med3d::kernels::cpu
