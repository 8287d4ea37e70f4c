// CUDA launchers of the copying shape ops (f32, contiguous device tensors, queued on `stream`):
// the slices of concatenation and MedicalNet's shortcut type A. Each overwrites only its
// destination, with the layouts of med3d/kernels/cpu/concat.h.
#pragma once

#include <cstdint>

#include "med3d/kernels/cuda/runtime.h"

namespace med3d::kernels::cuda {

// dst[r * dst_stride + j] = src[r * src_stride + j] for r < rows, j < count: part k of a
// concatenation is `rows` = outer runs of `count` = extent_k * inner elements, strided by
// total * inner in the result (forward: part -> result; backward: result -> gradient of part).
void copy_rows(Stream stream, const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
               int64_t rows, int64_t count);

// y [n, out_channels, ceil(d/s), ceil(h/s), ceil(w/s)] = x [n, c, d, h, w] at every s-th voxel
// of each spatial axis for channels < c, zero for channels c .. out_channels-1.
void zero_pad_channels_subsample(Stream stream, const float* x, float* y, int64_t n, int64_t c,
                                 int64_t d, int64_t h, int64_t w, int64_t stride,
                                 int64_t out_channels);

}  // namespace med3d::kernels::cuda
