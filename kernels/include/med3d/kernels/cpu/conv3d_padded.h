// Direct f32 convolution of convs with few input channels and many taps: the stem of Med3D's
// ResNets (1 channel, 7x7x7, stride 2, padding 3). There the implicit GEMM spends most of its time
// gathering its column matrix (343 strided reads per output voxel), while the whole input fits in
// cache. Instead the input is copied once with its padding as zeros, so every tap of every tile
// reads inside, and a tile of a few consecutive output voxels of a plane (3 on AVX2) x a panel of
// 32 filters (in the vector lanes) sums all channels and taps in registers: no gather. fprop
// skips the depth and height taps that read only padding for the whole tile; the width taps'
// zeros are multiplied (3% more products on the stem than land inside). The sums go through a
// per-thread plane buffer, transposed into y in blocks.
// wgrad puts the filters in the lanes as well: dy is repacked with the filters innermost, and a
// block of consecutive width taps sums over each output plane; planes are then added up.
// dgrad (few output channels) puts input voxels in the lanes: per stride phase of dx it is a
// unit-stride correlation of dy, zero-padded (each thread the planes its share of dx reads), with
// that phase's taps.
// x [N, C, D, H, W], w [K, C, T, R, S], y and dy [N, K, Z, P, Q] contiguous, any strides,
// paddings and dilations, one group. fprop overwrites y, dgrad dx, wgrad dw. Each allocates its
// own buffers (the padded input or dy, packed weights or dy, partial sums), but dgrad's padded dy
// goes into the caller's scratch where it fits; each output element is summed in a fixed order,
// so results are deterministic.
#pragma once

#include "med3d/kernels/conv_params.h"

namespace med3d::kernels::cpu {

// Whether the padded kernels take this conv (f32 callers): one group, at most 4 input channels,
// at least 27 taps.
bool conv3d_padded_applies(const Conv3dParams& p);

// y = conv(x, w) without bias. Overwrites y. Requires conv3d_padded_applies(p).
void conv3d_padded_fprop(const Conv3dParams& p, const float* x, const float* w, float* y);

// The same y in channel groups (conv3d_direct.h's layout, as the line tiles read and write it):
// the bits of conv3d_padded_fprop, written without the transpose into NCDHW. Overwrites y's groups
// (not their pitch tails; the filters past K in the last group as 0).
void conv3d_padded_fprop_grouped(const Conv3dParams& p, const float* x, const float* w, float* y);

// dx = dgrad of the conv above. Overwrites dx [N, C, D, H, W]. Requires conv3d_padded_applies(p).
// Pads dy into `scratch` (overwritten) where its scratch_elements hold a thread's slab of at
// least one plane each, else into a buffer of its own.
void conv3d_padded_dgrad(const Conv3dParams& p, const float* dy, const float* w, float* dx, float* scratch = nullptr,
                         int64_t scratch_elements = 0);

// dw = wgrad of the conv above, summed over samples. Overwrites dw [K, C, T, R, S]. Requires
// conv3d_padded_applies(p).
void conv3d_padded_wgrad(const Conv3dParams& p, const float* x, const float* dy, float* dw);

}  // namespace med3d::kernels::cpu
