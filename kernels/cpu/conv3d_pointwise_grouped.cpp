// The wgrad of a 1x1x1 conv with x and dy in channel groups (see conv3d_direct.h).
//
// dw[k, c] = sum over samples n and voxels v of dy[n, k, v] x[n, c, v]. In channel groups, the 8
// channels of a group lie together at every voxel, so a tile of 8 filters (one group of dy) x 8
// channels per vector (groups of x) is an outer product per voxel read straight from both: dy's
// filters broadcast, x's channels loaded as vectors. No operand is packed or transposed, where
// dw = dy x^T in NCDHW transposes x into the GEMM's panels (4.4% of the bottleneck's wgrad warm,
// more with x in memory). Under AVX-512 the tile is 8 filters x 3 groups (24 of the 32 ymm
// registers accumulate): as fast per multiply-add as the GEMM's 8 x 32 zmm microkernel (113-115
// against 111-116 GFLOP/s on one Zen 4 core, both operands in L1); under AVX2, 4 filters x 3
// groups; portable loops otherwise.
#include <algorithm>
#include <cstdint>

#include "med3d/error.h"
#include "med3d/kernels/cpu/conv3d_direct.h"
#include "parallel_items.h"
#include "simd.h"

namespace med3d::kernels::cpu {

namespace {

constexpr int64_t G = kConv3dChannelGroup;
// Groups of x per tile, and filters per tile (a group of dy, or half of one under AVX2).
constexpr int kTileGroups = 3;
#if defined(__AVX512F__)
constexpr int kTileFilters = 8;
#elif defined(MED3D_SIMD)
constexpr int kTileFilters = 4;
#else
constexpr int kTileFilters = 8;
#endif
// Voxels per depth block: a tile sums the products of this many voxels of every sample in registers
// before it adds them into dw (the bottleneck at small scale: all 2 x 256 in one, dw written once;
// against a block per sample, 0.993x the time). A sample's block of a tile's x (3 groups, 24 KiB)
// and of a group of dy (8 KiB) stay in L1 together.
constexpr int64_t kBlockVoxels = 256;

// The operands of one tile over one depth block: sample n's dy filters at dy_rows + n * dy_sample +
// v * G + i (filter i of the tile), its x groups at x_groups + n * x_sample + j * pitch + v * G.
struct TileSources {
  const float* dy_rows;
  const float* x_groups;
  int64_t pitch;
  int64_t voxels;
  int64_t samples, dy_sample, x_sample;
};

// dw's tile [rows, channels) at out (row pitch ldw) = (add ? dw : 0) + the sums: rows <= R filters,
// channels <= NV * G (the rest of the sums are the groups' padding channels or dy's, never stored).
template <int R, int NV>
void store_tile(const float (&sums)[R][NV * G], float* out, int64_t ldw, int rows, int64_t channels, bool add) {
  for (int i = 0; i < rows; ++i)
    for (int64_t c = 0; c < channels; ++c) out[i * ldw + c] = add ? out[i * ldw + c] + sums[i][c] : sums[i][c];
}

#if defined(MED3D_SIMD)
template <int R, int NV>
void tile(const TileSources& s, float* out, int64_t ldw, int rows, int64_t channels, bool add) {
  __m256 acc[R][NV];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 3
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t n = 0; n < s.samples; ++n) {
  const float* __restrict a = s.dy_rows + n * s.dy_sample;
  const float* __restrict b = s.x_groups + n * s.x_sample;
  for (int64_t v = 0; v < s.voxels; ++v, a += G, b += G) {
    __m256 bv[NV];
#pragma GCC unroll 3
    for (int j = 0; j < NV; ++j) bv[j] = _mm256_loadu_ps(b + j * s.pitch);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 3
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_fmadd_ps(av, bv[j], acc[i][j]);
    }
  }
  }
  if (rows == R && channels == NV * G) {  // a whole tile: vector stores
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 3
      for (int j = 0; j < NV; ++j) {
        float* dst = out + i * ldw + j * G;
        _mm256_storeu_ps(dst, add ? _mm256_add_ps(_mm256_loadu_ps(dst), acc[i][j]) : acc[i][j]);
      }
    return;
  }
  alignas(32) float sums[R][NV * G];
  // (Unrolled, as every loop over acc: a rolled one kept acc in memory, stored at every voxel.)
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 3
    for (int j = 0; j < NV; ++j) _mm256_store_ps(sums[i] + j * G, acc[i][j]);
  store_tile<R, NV>(sums, out, ldw, rows, channels, add);
}
#else
// The same sums element by element, each in the vector build's order (one product per voxel; the
// portable build does not contract a * b + s into a fused multiply-add).
template <int R, int NV>
void tile(const TileSources& s, float* out, int64_t ldw, int rows, int64_t channels, bool add) {
  float sums[R][NV * G] = {};
  for (int64_t n = 0; n < s.samples; ++n) {
    const float* a = s.dy_rows + n * s.dy_sample;
    const float* b = s.x_groups + n * s.x_sample;
    for (int64_t v = 0; v < s.voxels; ++v)
      for (int i = 0; i < R; ++i)
        for (int j = 0; j < NV; ++j)
          for (int64_t l = 0; l < G; ++l) sums[i][j * G + l] += a[v * G + i] * b[j * s.pitch + v * G + l];
  }
  store_tile<R, NV>(sums, out, ldw, rows, channels, add);
}
#endif

// A tile of 1 to kTileGroups groups.
void tile_of(int groups, const TileSources& s, float* out, int64_t ldw, int rows, int64_t channels, bool add) {
  switch (groups) {
    case 1: return tile<kTileFilters, 1>(s, out, ldw, rows, channels, add);
    case 2: return tile<kTileFilters, 2>(s, out, ldw, rows, channels, add);
    default: return tile<kTileFilters, kTileGroups>(s, out, ldw, rows, channels, add);
  }
}

}  // namespace

// At least a group of filters: with fewer most of every tile's lanes sum nothing (the classifier's 2
// filters over 32 channels: 0.113 ms, where the NCDHW GEMM streams x once in 0.056).
bool conv3d_pointwise_wgrad_grouped_applies(const Conv3dParams& p) {
  return p.taps() == 1 && p.groups == 1 && p.stride == Dims3{1, 1, 1} && p.pad == Dims3{0, 0, 0} &&
         p.output_spatial() == p.input_spatial() && p.K >= G;
}

void conv3d_pointwise_wgrad_grouped(const Conv3dParams& p, const float* x, const float* dy, float* dw) {
  MED3D_CHECK(conv3d_pointwise_wgrad_grouped_applies(p),
              "conv3d_pointwise_wgrad_grouped: expected a 1x1x1 conv with stride 1, no padding, one group and at "
              "least ", G, " filters, got kernel ", p.T, "x", p.R, "x", p.S, ", stride ", p.stride[0], "x",
              p.stride[1], "x", p.stride[2], ", padding ", p.pad[0], "x", p.pad[1], "x", p.pad[2], ", ", p.groups,
              " groups, ", p.K, " filters; convert to NCDHW (from_channel_groups) and run conv3d_wgrad");
  const int64_t V = p.input_spatial(), pitch = conv3d_group_pitch(V);
  const int64_t x_groups = (p.C + G - 1) / G, dy_groups = (p.K + G - 1) / G;
  if (p.N == 0 || V == 0) {
    std::fill(dw, dw + p.K * p.C, 0.0f);
    return;
  }
  // Item: one tile of x's groups (channels [g0 * G, ...)), all filters, every depth block: 43 items
  // for the bottleneck's 1024 channels, so that the thread that finishes first waits for less than
  // one tile's work (its end 30-40 us before the other's in a 1.22 ms pass, 70-80 us with two tiles
  // an item; the pass level in paired rounds).
  const int64_t tiles = (x_groups + kTileGroups - 1) / kTileGroups;
  const int64_t blocks = (V + kBlockVoxels - 1) / kBlockVoxels;
  const auto groups_in = [&](int64_t tile) { return std::min<int64_t>(kTileGroups, x_groups - tile * kTileGroups); };
  for_costed_items(tiles, 1, p.N * V * p.K * p.C >= kParallelMacs, groups_in, [&](int64_t tile) {
    const int64_t g0 = tile * kTileGroups, groups = groups_in(tile);
    const int64_t channels = std::min(p.C, (g0 + groups) * G) - g0 * G;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t v0 = b * kBlockVoxels, voxels = std::min(kBlockVoxels, V - v0);
      for (int64_t k0 = 0; k0 < p.K; k0 += kTileFilters) {
        const TileSources s{dy + (k0 / G) * pitch + v0 * G + k0 % G, x + g0 * pitch + v0 * G, pitch, voxels, p.N,
                            dy_groups * pitch, x_groups * pitch};
        const int rows = static_cast<int>(std::min<int64_t>(kTileFilters, p.K - k0));
        tile_of(static_cast<int>(groups), s, dw + k0 * p.C + g0 * G, p.C, rows, channels, b > 0);
      }
    }
  });
}

}  // namespace med3d::kernels::cpu
