// Winograd F(2x2x2, 3x3x3) f32 convolution of 3x3x3 "same" convs: unit strides and dilations,
// padding 1, one group (Med3D's ResNet layer1/layer2 convs and the segmentation head's 3x3x3).
// The output is cut into 2x2x2 tiles; each tile's 4x4x4 input patch (zeros outside the volume)
// and each (filter, channel)'s kernel are transformed to 64 positions, where the conv becomes
// 64 independent products [tiles x C] x [C x K], and each tile's 64 position sums transform back
// to its 8 outputs. That is 64 multiply-adds per (tile, channel, filter) for 8 outputs, where the
// direct conv takes 216 (8 x 27): a third of the products, for transforms that cost a few
// additions per element. The transforms' constants are 0, +-1 and +-1/2, so the results stay
// within a few ulps of the direct sums (tests: 1e-5 of the norm against the f64 kernels).
// x [N, C, D, H, W], w [K, C, 3, 3, 3], y [N, K, D, H, W] contiguous. fprop overwrites y; dgrad
// overwrites dx [N, C, D, H, W] (the same transform with the kernel flipped and the channel
// roles swapped). The caller's scratch holds the transformed weights (64 x C x K floats, channels
// and filters rounded up to whole vectors) and the input and output with channels innermost;
// each thread allocates its block of transformed tiles. Work items (blocks of tiles) go to whichever thread is free; each output
// is summed by one thread in a fixed order that does not depend on the thread count.
#pragma once

#include "med3d/kernels/conv_params.h"

namespace med3d::kernels::cpu {

// Whether the Winograd kernels take this conv (see the contract above).
bool conv3d_winograd_applies(const Conv3dParams& p);

// Scratch elements both passes need (0 where the kernels do not apply).
int64_t conv3d_winograd_scratch_elements(const Conv3dParams& p);

// y = conv(x, w) without bias. Overwrites y and the scratch. Requires conv3d_winograd_applies(p).
void conv3d_winograd_fprop(const Conv3dParams& p, const float* x, const float* w, float* y, float* scratch,
                           int64_t scratch_elements);

// dx = dgrad of the conv above from dy [N, K, D, H, W]. Overwrites dx and the scratch. Requires
// conv3d_winograd_applies(p).
void conv3d_winograd_dgrad(const Conv3dParams& p, const float* dy, const float* w, float* dx, float* scratch,
                           int64_t scratch_elements);

// dw [K, C, 3, 3, 3] = the weights' gradient of the conv above from x and dy (G^T dU G, dU at each
// position summed over the tiles). Overwrites dw and the scratch. Requires
// conv3d_winograd_applies(p).
void conv3d_winograd_wgrad(const Conv3dParams& p, const float* x, const float* dy, float* dw, float* scratch,
                           int64_t scratch_elements);

}  // namespace med3d::kernels::cpu
