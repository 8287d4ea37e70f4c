// The one place where med3d-bench defines its workloads and counts their work: the Med3D conv
// layer table, the element-wise/normalisation op shapes, and their FLOP and byte counts.
// bench/torch_ops.py times exactly these rows from the bench's --json output, so PyTorch and
// we are measured on the same shapes with the same counts.
//
// FLOPs: a multiply-add counts 2. Nominal counts every tap of every output voxel (what most
// frameworks report); effective counts only (output voxel, tap) pairs whose input index lies
// inside the input, counted exactly per axis (conv_params.h). dgrad and wgrad cost what fprop
// costs; a transposed conv costs what its equivalent forward conv costs.
// Bytes (ops): the minimal traffic of one pass, each tensor read or written once, in f32
// (labels in i32): a kernel at this many bytes / copy bandwidth would be memory-optimal.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "med3d/kernels/conv_params.h"

namespace med3d::bench {

using kernels::Conv3dParams;
using kernels::Dims3;

// One layer of the table. `transposed`: w is [C, K, T, R, S] of ConvTranspose3d(C -> K);
// C, D, H, W always describe the layer's input as the user sees it.
struct ConvLayer {
  std::string name;
  int64_t N, C, D, H, W, K, kernel, stride, pad, dilation;
  bool transposed = false;
};

// The passes timed per layer. For a transposed conv they are its forward, its input gradient
// and its weight gradient; on the equivalent forward conv those are dgrad, fprop and wgrad.
enum class Pass { fprop, dgrad, wgrad };
const char* pass_name(Pass pass, bool transposed);
// The pass of the equivalent forward conv (conv_params.h) that a layer's pass runs.
Pass kernel_pass(Pass pass, bool transposed);

// The geometry of the equivalent forward conv (see conv_params.h).
Conv3dParams conv_params(const ConvLayer& layer);

// The Med3D table of issue 7. scale "small": as listed (N = 2 at the 32x64x64 input scale);
// "large": N = 1 and every spatial extent doubled (the 1x1x64x128x128 input scale).
// quick: channels and spatial extents halved and N = 1, for smoke runs.
std::vector<ConvLayer> med3d_conv_table(const std::string& scale, bool quick);

double conv_flops_nominal(const ConvLayer& layer);
double conv_flops_effective(const ConvLayer& layer);

// A memory-bound op row: what it is, its input shape, and bytes per pass.
struct OpCase {
  std::string name;    // batch_norm, upsample_trilinear, max_pool, cross_entropy, relu
  std::vector<int64_t> shape;  // input [N, C, D, H, W]
  double bytes_forward = 0, bytes_backward = 0;
};
std::vector<OpCase> med3d_op_cases(const std::string& scale, bool quick);

int64_t numel(const std::vector<int64_t>& shape);

}  // namespace med3d::bench
