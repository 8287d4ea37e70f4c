// CPU conv3d fprop / dgrad / wgrad: implicit GEMM (f32) or vol2col + GEMM per sample and group (see the header).
#include "med3d/kernels/cpu/conv3d.h"

#include <Eigen/Core>
#include <omp.h>
#include <algorithm>
#include <bit>
#include <exception>
#include <optional>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "med3d/kernels/cpu/conv3d_direct.h"
#include "med3d/kernels/cpu/conv3d_padded.h"
#include "med3d/kernels/cpu/conv3d_winograd.h"
#include "med3d/kernels/cpu/gemm.h"
#include "med3d/kernels/cpu_loops.h"
#include "simd.h"

namespace med3d::kernels::cpu {

// The padded kernels (the stem) are dispatched only in vector builds. In the portable loops
// (the sanitizer build) their unfused products moved the f32-vs-f64 gradient of the lung
// decoder's stem by 4e-4 of its norm, over the model goldens' 1e-4, while matching the f64
// kernels to 1e-5 conv by conv (tests call them directly there); the implicit GEMM stays.
#if defined(MED3D_SIMD)
constexpr bool kPaddedKernels = true;
#else
constexpr bool kPaddedKernels = false;
#endif
// The Winograd kernels (3x3x3 same convs) are dispatched under AVX-512, where they were measured
// (2 threads, Zen 4): layer1 fprop/dgrad/wgrad 0.56x/0.68x/0.76x the direct kernels' time,
// layer2's 4x8x8 convs 0.83x, the head's 0.57-0.70x. An AVX2 build on the same machine: layer1
// fprop/dgrad 0.72x/0.80x, but wgrad 1.5-3x and layer2 1.24x/1.64x (its 8-lane transforms cost
// twice as many instructions), so AVX2 and the portable loops keep the direct kernels (tests
// call the Winograd ones directly in every build).
#if defined(__AVX512F__)
constexpr bool kWinogradKernels = true;
#else
constexpr bool kWinogradKernels = false;
#endif

namespace {

// Whether the Winograd kernels run this conv: they apply, in a vector build, and the caller's
// scratch holds theirs (conv3d_scratch_elements counts it within its budget).
bool winograd_fits(const Conv3dParams& p, int64_t scratch_elements) {
  return kWinogradKernels && conv3d_winograd_applies(p) && scratch_elements >= conv3d_winograd_scratch_elements(p);
}

// The per-tap path's thresholds (make_plan): taken when under this share of the nominal FLOPs
// reads the input, and both channel counts are at least this large (shallower GEMMs lose to
// vol2col's single deep one).
constexpr double kPerTapMaxEffectiveShare = 0.8;
constexpr int64_t kPerTapMinChannels = 16;

template <class T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A row-major view of `rows` x `cols` elements whose rows start `ld` elements apart.
template <class T>
Eigen::Map<RowMajor<T>, 0, Eigen::OuterStride<>> matrix(T* data, int64_t rows, int64_t cols,
                                                        int64_t ld) {
  return {data, rows, cols, Eigen::OuterStride<>(ld)};
}
template <class T>
Eigen::Map<const RowMajor<T>, 0, Eigen::OuterStride<>> matrix(const T* data, int64_t rows,
                                                              int64_t cols, int64_t ld) {
  return {data, rows, cols, Eigen::OuterStride<>(ld)};
}

// An operand of gemm below: a row-major matrix with row pitch ld, read transposed when `t`.
template <class T>
struct Operand {
  const T* data;
  int64_t ld;
  bool t = false;
};

// C[m, n] (row pitch ldc) = (accumulate ? C : 0) + op(A)[m, k] op(B)[k, n]: our gemm_f32 for
// float (faster than Eigen's sgemm on this table's shapes, bench `gemm`), Eigen for double.
void gemm(Operand<float> a, Operand<float> b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
          bool accumulate) {
  const auto view = [](Operand<float> o) { return o.t ? gemm_transposed(o.data, o.ld) : gemm_rows(o.data, o.ld); };
  gemm_f32(view(a), view(b), c, ldc, m, n, k, accumulate);
}
template <class L, class R>
void eigen_gemm(const L& a, const R& b, double* c, int64_t ldc, int64_t m, int64_t n, bool accumulate) {
  if (accumulate)
    matrix(c, m, n, ldc).noalias() += a * b;
  else
    matrix(c, m, n, ldc).noalias() = a * b;
}
void gemm(Operand<double> a, Operand<double> b, double* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
          bool accumulate) {
  const auto am = matrix(a.data, a.t ? k : m, a.t ? m : k, a.ld);
  const auto bm = matrix(b.data, b.t ? n : k, b.t ? k : n, b.ld);
  if (a.t && b.t)
    eigen_gemm(am.transpose(), bm.transpose(), c, ldc, m, n, accumulate);
  else if (a.t)
    eigen_gemm(am.transpose(), bm, c, ldc, m, n, accumulate);
  else if (b.t)
    eigen_gemm(am, bm.transpose(), c, ldc, m, n, accumulate);
  else
    eigen_gemm(am, bm, c, ldc, m, n, accumulate);
}

// The outputs o in [0, out) whose input index o * stride + offset lies in [0, in): [lo, hi).
struct Range {
  int64_t lo, hi;
};
Range inside(int64_t out, int64_t in, int64_t offset, int64_t stride) {
  const int64_t lo = std::min(offset >= 0 ? 0 : (-offset + stride - 1) / stride, out);
  const int64_t hi = in - offset <= 0 ? 0 : (in - offset + stride - 1) / stride;
  return {lo, std::clamp(hi, lo, out)};
}

// Where kernel tap `tap` (t * R * S + r * S + s) reads relative to an output voxel's strided
// position, per axis: its index along the axis times the dilation, less the padding.
Dims3 tap_offset(const Conv3dParams& p, int64_t tap) {
  const Dims3 k{tap / (p.R * p.S), tap / p.S % p.R, tap % p.S};
  Dims3 offset{};
  for (int a = 0; a < 3; ++a) offset[a] = k[a] * p.dilation[a] - p.pad[a];
  return offset;
}

// One live tap of the per-tap path: the output box r[0] x r[1] x r[2] (z, p, q ranges) whose
// input index o * stride + offset lies inside the input along every axis.
struct TapBox {
  int64_t tap = 0;
  Range r[3]{};
  Dims3 offset{};
  int64_t plane_voxels() const { return (r[1].hi - r[1].lo) * (r[2].hi - r[2].lo); }
};

// How one pass lays out its column matrix and scratch.
struct Plan {
  // A plain GEMM on the input: one live tap that reads each output voxel's own input voxel (unit
  // stride, matching extents). A 1x1x1 conv, or a dilated one whose other taps read only padding
  // (DenseASPP's d18 and d24 branches on 8x16x16 maps: the line tiles ran their fprop and dgrad
  // at 20-26% of the FMA peak, an eighth of the time copying the input to a padded pitch).
  bool pointwise = false;
  // Kernel taps (t * R * S + r * S + s) that read the input for some output voxel. The others
  // only ever read padding (large dilations on small maps, as in DenseASPP), so they get no
  // column rows and their weights are gathered out: the GEMMs skip that work entirely.
  std::vector<int64_t> taps;
  bool pruned = false;          // some taps are dead: weights are gathered into the scratch
  int64_t rows = 0;             // column-matrix rows per group: C/groups * taps.size()
  int64_t weight_elements = 0;  // scratch for the gathered weights [K, rows] if pruned
  int64_t lines_per_block = 0;  // output lines (z, p) per vol2col block
  // Per-tap GEMMs instead of vol2col (see TapBox): when a large share of the (output voxel,
  // tap) pairs reads padding, as in dilated convs on small maps, each live tap multiplies
  // exactly the outputs whose input lies inside and no zeros at all.
  bool per_tap = false;
  std::vector<TapBox> boxes;     // one per live tap
  int64_t box_planes = 0;        // output planes (z) per per-tap GEMM chunk
  int64_t box_plane_voxels = 0;  // the largest box's voxels per plane (p * q extents)
};

// The live taps along one axis, then their (t, r, s) products.
std::vector<int64_t> live_taps(const Conv3dParams& p) {
  std::vector<int64_t> axis[3];
  const Dims3 in = p.input_extent(), kernel = p.kernel_extent(), out = p.output_extent();
  for (int a = 0; a < 3; ++a)
    for (int64_t t = 0; t < kernel[a]; ++t) {
      const Range r = inside(out[a], in[a], t * p.dilation[a] - p.pad[a], p.stride[a]);
      if (r.lo < r.hi) axis[a].push_back(t);
    }
  std::vector<int64_t> taps;
  for (int64_t t : axis[0])
    for (int64_t r : axis[1])
      for (int64_t s : axis[2]) taps.push_back((t * p.R + r) * p.S + s);
  return taps;
}

// Blocks are whole output lines of Q voxels, as many as fit `scratch_elements` (at least one).
Plan make_plan(const Conv3dParams& p, int64_t scratch_elements) {
  Plan plan;
  plan.taps = live_taps(p);
  const int64_t live = static_cast<int64_t>(plan.taps.size());
  plan.pointwise = live == 1 && p.stride == Dims3{1, 1, 1} && p.Z == p.D && p.P == p.H && p.Q == p.W &&
                   tap_offset(p, plan.taps[0]) == Dims3{0, 0, 0};
  plan.rows = p.channels_per_group() * live;
  plan.pruned = live < p.taps();
  plan.weight_elements = plan.pruned ? p.K * plan.rows : 0;
  const int64_t line = std::max<int64_t>(plan.rows * p.Q, 1);
  const int64_t lines = std::max<int64_t>(p.Z * p.P, 1);
  plan.lines_per_block =
      std::clamp<int64_t>((scratch_elements - plan.weight_elements) / line, 1, lines);
  // The per-tap path pays a gather and a scatter-add of every box, so it only wins when a
  // large share of the column matrix would be padding zeros and the GEMMs stay deep (many
  // channels). Its scratch: the weights of every live tap [live, K, C] and two buffers of
  // max(C, K) channels x box_planes planes.
  const bool sparse = static_cast<double>(conv3d_flops_effective(p)) <
                      kPerTapMaxEffectiveShare * static_cast<double>(conv3d_flops_nominal(p));
  if (!plan.pointwise && p.groups == 1 && std::min(p.C, p.K) >= kPerTapMinChannels && sparse) {
    for (int64_t tap : plan.taps) {
      TapBox b;
      b.tap = tap;
      b.offset = tap_offset(p, tap);
      const Dims3 in = p.input_extent(), out = p.output_extent();
      for (int a = 0; a < 3; ++a) b.r[a] = inside(out[a], in[a], b.offset[a], p.stride[a]);
      plan.box_plane_voxels = std::max(plan.box_plane_voxels, b.plane_voxels());
      plan.boxes.push_back(b);
    }
    const int64_t weights = p.K * p.C * live;
    const int64_t plane = 2 * std::max(p.C, p.K) * std::max<int64_t>(plan.box_plane_voxels, 1);
    if (weights + plane <= scratch_elements) {
      plan.per_tap = true;
      plan.weight_elements = weights;
      plan.box_planes = std::clamp<int64_t>((scratch_elements - weights) / plane, 1, p.Z);
    }
  }
  return plan;
}

int64_t scratch_needed(const Conv3dParams& p, const Plan& plan) {
  if (plan.pointwise) return plan.weight_elements;
  if (plan.per_tap)
    return plan.weight_elements +
           2 * std::max(p.C, p.K) * plan.box_planes * std::max<int64_t>(plan.box_plane_voxels, 1);
  return plan.weight_elements + plan.rows * plan.lines_per_block * p.Q;
}

Plan checked_plan(const Conv3dParams& p, int64_t scratch_elements) {
  const Plan plan = make_plan(p, scratch_elements);
  MED3D_CHECK(scratch_elements >= scratch_needed(p, plan),
              "conv3d kernels: the scratch buffer holds ", scratch_elements,
              " elements but this conv needs at least ", scratch_needed(p, plan),
              "; size it with conv3d_scratch_elements");
  return plan;
}

// w [K, C/groups, T*R*S] restricted to the live taps: [K, C/groups * live taps]. On all threads
// over w's size, not the gathered one: with one live tap of 27 (DenseASPP d18/d24) each element
// read is a cache line of w from memory; on one thread the gather took ~6% of their fprop
// (on two: d24 fprop 0.95-0.96x the time, dgrad 0.98x; a prefetch 32 filters ahead added nothing).
template <class T>
void gather_weights(const Conv3dParams& p, const Plan& plan, const T* w, T* out) {
  const int64_t live = static_cast<int64_t>(plan.taps.size()), pairs = p.K * p.channels_per_group();
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && pairs * p.taps() > kParallelGrain)
  for (int64_t kc = 0; kc < pairs; ++kc)
    for (int64_t l = 0; l < live; ++l) out[kc * live + l] = w[kc * p.taps() + plan.taps[l]];
}

// The inverse for gradients: dead taps get zero.
template <class T>
void scatter_weights(const Conv3dParams& p, const Plan& plan, const T* in, T* w) {
  const int64_t live = static_cast<int64_t>(plan.taps.size());
  std::fill(w, w + p.K * p.channels_per_group() * p.taps(), T(0));
  for (int64_t kc = 0; kc < p.K * p.channels_per_group(); ++kc)
    for (int64_t l = 0; l < live; ++l) w[kc * p.taps() + plan.taps[l]] = in[kc * live + l];
}

// Walks tap (t, r, s) over the block's output lines: calls inside(l, base, qs) for a line whose
// (d, h) lies in the input, where output q reads input index base + q * stride_w and qs are the
// q whose w lies in the input too, and outside(l) for the other lines.
template <class Inside, class Outside>
void walk_tap(const Conv3dParams& p, int64_t tap, int64_t line0, int64_t lines, Inside&& inside_fn,
              Outside&& outside_fn) {
  const int64_t t = tap / (p.R * p.S), r = (tap / p.S) % p.R, s = tap % p.S;
  const int64_t w_offset = s * p.dilation[2] - p.pad[2];
  const Range qs = inside(p.Q, p.W, w_offset, p.stride[2]);
  for (int64_t l = 0; l < lines; ++l) {
    const int64_t z = (line0 + l) / p.P, y = (line0 + l) % p.P;
    const int64_t d = z * p.stride[0] - p.pad[0] + t * p.dilation[0];
    const int64_t h = y * p.stride[1] - p.pad[1] + r * p.dilation[1];
    if (d < 0 || d >= p.D || h < 0 || h >= p.H || qs.lo == qs.hi)
      outside_fn(l);
    else
      inside_fn(l, (d * p.H + h) * p.W + w_offset, qs);
  }
}

// Where live tap i reads the input: input index = output index * stride + shift along each
// axis; qs are the output q whose w lies inside the input.
struct TapShift {
  Dims3 shift;
  Range qs;
};

std::vector<TapShift> tap_shifts(const Conv3dParams& p, const std::vector<int64_t>& taps) {
  std::vector<TapShift> shifts;
  for (int64_t tap : taps) {
    TapShift t;
    t.shift = tap_offset(p, tap);
    t.qs = inside(p.Q, p.W, t.shift[2], p.stride[2]);
    shifts.push_back(t);
  }
  return shifts;
}

// dst[i * ld + j] = col[row0 + i, v0 + j] for i < rows, j < count, where col [C/groups * live
// taps, Z * P * Q] is the column matrix: col[c * live + i, voxel] = x[c, the input voxel that
// live tap i reads for that output voxel] (0 in the padding); x points at the group's first
// channel. The one gather of the vol2col path and of the implicit GEMMs (whose panels it
// fills straight from x), so both multiply exactly the same matrix.
#if defined(__AVX512F__)
// fill_columns for f32 with width stride 1 or 2, the implicit GEMMs' hot loop: the block's
// voxels in chunks of up to 16 lanes of one output line, and for every (live tap, chunk) where
// its lanes read in the input and which of them lie inside (load masks); then each row is one
// masked load (two and an even-lane shuffle for stride 2) and one store per chunk.
void fill_columns_avx512(const Conv3dParams& p, const std::vector<TapShift>& shifts, const float* x,
                         int64_t row0, int64_t rows, int64_t v0, int64_t count, float* dst, int64_t ld) {
  struct Chunk {
    int64_t j, z, y, q;
    __mmask16 lanes;
  };
  std::vector<Chunk> chunks;
  for (int64_t v = v0; v < v0 + count;) {
    const int64_t line = v / p.Q, q = v % p.Q, n = std::min({p.Q - q, v0 + count - v, int64_t(16)});
    chunks.push_back({v - v0, line / p.P, line % p.P, q, static_cast<__mmask16>((1u << n) - 1)});
    v += n;
  }
  const int64_t live = static_cast<int64_t>(shifts.size()), n_chunks = static_cast<int64_t>(chunks.size());
  const int64_t sw = p.stride[2];
  // Only the taps of rows [row0, row0 + rows) are needed; a block of rows usually holds all.
  const int64_t first_tap = rows >= live ? 0 : row0 % live, n_taps = std::min(rows, live);
  struct Read {
    int64_t offset;  // input voxel of lane 0 (0 when no lane reads inside)
    __mmask16 first, second;  // the input floats [offset, +16) and [offset + 16, +16) to load
  };
  std::vector<Read> reads(static_cast<std::size_t>(n_taps * n_chunks));
  for (int64_t ti = 0; ti < n_taps; ++ti) {
    const TapShift& t = shifts[static_cast<std::size_t>((first_tap + ti) % live)];
    for (int64_t ci = 0; ci < n_chunks; ++ci) {
      const Chunk& c = chunks[static_cast<std::size_t>(ci)];
      const int64_t d = c.z * p.stride[0] + t.shift[0], h = c.y * p.stride[1] + t.shift[1];
      Read r{0, 0, 0};
      if (d >= 0 && d < p.D && h >= 0 && h < p.H) {
        const int64_t lanes = std::popcount(static_cast<unsigned>(c.lanes));
        const int64_t a = std::clamp<int64_t>(t.qs.lo - c.q, 0, lanes), b = std::clamp<int64_t>(t.qs.hi - c.q, a, lanes);
        uint32_t floats = 0;  // bit i: input float offset + i is read
        for (int64_t lane = a; lane < b; ++lane) floats |= 1u << (lane * sw);
        r = {(d * p.H + h) * p.W + t.shift[2] + c.q * sw, static_cast<__mmask16>(floats & 0xFFFF),
             static_cast<__mmask16>(floats >> 16)};
        if (a == b) r.offset = 0;
      }
      reads[static_cast<std::size_t>(ti * n_chunks + ci)] = r;
    }
  }
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t row = row0 + i;
    const float* xc = x + row / live * p.input_spatial();
    const int64_t ti = rows >= live ? row % live : (row % live - first_tap + live) % live;
    const Read* r = reads.data() + ti * n_chunks;
    float* o = dst + i * ld;
    for (int64_t ci = 0; ci < n_chunks; ++ci) {
      const Chunk& c = chunks[static_cast<std::size_t>(ci)];
      const float* src = xc + r[ci].offset;
      __m512 v = _mm512_maskz_loadu_ps(r[ci].first, src);
      if (sw == 2) v = _mm512_permutex2var_ps(v, even, _mm512_maskz_loadu_ps(r[ci].second, src + 16));
      _mm512_mask_storeu_ps(o + c.j, c.lanes, v);
    }
  }
}
#endif

template <class T>
void fill_columns(const Conv3dParams& p, const std::vector<TapShift>& shifts, const T* x, int64_t row0,
                  int64_t rows, int64_t v0, int64_t count, T* dst, int64_t ld) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>)
    if (p.stride[2] <= 2) return fill_columns_avx512(p, shifts, x, row0, rows, v0, count, dst, ld);
#endif
  // The block's voxels as pieces of output lines: voxels [j, j + n) are q0.. of line (z, y).
  struct Piece {
    int64_t j, z, y, q0, n;
  };
  std::vector<Piece> pieces;
  for (int64_t v = v0; v < v0 + count;) {
    const int64_t line = v / p.Q, q0 = v % p.Q, n = std::min(p.Q - q0, v0 + count - v);
    pieces.push_back({v - v0, line / p.P, line % p.P, q0, n});
    v += n;
  }
  const int64_t live = static_cast<int64_t>(shifts.size()), sw = p.stride[2];
  for (int64_t i = 0; i < rows; ++i) {
    const T* xc = x + (row0 + i) / live * p.input_spatial();
    const TapShift& t = shifts[static_cast<std::size_t>((row0 + i) % live)];
    for (const Piece& piece : pieces) {
      T* o = dst + i * ld + piece.j;  // o[q - q0] for q in [q0, q0 + n)
      const int64_t d = piece.z * p.stride[0] + t.shift[0], h = piece.y * p.stride[1] + t.shift[1];
      const int64_t end = piece.q0 + piece.n;
      int64_t lo = end, hi = end;  // [lo, hi): the q that read inside the input
      if (d >= 0 && d < p.D && h >= 0 && h < p.H) {
        lo = std::clamp(t.qs.lo, piece.q0, end);
        hi = std::clamp(t.qs.hi, lo, end);
      }
      const int64_t base = (d * p.H + h) * p.W + t.shift[2];
      for (int64_t q = piece.q0; q < lo; ++q) o[q - piece.q0] = T(0);
      int64_t q = lo;
#if defined(MED3D_SIMD) && !defined(__AVX512F__)
      // Width stride 2 under AVX2: 8 outputs from two loads and an even-lane shuffle, the
      // second load masked short of the 16th float, which no output reads (element by element
      // this gather was a quarter of layer2's wgrad).
      if constexpr (std::is_same_v<T, float>)
        if (sw == 2) {
          const __m256i fifteen = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, -1, 0);
          for (; q + 8 <= hi; q += 8) {
            const float* src = xc + base + q * 2;
            const __m256 a = _mm256_loadu_ps(src), b = _mm256_maskload_ps(src + 8, fifteen);
            const __m256 evens = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
            _mm256_storeu_ps(o + (q - piece.q0),
                             _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(evens), _MM_SHUFFLE(3, 1, 2, 0))));
          }
        }
#endif
      if (sw == 1)
        for (; q < hi; ++q) o[q - piece.q0] = xc[base + q];
      else
        for (; q < hi; ++q) o[q - piece.q0] = xc[base + q * sw];
      for (q = hi; q < end; ++q) o[q - piece.q0] = T(0);
    }
  }
}

// The block of output lines [line0, line0 + lines) of the column matrix, col [rows, lines * Q].
// Rows are independent, so they are spread over the threads.
template <class T>
void vol2col(const Conv3dParams& p, const Plan& plan, const std::vector<TapShift>& shifts, const T* x,
             int64_t line0, int64_t lines, T* col) {
  const int64_t cols = lines * p.Q;
  constexpr int64_t kRowsPerTask = 16;
  const int64_t tasks = (plan.rows + kRowsPerTask - 1) / kRowsPerTask;
#pragma omp parallel for schedule(static) if (plan.rows * cols > kParallelGrain)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t row0 = task * kRowsPerTask, rows = std::min(kRowsPerTask, plan.rows - row0);
    fill_columns(p, shifts, x, row0, rows, line0 * p.Q, cols, col + row0 * cols, cols);
  }
}

// The column matrix of the group starting at x as a GEMM operand that is never stored: the
// implicit GEMM packs its panels straight from x (transposed for wgrad's col^T).
GemmSource column_source(const Conv3dParams& p, const std::vector<TapShift>& shifts, const float* x,
                         bool transposed) {
  return {[&p, &shifts, x](int64_t row0, int64_t rows, int64_t col0, int64_t cols, float* dst, int64_t ld) {
            fill_columns(p, shifts, x, row0, rows, col0, cols, dst, ld);
          },
          transposed};
}

// Whether the taps tile x exactly: kernel = stride along every axis, no padding or dilation, and
// x as large as the output's strided positions cover (the head's k2 s2 transposed conv, whose
// forward pass is this dgrad). Each x voxel then gets exactly one tap's product.
bool taps_tile_input(const Conv3dParams& p) {
  const Dims3 kernel = p.kernel_extent(), in = p.input_extent(), out = p.output_extent();
  for (int a = 0; a < 3; ++a)
    if (p.stride[a] != kernel[a] || p.pad[a] != 0 || p.dilation[a] != 1 || in[a] != out[a] * kernel[a]) return false;
  return true;
}

// x[(z T + t), (y R + r), q S + s] = col[(t, r, s) row, l * Q + q] for one output line l = (z, y) of
// a conv whose taps tile x (taps_tile_input; rows: the channel's first tap row, `cols` apart): the
// S taps of each kernel row interleave along x's width.
template <class T>
void write_tiled_line(const Conv3dParams& p, const T* rows, int64_t cols, int64_t l, int64_t z, int64_t y, T* xc) {
  for (int64_t t = 0; t < p.T; ++t)
    for (int64_t r = 0; r < p.R; ++r) {
      const T* src = rows + (t * p.R + r) * p.S * cols + l * p.Q;
      T* dst = xc + ((z * p.T + t) * p.H + y * p.R + r) * p.W;
      int64_t q = 0;
#if defined(__AVX512F__)
      if constexpr (std::is_same_v<T, float>) {
        // Two taps' 8 voxels interleaved in one register: one 64-byte store per 8 output voxels.
        if (p.S == 2) {
          const __m512i pairs = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
          for (; q < p.Q; q += 8) {
            const int n = static_cast<int>(std::min<int64_t>(8, p.Q - q));
            const __mmask16 in_mask = static_cast<__mmask16>((1u << n) - 1);
            const __m512 even = _mm512_maskz_loadu_ps(in_mask, src + q);
            const __m512 odd = _mm512_maskz_loadu_ps(in_mask, src + cols + q);
            _mm512_mask_storeu_ps(dst + 2 * q, static_cast<__mmask16>((1u << (2 * n)) - 1),
                                  _mm512_permutex2var_ps(even, pairs, odd));
          }
        }
      }
#endif
      for (; q < p.Q; ++q)
        for (int64_t s = 0; s < p.S; ++s) dst[q * p.S + s] = src[s * cols + q];
    }
}

// x[c, d, h, w] += col[row, l * Q + q] for the block's lines; zeroes x first on the first
// block. Taps of one channel overlap in x, so one thread owns each channel: race-free, and the
// sums run in a fixed order. Where the taps tile x instead, each voxel is written once, with no
// zeroing and no sum: the head's transposed conv (2x512x4x8x8 -> 32, k2 s2) takes 0.95x the time
// on 2 threads, 0.92x on one, 0.93x at 1x512x8x16x16 (col2vol from 9% of it to 4%).
template <class T>
void col2vol(const Conv3dParams& p, const Plan& plan, const T* col, int64_t line0, int64_t lines,
             T* x) {
  const int64_t cols = lines * p.Q, sw = p.stride[2];
  const int64_t live = static_cast<int64_t>(plan.taps.size());
  const bool tiled = taps_tile_input(p) && live == p.taps();
#pragma omp parallel for schedule(static) if (plan.rows * cols > kParallelGrain)
  for (int64_t c = 0; c < p.channels_per_group(); ++c) {
    T* xc = x + c * p.input_spatial();
    if (tiled) {
      for (int64_t l = 0; l < lines; ++l)
        write_tiled_line(p, col + c * live * cols, cols, l, (line0 + l) / p.P, (line0 + l) % p.P, xc);
      continue;
    }
    if (line0 == 0) std::fill(xc, xc + p.input_spatial(), T(0));
    for (int64_t i = 0; i < live; ++i) {
      const T* in = col + (c * live + i) * cols;
      walk_tap(
          p, plan.taps[i], line0, lines,
          [&](int64_t l, int64_t base, Range qs) {
            const T* src = in + l * p.Q;
            if (sw == 1)
              for (int64_t q = qs.lo; q < qs.hi; ++q) xc[base + q] += src[q];
            else
              for (int64_t q = qs.lo; q < qs.hi; ++q) xc[base + q * sw] += src[q];
          },
          [](int64_t) {});
    }
  }
}

// --- the per-tap path -------------------------------------------------------------------------
// Visits the lines (z, p) of box planes [z0, z1) for `channels` channels: fn(c, buf, vol_in,
// vol_out, count) where the line's count elements are buf[i] (the packed box, [c][z][p][q]),
// input voxel vol_in + i * stride_w (volume [channels, D, H, W]) and output voxel vol_out + i
// (volume [channels, Z, P, Q]). Channels are spread over the threads; each owns its lines.
template <class Fn>
void for_box_lines(const Conv3dParams& p, const TapBox& b, int64_t z0, int64_t z1,
                   int64_t channels, Fn&& fn) {
  const int64_t pn = b.r[1].hi - b.r[1].lo, qn = b.r[2].hi - b.r[2].lo;
  const int64_t voxels = (z1 - z0) * pn * qn;
#pragma omp parallel for schedule(static) if (channels * voxels > kParallelGrain)
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t z = z0; z < z1; ++z)
      for (int64_t y = b.r[1].lo; y < b.r[1].hi; ++y) {
        const int64_t d = z * p.stride[0] + b.offset[0], h = y * p.stride[1] + b.offset[1];
        const int64_t w = b.r[2].lo * p.stride[2] + b.offset[2];
        fn(c * voxels + ((z - z0) * pn + (y - b.r[1].lo)) * qn,
           c * p.input_spatial() + (d * p.H + h) * p.W + w,
           c * p.output_spatial() + (z * p.P + y) * p.Q + b.r[2].lo, qn);
      }
}

// buf = the box of the input volume x [channels, D, H, W].
template <class T>
void gather_input_box(const Conv3dParams& p, const TapBox& b, int64_t z0, int64_t z1,
                      int64_t channels, const T* x, T* buf) {
  const int64_t sw = p.stride[2];
  for_box_lines(p, b, z0, z1, channels, [&](int64_t o, int64_t in, int64_t, int64_t n) {
    if (sw == 1)
      std::copy(x + in, x + in + n, buf + o);
    else
      for (int64_t i = 0; i < n; ++i) buf[o + i] = x[in + i * sw];
  });
}

// buf = the box of the output volume y [channels, Z, P, Q].
template <class T>
void gather_output_box(const Conv3dParams& p, const TapBox& b, int64_t z0, int64_t z1,
                       int64_t channels, const T* y, T* buf) {
  for_box_lines(p, b, z0, z1, channels, [&](int64_t o, int64_t, int64_t out, int64_t n) {
    std::copy(y + out, y + out + n, buf + o);
  });
}

// x [channels, D, H, W] += buf on the box's input voxels.
template <class T>
void add_input_box(const Conv3dParams& p, const TapBox& b, int64_t z0, int64_t z1,
                   int64_t channels, const T* buf, T* x) {
  const int64_t sw = p.stride[2];
  for_box_lines(p, b, z0, z1, channels, [&](int64_t o, int64_t in, int64_t, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[in + i * sw] += buf[o + i];
  });
}

// y [channels, Z, P, Q] += buf on the box's output voxels.
template <class T>
void add_output_box(const Conv3dParams& p, const TapBox& b, int64_t z0, int64_t z1,
                    int64_t channels, const T* buf, T* y) {
  for_box_lines(p, b, z0, z1, channels, [&](int64_t o, int64_t, int64_t out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[out + i] += buf[o + i];
  });
}

// wt[l] = w[:, :, tap l] as a row-major [K, C] matrix, for each live tap l. In chunks of
// (k, c) pairs whose taps stay in L1 while every tap's run is written: tap by tap over all of
// w would fetch each cache line of w once per tap, and pair by pair writes `live` streams a
// power of two apart, which collide in the cache sets.
template <class T>
void gather_tap_weights(const Conv3dParams& p, const Plan& plan, const T* w, T* wt) {
  const int64_t kc = p.K * p.C, live = static_cast<int64_t>(plan.boxes.size());
  constexpr int64_t kChunk = 256;
#pragma omp parallel for schedule(static) if (kc * live > kParallelGrain)
  for (int64_t i0 = 0; i0 < kc; i0 += kChunk)
    for (int64_t l = 0; l < live; ++l) {
      const int64_t tap = plan.boxes[static_cast<std::size_t>(l)].tap;
      for (int64_t i = i0; i < std::min(i0 + kChunk, kc); ++i) wt[l * kc + i] = w[i * p.taps() + tap];
    }
}

// The inverse for gradients: w[:, :, tap l] = wt[l] for each live tap l, dead taps zero. In
// the same chunks, for the same reason.
template <class T>
void scatter_tap_weights(const Conv3dParams& p, const Plan& plan, const T* wt, T* w) {
  const int64_t kc = p.K * p.C, live = static_cast<int64_t>(plan.boxes.size()), taps = p.taps();
  constexpr int64_t kChunk = 256;
#pragma omp parallel for schedule(static) if (kc * taps > kParallelGrain)
  for (int64_t i0 = 0; i0 < kc; i0 += kChunk) {
    const int64_t i1 = std::min(i0 + kChunk, kc);
    std::fill(w + i0 * taps, w + i1 * taps, T(0));
    for (int64_t l = 0; l < live; ++l) {
      const int64_t tap = plan.boxes[static_cast<std::size_t>(l)].tap;
      for (int64_t i = i0; i < i1; ++i) w[i * taps + tap] = wt[l * kc + i];
    }
  }
}

// Runs fn(box index, z0, z1) over every live tap's box in chunks of plan.box_planes planes,
// in a fixed order (taps, then planes), skipping empty boxes.
template <class Fn>
void for_box_chunks(const Plan& plan, Fn&& fn) {
  for (std::size_t l = 0; l < plan.boxes.size(); ++l) {
    const TapBox& b = plan.boxes[l];
    if (b.plane_voxels() == 0) continue;
    for (int64_t z0 = b.r[0].lo; z0 < b.r[0].hi; z0 += plan.box_planes)
      fn(l, z0, std::min(z0 + plan.box_planes, b.r[0].hi));
  }
}

// The per-tap scratch: the live taps' weights (or weight gradients) [live, K, C], then two
// box buffers of max(C, K) channels x box_planes planes each.
template <class T>
struct PerTapBuffers {
  T* weights;
  T* in;
  T* out;
  int64_t kc;
  T* tap_weights(std::size_t l) const { return weights + static_cast<int64_t>(l) * kc; }
};

template <class T>
PerTapBuffers<T> per_tap_buffers(const Conv3dParams& p, const Plan& plan, T* scratch) {
  const int64_t buffer = std::max(p.C, p.K) * plan.box_planes * plan.box_plane_voxels;
  return {scratch, scratch + plan.weight_elements, scratch + plan.weight_elements + buffer,
          p.K * p.C};
}

// How many threads take one sample each (1: the samples run in turn, each GEMM on all
// threads). Whole samples per thread need no synchronisation inside and no packing done twice,
// which matters for the small GEMMs of deep layers; they are used when the samples share
// the threads out evenly (or nearly: at least 4 per thread).
int64_t sample_threads(int64_t samples) {
  const int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  return samples >= threads && (samples % threads == 0 || samples >= 4 * threads) ? threads : 1;
}

// Runs fn(n, thread) for every sample n: across sample_threads(samples) threads, or in turn
// outside any parallel region (an inactive `if (false)` region around the GEMMs would make
// each of their parallel regions a nested one, which libgomp serves with new threads).
template <class Fn>
void for_each_sample(int64_t samples, Fn&& fn) {
  const int64_t teams = sample_threads(samples);
  if (teams == 1) {
    for (int64_t n = 0; n < samples; ++n) fn(n, 0);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(teams))
  for (int64_t n = 0; n < samples; ++n) fn(n, omp_get_thread_num());
}

// Output voxels per item of the pointwise f32 GEMMs: a quarter of each thread's share, in whole
// 64-voxel blocks, at most 512. Few items keep each thread's runs of B and C long (1-2 KiB of
// DenseASPP d18/d24's 8 KiB channel rows instead of 256 B) and its atomics few. With 64-voxel
// items at every size, d18/d24 dgrad took 1.06x the time, d24 fprop 1.03x, ResNet-50's 64 -> 256
// expansion 1.08x, and its 256 -> 64 dgrad 1.5x in the host's SLOW state. The bottleneck's
// 2 x 256 voxels still make 8 items of 64 (0.92x the time of one GEMM per sample and thread).
int64_t pointwise_columns(int64_t samples, int64_t voxels, int64_t threads) {
  constexpr int64_t block = 64, most = 512;
  const int64_t share = samples * voxels / (4 * std::max<int64_t>(threads, 1));
  return std::clamp(share / block * block, block, most);
}
// Rows per unit of pointwise_gemms' bands of A: whole register panels of every build (8, 6, 4).
constexpr int64_t kPointwiseBandRows = 48;

// c[n] (m x voxels, row pitch voxels) = a (m x k) b[n] (k x voxels, row pitch voxels) for the
// samples n (b[n] at b + n * b_sample, c[n] at c + n * c_sample): a 1x1x1 conv's GEMMs. A packed
// once; (sample, column block) items across the threads, each packing its own block of b once, a
// thread slowed by the host's other work taking fewer. Few rows or a shallow depth take the
// GEMM's few-rows path (no packing), one sample per thread. A c of kStreamedBytes or more is
// streamed where its depth is one GEMM block: with the data from memory DenseASPP d18/d24's
// dgrad (8 MiB of dx) take 0.87x/0.88x the time, ResNet-50's 64 -> 256 expansion (4 MiB of y)
// 0.83x and its 256 -> 64 dgrad 0.85x; the ResNet-50 step's best of 5 runs 0.985x.
// With `prepacked` (A packed in advance: conv3d_pack_weights) a is not read.
void pointwise_gemms(const GemmView& a, int64_t m, int64_t k, const float* b, int64_t b_sample, float* c,
                     int64_t c_sample, int64_t samples, int64_t voxels, const GemmPackedA* prepacked = nullptr) {
  if (m <= kGemmFewRows || k <= kGemmFewRows) {
    MED3D_CHECK(prepacked == nullptr, "pointwise_gemms: few-row GEMMs read A as it is; pass no packed A");
    for_each_sample(samples, [&](int64_t n, int) {
      gemm_f32(a, gemm_rows(b + n * b_sample, voxels), c + n * c_sample, voxels, m, voxels, k, false);
    });
    return;
  }
  // A larger than all of B (the 1x1x1 bottleneck's dgrad: W^T 1 MiB, dy 2 x 256 KiB): a band of A's
  // rows per thread, packed and run over every sample by the thread that takes it, so that no
  // thread reads A packed by another (packed once and shared, every item read all of it, half from
  // the other core: 1.2x the time in the host's SLOW state; banded 0.98-1.0x the time, 0.81x in
  // that state). Two bands per thread packed each sample's B twice as often: 1.05x.) Packed in
  // advance, each band is read where it lies: 0.955x the time.
  const bool parallel = !omp_in_parallel() && m * k * voxels * samples > kGemmParallelMacs;
  const GemmStore store =
      samples * m * voxels * int64_t(sizeof(float)) >= kStreamedBytes ? GemmStore::streamed : GemmStore::cached;
  const int threads = omp_get_max_threads();
  if (parallel && threads > 1 && m > samples * voxels) {
    const int64_t granules = (m + kPointwiseBandRows - 1) / kPointwiseBandRows;
    const int64_t bands = std::min<int64_t>(threads, granules);
    std::exception_ptr failure;  // a failed allocation, rethrown to the caller after the region
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t band = 0; band < bands; ++band) {
      try {
        const int64_t i0 = std::min(m, granules * band / bands * kPointwiseBandRows);
        const int64_t i1 = std::min(m, granules * (band + 1) / bands * kPointwiseBandRows);
        const GemmPackedA packed = prepacked ? prepacked->rows(i0, i1)
                                             : GemmPackedA({a.data + i0 * a.row_stride, a.row_stride, a.col_stride},
                                                           i1 - i0, k);
        for (int64_t n = 0; n < samples; ++n)
          gemm_f32(packed, gemm_rows(b + n * b_sample, voxels), c + n * c_sample + i0 * voxels, voxels, voxels, false,
                   store);
      } catch (...) {
#pragma omp critical(med3d_pointwise_failure)
        if (!failure) failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
    return;
  }
  const GemmPackedA packed = prepacked ? prepacked->rows(0, m) : GemmPackedA(a, m, k);
  const int64_t columns = pointwise_columns(samples, voxels, parallel ? threads : 1);
  const int64_t blocks = (voxels + columns - 1) / columns;
  // The last block per thread is split in two: a thread that finishes early then waits at most
  // half a block for the others (whole 64-voxel blocks to the end: the 1x1x1 bottleneck fprop
  // took 1.03-1.04x the time, 1.025x at large scale; DenseASPP's 64 blocks level).
  struct Item {
    int64_t n, j0, cols;
  };
  std::vector<Item> items;
  const int64_t split_from = samples * blocks - (parallel ? threads : 0);
  for (int64_t item = 0; item < samples * blocks; ++item) {
    const int64_t n = item / blocks, j0 = item % blocks * columns;
    const int64_t cols = std::min(columns, voxels - j0);
    if (item < split_from || cols <= columns / 2) {
      items.push_back({n, j0, cols});
      continue;
    }
    items.push_back({n, j0, columns / 2});
    items.push_back({n, j0 + columns / 2, cols - columns / 2});
  }
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    gemm_f32(packed, gemm_rows(b + it.n * b_sample + it.j0, voxels), c + it.n * c_sample + it.j0, voxels,
             it.cols, false, store);
  }
}

// --- pointwise wgrad with few filters (f32) ------------------------------------------------
// dw [K, C] of a 1x1x1 conv with K <= kFewFilters (the 2-class classifier): K dot products of
// each input channel's rows with dy's. The GEMM would pack x^T (all of it, transposed) and run
// its 6-row panels a third full; here x is read once, straight, and dy's block from L1.
constexpr int64_t kFewFilters = 4;
// Voxels per block: dy's K rows of it (16 KiB at K = 4) stay in L1 while every channel reads it.
constexpr int64_t kFewFilterVoxels = 1024;

bool pointwise_wgrad_few_filters_applies(const Conv3dParams& p, const Plan& plan) {
  return plan.pointwise && !plan.pruned && p.groups == 1 && p.K <= kFewFilters;
}

// Each (k, c) sums over samples, then voxel blocks, in kLanes partial sums (two vectors, added
// at the end) and a scalar tail per block: one fixed order whatever the thread count, since
// each thread owns whole channels.
void pointwise_wgrad_few_filters(const Conv3dParams& p, const float* x, const float* dy, float* dw) {
  const int64_t V = p.input_spatial(), K = p.K, C = p.C;
#if defined(MED3D_SIMD)
  constexpr int64_t L = simd::kLanes;
#else
  constexpr int64_t L = 1;
#endif
  // Per (c, k): two vectors of partial sums, and the blocks' scalar tails (allocated here, so
  // that a failed allocation throws to the caller).
  std::vector<float> partial(static_cast<std::size_t>(C * K * 2 * L), 0.0f), tail(static_cast<std::size_t>(C * K), 0.0f);
  const int64_t threads = omp_in_parallel() ? 1 : std::min<int64_t>(omp_get_max_threads(), C);
#pragma omp parallel num_threads(static_cast<int>(threads)) if (p.N * K * C * V > (int64_t(1) << 18))
  {
    const int64_t team = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t c0 = C * id / team, c1 = C * (id + 1) / team;
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t v0 = 0; v0 < V; v0 += kFewFilterVoxels) {
        const int64_t v1 = std::min(V, v0 + kFewFilterVoxels);
#if defined(MED3D_SIMD)
        const int64_t vector_end = v0 + (v1 - v0) / (2 * L) * (2 * L);
#else
        const int64_t vector_end = v0;
#endif
        const float* dyn = dy + n * K * V;
        for (int64_t c = c0; c < c1; ++c) {
          const float* xc = x + (n * C + c) * V;
#if defined(MED3D_SIMD)
          using namespace simd;
          float* own = partial.data() + c * K * 2 * L;
          Vec acc[kFewFilters][2];
          for (int64_t k = 0; k < K; ++k) acc[k][0] = load(own + 2 * k * L), acc[k][1] = load(own + (2 * k + 1) * L);
          for (int64_t v = v0; v < vector_end; v += 2 * L) {
            const Vec x0 = load(xc + v), x1 = load(xc + v + L);
            for (int64_t k = 0; k < K; ++k) {
              acc[k][0] = fma(x0, load(dyn + k * V + v), acc[k][0]);
              acc[k][1] = fma(x1, load(dyn + k * V + v + L), acc[k][1]);
            }
          }
          for (int64_t k = 0; k < K; ++k) store(own + 2 * k * L, acc[k][0]), store(own + (2 * k + 1) * L, acc[k][1]);
#endif
          for (int64_t k = 0; k < K; ++k) {
            float& s = tail[static_cast<std::size_t>(c * K + k)];
            for (int64_t v = vector_end; v < v1; ++v) s += xc[v] * dyn[k * V + v];
          }
        }
      }
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) {
      float s = tail[static_cast<std::size_t>(c * K + k)];
      for (int64_t i = 0; i < 2 * L; ++i) s += partial[static_cast<std::size_t>((c * K + k) * 2 * L + i)];
      dw[k * C + c] = s;
    }
}

// --- the implicit GEMMs (f32) -------------------------------------------------------------
// fprop of every sample: y [K/groups, Z*P*Q] = w [K/groups, rows] * col per sample and group,
// where col (of the group's input) is gathered straight into the GEMM's packed panels (no
// column matrix), and each group's weights are packed once for all samples.
void implicit_fprop(const Conv3dParams& p, const std::vector<TapShift>& shifts, const float* x, const float* w,
                    float* y) {
  const int64_t Cg = p.channels_per_group(), Kg = p.filters_per_group();
  const int64_t rows = Cg * static_cast<int64_t>(shifts.size()), out_sp = p.output_spatial();
  for (int64_t g = 0; g < p.groups; ++g) {
    const GemmPackedA weights(gemm_rows(w + g * Kg * rows, rows), Kg, rows);
    for_each_sample(p.N, [&](int64_t n, int) {
      gemm_f32(weights, column_source(p, shifts, x + (n * p.C + g * Cg) * p.input_spatial(), false),
               y + (n * p.K + g * Kg) * out_sp, out_sp, out_sp, false);
    });
  }
}

// With unit strides dgrad is a forward conv of dy: dx[c, i] = sum over k and taps of
// w[k, c, tap] dy[k, i + pad - tap * dilation], i.e. the kernel flipped, the channel roles
// swapped and the padding dilation * (kernel - 1) - pad. Empty when that does not hold (strides
// > 1, or a padding larger than the dilated kernel, which would make the new padding negative).
std::optional<Conv3dParams> dgrad_as_fprop(const Conv3dParams& p) {
  if (p.stride != Dims3{1, 1, 1}) return std::nullopt;
  Conv3dParams f = p;
  f.C = p.K, f.D = p.Z, f.H = p.P, f.W = p.Q;
  f.K = p.C, f.Z = p.D, f.P = p.H, f.Q = p.W;
  f.output_padding = {0, 0, 0};
  const Dims3 kernel = p.kernel_extent(), in = p.input_extent(), out = p.output_extent();
  for (int a = 0; a < 3; ++a) {
    f.pad[a] = p.dilation[a] * (kernel[a] - 1) - p.pad[a];
    if (f.pad[a] < 0 || conv_output_size(out[a], kernel[a], f.pad[a], 1, p.dilation[a]) != in[a])
      return std::nullopt;
  }
  return f;
}

// dgrad as the implicit fprop `f` of dy (see dgrad_as_fprop): its weights [C, K/groups * live
// taps of f] are w with the tap index reversed (flipping t, r and s at once) and the channel
// roles swapped, gathered once per call.
void implicit_dgrad(const Conv3dParams& p, const Conv3dParams& f, const float* dy, const float* w, float* dx) {
  const std::vector<int64_t> taps = live_taps(f);
  const int64_t live = static_cast<int64_t>(taps.size()), Cg = p.channels_per_group(), Kg = p.filters_per_group();
  const int64_t rows = Kg * live;
  std::vector<float> flipped(static_cast<std::size_t>(p.C * rows));
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t k = 0; k < Kg; ++k)
      for (int64_t i = 0; i < live; ++i)
        flipped[static_cast<std::size_t>(c * rows + k * live + i)] =
            w[((c / Cg * Kg + k) * Cg + c % Cg) * p.taps() + p.taps() - 1 - taps[static_cast<std::size_t>(i)]];
  implicit_fprop(f, tap_shifts(f, taps), dy, flipped.data(), dx);
}

// The per-tap path in f32: each live tap's weights packed once per pass straight from w (a
// strided view, transposed for dgrad), and the box of the source volume gathered straight
// into the GEMM's panels. Box voxel v of planes [z0, z1) is (z, y, q) = (z0, r[1].lo,
// r[2].lo) + (v / (pn * qn), v / qn % pn, v % qn); it reads the source volume [channels,
// extent] at (z * stride[0] + offset[0], ...) along the three axes.
struct BoxRead {
  const float* volume;
  Dims3 extent, stride, offset;
  int64_t z0;
  Range r[3];
};

GemmSource box_source(const BoxRead& box) {
  return {[box](int64_t c0, int64_t rows, int64_t v0, int64_t count, float* dst, int64_t ld) {
            const int64_t pn = box.r[1].hi - box.r[1].lo, qn = box.r[2].hi - box.r[2].lo;
            const int64_t channel = box.extent[0] * box.extent[1] * box.extent[2], sw = box.stride[2];
            for (int64_t v = v0; v < v0 + count;) {
              const int64_t line = v / qn, q0 = v % qn, n = std::min(qn - q0, v0 + count - v);
              const int64_t z = box.z0 + line / pn, y = box.r[1].lo + line % pn, q = box.r[2].lo + q0;
              const int64_t d = z * box.stride[0] + box.offset[0], h = y * box.stride[1] + box.offset[1];
              const float* src = box.volume + (d * box.extent[1] + h) * box.extent[2] + q * sw + box.offset[2];
              for (int64_t i = 0; i < rows; ++i) {
                const float* in = src + (c0 + i) * channel;
                float* out = dst + i * ld + (v - v0);
                if (sw == 1)
                  std::copy(in, in + n, out);
                else
                  for (int64_t j = 0; j < n; ++j) out[j] = in[j * sw];
              }
              v += n;
            }
          },
          false};
}

// fprop (dgrad when `dgrad`) of every sample on the per-tap path: per live tap, its weights
// [K, C] (transposed for dgrad) times the input (output-gradient) box, added into the output
// (input-gradient) box, through the per-tap scratch.
void per_tap_f32(const Conv3dParams& p, const Plan& plan, const float* src, const float* w, float* dst,
                 const PerTapBuffers<float>& buffers, bool dgrad) {
  gather_tap_weights(p, plan, w, buffers.weights);
  const int64_t src_channels = dgrad ? p.K : p.C, dst_channels = dgrad ? p.C : p.K;
  const int64_t src_sp = dgrad ? p.output_spatial() : p.input_spatial();
  const int64_t dst_sp = dgrad ? p.input_spatial() : p.output_spatial();
  std::fill(dst, dst + p.N * dst_channels * dst_sp, 0.0f);
  // A GEMM result buffer per sample thread: the scratch's two box buffers, then allocated ones.
  const int64_t teams = sample_threads(p.N);
  const int64_t buffer = std::max(p.C, p.K) * plan.box_planes * plan.box_plane_voxels;
  std::vector<std::vector<float>> more(static_cast<std::size_t>(std::max<int64_t>(teams - 2, 0)),
                                       std::vector<float>(static_cast<std::size_t>(buffer)));
  for (std::size_t l = 0; l < plan.boxes.size(); ++l) {
    const TapBox& box = plan.boxes[l];
    if (box.plane_voxels() == 0) continue;
    const float* wt = buffers.tap_weights(l);
    const GemmPackedA a(dgrad ? gemm_transposed(wt, p.C) : gemm_rows(wt, p.C), dst_channels, src_channels);
    for_each_sample(p.N, [&](int64_t n, int thread) {
      float* out = thread == 0 ? buffers.out : thread == 1 ? buffers.in : more[static_cast<std::size_t>(thread - 2)].data();
      BoxRead read{src + n * src_channels * src_sp, p.input_extent(), p.stride, box.offset, 0, {}};
      if (dgrad) read = {src + n * src_channels * src_sp, p.output_extent(), {1, 1, 1}, {0, 0, 0}, 0, {}};
      std::copy(box.r, box.r + 3, read.r);
      for (int64_t z0 = box.r[0].lo; z0 < box.r[0].hi; z0 += plan.box_planes) {
        const int64_t z1 = std::min(z0 + plan.box_planes, box.r[0].hi), voxels = (z1 - z0) * box.plane_voxels();
        read.z0 = z0;
        gemm_f32(a, box_source(read), out, voxels, voxels, false);
        if (dgrad)
          add_input_box(p, box, z0, z1, p.C, static_cast<const float*>(out), dst + n * p.C * dst_sp);
        else
          add_output_box(p, box, z0, z1, p.K, static_cast<const float*>(out), dst + n * p.K * dst_sp);
      }
    });
  }
}

// The kernel conv3d_dgrad runs in f32 with this scratch, in its order: the Winograd kernels, the
// direct kernels, the padded kernels, the per-tap GEMMs, the implicit fprop of dy (unit strides),
// the pointwise GEMMs, or GEMMs into the column matrix and col2vol.
enum class DgradPath { winograd, direct, padded, per_tap, implicit, pointwise, col };
DgradPath f32_dgrad_path(const Conv3dParams& p, int64_t scratch_elements, const Plan& plan) {
  if (winograd_fits(p, scratch_elements)) return DgradPath::winograd;
  if (!plan.pointwise && conv3d_direct_dgrad_applies(p)) return DgradPath::direct;
  if (kPaddedKernels && conv3d_padded_applies(p)) return DgradPath::padded;
  if (plan.per_tap) return DgradPath::per_tap;
  if (plan.pointwise) return DgradPath::pointwise;
  return dgrad_as_fprop(p) ? DgradPath::implicit : DgradPath::col;
}

// Whether dgrad of p runs as GEMMs whose A, the weights transposed (the live taps' rows), weights
// packed in advance can hold: a single-group conv's pointwise GEMMs (a 1x1x1 conv, or one whose
// other taps read only padding; not the few-row GEMMs, which read A as it is) or its col2vol path
// (strided convs the direct kernels leave: the head's k2 s2 transposed conv, whose forward pass
// this dgrad is).
bool gemm_dgrad_packs(const Conv3dParams& p, DgradPath path) {
  if (p.groups != 1) return false;
  if (path == DgradPath::pointwise) return p.C > kGemmFewRows && p.K > kGemmFewRows;
  return path == DgradPath::col;
}

// The GEMM weights of gemm_dgrad_packs: A = weights^T (plan.rows x K), the weights gathered to the
// live taps where some are dead.
void pack_gemm_dgrad_weights(const Conv3dParams& p, const Plan& plan, const float* w, float* dst) {
  std::vector<float> gathered;
  if (plan.pruned) {
    gathered.resize(static_cast<std::size_t>(p.K * plan.rows));
    gather_weights(p, plan, w, gathered.data());
  }
  GemmPackedA::pack(gemm_transposed(plan.pruned ? gathered.data() : w, plan.rows), plan.rows, p.K, dst);
}

}  // namespace

int64_t conv3d_scratch_elements(const Conv3dParams& p, int64_t budget) {
  const Plan plan = make_plan(p, budget);
  int64_t planned = scratch_needed(p, plan);
  // The Winograd kernels within the budget (their scratch grows with the volume; over it, the
  // direct kernels run).
  if (const int64_t winograd = conv3d_winograd_scratch_elements(p); kWinogradKernels && winograd <= budget)
    planned = std::max(planned, winograd);
  // (Pointwise convs go to the GEMMs, never to the direct kernels: see packed_route.)
  const bool direct = !plan.pointwise && (conv3d_direct_fprop_applies(p) || conv3d_direct_dgrad_applies(p));
  return direct ? std::max(planned, conv3d_direct_scratch_elements(p)) : planned;
}

// Where weights packed in advance go for pass `pass` of p with this scratch (the order of
// conv3d_fprop's and conv3d_dgrad's dispatch): the direct kernels (conv3d_direct_pack_weights'
// layout), dgrad's GEMMs (gemm_dgrad_packs), or nowhere; f64 never. Checks that `packed` is null
// where they go nowhere.
enum class PackedRoute { none, direct, gemm };
template <class T>
PackedRoute packed_route(const char* op, const Conv3dParams& p, PackFor pass, int64_t scratch_elements,
                         const Plan& plan, const T* packed) {
  PackedRoute route = PackedRoute::none;
  if (std::is_same_v<T, float> && pass == PackFor::fprop) {
    if (!winograd_fits(p, scratch_elements) && !plan.pointwise && conv3d_direct_fprop_applies(p))
      route = PackedRoute::direct;
  } else if (std::is_same_v<T, float>) {
    const DgradPath path = f32_dgrad_path(p, scratch_elements, plan);
    if (path == DgradPath::direct) route = PackedRoute::direct;
    if (gemm_dgrad_packs(p, path)) route = PackedRoute::gemm;
  }
  MED3D_CHECK(packed == nullptr || route != PackedRoute::none, op,
              ": packed weights were passed, but this conv's pass reads no weights packed in advance (",
              std::is_same_v<T, float> ? "conv3d_packed_weights_elements is 0 for it" : "f64", "); pass null");
  return route;
}

int64_t conv3d_packed_weights_elements(const Conv3dParams& p, PackFor pass, int64_t scratch_elements) {
  const Plan plan = make_plan(p, scratch_elements);
  switch (packed_route<float>("conv3d_packed_weights_elements", p, pass, scratch_elements, plan, nullptr)) {
    case PackedRoute::direct: return conv3d_direct_packed_elements(p, pass);
    case PackedRoute::gemm: return kPackedWeightsHeader + GemmPackedA::packed_elements(plan.rows, p.K);
    case PackedRoute::none: break;
  }
  return 0;
}

void conv3d_pack_weights(const Conv3dParams& p, PackFor pass, int64_t scratch_elements, const float* w,
                         float* packed) {
  const Plan plan = checked_plan(p, scratch_elements);
  switch (packed_route<float>("conv3d_pack_weights", p, pass, scratch_elements, plan, nullptr)) {
    case PackedRoute::direct: return conv3d_direct_pack_weights(p, pass, w, packed);
    case PackedRoute::gemm:
      write_packed_weights_header(p, pass, PackedLayout::gemm, packed);
      return pack_gemm_dgrad_weights(p, plan, w, packed + kPackedWeightsHeader);
    case PackedRoute::none: break;
  }
  MED3D_CHECK(false, "conv3d_pack_weights: this conv's ", pass == PackFor::fprop ? "fprop" : "dgrad",
              " reads no weights packed in advance with this scratch (conv3d_packed_weights_elements is 0); pass its "
              "weights as they are");
}

template <class T>
void conv3d_fprop(const Conv3dParams& p, const T* x, const T* w, const T* bias, T* y, T* scratch,
                  int64_t scratch_elements, const T* packed) {
  const Plan plan = checked_plan(p, scratch_elements);
  const bool direct =
      packed_route("conv3d_fprop", p, PackFor::fprop, scratch_elements, plan, packed) == PackedRoute::direct;
  const int64_t Cg = p.channels_per_group(), Kg = p.filters_per_group(), rows = plan.rows;
  const int64_t in_sp = p.input_spatial(), out_sp = p.output_spatial(), lines = p.Z * p.P;
  if constexpr (std::is_same_v<T, float>) {
    if (winograd_fits(p, scratch_elements)) {
      conv3d_winograd_fprop(p, x, w, y, scratch, scratch_elements);
      if (bias) add_channel_bias(p.N, p.K, out_sp, bias, y);
      return;
    }
    if (direct) {
      conv3d_direct_fprop(p, x, w, y, scratch, scratch_elements, packed);
      if (bias) add_channel_bias(p.N, p.K, out_sp, bias, y);
      return;
    }
    if (kPaddedKernels && conv3d_padded_applies(p)) {
      conv3d_padded_fprop(p, x, w, y);
      if (bias) add_channel_bias(p.N, p.K, out_sp, bias, y);
      return;
    }
    if (plan.per_tap) {
      per_tap_f32(p, plan, x, w, y, per_tap_buffers(p, plan, scratch), false);
      if (bias) add_channel_bias(p.N, p.K, out_sp, bias, y);
      return;
    }
  }
  if (plan.per_tap) {
    const PerTapBuffers<T> b = per_tap_buffers(p, plan, scratch);
    gather_tap_weights(p, plan, w, b.weights);
    for (int64_t n = 0; n < p.N; ++n) {
      const T* xn = x + n * p.C * in_sp;
      T* yn = y + n * p.K * out_sp;
      std::fill(yn, yn + p.K * out_sp, T(0));
      for_box_chunks(plan, [&](std::size_t l, int64_t z0, int64_t z1) {
        const TapBox& box = plan.boxes[l];
        const int64_t voxels = (z1 - z0) * box.plane_voxels();
        gather_input_box(p, box, z0, z1, p.C, xn, b.in);
        gemm({b.tap_weights(l), p.C}, {b.in, voxels}, b.out, voxels, p.K, voxels, p.C, false);
        add_output_box(p, box, z0, z1, p.K, b.out, yn);
      });
      if (bias) add_channel_bias(int64_t(1), p.K, out_sp, bias, yn);
    }
    return;
  }
  T* col = scratch + plan.weight_elements;
  if (plan.pruned) gather_weights(p, plan, w, scratch);
  const T* weights = plan.pruned ? scratch : w;
  const std::vector<TapShift> shifts = tap_shifts(p, plan.taps);
  if constexpr (std::is_same_v<T, float>) {
    if (!plan.pointwise) {  // (pointwise: measured faster on the stored input, below)
      implicit_fprop(p, shifts, x, weights, y);
      if (bias) add_channel_bias(p.N, p.K, out_sp, bias, y);
      return;
    }
    for (int64_t g = 0; g < p.groups; ++g)
      pointwise_gemms(gemm_rows(weights + g * Kg * rows, rows), Kg, Cg, x + g * Cg * in_sp, p.C * in_sp,
                      y + g * Kg * out_sp, p.K * out_sp, p.N, out_sp);
    if (bias) add_channel_bias(p.N, p.K, out_sp, bias, y);
    return;
  }
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t g = 0; g < p.groups; ++g) {
      const T* xg = x + (n * p.C + g * Cg) * in_sp;
      T* yg = y + (n * p.K + g * Kg) * out_sp;
      const Operand<T> wg{weights + g * Kg * rows, rows};
      if (plan.pointwise) {
        gemm(wg, {xg, in_sp}, yg, out_sp, Kg, out_sp, Cg, false);
        continue;
      }
      for (int64_t l0 = 0; l0 < lines; l0 += plan.lines_per_block) {
        const int64_t block = std::min(plan.lines_per_block, lines - l0), cols = block * p.Q;
        vol2col(p, plan, shifts, xg, l0, block, col);
        gemm(wg, {col, cols}, yg + l0 * p.Q, out_sp, Kg, cols, rows, false);
      }
    }
    if (bias) add_channel_bias(int64_t(1), p.K, out_sp, bias, y + n * p.K * out_sp);
  }
}

template <class T>
void conv3d_dgrad(const Conv3dParams& p, const T* dy, const T* w, T* dx, T* scratch, int64_t scratch_elements,
                  const T* packed) {
  const Plan plan = checked_plan(p, scratch_elements);
  const PackedRoute route = packed_route("conv3d_dgrad", p, PackFor::dgrad, scratch_elements, plan, packed);
  const int64_t Cg = p.channels_per_group(), Kg = p.filters_per_group(), rows = plan.rows;
  const int64_t in_sp = p.input_spatial(), out_sp = p.output_spatial(), lines = p.Z * p.P;
  if constexpr (std::is_same_v<T, float>) {
    const DgradPath path = f32_dgrad_path(p, scratch_elements, plan);
    if (path == DgradPath::winograd) {
      conv3d_winograd_dgrad(p, dy, w, dx, scratch, scratch_elements);
      return;
    }
    if (path == DgradPath::direct) {
      conv3d_direct_dgrad(p, dy, w, dx, scratch, scratch_elements, packed);
      return;
    }
    if (path == DgradPath::padded) {
      conv3d_padded_dgrad(p, dy, w, dx, scratch, scratch_elements);
      return;
    }
    if (path == DgradPath::per_tap) {
      per_tap_f32(p, plan, dy, w, dx, per_tap_buffers(p, plan, scratch), true);
      return;
    }
    if (path == DgradPath::implicit) {
      implicit_dgrad(p, *dgrad_as_fprop(p), dy, w, dx);
      return;
    }
    // Weights packed in advance (gemm_dgrad_packs: one group) are A of the GEMMs below as they lie.
    const float* layout = packed_weights_layout("conv3d_dgrad", p, PackFor::dgrad, PackedLayout::gemm,
                                                route == PackedRoute::gemm ? packed : nullptr);
    const std::optional<GemmPackedA> prepacked =
        layout ? std::optional<GemmPackedA>(GemmPackedA::view(layout, rows, Kg)) : std::nullopt;
    if (path == DgradPath::pointwise) {  // as fprop
      if (plan.pruned && !prepacked) gather_weights(p, plan, w, scratch);
      const T* weights = plan.pruned ? scratch : w;
      for (int64_t g = 0; g < p.groups; ++g)
        pointwise_gemms(gemm_transposed(weights + g * Kg * rows, rows), Cg, Kg, dy + g * Kg * out_sp, p.K * out_sp,
                        dx + g * Cg * in_sp, p.C * in_sp, p.N, in_sp, prepacked ? &*prepacked : nullptr);
      return;
    }
    // The col2vol path: each group's A packed once for every sample and block, or read as packed in
    // advance (the head's transposed conv: 0.96x the time, 0.90x at large scale). Packed per call
    // here, it is level with gemm_f32 packing it per sample, but in a process whose allocator maps
    // large blocks afresh (a bare C++ caller) 0.64x the time: fewer fresh pages. Not where the
    // GEMMs have few rows or little depth (their path reads A as it is: below).
    if (prepacked || (rows > kGemmFewRows && Kg > kGemmFewRows)) {
      T* col = scratch + plan.weight_elements;
      if (plan.pruned && !prepacked) gather_weights(p, plan, w, scratch);
      const T* weights = plan.pruned ? scratch : w;
      std::vector<GemmPackedA> a;
      for (int64_t g = 0; g < p.groups; ++g)
        a.push_back(prepacked ? prepacked->rows(0, rows)
                              : GemmPackedA(gemm_transposed(weights + g * Kg * rows, rows), rows, Kg));
      for (int64_t n = 0; n < p.N; ++n)
        for (int64_t g = 0; g < p.groups; ++g) {
          T* dxg = dx + (n * p.C + g * Cg) * in_sp;
          const T* dyg = dy + (n * p.K + g * Kg) * out_sp;
          for (int64_t l0 = 0; l0 < lines; l0 += plan.lines_per_block) {
            const int64_t block = std::min(plan.lines_per_block, lines - l0), cols = block * p.Q;
            gemm_f32(a[static_cast<std::size_t>(g)], gemm_rows(dyg + l0 * p.Q, out_sp), col, cols, cols, false);
            col2vol(p, plan, col, l0, block, dxg);
          }
        }
      return;
    }
  }
  if (plan.per_tap) {
    const PerTapBuffers<T> b = per_tap_buffers(p, plan, scratch);
    gather_tap_weights(p, plan, w, b.weights);
    for (int64_t n = 0; n < p.N; ++n) {
      const T* dyn = dy + n * p.K * out_sp;
      T* dxn = dx + n * p.C * in_sp;
      std::fill(dxn, dxn + p.C * in_sp, T(0));
      for_box_chunks(plan, [&](std::size_t l, int64_t z0, int64_t z1) {
        const TapBox& box = plan.boxes[l];
        const int64_t voxels = (z1 - z0) * box.plane_voxels();
        gather_output_box(p, box, z0, z1, p.K, dyn, b.in);
        gemm({b.tap_weights(l), p.C, true}, {b.in, voxels}, b.out, voxels, p.C, voxels, p.K, false);
        add_input_box(p, box, z0, z1, p.C, b.out, dxn);
      });
    }
    return;
  }
  T* col = scratch + plan.weight_elements;
  if (plan.pruned) gather_weights(p, plan, w, scratch);
  const T* weights = plan.pruned ? scratch : w;
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t g = 0; g < p.groups; ++g) {
      T* dxg = dx + (n * p.C + g * Cg) * in_sp;
      const T* dyg = dy + (n * p.K + g * Kg) * out_sp;
      const Operand<T> wgt{weights + g * Kg * rows, rows, true};
      if (plan.pointwise) {
        gemm(wgt, {dyg, out_sp}, dxg, in_sp, Cg, in_sp, Kg, false);
        continue;
      }
      for (int64_t l0 = 0; l0 < lines; l0 += plan.lines_per_block) {
        const int64_t block = std::min(plan.lines_per_block, lines - l0), cols = block * p.Q;
        gemm(wgt, {dyg + l0 * p.Q, out_sp}, col, cols, rows, cols, Kg, false);
        col2vol(p, plan, col, l0, block, dxg);
      }
    }
  }
}

template <class T>
void conv3d_wgrad(const Conv3dParams& p, const T* x, const T* dy, T* dw, T* scratch,
                  int64_t scratch_elements) {
  const Plan plan = checked_plan(p, scratch_elements);
  const int64_t Cg = p.channels_per_group(), Kg = p.filters_per_group(), rows = plan.rows;
  const int64_t in_sp = p.input_spatial(), out_sp = p.output_spatial(), lines = p.Z * p.P;
  if constexpr (std::is_same_v<T, float>) {
    if (winograd_fits(p, scratch_elements)) {
      conv3d_winograd_wgrad(p, x, dy, dw, scratch, scratch_elements);
      return;
    }
    // (Also for a dilated conv with one live tap: the direct wgrad was measured level with the
    // pointwise GEMM there, 1.01x its time on DenseASPP's d18 branch in 40 paired rounds.)
    if (conv3d_direct_wgrad_applies(p)) {
      conv3d_direct_wgrad(p, x, dy, dw);
      return;
    }
    if (kPaddedKernels && conv3d_padded_applies(p)) {
      conv3d_padded_wgrad(p, x, dy, dw);
      return;
    }
    if (pointwise_wgrad_few_filters_applies(p, plan)) {
      pointwise_wgrad_few_filters(p, x, dy, dw);
      return;
    }
  }
  if (plan.per_tap) {
    const PerTapBuffers<T> b = per_tap_buffers(p, plan, scratch);
    std::fill(b.weights, b.weights + plan.weight_elements, T(0));
    for (int64_t n = 0; n < p.N; ++n) {
      const T* xn = x + n * p.C * in_sp;
      const T* dyn = dy + n * p.K * out_sp;
      for_box_chunks(plan, [&](std::size_t l, int64_t z0, int64_t z1) {
        const TapBox& box = plan.boxes[l];
        const int64_t voxels = (z1 - z0) * box.plane_voxels();
        gather_input_box(p, box, z0, z1, p.C, xn, b.in);
        gather_output_box(p, box, z0, z1, p.K, dyn, b.out);
        gemm({b.out, voxels}, {b.in, voxels, true}, b.tap_weights(l), p.C, p.K, p.C, voxels, true);
      });
    }
    scatter_tap_weights(p, plan, static_cast<const T*>(b.weights), dw);
    return;
  }
  T* col = scratch + plan.weight_elements;
  T* grads = plan.pruned ? scratch : dw;  // [K, rows], scattered into dw at the end
  // The single-GEMM paths (all of a sample's voxels in one GEMM) write every element of grads
  // with sample 0's GEMM; the others accumulate into zeros. (Zeroing dw first ran on one
  // thread while the other waited: 1 MiB for the 1x1x1 bottleneck.)
  const bool single_gemm = plan.pointwise || std::is_same_v<T, float>;
  if (!single_gemm || p.N == 0) std::fill(grads, grads + p.K * rows, T(0));
  if constexpr (std::is_same_v<T, float>) {
    // A 1x1x1 conv's samples as the terms of one sum of GEMMs per group: one parallel region,
    // not one per sample (the bottleneck's small-scale wgrad: 0.99x the time, 9 of 12 paired
    // rounds in the fast regime).
    if (plan.pointwise && p.N > 0) {
      std::vector<GemmView> dys(static_cast<std::size_t>(p.N)), xs(static_cast<std::size_t>(p.N));
      for (int64_t g = 0; g < p.groups; ++g) {
        for (int64_t n = 0; n < p.N; ++n) {
          dys[static_cast<std::size_t>(n)] = gemm_rows(dy + (n * p.K + g * Kg) * out_sp, out_sp);
          xs[static_cast<std::size_t>(n)] = gemm_transposed(x + (n * p.C + g * Cg) * in_sp, in_sp);
        }
        gemm_f32_sum(dys, xs, grads + g * Kg * rows, rows, Kg, rows, out_sp, false);
      }
      if (plan.pruned) scatter_weights(p, plan, static_cast<const T*>(grads), dw);
      return;
    }
  }
  const std::vector<TapShift> shifts = tap_shifts(p, plan.taps);
  for (int64_t n = 0; n < p.N; ++n) {
    const bool add = n > 0 || !single_gemm;
    for (int64_t g = 0; g < p.groups; ++g) {
      const T* xg = x + (n * p.C + g * Cg) * in_sp;
      const T* dyg = dy + (n * p.K + g * Kg) * out_sp;
      T* dwg = grads + g * Kg * rows;
      if (plan.pointwise) {
        gemm({dyg, out_sp}, {xg, in_sp, true}, dwg, rows, Kg, rows, out_sp, add);
      } else if constexpr (std::is_same_v<T, float>) {
        gemm_f32(gemm_rows(dyg, out_sp), column_source(p, shifts, xg, true), dwg, rows, Kg, rows, out_sp, add);
      } else {
        for (int64_t l0 = 0; l0 < lines; l0 += plan.lines_per_block) {
          const int64_t block = std::min(plan.lines_per_block, lines - l0), cols = block * p.Q;
          vol2col(p, plan, shifts, xg, l0, block, col);
          gemm({dyg + l0 * p.Q, out_sp}, {col, cols, true}, dwg, rows, Kg, rows, cols, true);
        }
      }
    }
  }
  if (plan.pruned) scatter_weights(p, plan, static_cast<const T*>(grads), dw);
}

template <class T>
void add_channel_bias(int64_t N, int64_t channels, int64_t spatial, const T* bias, T* y) {
#pragma omp parallel for schedule(static) if (N * channels * spatial > kParallelGrain)
  for (int64_t i = 0; i < N * channels; ++i) {
    const T b = bias[i % channels];
    T* row = y + i * spatial;
    for (int64_t j = 0; j < spatial; ++j) row[j] += b;
  }
}

template <class T>
void channel_bias_grad(int64_t N, int64_t channels, int64_t spatial, const T* dy, T* db) {
#pragma omp parallel for schedule(static) if (N * channels * spatial > kParallelGrain)
  for (int64_t c = 0; c < channels; ++c) {
    double total = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* row = dy + (n * channels + c) * spatial;
      for (int64_t j = 0; j < spatial; ++j) total += static_cast<double>(row[j]);
    }
    db[c] = static_cast<T>(total);
  }
}

#define MED3D_INSTANTIATE(T)                                                               \
  template void conv3d_fprop<T>(const Conv3dParams&, const T*, const T*, const T*, T*, T*, \
                                int64_t, const T*);                                        \
  template void conv3d_dgrad<T>(const Conv3dParams&, const T*, const T*, T*, T*, int64_t,  \
                                const T*);                                                 \
  template void conv3d_wgrad<T>(const Conv3dParams&, const T*, const T*, T*, T*, int64_t); \
  template void add_channel_bias<T>(int64_t, int64_t, int64_t, const T*, T*);              \
  template void channel_bias_grad<T>(int64_t, int64_t, int64_t, const T*, T*);
MED3D_INSTANTIATE(float)
MED3D_INSTANTIATE(double)
#undef MED3D_INSTANTIATE

}  // namespace med3d::kernels::cpu
