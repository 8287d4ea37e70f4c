// Tiled implicit-GEMM CUDA kernels of the 3D convolution described by a Conv3dParams `p`
// (see med3d/kernels/conv_params.h), f32, all tensors contiguous:
//   x [N, C, D, H, W], w [K, C/groups, T, R, S], y [N, K, Z, P, Q], bias [K].
//   conv3d_fprop_tiled  overwrites y = conv(x, w) + bias (bias may be null)
//   conv3d_dgrad_tiled  overwrites dx [N, C, D, H, W], or with split-K its slice of a workspace
//   conv3d_dgrad_phase_tiled  the same for strided convs, one stride phase at a time
//   conv3d_wgrad_tiled  overwrites dw [K, C/groups, T, R, S], or with split-K its slice of a
//                       workspace
//   conv3d_sum_splits   overwrites dx or dw with the sum of the split-K slices, in split order
//   conv3d_bias_grad    overwrites db [K] (sums over N and Z*P*Q, in double)
// Each pass is one GEMM per group whose operands are gathered on the fly (no vol2col buffer):
//   fprop: y[k, (n,z,p,q)]   = sum over (c,t,r,s)  w[k, (c,t,r,s)] * x(n, c, input tap)
//   dgrad: dx[c, (n,d,h,w)]  = sum over (k,t,r,s)  w[k, c, t, r, s] * dy(n, k, output tap)
//   wgrad: dw[k, (c,t,r,s)]  = sum over (n,z,p,q)  dy[n, k, z, p, q] * x(n, c, input tap)
// A block of 256 threads computes a kTile x kTile tile of the GEMM, staging kTileK-deep slices
// of both operands in shared memory while the next slice is loaded into registers; each thread
// accumulates 4 x 4 values. kTile is 64, or 32 when 64-tiles would leave a large GPU idle: then
// four thread groups take the tile's slices in turn and add their sums in group order.
// Reduction indices are walked as mixed-radix digits (tap, channel, voxel coordinates) stepped by
// kTileK, so gathering an element costs no division. Taps outside the input (padding) read zero;
// strided dgrad goes by stride phase so that no stride hole is multiplied. Every output element is
// summed in a fixed order (one thread, or fixed split-K chunks added in split order) that depends
// on the shape only: results are deterministic and the same on every device.
// Transposed convs reuse these kernels exactly as the CPU ones (forward = dgrad).
// Sizes: linear indices that can exceed 2^31 (voxels times channels or batch) are int64.
// Launch geometry comes from the conv3d_*_launch() helpers; this file launches nothing.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda_common.cuh"
#include "med3d/kernels/conv_params.h"

namespace med3d::kernels::cuda {

inline constexpr int kTileK = 8;
inline constexpr int kThreadM = 4, kThreadN = 4;
// 32-tiles are for small grids: four thread groups split each tile's reduction (slices taken in
// turn) and their sums are added in group order, so a block still has 8 warps to hide latency.
__host__ __device__ constexpr int conv_split(int tile) { return tile == 32 ? 4 : 1; }
// Threads of a block computing kTile x kTile outputs: 256 for both tiles.
__host__ __device__ constexpr int conv_threads(int tile) {
  return tile / kThreadM * (tile / kThreadN) * conv_split(tile);
}
// Fewer blocks than this leave a large GPU (132 SMs, 2 blocks of 256 threads each at 128
// registers) partly idle: fprop and dgrad then take 32-tiles, and dgrad and wgrad split their
// reduction (split-K) until they reach it. Measured on an H200 against 1024 (bench/results).
inline constexpr int64_t kFillBlocks = 512;

namespace conv_detail {

// Coordinates of one GEMM column (output or input voxel).
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

// A reduction index as mixed-radix digits: d0 fastest, radices b0, b1, b2, d3 unbounded.
struct Digits {
  int d0, d1, d2, d3;
};
__host__ __device__ inline Digits to_digits(int64_t i, int b0, int b1, int b2) {
  Digits v;
  v.d0 = static_cast<int>(i % b0);
  i /= b0;
  v.d1 = static_cast<int>(i % b1);
  i /= b1;
  v.d2 = static_cast<int>(i % b2);
  v.d3 = static_cast<int>(i / b2);
  return v;
}
// The radices and a fixed step in digits (set by implicit_gemm_tile: one round of slices): each
// digit of the step is below its radix, so one conditional subtraction per digit carries.
struct Radix {
  int b0, b1, b2;
  Digits step;
};
__host__ __device__ inline Radix make_radix(int b0, int b1, int b2) { return {b0, b1, b2, {}}; }
__device__ __forceinline__ void advance(Digits& v, const Radix& r) {
  v.d0 += r.step.d0;
  const int c0 = v.d0 >= r.b0;
  v.d0 -= c0 * r.b0;
  v.d1 += r.step.d1 + c0;
  const int c1 = v.d1 >= r.b1;
  v.d1 -= c1 * r.b1;
  v.d2 += r.step.d2 + c1;
  const int c2 = v.d2 >= r.b2;
  v.d2 -= c2 * r.b2;
  v.d3 += r.step.d3 + c2;
}

// 0 <= i < extent in one comparison. Coordinates and per-channel offsets are 32-bit: the launch
// helpers require voxels per channel below 2^31 (spatial_fits).
__device__ __forceinline__ bool inside(int i, int64_t extent) {
  return static_cast<unsigned>(i) < static_cast<unsigned>(extent);
}
__device__ __forceinline__ int i32(int64_t v) { return static_cast<int>(v); }

// Forward: A = w rows of group g, B = input taps of output voxels. A's reduction index is the
// weight's own (c, t, r, s) offset; B's digits are (s, r, t, c).
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
    int z0, p0, q0;
    bool valid;
  };
  __device__ int64_t rows() const { return p.filters_per_group(); }
  __device__ int64_t cols() const { return p.N * p.output_spatial(); }
  __device__ int64_t depth() const { return p.channels_per_group() * p.taps(); }
  __device__ Row row(int64_t m) const { return {w + (g * p.filters_per_group() + m) * depth()}; }
  __device__ Radix a_radix() const { return make_radix(static_cast<int>(depth()), 1, 1); }
  __device__ float a(const Row& r, const Digits& d) const { return r.w[d.d0]; }
  __device__ Col col(int64_t j) const {
    const Voxel v = split_voxel(j < cols() ? j : 0, p.Z, p.P, p.Q);
    return {x + (v.n * p.C + g * p.channels_per_group()) * p.input_spatial(),
            i32(v.z * p.stride[0] - p.pad[0]), i32(v.p * p.stride[1] - p.pad[1]),
            i32(v.q * p.stride[2] - p.pad[2]), j < cols()};
  }
  __device__ Radix b_radix() const {
    return make_radix(static_cast<int>(p.S), static_cast<int>(p.R), static_cast<int>(p.T));
  }
  __device__ float b(const Col& c, const Digits& d) const {
    const int iz = c.z0 + d.d2 * i32(p.dilation[0]), ip = c.p0 + d.d1 * i32(p.dilation[1]),
              iq = c.q0 + d.d0 * i32(p.dilation[2]);
    if (!inside(iz, p.D) || !inside(ip, p.H) || !inside(iq, p.W)) return 0.0f;
    return c.x[d.d3 * p.input_spatial() + (iz * i32(p.H) + ip) * i32(p.W) + iq];
  }
  __device__ void store(int64_t m, int64_t j, float v) const {
    const int64_t k = g * p.filters_per_group() + m;
    const int64_t n = j / p.output_spatial(), o = j % p.output_spatial();
    y[(n * p.K + k) * p.output_spatial() + o] = bias ? v + bias[k] : v;
  }
};

// Input gradient: A = w columns of group g (transposed), digits (tap, k); B = output taps that
// read each input voxel, digits (s, r, t, k); a tap reads the voxel only where
// (d + pad - t * dilation) is a multiple of stride.
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
    int d, h, wi;  // padded input coordinates
    bool valid;
  };
  __device__ int64_t rows() const { return p.channels_per_group(); }
  __device__ int64_t cols() const { return p.N * p.input_spatial(); }
  __device__ int64_t depth() const { return p.filters_per_group() * p.taps(); }
  __device__ Row row(int64_t m) const {
    return {w + (g * p.filters_per_group() * p.channels_per_group() + m) * p.taps()};
  }
  __device__ Radix a_radix() const { return make_radix(static_cast<int>(p.taps()), 1, 1); }
  __device__ float a(const Row& r, const Digits& d) const {
    return r.w[int64_t(d.d3) * p.channels_per_group() * p.taps() + d.d0];  // w[k, c, tap]
  }
  __device__ Col col(int64_t j) const {
    const Voxel v = split_voxel(j < cols() ? j : 0, p.D, p.H, p.W);
    return {dy + (v.n * p.K + g * p.filters_per_group()) * p.output_spatial(), i32(v.z + p.pad[0]),
            i32(v.p + p.pad[1]), i32(v.q + p.pad[2]), j < cols()};
  }
  // Output index reading padded input coordinate `i` through tap `t`, or -1.
  __device__ static int source(int i, int t, int64_t stride, int64_t dilation, int64_t extent) {
    const int o = i - t * i32(dilation);
    if (o < 0) return -1;
    // Strides 1 and 2 (every stride of the models) without a division.
    const int st = static_cast<int>(stride), q = st == 1 ? o : st == 2 ? o >> 1 : o / st;
    return q * st == o && q < extent ? q : -1;
  }
  __device__ Radix b_radix() const {
    return make_radix(static_cast<int>(p.S), static_cast<int>(p.R), static_cast<int>(p.T));
  }
  __device__ float b(const Col& c, const Digits& d) const {
    const int oz = source(c.d, d.d2, p.stride[0], p.dilation[0], p.Z);
    const int op = source(c.h, d.d1, p.stride[1], p.dilation[1], p.P);
    const int oq = source(c.wi, d.d0, p.stride[2], p.dilation[2], p.Q);
    if (oz < 0 || op < 0 || oq < 0) return 0.0f;
    return c.dy[d.d3 * p.output_spatial() + (oz * i32(p.P) + op) * i32(p.Q) + oq];
  }
  __device__ void store(int64_t m, int64_t j, float v) const {
    const int64_t n = j / p.input_spatial(), i = j % p.input_spatial();
    dx[(n * p.C + g * p.channels_per_group() + m) * p.input_spatial() + i] = v;
  }
};

// Strided input gradient, one stride phase at a time (all dilations 1): the input voxels whose
// padded coordinate is congruent to phi (mod stride) on every axis are reached only by the taps
// t = phi + stride * t', and from output index base + m - t' (m the voxel's index within the
// phase). So each phase is a dense GEMM: no stride holes and no division. Digits (s', r', t', k).
struct DgradPhaseProblem {
  Conv3dParams p;
  const float* dy;
  const float* w;
  float* dx;
  int64_t g;
  struct Axis {
    int phase;   // phi
    int first;   // the phase's first input coordinate
    int count;   // its input coordinates: first, first + stride, ...
    int taps;    // t' < taps
    int base;    // output index of (m, t') = base + m - t'
  };
  Axis az, ay, ax;
  __device__ static Axis axis(int phase, int64_t stride, int64_t pad, int64_t extent, int64_t kernel) {
    const int st = static_cast<int>(stride);
    Axis a;
    a.phase = phase;
    a.first = ((phase - static_cast<int>(pad)) % st + st) % st;
    a.count = a.first < extent ? (static_cast<int>(extent) - a.first + st - 1) / st : 0;
    a.taps = phase < kernel ? (static_cast<int>(kernel) - phase + st - 1) / st : 0;
    a.base = (a.first + static_cast<int>(pad) - phase) / st;
    return a;
  }
  struct Row {
    const float* w;  // w[g*Kg, c, 0, 0, 0]
  };
  struct Col {
    const float* dy;  // sample n, first filter of the group
    int oz, oy, ox;   // output index at t' = 0
    bool valid;
  };
  __device__ int64_t rows() const { return p.channels_per_group(); }
  __device__ int64_t cols() const { return p.N * int64_t(az.count) * ay.count * ax.count; }
  __device__ int64_t depth() const { return p.filters_per_group() * int64_t(az.taps) * ay.taps * ax.taps; }
  __device__ Row row(int64_t m) const {
    return {w + (g * p.filters_per_group() * p.channels_per_group() + m) * p.taps()};
  }
  // Radices of at least 1: a phase without taps has depth 0 and loads nothing.
  __device__ Radix b_radix() const {
    return make_radix(ax.taps > 0 ? ax.taps : 1, ay.taps > 0 ? ay.taps : 1, az.taps > 0 ? az.taps : 1);
  }
  __device__ Radix a_radix() const { return b_radix(); }
  __device__ float a(const Row& r, const Digits& d) const {
    const int64_t t = az.phase + p.stride[0] * d.d2, rr = ay.phase + p.stride[1] * d.d1,
                  s = ax.phase + p.stride[2] * d.d0;
    return r.w[int64_t(d.d3) * p.channels_per_group() * p.taps() + (t * p.R + rr) * p.S + s];
  }
  __device__ Col col(int64_t j) const {
    const Voxel v = split_voxel(j < cols() ? j : 0, az.count, ay.count, ax.count);
    return {dy + (v.n * p.K + g * p.filters_per_group()) * p.output_spatial(),
            az.base + static_cast<int>(v.z), ay.base + static_cast<int>(v.p),
            ax.base + static_cast<int>(v.q), j < cols()};
  }
  __device__ float b(const Col& c, const Digits& d) const {
    const int oz = c.oz - d.d2, oy = c.oy - d.d1, ox = c.ox - d.d0;
    if (!inside(oz, p.Z) || !inside(oy, p.P) || !inside(ox, p.Q)) return 0.0f;
    return c.dy[d.d3 * p.output_spatial() + (oz * i32(p.P) + oy) * i32(p.Q) + ox];
  }
  __device__ void store(int64_t m, int64_t j, float v) const {
    const Voxel u = split_voxel(j, az.count, ay.count, ax.count);
    const int64_t d = az.first + p.stride[0] * u.z, h = ay.first + p.stride[1] * u.p,
                  wi = ax.first + p.stride[2] * u.q;
    dx[((u.n * p.C + g * p.channels_per_group() + m) * p.D + d) * p.H * p.W + h * p.W + wi] = v;
  }
};

// Weight gradient: A = dy rows of group g over (n, z, p, q), digits (output voxel, n); B = input
// taps per (c, t, r, s), digits (q, p, z, n).
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
    int dz, dp, dq;  // tap offsets minus padding
    bool valid;
  };
  __device__ int64_t rows() const { return p.filters_per_group(); }
  __device__ int64_t cols() const { return p.channels_per_group() * p.taps(); }
  __device__ int64_t depth() const { return p.N * p.output_spatial(); }
  __device__ Row row(int64_t m) const {
    return {dy + (g * p.filters_per_group() + m) * p.output_spatial()};
  }
  __device__ Radix a_radix() const { return make_radix(static_cast<int>(p.output_spatial()), 1, 1); }
  __device__ float a(const Row& r, const Digits& d) const {
    return r.dy[int64_t(d.d3) * p.K * p.output_spatial() + d.d0];
  }
  __device__ Col col(int64_t j) const {
    const int64_t jj = j < cols() ? j : 0;
    const int64_t s = jj % p.S, r = jj / p.S % p.R, t = jj / (p.S * p.R) % p.T;
    const int64_t c = jj / p.taps();
    return {x + (g * p.channels_per_group() + c) * p.input_spatial(),
            i32(t * p.dilation[0] - p.pad[0]), i32(r * p.dilation[1] - p.pad[1]),
            i32(s * p.dilation[2] - p.pad[2]), j < cols()};
  }
  __device__ Radix b_radix() const {
    return make_radix(static_cast<int>(p.Q), static_cast<int>(p.P), static_cast<int>(p.Z));
  }
  __device__ float b(const Col& c, const Digits& d) const {
    const int iz = d.d2 * i32(p.stride[0]) + c.dz, ip = d.d1 * i32(p.stride[1]) + c.dp,
              iq = d.d0 * i32(p.stride[2]) + c.dq;
    if (!inside(iz, p.D) || !inside(ip, p.H) || !inside(iq, p.W)) return 0.0f;
    return c.x[d.d3 * p.C * p.input_spatial() + (iz * i32(p.H) + ip) * i32(p.W) + iq];
  }
  __device__ void store(int64_t m, int64_t j, float v) const {
    out[(g * p.filters_per_group() + m) * cols() + j] = v;
  }
};

// One kTile x kTile tile of the GEMM rows [m0, m0 + kTile) x columns [j0, j0 + kTile), summed
// over the reduction indices [k_begin, k_end). blockDim.x == conv_threads(kTile).
template <int kTile, class Problem>
__device__ void implicit_gemm_tile(const Problem& pb, int64_t m0, int64_t j0, int64_t k_begin,
                                   int64_t k_end) {
  constexpr int kSplit = conv_split(kTile);
  constexpr int kThreads = kTile / kThreadM * (kTile / kThreadN);  // per group
  constexpr int kStep = kSplit * kTileK;  // reduction indices per round of all groups
  // +4 keeps the column-wise stores of As (8 threads, one per kk) in different banks.
  __shared__ float As[kSplit][kTileK][kTile + 4];
  __shared__ float Bs[kSplit][kTileK][kTile];
  const int group = static_cast<int>(threadIdx.x) / kThreads;
  const int tid = static_cast<int>(threadIdx.x) % kThreads;
  const int tx = tid % (kTile / kThreadN), ty = tid / (kTile / kThreadN);

  // A: thread loads rows tid / kTileK + i * kARowStep at depth tid % kTileK (consecutive
  // threads read consecutive weights in fprop). B: column tid % kTile (consecutive threads
  // read consecutive voxels) at depths tid / kTile + i * kBDepthStep.
  constexpr int kARowStep = kThreads / kTileK, kALoads = kTile / kARowStep;
  constexpr int kBDepthStep = kThreads / kTile, kBLoads = kTileK / kBDepthStep;
  static_assert(kThreads % kTileK == 0 && kTile % kARowStep == 0 && kTileK % kBDepthStep == 0);
  const int a_kk = tid % kTileK, b_j = tid % kTile, b_kk = tid / kTile;
  typename Problem::Row rows[kALoads];
  bool row_ok[kALoads];
  for (int i = 0; i < kALoads; ++i) {
    const int64_t m = m0 + tid / kTileK + i * kARowStep;
    row_ok[i] = m < pb.rows();
    rows[i] = pb.row(row_ok[i] ? m : 0);
  }
  const typename Problem::Col col = pb.col(j0 + b_j);
  Radix a_radix = pb.a_radix(), b_radix = pb.b_radix();
  a_radix.step = to_digits(kStep, a_radix.b0, a_radix.b1, a_radix.b2);
  b_radix.step = to_digits(kStep, b_radix.b0, b_radix.b1, b_radix.b2);
  const int64_t k_first = k_begin + group * kTileK;  // this group's first slice
  Digits a_digits = to_digits(k_first + a_kk, a_radix.b0, a_radix.b1, a_radix.b2);
  Digits b_digits[kBLoads];
  for (int i = 0; i < kBLoads; ++i)
    b_digits[i] = to_digits(k_first + b_kk + i * kBDepthStep, b_radix.b0, b_radix.b1, b_radix.b2);

  // This group's slice at k0 into registers (zeros past k_end); the digits then point at its
  // next slice.
  float a_next[kALoads], b_next[kBLoads];
  auto load = [&](int64_t k0) {
    const bool a_in = k0 + a_kk < k_end;
    for (int i = 0; i < kALoads; ++i) a_next[i] = row_ok[i] && a_in ? pb.a(rows[i], a_digits) : 0.0f;
    advance(a_digits, a_radix);
    for (int i = 0; i < kBLoads; ++i) {
      b_next[i] = col.valid && k0 + b_kk + i * kBDepthStep < k_end ? pb.b(col, b_digits[i]) : 0.0f;
      advance(b_digits[i], b_radix);
    }
  };

  float acc[kThreadM][kThreadN] = {};
  load(k_first);
  // Every thread runs the same rounds (the barriers need it); a group whose slice lies past
  // k_end multiplies zeros.
  for (int64_t base = k_begin; base < k_end; base += kStep) {
    for (int i = 0; i < kALoads; ++i) As[group][a_kk][tid / kTileK + i * kARowStep] = a_next[i];
    for (int i = 0; i < kBLoads; ++i) Bs[group][b_kk + i * kBDepthStep][b_j] = b_next[i];
    __syncthreads();
    // The next slice's global loads are in flight while this slice is multiplied.
    if (base + kStep < k_end) load(base + kStep + group * kTileK);
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[kThreadM], b[kThreadN];
      for (int i = 0; i < kThreadM; ++i) a[i] = As[group][kk][ty + i * (kTile / kThreadM)];
      for (int j = 0; j < kThreadN; ++j) b[j] = Bs[group][kk][tx + j * (kTile / kThreadN)];
      for (int i = 0; i < kThreadM; ++i)
        for (int j = 0; j < kThreadN; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();  // the next slice overwrites As and Bs
  }
  if constexpr (kSplit > 1) {
    // Groups 1.. hand their sums to group 0, which adds them in group order.
    __shared__ float partial[kSplit - 1][kThreadM * kThreadN][kThreads];
    if (group > 0)
      for (int i = 0; i < kThreadM; ++i)
        for (int j = 0; j < kThreadN; ++j) partial[group - 1][i * kThreadN + j][tid] = acc[i][j];
    __syncthreads();
    if (group > 0) return;
    for (int g = 0; g < kSplit - 1; ++g)
      for (int i = 0; i < kThreadM; ++i)
        for (int j = 0; j < kThreadN; ++j) acc[i][j] += partial[g][i * kThreadN + j][tid];
  }
  for (int i = 0; i < kThreadM; ++i)
    for (int j = 0; j < kThreadN; ++j) {
      const int64_t m = m0 + ty + i * (kTile / kThreadM);
      const int64_t jj = j0 + tx + j * (kTile / kThreadN);
      if (m < pb.rows() && jj < pb.cols()) pb.store(m, jj, acc[i][j]);
    }
}

}  // namespace conv_detail

// grid (column tiles, row tiles, groups), block conv_threads(kTile).
template <int kTile>
__global__ void __launch_bounds__(conv_threads(kTile))
    conv3d_fprop_tiled(Conv3dParams p, const float* __restrict__ x, const float* __restrict__ w,
                       const float* __restrict__ bias, float* __restrict__ y) {
  const conv_detail::FpropProblem pb{p, x, w, bias, y, static_cast<int64_t>(blockIdx.z)};
  conv_detail::implicit_gemm_tile<kTile>(pb, int64_t(blockIdx.y) * kTile, int64_t(blockIdx.x) * kTile,
                                         0, pb.depth());
}

namespace conv_detail {
// The reduction indices of split `split` when a reduction of `depth` is cut into `splits` chunks
// of `split_depth` (the last one shorter).
struct KRange {
  int64_t begin, end;
};
__device__ inline KRange split_range(int64_t split, int64_t splits, int64_t split_depth, int64_t depth) {
  if (splits == 1) return {0, depth};
  const int64_t begin = split * split_depth;
  return {begin, begin + split_depth < depth ? begin + split_depth : depth};
}
}  // namespace conv_detail

// grid (column tiles, row tiles, groups * splits), block conv_threads(kTile). Split s sums the
// reduction indices [s * split_depth, (s + 1) * split_depth) into out + s * (dx elements).
template <int kTile>
__global__ void __launch_bounds__(conv_threads(kTile))
    conv3d_dgrad_tiled(Conv3dParams p, const float* __restrict__ dy, const float* __restrict__ w,
                       float* __restrict__ out, int64_t splits, int64_t split_depth) {
  const int64_t g = blockIdx.z % p.groups, split = blockIdx.z / p.groups;
  const conv_detail::DgradProblem pb{p, dy, w, out + split * p.N * p.C * p.input_spatial(), g};
  const conv_detail::KRange k = conv_detail::split_range(split, splits, split_depth, pb.depth());
  conv_detail::implicit_gemm_tile<kTile>(pb, int64_t(blockIdx.y) * kTile, int64_t(blockIdx.x) * kTile,
                                         k.begin, k.end);
}

// grid (column tiles of the largest phase, row tiles, phases * groups * splits), block
// conv_threads(kTile); splits as conv3d_dgrad_tiled. Phases hold slightly different voxel
// counts: blocks past their phase's columns leave at once.
template <int kTile>
__global__ void __launch_bounds__(conv_threads(kTile))
    conv3d_dgrad_phase_tiled(Conv3dParams p, const float* __restrict__ dy, const float* __restrict__ w,
                             float* __restrict__ out, int64_t splits, int64_t split_depth) {
  using conv_detail::DgradPhaseProblem;
  const int sy = static_cast<int>(p.stride[1]), sx = static_cast<int>(p.stride[2]);
  const int phases = static_cast<int>(p.stride[0]) * sy * sx;
  const int phase = static_cast<int>(blockIdx.z % phases);
  const int64_t g = blockIdx.z / phases % p.groups, split = blockIdx.z / phases / p.groups;
  DgradPhaseProblem pb{p, dy, w, out + split * p.N * p.C * p.input_spatial(), g, {}, {}, {}};
  pb.az = DgradPhaseProblem::axis(phase / (sy * sx), p.stride[0], p.pad[0], p.D, p.T);
  pb.ay = DgradPhaseProblem::axis(phase / sx % sy, p.stride[1], p.pad[1], p.H, p.R);
  pb.ax = DgradPhaseProblem::axis(phase % sx, p.stride[2], p.pad[2], p.W, p.S);
  const int64_t j0 = int64_t(blockIdx.x) * kTile;
  if (j0 >= pb.cols()) return;  // the whole block: no barrier is left waiting
  const conv_detail::KRange k = conv_detail::split_range(split, splits, split_depth, pb.depth());
  conv_detail::implicit_gemm_tile<kTile>(pb, int64_t(blockIdx.y) * kTile, j0, k.begin, k.end);
}

// grid (column tiles, row tiles, groups * splits), block conv_threads(64). Split s sums the
// reduction indices [s * split_depth, (s + 1) * split_depth) into out + s * (dw elements).
__global__ void __launch_bounds__(conv_threads(64))
    conv3d_wgrad_tiled(Conv3dParams p, const float* __restrict__ x, const float* __restrict__ dy,
                       float* __restrict__ out, int64_t splits, int64_t split_depth) {
  const int64_t g = blockIdx.z % p.groups, split = blockIdx.z / p.groups;
  const int64_t dw_elements = p.K * p.channels_per_group() * p.taps();
  const conv_detail::WgradProblem pb{p, x, dy, out + split * dw_elements, g};
  const conv_detail::KRange k = conv_detail::split_range(split, splits, split_depth, pb.depth());
  conv_detail::implicit_gemm_tile<64>(pb, int64_t(blockIdx.y) * 64, int64_t(blockIdx.x) * 64,
                                      k.begin, k.end);
}

// out[i] = sum over s of partial[s * elements + i], in order of s. 1D grid-stride.
__global__ void conv3d_sum_splits(const float* __restrict__ partial, int64_t splits,
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
  int tile = 64;                      // fprop/dgrad: which conv3d_*_tiled<tile> to launch
  int64_t splits = 1;                 // dgrad and wgrad: split-K chunks
  int64_t split_depth = 0;            // dgrad and wgrad: reduction indices per split
  int64_t workspace_elements = 0;     // dgrad and wgrad: floats of the split-K workspace (0: none)
};

namespace conv_detail {
__host__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether a GEMM of rows x cols (z groups/splits) in tiles of `tile` fits CUDA's grid limits.
__host__ inline bool gemm_fits(int64_t rows, int64_t cols, int64_t z, int tile = 64) {
  return ceil_div(cols, tile) <= 0x7fffffff && ceil_div(rows, tile) <= 65535 && z <= 65535;
}

// The tiled kernels walk reduction indices as 32-bit digits (and step them by kTileK).
__host__ inline bool reduction_fits(int64_t outer, int64_t taps) {
  return outer * taps < (int64_t(1) << 30);
}
// ... and address voxels within one channel with 32-bit offsets.
__host__ inline bool spatial_fits(const Conv3dParams& p) {
  return p.input_spatial() < (int64_t(1) << 31) && p.output_spatial() < (int64_t(1) << 31);
}

// 64-tiles, or 32-tiles when 64-tiles would give fewer than kFillBlocks blocks.
__host__ inline int fprop_dgrad_tile(int64_t rows, int64_t cols, int64_t z) {
  const bool few = ceil_div(rows, 64) * ceil_div(cols, 64) * z < kFillBlocks;
  return few && gemm_fits(rows, cols, z, 32) ? 32 : 64;
}

// Number of split-K chunks of a reduction of `depth` indices and the indices per chunk: about
// `depth_per_split` each, whole kTileK slices, at most 64 chunks. One chunk when the reduction
// is empty.
struct Splits {
  int64_t splits = 1, per = 0;
};
__host__ inline Splits reduction_splits(int64_t depth, int64_t depth_per_split) {
  if (depth <= 0) return {};
  int64_t splits = (depth + depth_per_split - 1) / depth_per_split;
  splits = splits < 1 ? 1 : splits > 64 ? 64 : splits;
  // Whole kTileK slices per split; rounding can leave fewer splits than asked.
  const int64_t per = ((depth + splits - 1) / splits + kTileK - 1) / kTileK * kTileK;
  return {(depth + per - 1) / per, per};
}
// wgrad's reduction runs over N * output voxels.
__host__ inline Splits wgrad_splits(const Conv3dParams& p, int64_t depth_per_split) {
  return reduction_splits(p.N * p.output_spatial(), depth_per_split);
}

// The split depth that brings a grid of `blocks` up to kFillBlocks blocks with split-K over a
// reduction of `depth` indices (one split when the grid is already large), each split at least
// 256 indices deep (shorter splits spend more on the workspace than they gain). Depends on the
// shape only, so results are the same on every device.
__host__ inline int64_t fill_depth_per_split(int64_t blocks, int64_t depth) {
  const int64_t per = ceil_div(depth, blocks > 0 ? ceil_div(kFillBlocks, blocks) : 1);
  return per < 256 ? 256 : per;
}
// wgrad always runs 64-tiles.
__host__ inline int64_t wgrad_depth_per_split(const Conv3dParams& p) {
  const int64_t blocks = ceil_div(p.filters_per_group(), 64) *
                         ceil_div(p.channels_per_group() * p.taps(), 64) * p.groups;
  return fill_depth_per_split(blocks, p.N * p.output_spatial());
}

__host__ inline ConvLaunch gemm_launch(const char* op, int64_t rows, int64_t cols, int64_t z,
                                       int tile) {
  MED3D_CHECK(tile == 32 || tile == 64, op, ": tile must be 32 or 64, got ", tile);
  MED3D_CHECK(gemm_fits(rows, cols, z, tile), op,
              ": the GEMM of ", rows, " x ", cols, " (", z,
              " groups/splits) exceeds CUDA's grid limits; split the batch");
  ConvLaunch l;
  l.grid = dim3(static_cast<unsigned>(ceil_div(cols, tile)), static_cast<unsigned>(ceil_div(rows, tile)),
                static_cast<unsigned>(z));
  l.block = dim3(static_cast<unsigned>(conv_threads(tile)));
  l.tile = tile;
  return l;
}
}  // namespace conv_detail

// Whether the conv3d_*_launch helpers below accept `p` (they throw otherwise): callers that
// have a fallback check these first.
__host__ inline bool conv3d_fprop_tiled_fits(const Conv3dParams& p) {
  return conv_detail::spatial_fits(p) && conv_detail::reduction_fits(p.channels_per_group(), p.taps()) &&
         conv_detail::gemm_fits(p.filters_per_group(), p.N * p.output_spatial(), p.groups);
}
__host__ inline bool conv3d_dgrad_tiled_fits(const Conv3dParams& p) {
  return conv_detail::spatial_fits(p) && conv_detail::reduction_fits(p.filters_per_group(), p.taps()) &&
         conv_detail::gemm_fits(p.channels_per_group(), p.N * p.input_spatial(), p.groups);
}
__host__ inline bool conv3d_wgrad_tiled_fits(const Conv3dParams& p, int64_t depth_per_split) {
  return conv_detail::spatial_fits(p) && conv_detail::reduction_fits(p.N, p.output_spatial()) &&
         conv_detail::gemm_fits(p.filters_per_group(), p.channels_per_group() * p.taps(),
                                p.groups * conv_detail::wgrad_splits(p, depth_per_split).splits);
}
__host__ inline bool conv3d_wgrad_tiled_fits(const Conv3dParams& p) {
  return conv3d_wgrad_tiled_fits(p, conv_detail::wgrad_depth_per_split(p));
}

// `tile` 0 picks the tile by the grid's size (conv_detail::fprop_dgrad_tile); tests name one.
__host__ inline ConvLaunch conv3d_fprop_launch(const Conv3dParams& p, int tile = 0) {
  MED3D_CHECK(conv_detail::spatial_fits(p), "conv3d_fprop: ", p.input_spatial(), " input and ",
              p.output_spatial(), " output voxels per channel exceed the tiled kernel's 32-bit offsets");
  MED3D_CHECK(conv_detail::reduction_fits(p.channels_per_group(), p.taps()), "conv3d_fprop: ",
              p.channels_per_group(), " channels per group times ", p.taps(),
              " taps exceed the tiled kernel's 30-bit reduction index; use more groups");
  const int64_t rows = p.filters_per_group(), cols = p.N * p.output_spatial();
  return conv_detail::gemm_launch("conv3d_fprop", rows, cols, p.groups,
                                  tile ? tile : conv_detail::fprop_dgrad_tile(rows, cols, p.groups));
}

namespace conv_detail {
// dgrad's geometry: the tile (0: by the grid's size), then split-K over `depth` (the longest
// reduction: phases take the one with the most taps) when even that tile leaves the grid small
// (depth_per_split 0: fill_depth_per_split decides; tests name one). The workspace holds one dx
// per split.
__host__ inline ConvLaunch dgrad_launch(const Conv3dParams& p, int64_t rows, int64_t cols, int64_t z,
                                        int64_t depth, int tile, int64_t depth_per_split) {
  if (tile == 0) tile = fprop_dgrad_tile(rows, cols, z);
  if (depth_per_split == 0)
    depth_per_split = fill_depth_per_split(ceil_div(rows, tile) * ceil_div(cols, tile) * z, depth);
  const Splits split = reduction_splits(depth, depth_per_split);
  ConvLaunch l = gemm_launch("conv3d_dgrad", rows, cols, z * split.splits, tile);
  l.splits = split.splits;
  l.split_depth = split.per;
  l.workspace_elements = split.splits > 1 ? split.splits * p.N * p.C * p.input_spatial() : 0;
  return l;
}
}  // namespace conv_detail

// `tile` 0 picks the tile by the grid's size; `depth_per_split` 0 picks the split-K (tests name
// them).
__host__ inline ConvLaunch conv3d_dgrad_launch(const Conv3dParams& p, int tile = 0,
                                               int64_t depth_per_split = 0) {
  MED3D_CHECK(conv_detail::spatial_fits(p), "conv3d_dgrad: ", p.input_spatial(), " input and ",
              p.output_spatial(), " output voxels per channel exceed the tiled kernel's 32-bit offsets");
  MED3D_CHECK(conv_detail::reduction_fits(p.filters_per_group(), p.taps()), "conv3d_dgrad: ",
              p.filters_per_group(), " filters per group times ", p.taps(),
              " taps exceed the tiled kernel's 30-bit reduction index; use more groups");
  const int64_t rows = p.channels_per_group(), cols = p.N * p.input_spatial();
  return conv_detail::dgrad_launch(p, rows, cols, p.groups, p.filters_per_group() * p.taps(), tile,
                                   depth_per_split);
}

// The strided dgrad by stride phases: when some stride exceeds 1 and every dilation is 1.
__host__ inline bool conv3d_dgrad_by_phase(const Conv3dParams& p) {
  const bool strided = p.stride[0] > 1 || p.stride[1] > 1 || p.stride[2] > 1;
  const bool dilated = p.dilation[0] > 1 || p.dilation[1] > 1 || p.dilation[2] > 1;
  return strided && !dilated;
}
namespace conv_detail {
// The GEMM of dgrad by stride phase, sized by its largest phase: columns (voxels of phase 0),
// z = phases * groups, and the longest reduction (phase 0's ceil(kernel / stride) taps per axis).
struct PhaseGemm {
  int64_t rows, cols, z, depth;
};
__host__ inline PhaseGemm phase_gemm(const Conv3dParams& p) {
  return {p.channels_per_group(),
          p.N * ceil_div(p.D, p.stride[0]) * ceil_div(p.H, p.stride[1]) * ceil_div(p.W, p.stride[2]),
          p.groups * p.stride[0] * p.stride[1] * p.stride[2],
          p.filters_per_group() * ceil_div(p.T, p.stride[0]) * ceil_div(p.R, p.stride[1]) *
              ceil_div(p.S, p.stride[2])};
}
}  // namespace conv_detail
__host__ inline bool conv3d_dgrad_phase_tiled_fits(const Conv3dParams& p) {
  const conv_detail::PhaseGemm m = conv_detail::phase_gemm(p);
  return conv_detail::spatial_fits(p) && conv_detail::reduction_fits(p.filters_per_group(), p.taps()) &&
         conv_detail::gemm_fits(m.rows, m.cols, m.z);
}
// As conv3d_dgrad_launch; the grid's z is phases * groups * splits.
__host__ inline ConvLaunch conv3d_dgrad_phase_launch(const Conv3dParams& p, int tile = 0,
                                                     int64_t depth_per_split = 0) {
  MED3D_CHECK(conv3d_dgrad_phase_tiled_fits(p), "conv3d_dgrad (by stride phase): the GEMM of ",
              p.channels_per_group(), " channels x ", p.N * p.input_spatial(),
              " voxels exceeds the tiled kernel's limits; split the batch");
  const conv_detail::PhaseGemm m = conv_detail::phase_gemm(p);
  return conv_detail::dgrad_launch(p, m.rows, m.cols, m.z, m.depth, tile, depth_per_split);
}

// Splits the (long) wgrad reduction into chunks of about `depth_per_split` indices so that small
// filters still occupy the GPU; the workspace then holds one dw per split.
__host__ inline ConvLaunch conv3d_wgrad_launch(const Conv3dParams& p, int64_t depth_per_split) {
  MED3D_CHECK(conv_detail::spatial_fits(p), "conv3d_wgrad: ", p.input_spatial(), " input and ",
              p.output_spatial(), " output voxels per channel exceed the tiled kernel's 32-bit offsets");
  MED3D_CHECK(conv_detail::reduction_fits(p.N, p.output_spatial()), "conv3d_wgrad: ", p.N,
              " samples times ", p.output_spatial(),
              " output voxels exceed the tiled kernel's 30-bit reduction index; split the batch");
  const conv_detail::Splits split = conv_detail::wgrad_splits(p, depth_per_split);
  const int64_t splits = split.splits, per = split.per;
  ConvLaunch l = conv_detail::gemm_launch("conv3d_wgrad", p.filters_per_group(),
                                          p.channels_per_group() * p.taps(), p.groups * splits, 64);
  l.splits = splits;
  l.split_depth = per;
  l.workspace_elements = splits > 1 ? splits * p.K * p.channels_per_group() * p.taps() : 0;
  return l;
}
__host__ inline ConvLaunch conv3d_wgrad_launch(const Conv3dParams& p) {
  return conv3d_wgrad_launch(p, conv_detail::wgrad_depth_per_split(p));
}

__host__ inline ConvLaunch conv3d_bias_grad_launch(const Conv3dParams& p) {
  ConvLaunch l;
  l.grid = dim3(static_cast<unsigned>(p.K));
  l.block = dim3(256);
  l.shared_bytes = 256 / 32 * sizeof(double);
  return l;
}

}  // namespace med3d::kernels::cuda
