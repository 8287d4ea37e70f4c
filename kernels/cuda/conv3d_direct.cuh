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

__global__ void conv3d_dgrad_direct(Conv3dParams p, const float* __restrict__ dy,
                                    const float* __restrict__ w, float* __restrict__ dx) {
  const int64_t Cg = p.channels_per_group(), Kg = p.filters_per_group();
  const int64_t total = p.N * p.C * p.input_spatial();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(blockDim.x) * gridDim.x) {
    const int64_t iq = i % p.W, ip = i / p.W % p.H, iz = i / (p.W * p.H) % p.D;
    const int64_t c = i / p.input_spatial() % p.C, n = i / (p.input_spatial() * p.C);
    const int64_t g = c / Cg;
    float sum = 0.0f;
    for (int64_t k = g * Kg; k < (g + 1) * Kg; ++k)
      for (int64_t t = 0; t < p.T; ++t) {
        const int64_t oz = iz + p.pad[0] - t * p.dilation[0];
        if (oz < 0 || oz % p.stride[0] != 0 || oz / p.stride[0] >= p.Z) continue;
        for (int64_t r = 0; r < p.R; ++r) {
          const int64_t op = ip + p.pad[1] - r * p.dilation[1];
          if (op < 0 || op % p.stride[1] != 0 || op / p.stride[1] >= p.P) continue;
          for (int64_t s = 0; s < p.S; ++s) {
            const int64_t oq = iq + p.pad[2] - s * p.dilation[2];
            if (oq < 0 || oq % p.stride[2] != 0 || oq / p.stride[2] >= p.Q) continue;
            sum += w[((k * Cg + c % Cg) * p.T + t) * p.R * p.S + r * p.S + s] *
                   dy[((n * p.K + k) * p.Z + oz / p.stride[0]) * p.P * p.Q +
                      op / p.stride[1] * p.Q + oq / p.stride[2]];
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
