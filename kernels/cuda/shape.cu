// Copy kernels of the shape ops: 1D grid-stride loops over the destination elements.
#include "cuda_common.cuh"

#include "med3d/kernels/cuda/shape.h"

namespace med3d::kernels::cuda {

namespace {

__global__ void copy_rows_kernel(const float* src, int64_t src_stride, float* dst,
                                 int64_t dst_stride, int64_t count, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_stride()) {
    const int64_t r = i / count, j = i % count;
    dst[r * dst_stride + j] = src[r * src_stride + j];
  }
}

__global__ void zero_pad_subsample_kernel(const float* x, float* y, int64_t c, int64_t d,
                                          int64_t h, int64_t w, int64_t stride,
                                          int64_t out_channels, int64_t n) {
  const int64_t od = (d + stride - 1) / stride, oh = (h + stride - 1) / stride,
                ow = (w + stride - 1) / stride;
  for (int64_t i = grid_index(); i < n; i += grid_stride()) {
    const int64_t q = i % ow, r = i / ow % oh, z = i / (ow * oh) % od;
    const int64_t plane = i / (ow * oh * od);
    const int64_t b = plane / out_channels, k = plane % out_channels;
    y[i] = k < c ? x[(((b * c + k) * d + z * stride) * h + r * stride) * w + q * stride] : 0.0f;
  }
}

}  // namespace

void copy_rows(Stream stream, const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
               int64_t rows, int64_t count) {
  const int64_t n = rows * count;
  if (n == 0) return;
  MED3D_LAUNCH(copy_rows_kernel, element_grid(n), dim3(kElementThreads), 0, stream, src,
               src_stride, dst, dst_stride, count, n);
}

void zero_pad_channels_subsample(Stream stream, const float* x, float* y, int64_t n, int64_t c,
                                 int64_t d, int64_t h, int64_t w, int64_t stride,
                                 int64_t out_channels) {
  const int64_t total = n * out_channels * ((d + stride - 1) / stride) *
                        ((h + stride - 1) / stride) * ((w + stride - 1) / stride);
  if (total == 0) return;
  MED3D_LAUNCH(zero_pad_subsample_kernel, element_grid(total), dim3(kElementThreads), 0, stream, x,
               y, c, d, h, w, stride, out_channels, total);
}

}  // namespace med3d::kernels::cuda
