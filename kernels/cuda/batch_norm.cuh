// CUDA reductions of batch normalisation over a contiguous [N, C, spatial] f32 tensor, with the
// per-channel math of med3d/kernels/batch_norm.h (shared with the CPU loops):
//   batch_norm_stats:       mean[c] and biased var[c] (doubles), overwritten
//   batch_norm_reduce_grad: sum_dy[c] = sum(dy), sum_dy_xmu[c] = sum(dy * (x - mean[c]))
// Two levels, both deterministic (fixed summation trees, no atomics): grid (chunks, C) blocks
// each reduce one chunk of a channel's M = N * spatial values into a pair of double partial
// sums; then one block per channel sums its chunks in order and finalises. Moments are
// shifted by x[0, c, 0] exactly as the CPU kernel does (see ShiftedMoments). Sums in double.
// Launch geometry: batch_norm_reduce_launch(); this file launches nothing.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda_common.cuh"
#include "med3d/error.h"
#include "med3d/kernels/batch_norm.h"

namespace med3d::kernels::cuda {

inline constexpr int kBatchNormThreads = 256;

struct BatchNormDims {
  int64_t n, c, spatial;
};

namespace bn_detail {

// The two summands of element i (in [0, M)) of channel c, for each reduction.
struct StatsTerms {
  const float* x;
  __device__ void operator()(const BatchNormDims& d, int64_t c, int64_t i, double& a,
                             double& b) const {
    const double v = static_cast<double>(x[(i / d.spatial * d.c + c) * d.spatial + i % d.spatial]) -
                     static_cast<double>(x[c * d.spatial]);
    a = v;
    b = v * v;
  }
};

struct GradTerms {
  const float* x;
  const float* dy;
  const double* mean;
  __device__ void operator()(const BatchNormDims& d, int64_t c, int64_t i, double& a,
                             double& b) const {
    const int64_t at = (i / d.spatial * d.c + c) * d.spatial + i % d.spatial;
    a = static_cast<double>(dy[at]);
    b = a * (static_cast<double>(x[at]) - mean[c]);
  }
};

// Block (chunk, c) sums the terms of values [chunk * chunk_len, (chunk + 1) * chunk_len) of
// channel c into partial_a/partial_b[c * chunks + chunk]. Dynamic shared memory:
// kBatchNormThreads / 32 doubles.
template <class Terms>
__device__ void reduce_chunk(const BatchNormDims& d, const Terms& terms, int64_t chunk_len,
                             double* partial_a, double* partial_b) {
  MED3D_EXTERN_SHARED(double, scratch);
  const int64_t c = blockIdx.y, chunk = blockIdx.x, m = d.n * d.spatial;
  const int64_t begin = chunk * chunk_len, end = begin + chunk_len < m ? begin + chunk_len : m;
  double sa = 0, sb = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    double a, b;
    terms(d, c, i, a, b);
    sa += a;
    sb += b;
  }
  sa = block_sum(sa, scratch);
  sb = block_sum(sb, scratch);
  if (threadIdx.x == 0) {
    partial_a[c * gridDim.x + chunk] = sa;
    partial_b[c * gridDim.x + chunk] = sb;
  }
}

// Block c sums its `chunks` partials (fixed order per thread, then a fixed tree); thread 0
// gets the totals.
__device__ inline void sum_chunks(int64_t chunks, const double* partial_a,
                                  const double* partial_b, double& a, double& b) {
  MED3D_EXTERN_SHARED(double, scratch);
  const int64_t c = blockIdx.x;
  a = 0, b = 0;
  for (int64_t i = threadIdx.x; i < chunks; i += blockDim.x) {
    a += partial_a[c * chunks + i];
    b += partial_b[c * chunks + i];
  }
  a = block_sum(a, scratch);
  b = block_sum(b, scratch);
}

}  // namespace bn_detail

// Level 1 of the statistics: grid (chunks, C), block kBatchNormThreads.
__global__ void batch_norm_stats_partial(BatchNormDims d, const float* __restrict__ x,
                                         int64_t chunk_len, double* __restrict__ partial_sum,
                                         double* __restrict__ partial_sumsq) {
  bn_detail::reduce_chunk(d, bn_detail::StatsTerms{x}, chunk_len, partial_sum, partial_sumsq);
}

// Level 2: grid (C), block kBatchNormThreads; overwrites mean[c] and var[c].
__global__ void batch_norm_stats_finalize(BatchNormDims d, const float* __restrict__ x,
                                          int64_t chunks, const double* __restrict__ partial_sum,
                                          const double* __restrict__ partial_sumsq,
                                          double* __restrict__ mean, double* __restrict__ var) {
  double sum, sumsq;
  bn_detail::sum_chunks(chunks, partial_sum, partial_sumsq, sum, sumsq);
  if (threadIdx.x == 0) {
    const int64_t c = blockIdx.x;
    const ShiftedMoments m{static_cast<double>(x[c * d.spatial]), sum, sumsq};
    batch_norm_finalize(m, d.n * d.spatial, &mean[c], &var[c]);
  }
}

// Level 1 of the gradient sums: grid (chunks, C), block kBatchNormThreads.
__global__ void batch_norm_reduce_grad_partial(BatchNormDims d, const float* __restrict__ x,
                                               const float* __restrict__ dy,
                                               const double* __restrict__ mean, int64_t chunk_len,
                                               double* __restrict__ partial_dy,
                                               double* __restrict__ partial_dy_xmu) {
  bn_detail::reduce_chunk(d, bn_detail::GradTerms{x, dy, mean}, chunk_len, partial_dy,
                          partial_dy_xmu);
}

// Level 2: grid (C), block kBatchNormThreads; overwrites sum_dy[c] and sum_dy_xmu[c].
__global__ void batch_norm_reduce_grad_finalize(int64_t chunks, const double* __restrict__ partial_dy,
                                                const double* __restrict__ partial_dy_xmu,
                                                double* __restrict__ sum_dy,
                                                double* __restrict__ sum_dy_xmu) {
  double a, b;
  bn_detail::sum_chunks(chunks, partial_dy, partial_dy_xmu, a, b);
  if (threadIdx.x == 0) {
    sum_dy[blockIdx.x] = a;
    sum_dy_xmu[blockIdx.x] = b;
  }
}

// Geometry shared by both reductions: about `values_per_block` values per level-1 block, at
// most 4096 chunks per channel. The partial buffers hold C * chunks doubles each.
struct BatchNormLaunch {
  dim3 partial_grid, finalize_grid, block;
  std::size_t shared_bytes = 0;
  int64_t chunks = 1, chunk_len = 1;
};

__host__ inline BatchNormLaunch batch_norm_reduce_launch(const BatchNormDims& d,
                                                         int64_t values_per_block = 16384) {
  const int64_t m = d.n * d.spatial;
  int64_t chunks = (m + values_per_block - 1) / values_per_block;
  chunks = chunks < 1 ? 1 : chunks > 4096 ? 4096 : chunks;
  BatchNormLaunch l;
  l.chunk_len = (m + chunks - 1) / chunks;
  l.chunks = (m + l.chunk_len - 1) / l.chunk_len;
  MED3D_CHECK(d.c <= 65535, "batch_norm: ", d.c, " channels exceed CUDA's grid limit of 65535");
  l.partial_grid = dim3(static_cast<unsigned>(l.chunks), static_cast<unsigned>(d.c));
  l.finalize_grid = dim3(static_cast<unsigned>(d.c));
  l.block = dim3(kBatchNormThreads);
  l.shared_bytes = kBatchNormThreads / 32 * sizeof(double);
  return l;
}

}  // namespace med3d::kernels::cuda
