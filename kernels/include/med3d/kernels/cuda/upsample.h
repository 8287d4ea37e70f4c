// CUDA launchers of 3D upsampling (f32, contiguous [planes, D, H, W] device tensors with
// planes = N * C, queued on `stream`), with the coordinate math of med3d/kernels/upsample.h
// shared with the CPU loops. Forward overwrites y [planes, out], backward overwrites dx
// [planes, in]. The backward passes are gathers: every dx element sums the dy elements that
// read it in output order, so gradients are deterministic (no atomics) and need no workspace.
#pragma once

#include <cstdint>

#include "med3d/kernels/cuda/runtime.h"

namespace med3d::kernels::cuda {

struct UpsampleShape {
  int64_t planes = 0;
  int64_t in[3] = {0, 0, 0};
  int64_t out[3] = {0, 0, 0};
  // Scale factor per axis as given by the caller; 0 when the output size was given.
  double scale[3] = {0, 0, 0};
  bool align_corners = false;  // trilinear only
};

void upsample_trilinear3d_forward(Stream stream, const UpsampleShape& s, const float* x, float* y);
void upsample_trilinear3d_backward(Stream stream, const UpsampleShape& s, const float* dy, float* dx);
void upsample_nearest3d_forward(Stream stream, const UpsampleShape& s, const float* x, float* y);
void upsample_nearest3d_backward(Stream stream, const UpsampleShape& s, const float* dy, float* dx);

}  // namespace med3d::kernels::cuda
