// Tiled implicit-GEMM CUDA kernels of the 3D convolution described by a Conv3dParams `p`
// (see med3d/kernels/conv_params.h), f32, all tensors contiguous:
//   x [N, C, D, H, W], w [K, C/groups, T, R, S], y [N, K, Z, P, Q], bias [K].
//   conv3d_fprop_tiled  overwrites y = conv(x, w) + bias (bias may be null)
//   conv3d_dgrad_tiled  overwrites dx [N, C, D, H, W]
//   conv3d_wgrad_tiled  overwrites dw [K, C/groups, T, R, S], or with split-K its slice of a
//                       workspace that conv3d_wgrad_reduce_splits sums into dw
//   conv3d_bias_grad    overwrites db [K] (sums over N and Z*P*Q, in double)
// Each pass is one GEMM per group whose operands are gathered on the fly (no vol2col buffer):
//   fprop: y[k, (n,z,p,q)]   = sum over (c,t,r,s)  w[k, (c,t,r,s)] * x(n, c, input tap)
//   dgrad: dx[c, (n,d,h,w)]  = sum over (k,t,r,s)  w[k, c, t, r, s] * dy(n, k, output tap)
//   wgrad: dw[k, (c,t,r,s)]  = sum over (n,z,p,q)  dy[n, k, z, p, q] * x(n, c, input tap)
// A block computes a kTileM x kTileN tile of the GEMM, staging kTileK-deep slices of both
// operands in shared memory; each of its kConvThreads threads accumulates kThreadM x kThreadN
// values. Taps outside the input (padding, dgrad's stride holes) read zero. Every output
// element is written by one thread in a fixed summation order: results are deterministic.
// Transposed convs reuse these kernels exactly as the CPU ones (forward = dgrad).
// Sizes: linear indices that can exceed 2^31 (voxels times channels or batch) are int64.
// Launch geometry comes from the conv3d_*_launch() helpers; this file launches nothing.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda_common.cuh"
#include "med3d/kernels/conv_params.h"

namespace med3d::kernels::cuda {

inline constexpr int kTileM = 64, kTileN = 64, kTileK = 8;
inline constexpr int kThreadM = 4, kThreadN = 4;
inline constexpr int kConvThreads = (kTileM / kThreadM) * (kTileN / kThreadN);  // 256

namespace conv_detail {

// Output-voxel and tap coordinates of one GEMM column or reduction index.
struct Voxel {
  int64_t n, z, p, q;
};

__device__ __forceinline__ Voxel split_voxel(int64_t i, int64_t Z, int64_t P, int64_t Q) {
  Voxel v;
  v.q = i % Q;
  i /= Q;
  v.p = i % P;
  i /= P;
  v.z = i % Z;
  v.n = i / Z;
  return v;
}

// A reduction index of fprop/dgrad, kr = (outer * T + t) * R * S + r * S + s, split in 32-bit
// arithmetic (64-bit division is several times slower on the GPU); the launch helpers check
// that these indices fit.
struct Tap {
  int outer, t, r, s;
};

__device__ __forceinline__ Tap split_tap(int64_t kr, const Conv3dParams& p) {
  const int i = static_cast<int>(kr), S = static_cast<int>(p.S), RS = static_cast<int>(p.R) * S;
  const int taps = static_cast<int>(p.T) * RS;
  Tap tap;
  tap.outer = i / taps;
  int rem = i - tap.outer * taps;
  tap.t = rem / RS;
  rem -= tap.t * RS;
  tap.r = rem / S;
  tap.s = rem - tap.r * S;
  return tap;
}

// Forward: A = w rows of group g, B = input taps of output voxels.
struct FpropProblem {
  Conv3dParams p;
  const float* x;
  const float* w;
  const float* bias;
  float* y;
  int64_t g;
  struct Row {
    const float* w;
  };
  struct Col {
    const float* x;  // sample n, first channel of the group
    int64_t z0, p0, q0;
    bool valid;
  };
  __device__ int64_t rows() const { return p.filters_per_group(); }
  __device__ int64_t cols() const { return p.N * p.output_spatial(); }
  __device__ int64_t depth() const { return p.channels_per_group() * p.taps(); }
  __device__ Row row(int64_t m) const { return {w + (g * p.filters_per_group() + m) * depth()}; }
  __device__ float a(const Row& r, int64_t kr) const { return r.w[kr]; }
  __device__ Col col(int64_t j) const {
    const Voxel v = split_voxel(j < cols() ? j : 0, p.Z, p.P, p.Q);
    return {x + (v.n * p.C + g * p.channels_per_group()) * p.input_spatial(),
            v.z * p.stride[0] - p.pad[0], v.p * p.stride[1] - p.pad[1],
            v.q * p.stride[2] - p.pad[2], j < cols()};
  }
  __device__ float b(const Col& c, int64_t kr) const {
    const Tap tap = split_tap(kr, p);  // outer = input channel within the group
    const int64_t iz = c.z0 + tap.t * p.dilation[0], ip = c.p0 + tap.r * p.dilation[1],
                  iq = c.q0 + tap.s * p.dilation[2];
    if (iz < 0 || iz >= p.D || ip < 0 || ip >= p.H || iq < 0 || iq >= p.W) return 0.0f;
    return c.x[tap.outer * p.input_spatial() + (iz * p.H + ip) * p.W + iq];
  }
  __device__ void store(int64_t m, int64_t j, float v) const {
    const int64_t k = g * p.filters_per_group() + m;
    const int64_t n = j / p.output_spatial(), o = j % p.output_spatial();
    y[(n * p.K + k) * p.output_spatial() + o] = bias ? v + bias[k] : v;
  }
};

// Input gradient: A = w columns of group g (transposed), B = output taps that read each input
// voxel; a tap reads the voxel only where (d + pad - t * dilation) is a multiple of stride.
struct DgradProblem {
  Conv3dParams p;
  const float* dy;
  const float* w;
  float* dx;
  int64_t g;
  struct Row {
    const float* w;  // w[g*Kg, c, 0, 0, 0]
  };
  struct Col {
    const float* dy;  // sample n, first filter of the group
    int64_t d, h, wi;  // padded input coordinates
    bool valid;
  };
  __device__ int64_t rows() const { return p.channels_per_group(); }
  __device__ int64_t cols() const { return p.N * p.input_spatial(); }
  __device__ int64_t depth() const { return p.filters_per_group() * p.taps(); }
  __device__ Row row(int64_t m) const {
    return {w + (g * p.filters_per_group() * p.channels_per_group() + m) * p.taps()};
  }
  __device__ float a(const Row& r, int64_t kr) const {
    const int k = static_cast<int>(kr) / static_cast<int>(p.taps());
    return r.w[k * (p.channels_per_group() - 1) * p.taps() + kr];  // w[k, c, tap]
  }
  __device__ Col col(int64_t j) const {
    const Voxel v = split_voxel(j < cols() ? j : 0, p.D, p.H, p.W);
    return {dy + (v.n * p.K + g * p.filters_per_group()) * p.output_spatial(), v.z + p.pad[0],
            v.p + p.pad[1], v.q + p.pad[2], j < cols()};
  }
  // Output index reading padded input coordinate `i` through tap `t`, or -1.
  __device__ static int64_t source(int64_t i, int64_t t, int64_t stride, int64_t dilation,
                                   int64_t extent) {
    const int64_t o = i - t * dilation;
    if (o < 0 || o % stride != 0 || o / stride >= extent) return -1;
    return o / stride;
  }
  __device__ float b(const Col& c, int64_t kr) const {
    const Tap tap = split_tap(kr, p);  // outer = filter within the group
    const int64_t oz = source(c.d, tap.t, p.stride[0], p.dilation[0], p.Z);
    const int64_t op = source(c.h, tap.r, p.stride[1], p.dilation[1], p.P);
    const int64_t oq = source(c.wi, tap.s, p.stride[2], p.dilation[2], p.Q);
    if (oz < 0 || op < 0 || oq < 0) return 0.0f;
    return c.dy[tap.outer * p.output_spatial() + (oz * p.P + op) * p.Q + oq];
  }
  __device__ void store(int64_t m, int64_t j, float v) const {
    const int64_t n = j / p.input_spatial(), i = j % p.input_spatial();
    dx[(n * p.C + g * p.channels_per_group() + m) * p.input_spatial() + i] = v;
  }
};

// Weight gradient: A = dy rows of group g over (n, z, p, q), B = input taps per (c, t, r, s).
struct WgradProblem {
  Conv3dParams p;
  const float* x;
  const float* dy;
  float* out;  // dw, or this split's slice of the workspace
  int64_t g;
  struct Row {
    const float* dy;  // filter k of sample 0
  };
  struct Col {
    const float* x;  // channel c of sample 0
    int64_t dz, dp, dq;  // tap offsets minus padding
    bool valid;
  };
  __device__ int64_t rows() const { return p.filters_per_group(); }
  __device__ int64_t cols() const { return p.channels_per_group() * p.taps(); }
  __device__ int64_t depth() const { return p.N * p.output_spatial(); }
  __device__ Row row(int64_t m) const {
    return {dy + (g * p.filters_per_group() + m) * p.output_spatial()};
  }
  __device__ float a(const Row& r, int64_t kr) const {
    const int64_t n = kr / p.output_spatial(), o = kr % p.output_spatial();
    return r.dy[n * p.K * p.output_spatial() + o];
  }
  __device__ Col col(int64_t j) const {
    const int64_t jj = j < cols() ? j : 0;
    const int64_t s = jj % p.S, r = jj / p.S % p.R, t = jj / (p.S * p.R) % p.T;
    const int64_t c = jj / p.taps();
    return {x + (g * p.channels_per_group() + c) * p.input_spatial(),
            t * p.dilation[0] - p.pad[0], r * p.dilation[1] - p.pad[1],
            s * p.dilation[2] - p.pad[2], j < cols()};
  }
  __device__ float b(const Col& c, int64_t kr) const {
    const Voxel v = split_voxel(kr, p.Z, p.P, p.Q);
    const int64_t iz = v.z * p.stride[0] + c.dz, ip = v.p * p.stride[1] + c.dp,
                  iq = v.q * p.stride[2] + c.dq;
    if (iz < 0 || iz >= p.D || ip < 0 || ip >= p.H || iq < 0 || iq >= p.W) return 0.0f;
    return c.x[v.n * p.C * p.input_spatial() + (iz * p.H + ip) * p.W + iq];
  }
  __device__ void store(int64_t m, int64_t j, float v) const {
    out[(g * p.filters_per_group() + m) * cols() + j] = v;
  }
};

// One kTileM x kTileN tile of the GEMM rows [m0, m0 + kTileM) x columns [j0, j0 + kTileN),
// summed over the reduction indices [k_begin, k_end). blockDim.x == kConvThreads.
template <class Problem>
__device__ void implicit_gemm_tile(const Problem& pb, int64_t m0, int64_t j0, int64_t k_begin,
                                   int64_t k_end) {
  // +4 keeps the column-wise stores of As (8 threads, one per kk) in different banks.
  __shared__ float As[kTileK][kTileM + 4];
  __shared__ float Bs[kTileK][kTileN];
  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % (kTileN / kThreadN), ty = tid / (kTileN / kThreadN);

  // A: thread loads rows tid / kTileK + i * kARowStep at depth tid % kTileK (consecutive
  // threads read consecutive weights in fprop). B: column tid % kTileN (consecutive threads
  // read consecutive voxels) at depths tid / kTileN + i * kBDepthStep.
  constexpr int kARowStep = kConvThreads / kTileK, kALoads = kTileM / kARowStep;
  constexpr int kBDepthStep = kConvThreads / kTileN, kBLoads = kTileK / kBDepthStep;
  const int a_kk = tid % kTileK, b_j = tid % kTileN;
  typename Problem::Row rows[kALoads];
  bool row_ok[kALoads];
  for (int i = 0; i < kALoads; ++i) {
    const int64_t m = m0 + tid / kTileK + i * kARowStep;
    row_ok[i] = m < pb.rows();
    rows[i] = pb.row(row_ok[i] ? m : 0);
  }
  const typename Problem::Col col = pb.col(j0 + b_j);

  float acc[kThreadM][kThreadN] = {};
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
    for (int i = 0; i < kALoads; ++i) {
      const int64_t kr = k0 + a_kk;
      As[a_kk][tid / kTileK + i * kARowStep] =
          row_ok[i] && kr < k_end ? pb.a(rows[i], kr) : 0.0f;
    }
    for (int i = 0; i < kBLoads; ++i) {
      const int kk = tid / kTileN + i * kBDepthStep;
      const int64_t kr = k0 + kk;
      Bs[kk][b_j] = col.valid && kr < k_end ? pb.b(col, kr) : 0.0f;
    }
    __syncthreads();
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[kThreadM], b[kThreadN];
      for (int i = 0; i < kThreadM; ++i) a[i] = As[kk][ty + i * (kTileM / kThreadM)];
      for (int j = 0; j < kThreadN; ++j) b[j] = Bs[kk][tx + j * (kTileN / kThreadN)];
      for (int i = 0; i < kThreadM; ++i)
        for (int j = 0; j < kThreadN; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();  // the next slice overwrites As and Bs
  }
  for (int i = 0; i < kThreadM; ++i)
    for (int j = 0; j < kThreadN; ++j) {
      const int64_t m = m0 + ty + i * (kTileM / kThreadM);
      const int64_t jj = j0 + tx + j * (kTileN / kThreadN);
      if (m < pb.rows() && jj < pb.cols()) pb.store(m, jj, acc[i][j]);
    }
}

}  // namespace conv_detail

// grid (column tiles, row tiles, groups), block kConvThreads.
__global__ void __launch_bounds__(kConvThreads)
    conv3d_fprop_tiled(Conv3dParams p, const float* __restrict__ x, const float* __restrict__ w,
                       const float* __restrict__ bias, float* __restrict__ y) {
  const conv_detail::FpropProblem pb{p, x, w, bias, y, static_cast<int64_t>(blockIdx.z)};
  conv_detail::implicit_gemm_tile(pb, int64_t(blockIdx.y) * kTileM, int64_t(blockIdx.x) * kTileN,
                                  0, pb.depth());
}

// grid (column tiles, row tiles, groups), block kConvThreads.
__global__ void __launch_bounds__(kConvThreads)
    conv3d_dgrad_tiled(Conv3dParams p, const float* __restrict__ dy, const float* __restrict__ w,
                       float* __restrict__ dx) {
  const conv_detail::DgradProblem pb{p, dy, w, dx, static_cast<int64_t>(blockIdx.z)};
  conv_detail::implicit_gemm_tile(pb, int64_t(blockIdx.y) * kTileM, int64_t(blockIdx.x) * kTileN,
                                  0, pb.depth());
}

// grid (column tiles, row tiles, groups * splits), block kConvThreads. Split s sums the
// reduction indices [s * split_depth, (s + 1) * split_depth) into out + s * (dw elements).
__global__ void __launch_bounds__(kConvThreads)
    conv3d_wgrad_tiled(Conv3dParams p, const float* __restrict__ x, const float* __restrict__ dy,
                       float* __restrict__ out, int64_t splits, int64_t split_depth) {
  const int64_t g = blockIdx.z % p.groups, split = blockIdx.z / p.groups;
  const int64_t dw_elements = p.K * p.channels_per_group() * p.taps();
  const conv_detail::WgradProblem pb{p, x, dy, out + split * dw_elements, g};
  const int64_t k_begin = split * split_depth;
  const int64_t k_end = splits == 1 || k_begin + split_depth > pb.depth() ? pb.depth()
                                                                          : k_begin + split_depth;
  conv_detail::implicit_gemm_tile(pb, int64_t(blockIdx.y) * kTileM, int64_t(blockIdx.x) * kTileN,
                                  k_begin, k_end);
}

// dw[i] = sum over s of partial[s * elements + i], in order of s. 1D grid-stride.
__global__ void conv3d_wgrad_reduce_splits(const float* __restrict__ partial, int64_t splits,
                                           int64_t elements, float* __restrict__ dw) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < elements;
       i += int64_t(blockDim.x) * gridDim.x) {
    float sum = 0.0f;
    for (int64_t s = 0; s < splits; ++s) sum += partial[s * elements + i];
    dw[i] = sum;
  }
}

// db[k] = sum of dy[n, k, :] over n, one block per k (grid (K)); blockDim.x a multiple of 32,
// dynamic shared memory blockDim.x / 32 doubles.
__global__ void conv3d_bias_grad(int64_t N, int64_t K, int64_t spatial, const float* __restrict__ dy,
                                 float* __restrict__ db) {
  MED3D_EXTERN_SHARED(double, partials);
  const int64_t k = blockIdx.x;
  double sum = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    const float* plane = dy + (n * K + k) * spatial;
    for (int64_t i = threadIdx.x; i < spatial; i += blockDim.x) sum += plane[i];
  }
  sum = block_sum(sum, partials);
  if (threadIdx.x == 0) db[k] = static_cast<float>(sum);
}

// Launch geometry of the kernels above.
struct ConvLaunch {
  dim3 grid;
  dim3 block;
  std::size_t shared_bytes = 0;
  int64_t splits = 1;                 // wgrad only
  int64_t split_depth = 0;            // wgrad only: reduction indices per split
  int64_t workspace_elements = 0;     // wgrad only: floats of the split-K workspace (0: none)
};

namespace conv_detail {
// Whether a GEMM of rows x cols (z groups/splits) fits CUDA's grid limits.
__host__ inline bool gemm_fits(int64_t rows, int64_t cols, int64_t z) {
  const int64_t col_tiles = (cols + kTileN - 1) / kTileN, row_tiles = (rows + kTileM - 1) / kTileM;
  return col_tiles <= 0x7fffffff && row_tiles <= 65535 && z <= 65535;
}

// The tiled kernels split reduction indices in 32-bit arithmetic (split_tap).
__host__ inline bool reduction_fits(int64_t outer, int64_t taps) {
  return outer * taps < (int64_t(1) << 31);
}

// Number of split-K chunks of wgrad's reduction (N * output voxels) and the indices per chunk:
// about `depth_per_split` each, whole kTileK slices, at most 64 chunks. One chunk when the
// reduction is empty (N = 0).
struct WgradSplits {
  int64_t splits = 1, per = 0;
};
__host__ inline WgradSplits wgrad_splits(const Conv3dParams& p, int64_t depth_per_split) {
  const int64_t depth = p.N * p.output_spatial();
  if (depth <= 0) return {};
  int64_t splits = (depth + depth_per_split - 1) / depth_per_split;
  splits = splits < 1 ? 1 : splits > 64 ? 64 : splits;
  // Whole kTileK slices per split; rounding can leave fewer splits than asked.
  const int64_t per = ((depth + splits - 1) / splits + kTileK - 1) / kTileK * kTileK;
  return {(depth + per - 1) / per, per};
}

__host__ inline ConvLaunch gemm_launch(const char* op, int64_t rows, int64_t cols, int64_t z) {
  const int64_t col_tiles = (cols + kTileN - 1) / kTileN, row_tiles = (rows + kTileM - 1) / kTileM;
  MED3D_CHECK(gemm_fits(rows, cols, z), op,
              ": the GEMM of ", rows, " x ", cols, " (", z,
              " groups/splits) exceeds CUDA's grid limits; split the batch");
  ConvLaunch l;
  l.grid = dim3(static_cast<unsigned>(col_tiles), static_cast<unsigned>(row_tiles),
                static_cast<unsigned>(z));
  l.block = dim3(kConvThreads);
  return l;
}
}  // namespace conv_detail

// Whether the conv3d_*_launch helpers below accept `p` (they throw otherwise): callers that
// have a fallback check these first.
__host__ inline bool conv3d_fprop_tiled_fits(const Conv3dParams& p) {
  return conv_detail::reduction_fits(p.channels_per_group(), p.taps()) &&
         conv_detail::gemm_fits(p.filters_per_group(), p.N * p.output_spatial(), p.groups);
}
__host__ inline bool conv3d_dgrad_tiled_fits(const Conv3dParams& p) {
  return conv_detail::reduction_fits(p.filters_per_group(), p.taps()) &&
         conv_detail::gemm_fits(p.channels_per_group(), p.N * p.input_spatial(), p.groups);
}
__host__ inline bool conv3d_wgrad_tiled_fits(const Conv3dParams& p,
                                             int64_t depth_per_split = 16384) {
  return conv_detail::gemm_fits(p.filters_per_group(), p.channels_per_group() * p.taps(),
                                p.groups * conv_detail::wgrad_splits(p, depth_per_split).splits);
}

__host__ inline ConvLaunch conv3d_fprop_launch(const Conv3dParams& p) {
  MED3D_CHECK(conv_detail::reduction_fits(p.channels_per_group(), p.taps()), "conv3d_fprop: ",
              p.channels_per_group(), " channels per group times ", p.taps(),
              " taps exceed the tiled kernel's 32-bit reduction index; use more groups");
  return conv_detail::gemm_launch("conv3d_fprop", p.filters_per_group(), p.N * p.output_spatial(),
                                  p.groups);
}

__host__ inline ConvLaunch conv3d_dgrad_launch(const Conv3dParams& p) {
  MED3D_CHECK(conv_detail::reduction_fits(p.filters_per_group(), p.taps()), "conv3d_dgrad: ",
              p.filters_per_group(), " filters per group times ", p.taps(),
              " taps exceed the tiled kernel's 32-bit reduction index; use more groups");
  return conv_detail::gemm_launch("conv3d_dgrad", p.channels_per_group(), p.N * p.input_spatial(),
                                  p.groups);
}

// Splits the (long) wgrad reduction into chunks of about `depth_per_split` indices so that small
// filters still occupy the GPU; the workspace then holds one dw per split.
__host__ inline ConvLaunch conv3d_wgrad_launch(const Conv3dParams& p,
                                               int64_t depth_per_split = 16384) {
  const conv_detail::WgradSplits split = conv_detail::wgrad_splits(p, depth_per_split);
  const int64_t splits = split.splits, per = split.per;
  ConvLaunch l = conv_detail::gemm_launch("conv3d_wgrad", p.filters_per_group(),
                                          p.channels_per_group() * p.taps(), p.groups * splits);
  l.splits = splits;
  l.split_depth = per;
  l.workspace_elements = splits > 1 ? splits * p.K * p.channels_per_group() * p.taps() : 0;
  return l;
}

__host__ inline ConvLaunch conv3d_bias_grad_launch(const Conv3dParams& p) {
  ConvLaunch l;
  l.grid = dim3(static_cast<unsigned>(p.K));
  l.block = dim3(256);
  l.shared_bytes = 256 / 32 * sizeof(double);
  return l;
}

}  // namespace med3d::kernels::cuda
