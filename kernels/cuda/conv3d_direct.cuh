// Direct CUDA kernels of the 3D convolution described by a Conv3dParams `p`, f32, contiguous
// tensors as in conv3d_tiled.cuh: one thread per output element, summing its taps in a fixed
// order. Slow but obviously right: the reference and the fallback for shapes the tiled kernels
// do not cover. Any 1D grid and block work (grid-stride loops); no shared memory.
//   conv3d_fprop_direct  overwrites y [N, K, Z, P, Q] = conv(x, w) + bias (bias may be null)
//   conv3d_dgrad_direct  overwrites dx [N, C, D, H, W]
//   conv3d_wgrad_direct  overwrites dw [K, C/groups, T, R, S]
#pragma once

#include <cstdint>

#include "med3d/kernels/conv_params.h"

namespace med3d::kernels::cuda {

__global__ void conv3d_fprop_direct(Conv3dParams p, const float* __restrict__ x,
                                    const float* __restrict__ w, const float* __restrict__ bias,
                                    float* __restrict__ y) {
  const int64_t Cg = p.channels_per_group(), Kg = p.filters_per_group();
  const int64_t total = p.N * p.K * p.output_spatial();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t q = i % p.Q, o = i / p.Q, pp = o % p.P, z = o / p.P % p.Z;
    const int64_t k = i / p.output_spatial() % p.K, n = i / (p.output_spatial() * p.K);
    const int64_t c0 = k / Kg * Cg;
    float sum = bias ? bias[k] : 0.0f;
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t t = 0; t < p.T; ++t) {
        const int64_t iz = z * p.stride[0] - p.pad[0] + t * p.dilation[0];
        if (iz < 0 || iz >= p.D) continue;
        for (int64_t r = 0; r < p.R; ++r) {
          const int64_t ip = pp * p.stride[1] - p.pad[1] + r * p.dilation[1];
          if (ip < 0 || ip >= p.H) continue;
          for (int64_t s = 0; s < p.S; ++s) {
            const int64_t iq = q * p.stride[2] - p.pad[2] + s * p.dilation[2];
            if (iq < 0 || iq >= p.W) continue;
            sum += w[((k * Cg + c) * p.T + t) * p.R * p.S + r * p.S + s] *
                   x[((n * p.C + c0 + c) * p.D + iz) * p.H * p.W + ip * p.W + iq];
          }
        }
      }
    y[i] = sum;
  }
}

namespace conv_detail {
// The taps t of one axis that reach padded input coordinate i: t * dilation <= i and
// (i - t * dilation) a multiple of stride. With dilation 1 they are t = i mod stride, then every
// stride-th; otherwise every t is tried.
struct TapWalk {
  int64_t first, step;
};
__device__ inline TapWalk tap_walk(int64_t i, int64_t stride, int64_t dilation) {
  return dilation == 1 ? TapWalk{i % stride, stride} : TapWalk{0, 1};
}
}  // namespace conv_detail

// Also the fast path for few channels per group (the stem's dgrad: C = 1), where a GEMM tile of
// channels would be mostly empty: each thread walks only the taps that reach its voxel.
__global__ void conv3d_dgrad_direct(Conv3dParams p, const float* __restrict__ dy,
                                    const float* __restrict__ w, float* __restrict__ dx) {
  const int64_t Cg = p.channels_per_group(), Kg = p.filters_per_group();
  const int64_t total = p.N * p.C * p.input_spatial(), taps = p.taps();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t iq = i % p.W + p.pad[2], ip = i / p.W % p.H + p.pad[1],
                  iz = i / (p.W * p.H) % p.D + p.pad[0];
    const int64_t c = i / p.input_spatial() % p.C, n = i / (p.input_spatial() * p.C);
    const int64_t g = c / Cg;
    const float* w_c = w + (g * Kg * Cg + c % Cg) * taps;                     // w[g*Kg, c, 0]
    const float* dy_g = dy + (n * p.K + g * Kg) * p.output_spatial();           // dy[n, g*Kg]
    const conv_detail::TapWalk wt = conv_detail::tap_walk(iz, p.stride[0], p.dilation[0]),
                               wr = conv_detail::tap_walk(ip, p.stride[1], p.dilation[1]),
                               ws = conv_detail::tap_walk(iq, p.stride[2], p.dilation[2]);
    float sum = 0.0f;
    for (int64_t t = wt.first; t < p.T; t += wt.step) {
      const int64_t oz = iz - t * p.dilation[0];
      if (oz < 0) break;
      if (oz % p.stride[0] != 0 || oz / p.stride[0] >= p.Z) continue;
      for (int64_t r = wr.first; r < p.R; r += wr.step) {
        const int64_t op = ip - r * p.dilation[1];
        if (op < 0) break;
        if (op % p.stride[1] != 0 || op / p.stride[1] >= p.P) continue;
        for (int64_t s = ws.first; s < p.S; s += ws.step) {
          const int64_t oq = iq - s * p.dilation[2];
          if (oq < 0) break;
          if (oq % p.stride[2] != 0 || oq / p.stride[2] >= p.Q) continue;
          const int64_t tap = (t * p.R + r) * p.S + s;
          const int64_t o = (oz / p.stride[0] * p.P + op / p.stride[1]) * p.Q + oq / p.stride[2];
          for (int64_t k = 0; k < Kg; ++k)
            sum += w_c[k * Cg * taps + tap] * dy_g[k * p.output_spatial() + o];
        }
      }
    }
    dx[i] = sum;
  }
}

__global__ void conv3d_wgrad_direct(Conv3dParams p, const float* __restrict__ x,
                                    const float* __restrict__ dy, float* __restrict__ dw) {
  const int64_t Cg = p.channels_per_group(), Kg = p.filters_per_group();
  const int64_t total = p.K * Cg * p.taps();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t s = i % p.S, r = i / p.S % p.R, t = i / (p.S * p.R) % p.T;
    const int64_t c = i / p.taps() % Cg, k = i / (p.taps() * Cg);
    const int64_t ci = k / Kg * Cg + c;
    float sum = 0.0f;
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t z = 0; z < p.Z; ++z) {
        const int64_t iz = z * p.stride[0] - p.pad[0] + t * p.dilation[0];
        if (iz < 0 || iz >= p.D) continue;
        for (int64_t pp = 0; pp < p.P; ++pp) {
          const int64_t ip = pp * p.stride[1] - p.pad[1] + r * p.dilation[1];
          if (ip < 0 || ip >= p.H) continue;
          for (int64_t q = 0; q < p.Q; ++q) {
            const int64_t iq = q * p.stride[2] - p.pad[2] + s * p.dilation[2];
            if (iq < 0 || iq >= p.W) continue;
            sum += dy[((n * p.K + k) * p.Z + z) * p.P * p.Q + pp * p.Q + q] *
                   x[((n * p.C + ci) * p.D + iz) * p.H * p.W + ip * p.W + iq];
          }
        }
      }
    dw[i] = sum;
  }
}

}  // namespace med3d::kernels::cuda
