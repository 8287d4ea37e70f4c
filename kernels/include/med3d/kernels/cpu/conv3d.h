// CPU kernels of the 3D convolution described by a Conv3dParams `p` (see conv_params.h):
//   x [N, C, D, H, W], w [K, C/groups, T, R, S], y [N, K, Z, P, Q], bias [K], all contiguous.
// Method: in f32 AVX-512 builds, 3x3x3 convs with unit strides and dilations and padding 1 run
// all three passes on the Winograd kernels of conv3d_winograd.h when their scratch fits the
// budget. Other f32 "same" convs (unit strides, one group, output extent = input extent, as the
// dilated convs of Med3D) run all three passes on the direct kernels of conv3d_direct.h
// (the input read in place through each tap's flat shift, padded taps skipped per tile), and
// f32 fprop of strided convs with >= 16 channels on their line tiles where they apply
// (conv3d_direct_fprop_applies); in vector builds convs with at most 4 input channels and >= 27
// taps (the stem) run all three passes on the padded kernels of conv3d_padded.h.
// Otherwise, per sample and group, a GEMM multiplies the weights with the column matrix
// [C/groups * T*R*S, voxels] whose rows are the input read through each tap. In f32 that GEMM
// is implicit (gemm_f32 with a GemmSource): the column matrix is gathered straight into the
// GEMM's packed panels and never stored, for fprop and wgrad and, with unit strides, for dgrad
// too (a forward conv of dy with the kernel flipped). In f64 (and f32 dgrad with strides),
// vol2col stores blocks of output lines of it and Eigen multiplies them (col2vol for dgrad).
// The caller provides the stored column matrix as `scratch` of `scratch_elements` (contents
// ignored and overwritten); blocks of output lines are sized to fit it, so
// conv3d_scratch_elements(p) bounds the memory of high-resolution layers. A 1x1x1
// conv with stride 1 and no padding multiplies the input directly and needs no scratch (in f32
// its wgrad with at most 4 filters, the classifier's, takes dot products of the input's channel
// rows with dy's instead of a GEMM). Kernel
// taps that read only padding for every output voxel (large dilations on small maps) get no
// column rows: their weights are gathered out (into the scratch) and the GEMMs skip them.
// When most (output voxel, tap) pairs read padding (dilated convs on small maps: under 80% of
// the nominal FLOPs effective) and both channel counts are >= 16 with groups = 1, each live tap
// is instead one GEMM over exactly the output box whose inputs lie inside (gathered into the
// scratch, then added into the output): no zero is multiplied. Its scratch is the live taps'
// weights [live, K, C] plus two buffers of max(C, K) x a chunk of box planes. In f32 fprop and
// dgrad each tap's weights are packed once per pass and its box is gathered straight into the
// GEMM's panels (only the GEMM's result goes through the scratch).
// Results are deterministic: every reduction runs in a fixed order, and parallel loops write
// disjoint elements.
// Transposed convs use these same kernels with the roles swapped (see conv_transpose3d.cpp).
#pragma once

#include <cstdint>

#include "med3d/kernels/conv_params.h"

namespace med3d::kernels::cpu {

// Default bound of the column matrix: 2^23 elements (32 MiB in f32), large enough for
// efficient GEMMs, small enough that early high-resolution layers do not need gigabytes.
inline constexpr int64_t kConvScratchBudget = int64_t(1) << 23;

// Scratch elements for the three passes: blocks of whole output lines within `budget`, but at
// least one line (C/groups * live taps * Q elements), plus K * C/groups * live taps gathered
// weights when some taps are dead; 0 for the 1x1x1 fast path. The per-tap path is used when it
// fits `budget` (chunks of box planes within it); otherwise these vol2col sizes apply. Convs
// the direct kernels take get at least their packed weights (conv3d_direct_scratch_elements),
// those the Winograd kernels take theirs (conv3d_winograd_scratch_elements) where it is within
// `budget` (AVX-512 builds).
int64_t conv3d_scratch_elements(const Conv3dParams& p, int64_t budget = kConvScratchBudget);

// Weights packed once for a pass run many times with the same weights (inference over many
// windows; a benchmark timing the kernel alone): where pass `pass` of p with this scratch reads
// weights packed in advance, the floats of conv3d_pack_weights' buffer, which fprop or dgrad then
// reads instead of packing w at every call; else 0 (that pass's kernel reads w as it is, or packs
// it in a way not kept between calls: pass null). They are read by the direct kernels' fprop and
// dgrad (conv3d_direct.h) and by the dgrad GEMMs of single-group pointwise convs (not those of 4
// or fewer channels or filters) and of strided convs the direct kernels leave (the col2vol path:
// the head's k2 s2 transposed conv, whose forward pass is this dgrad).
int64_t conv3d_packed_weights_elements(const Conv3dParams& p, PackFor pass, int64_t scratch_elements);

// Overwrites `packed` (conv3d_packed_weights_elements(p, pass, scratch_elements) floats, which
// must not be 0) with w [K, C/groups, T, R, S] packed for pass `pass` of p with that scratch. The
// packed copy does not follow later changes to w: pack again.
void conv3d_pack_weights(const Conv3dParams& p, PackFor pass, int64_t scratch_elements, const float* w,
                         float* packed);

// y = conv(x, w) + bias (bias may be null). Overwrites y. `packed`: null, or w packed for fprop
// with this scratch size (conv3d_pack_weights; packed for another shape, pass or kernel, or passed
// where the pass reads no packed weights, throws).
template <class T>
void conv3d_fprop(const Conv3dParams& p, const T* x, const T* w, const T* bias, T* y, T* scratch,
                  int64_t scratch_elements, const T* packed = nullptr);

// dx = d(sum(y * dy)) / dx for the conv above. Overwrites dx [N, C, D, H, W]. `packed` as for
// fprop, packed for dgrad.
template <class T>
void conv3d_dgrad(const Conv3dParams& p, const T* dy, const T* w, T* dx, T* scratch,
                  int64_t scratch_elements, const T* packed = nullptr);

// dw = d(sum(y * dy)) / dw, summed over samples in order. Overwrites dw [K, C/groups, T, R, S].
template <class T>
void conv3d_wgrad(const Conv3dParams& p, const T* x, const T* dy, T* dw, T* scratch,
                  int64_t scratch_elements);

// y[n, c, :] += bias[c] for y [N, channels, spatial].
template <class T>
void add_channel_bias(int64_t N, int64_t channels, int64_t spatial, const T* bias, T* y);

// db[c] = sum over n and spatial of dy[n, c, :] (accumulated in double). Overwrites db.
template <class T>
void channel_bias_grad(int64_t N, int64_t channels, int64_t spatial, const T* dy, T* db);

}  // namespace med3d::kernels::cpu
