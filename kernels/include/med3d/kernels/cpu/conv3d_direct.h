// Direct f32 convolution of "same" convs: unit strides, one group, and output extents equal to
// the input extents (padding dilation * (kernel - 1) / 2 on every axis), as every 3x3x3 conv of
// Med3D's ResNets and DenseASPP's dilated branches. Then output voxel v (flat index within a
// sample) reads input voxel v + shift(tap) through every tap, so the input is read in place: no
// column matrix and no packing of it.
// Two fprop/dgrad tilings (kernels/cpu/simd.h gives the vector: 16 lanes under AVX-512, 8 under
// AVX2 + FMA, portable loops with AVX-512's shapes otherwise):
// - voxel lanes: a tile of MR output channels x NV vectors of consecutive voxels accumulates in
//   registers over (input channel, live tap); each tap is read with a per-lane mask (lanes whose
//   shifted voxel leaves the volume read 0), and a tap whose mask is empty for the whole tile is
//   skipped, which is most taps of dilated convs on small maps;
// - filter lanes ("line tiles"): a tile is a few voxels of one output line x 32 filters
//   (AVX-512: 8 voxels; AVX2: 4 voxels x 24 filters), and each tap multiplies exactly the
//   voxels it reads inside for (no lane wasted on width-shifted taps). Their input reads are
//   broadcasts of single voxels, so fprop also takes strided convs on them (the input voxel of
//   output voxel j is x0 + shift + j * stride), and dgrad a strided conv's classes of dx positions
//   (each position's residues modulo the strides), whose taps read dy at unit stride.
// Vector builds take the line tiles everywhere (measured faster under AVX2 and AVX-512); the
// portable loops take them on planes of up to 64 voxels (8x8), voxel lanes above. wgrad puts
// filters in the lanes too: dy is repacked with the filters innermost and a block of filters x
// channels sums each tap over exact line segments (strided convs: segments that read x at the
// strides).
// x [N, C, D, H, W], w [K, C, T, R, S], y [N, K, Z, P, Q] contiguous; fprop and dgrad repack the
// weights (once per call, into the caller's scratch: the live taps' weights, a panel of output
// channels at a time; on the line tiles, weights of over 2^17 elements are packed a panel at a
// time by the thread that runs it, into its part of the scratch) and, on the line tiles, their
// input into groups of 8 channels interleaved voxel by voxel (the input's size rounded up to
// whole groups: from 32 MiB into the scratch after the weights, else into a buffer of their
// own); wgrad only dy (into its own buffer,
// N * K * V floats rounded up to a panel). A caller that runs fprop or dgrad many times with the
// same weights can pack them once (conv3d_direct_pack_weights) and pass them in: then the pass
// reads them as they are, as oneDNN reads weights already in its own format. Work items go to whichever thread is free;
// each output element is summed by one thread in a fixed order, so results are deterministic
// and do not depend on the thread count.
#pragma once

#include "med3d/kernels/conv_params.h"

namespace med3d::kernels::cpu {

// Whether the direct kernels take this conv (f32 callers; see the contract above). 1x1x1 convs
// are left to the GEMM on the stored input.
bool conv3d_direct_applies(const Conv3dParams& p);

// Whether conv3d_direct_fprop takes this conv: the convs above, and on the line tiles (vector
// builds: every plane; portable: output planes of up to 64 voxels) also single-group convs with
// other paddings, any depth and height strides and a width stride of at most 2 (layer 2's
// stride-2 3x3x3 conv), from 16 input channels, whose taps overlap (not k2 s2: the GEMM's); and
// on the line tiles 1x1x1 convs from 16 channels and 16 filters (the dispatcher, conv3d_fprop,
// still gives those to the GEMM on NCDHW; in channel groups the line tiles need no packing of x).
bool conv3d_direct_fprop_applies(const Conv3dParams& p);

// Whether conv3d_direct_dgrad takes this conv: the convs above, and on the line tiles (vector
// builds: every plane; portable: input planes of up to 64 voxels) single-group strided convs with
// any paddings, dilations and output paddings, from 16 channels and 16 filters, whose taps overlap
// (layer 2's stride-2 conv, k3 s2 transposed convs; not k2 s2: the GEMM's): dx's positions split
// into classes by their residues modulo the strides, each a direct conv of dy with its own taps at
// unit stride; and the 1x1x1 convs fprop takes.
bool conv3d_direct_dgrad_applies(const Conv3dParams& p);

// Whether conv3d_direct_wgrad takes this conv: the convs above, and single-group strided convs
// with a width stride of at most 2, from 16 channels and 16 filters, whose taps overlap (layer 2's
// stride-2 conv; the segments of each tap's lines then read x at the strides).
bool conv3d_direct_wgrad_applies(const Conv3dParams& p);

// Scratch elements the passes below need (their packed weights and, on the line tiles, their
// grouped input).
int64_t conv3d_direct_scratch_elements(const Conv3dParams& p);

// Floats of the weights packed for pass `pass` of p (the layout the pass otherwise makes in its
// scratch at every call, plus a header that ties them to p's shape and the pass; the batch size
// may differ). Requires that the pass applies (conv3d_direct_fprop_applies / _dgrad_applies).
int64_t conv3d_direct_packed_elements(const Conv3dParams& p, PackFor pass);

// Overwrites `packed` (conv3d_direct_packed_elements(p, pass) floats) with w [K, C, T, R, S]
// packed for that pass. The packed copy does not follow later changes to w: pack again.
void conv3d_direct_pack_weights(const Conv3dParams& p, PackFor pass, const float* w, float* packed);

// Every buffer of weights packed in advance (conv3d_direct_pack_weights, conv3d_pack_weights of
// conv3d.h) opens with this many floats: a tag of the conv's shape (not its batch size), the pass
// and the kernel whose layout follows.
inline constexpr int64_t kPackedWeightsHeader = 16;
enum class PackedLayout : uint32_t { direct = 0, gemm = 1 };
// Overwrites packed[0, kPackedWeightsHeader) with that tag.
void write_packed_weights_header(const Conv3dParams& p, PackFor pass, PackedLayout layout, float* packed);
// The layout after the header (null for null), or throws med3d::Error naming op where the tag is
// not this conv's, pass's and layout's (or there is none).
const float* packed_weights_layout(const char* op, const Conv3dParams& p, PackFor pass, PackedLayout layout,
                                   const float* packed);

// y = conv(x, w) without bias. Overwrites y [N, K, Z, P, Q] and the scratch. Requires
// conv3d_direct_fprop_applies(p). With `packed` (conv3d_direct_pack_weights for p and fprop) the
// weights are read from it and w is not read; a buffer packed for another shape or pass throws.
void conv3d_direct_fprop(const Conv3dParams& p, const float* x, const float* w, float* y, float* scratch,
                         int64_t scratch_elements, const float* packed = nullptr);

// dx = dgrad of the conv above: the direct conv of dy with the kernel flipped and the channel
// roles swapped (a "same" conv again; a strided conv's per class of dx positions). Overwrites dx
// [N, C, D, H, W] and the scratch. Requires conv3d_direct_dgrad_applies(p). `packed` as for
// fprop, packed for dgrad.
void conv3d_direct_dgrad(const Conv3dParams& p, const float* dy, const float* w, float* dx, float* scratch,
                         int64_t scratch_elements, const float* packed = nullptr);

// --- activations in channel groups: the line tiles' own layout ---------------------------
// The line tiles read their input in groups of 8 channels interleaved voxel by voxel, and copy an
// NCDHW input into that layout at every call; their sums come out 32 filters per voxel and are
// transposed back into NCDHW. A caller that chains such convs (or benchmarks them as oneDNN runs
// its blocked formats) can keep the activations in the groups: no copy in, no transpose out.
// Sample n's channel c at voxel v (of `voxels` per sample) lies at
// [(n * groups + c / 8) * pitch + v * 8 + c % 8], groups = ceil(C / 8), pitch =
// conv3d_group_pitch(voxels): voxels * 8 floats, 16 more where that would span an even number of
// 64-byte lines, so that groups read in turn fall into different L1 sets (a multiple of 8 floats:
// every voxel's 8 channels start on 32 bytes when the buffer does). The floats past voxels * 8 in
// a group are neither read nor written by the passes (to_channel_groups sets them to 0); channels
// past C in the last group are not read as input and are written as 0 as output.
inline constexpr int64_t kConv3dChannelGroup = 8;
int64_t conv3d_group_pitch(int64_t voxels);
// Floats of N samples of C channels in groups (conv3d_group_pitch(voxels) per group).
int64_t conv3d_grouped_elements(int64_t N, int64_t C, int64_t voxels);
// x [N, C, voxels] into `grouped` (conv3d_grouped_elements floats, all written: the pitch tails and
// the channels past C as 0). From 32 MiB, with `grouped` on 32 bytes, with non-temporal stores.
void to_channel_groups(int64_t N, int64_t C, int64_t voxels, const float* x, float* grouped);
// The inverse: overwrites x [N, C, voxels].
void from_channel_groups(int64_t N, int64_t C, int64_t voxels, const float* grouped, float* x);

// Whether the pass runs on the line tiles, and so takes channel-grouped activations
// (conv3d_direct_fprop_grouped / _dgrad_grouped): every conv conv3d_direct_fprop_applies /
// _dgrad_applies takes in vector builds; in the portable build those on planes of up to 64 voxels.
bool conv3d_direct_grouped_applies(const Conv3dParams& p, PackFor pass);

// y = conv(x, w) with x [N, C, D, H, W] and y [N, K, Z, P, Q] in channel groups and the weights
// packed in advance (conv3d_direct_pack_weights for p and fprop): the bits of conv3d_direct_fprop
// in that layout. Overwrites y's groups (not their pitch tails). Requires
// conv3d_direct_grouped_applies(p, fprop); needs no scratch.
void conv3d_direct_fprop_grouped(const Conv3dParams& p, const float* x, const float* packed, float* y);

// dx = dgrad of the conv above, dy and dx in channel groups, the weights packed for dgrad: the bits
// of conv3d_direct_dgrad. Requires conv3d_direct_grouped_applies(p, dgrad).
void conv3d_direct_dgrad_grouped(const Conv3dParams& p, const float* dy, const float* packed, float* dx);

// dw = wgrad of the conv above, summed over samples: per tap, filter and channel the products of
// dy and the shifted x over the voxels where the tap reads inside. Overwrites dw [K, C, T, R, S]
// (dead taps get 0). Requires conv3d_direct_wgrad_applies(p).
void conv3d_direct_wgrad(const Conv3dParams& p, const float* x, const float* dy, float* dw);

// dw = wgrad of a 1x1x1 conv (stride 1, no padding, one group, at least 8 filters:
// conv3d_pointwise_wgrad_grouped_applies)
// with x [N, C, voxels] and dy [N, K, voxels] in channel groups, as the line tiles' fprop of such a conv
// reads x and writes y. Overwrites dw [K, C]; reads neither the groups' pitch tails nor, for anything it
// stores, the channels past C and K. Each element sums its products in registers over blocks of 256
// voxels of every sample (sample by sample) and adds the blocks in turn: the same sums as
// conv3d_wgrad's in another rounding, the same bits for any number of threads. Needs no scratch.
bool conv3d_pointwise_wgrad_grouped_applies(const Conv3dParams& p);
void conv3d_pointwise_wgrad_grouped(const Conv3dParams& p, const float* x, const float* dy, float* dw);

}  // namespace med3d::kernels::cpu
