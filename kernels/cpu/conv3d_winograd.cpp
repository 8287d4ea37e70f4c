// Winograd F(2x2x2, 3x3x3) f32 convolution (see the header).
#include "med3d/kernels/cpu/conv3d_winograd.h"

#include <omp.h>
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "parallel_items.h"
#include "simd.h"

namespace med3d::kernels::cpu {

namespace {

constexpr int kLanes = kLoopLanes;  // channels per vector
constexpr int kPositions = 64;  // 4 x 4 x 4 per tile
constexpr int kGroups = kPositions / 4;  // rows (i, j) of 4 positions: the unit of a thread's share
// The products' register block: 6 tiles x up to 4 filter vectors (AVX-512: 64 filters, 24
// accumulators, 10 loads per 24 multiply-adds) or 2 (AVX2: 16 filters, 12 accumulators).
constexpr int kTileRows = 6;
#if defined(MED3D_SIMD) && !defined(__AVX512F__)
constexpr int kMaxVectors = 2;
#else
constexpr int kMaxVectors = 4;
#endif
// fprop's and dgrad's work item: one register block of tiles (their transforms, 24-96 KB at
// 32-128 channels, stay in L1/L2 until the products read them; blocks of 12 tiles at 64
// channels took 1.04x the time on layer1, 24 tiles 1.09x; 12 at 32 channels 1.15x).
constexpr int64_t kBlockTiles = kTileRows;
// wgrad's blocks: about this many bytes of transformed input over all 64 positions (each thread
// transforms and sums its share of them; 2 threads hold half of v and dv each).
constexpr int64_t kWgradBlockBytes = 768 * 1024;

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// The conv that runs: `in` input channels to `out` output channels over N samples of D x H x W;
// its kernel (o, i, tap) at w[o * o_stride + i * i_stride + tap], or at 26 - tap when `flip`.
struct Run {
  int64_t N, in, out, D, H, W;
  const float* w;
  int64_t o_stride, i_stride;
  bool flip;
};

// The sizes every pass shares: channels rounded up to whole vectors, filters to whole panels,
// the tiles and their blocks (a multiple of kTileRows tiles each).
struct Layout {
  int64_t in_pad, out_pad, panel, tz, ty, tx, tiles, block_tiles, blocks;
  int64_t pitch;  // rows between positions in a block's transforms (v, wgrad's dv): block_tiles or more
  int vectors;  // filter vectors per panel
  Layout(const Run& r, int64_t tiles_per_block) {
    vectors = static_cast<int>(std::min<int64_t>(kMaxVectors, (r.out + kLanes - 1) / kLanes));
    panel = vectors * kLanes;
    in_pad = round_up(r.in, kLanes);
    out_pad = round_up(r.out, panel);
    tz = (r.D + 1) / 2;
    ty = (r.H + 1) / 2;
    tx = (r.W + 1) / 2;
    tiles = r.N * tz * ty * tx;
    block_tiles = tiles_per_block;
    blocks = (tiles + block_tiles - 1) / block_tiles;
    pitch = block_tiles;
  }
};

// wgrad's tiles per block: about kWgradBlockBytes of transformed input, 6 to 48 tiles.
int64_t wgrad_block_tiles(const Run& r) {
  const int64_t fit = kWgradBlockBytes / (kPositions * round_up(r.in, kLanes) * int64_t(sizeof(float)));
  return std::clamp<int64_t>(fit / kTileRows * kTileRows, kTileRows, 8 * kTileRows);
}

// wgrad's layout: its positions a row more than a block apart where a block's rows would span a
// multiple of 4 KiB (48 tiles of 64 channels: 12 KiB), which put a tile's 64 transformed
// positions into one L1 set.
Layout wgrad_layout(const Run& r) {
  Layout s(r, wgrad_block_tiles(r));
  const int64_t out_vec = round_up(r.out, kLanes);
  const auto aligned = [&](int64_t row) { return s.pitch * row * int64_t(sizeof(float)) % 4096 == 0; };
  if (aligned(s.in_pad) || aligned(out_vec)) ++s.pitch;
  return s;
}

// One axis of G g G^T on vectors of filters: the kernel's 3 values (stride apart) to 4,
// G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
inline void kernel_1d(const float* g, int64_t g_stride, float* u, int64_t u_stride) {
#pragma omp simd
  for (int e = 0; e < kLanes; ++e) {
    const float g0 = g[e], g1 = g[g_stride + e], g2 = g[2 * g_stride + e];
    u[e] = g0;
    u[u_stride + e] = 0.5f * (g0 + g1 + g2);
    u[2 * u_stride + e] = 0.5f * (g0 - g1 + g2);
    u[3 * u_stride + e] = g2;
  }
}

// u [position][input channel][filter] (in_pad x out_pad per position, zero past the real ones):
// each (input channel, vector of filters)'s 27 taps gathered, then transformed along each axis
// as vectors. Called by every thread of the team: the input channels are shared out.
void transform_weights(const Run& r, const Layout& s, float* u) {
  constexpr int L = kLanes;
#pragma omp for schedule(static)
  for (int64_t i = 0; i < s.in_pad; ++i)
    for (int64_t o0 = 0; o0 < s.out_pad; o0 += L) {
      alignas(64) float g[27 * L], a[4 * 9 * L], b[16 * 3 * L];
      for (int e = 0; e < L; ++e) {
        const int64_t o = o0 + e;
        if (i >= r.in || o >= r.out) {
          for (int tap = 0; tap < 27; ++tap) g[tap * L + e] = 0.0f;
          continue;
        }
        const float* run = r.w + o * r.o_stride + i * r.i_stride;
        if (r.flip)
          for (int tap = 0; tap < 27; ++tap) g[tap * L + e] = run[26 - tap];
        else
          for (int tap = 0; tap < 27; ++tap) g[tap * L + e] = run[tap];
      }
      for (int rs = 0; rs < 9; ++rs) kernel_1d(g + rs * L, 9 * L, a + rs * L, 9 * L);  // along depth
      for (int t = 0; t < 4; ++t)
        for (int c = 0; c < 3; ++c) kernel_1d(a + (t * 9 + c) * L, 3 * L, b + (t * 12 + c) * L, 3 * L);  // height
      for (int tr = 0; tr < 16; ++tr)  // along width, into u
        kernel_1d(b + tr * 3 * L, L, u + (tr * 4 * s.in_pad + i) * s.out_pad + o0, s.in_pad * s.out_pad);
    }
}

// last [n][voxel][channel] (`pad` channels, zero past `channels`) = first [n][channel][voxel]:
// each tile's patch is then read a vector of channels at a time. Called by every thread of the
// team.
void to_channels_last(int64_t N, int64_t channels, int64_t pad, int64_t V, const float* first, float* last) {
  const int64_t vblocks = (V + kLanes - 1) / kLanes;
#pragma omp for schedule(static)
  for (int64_t item = 0; item < N * vblocks; ++item) {
    const int64_t n = item / vblocks, v0 = item % vblocks * kLanes, voxels = std::min<int64_t>(kLanes, V - v0);
    const float* src = first + n * channels * V + v0;
    float* dst = last + (n * V + v0) * pad;
    for (int64_t c0 = 0; c0 < pad; c0 += kLanes) {
#if defined(MED3D_SIMD)
      if (voxels == kLanes && c0 + kLanes <= channels) {
        simd::transpose_block(src + c0 * V, V, dst + c0, pad);
        continue;
      }
#endif
      for (int64_t v = 0; v < voxels; ++v)
        for (int64_t c = c0; c < c0 + kLanes; ++c) dst[v * pad + c] = c < channels ? src[c * V + v] : 0.0f;
    }
  }
}

// The inverse: first [n][channel][voxel] = last [n][voxel][channel] for the real channels (the
// outputs are transformed a vector of filters at a time into `last`).
void from_channels_last(int64_t N, int64_t channels, int64_t pad, int64_t V, const float* last, float* first) {
  const int64_t vblocks = (V + kLanes - 1) / kLanes;
#pragma omp for schedule(static)
  for (int64_t item = 0; item < N * vblocks; ++item) {
    const int64_t n = item / vblocks, v0 = item % vblocks * kLanes, voxels = std::min<int64_t>(kLanes, V - v0);
    const float* src = last + (n * V + v0) * pad;
    float* dst = first + n * channels * V + v0;
    for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
#if defined(MED3D_SIMD)
      if (voxels == kLanes && c0 + kLanes <= channels) {
        simd::transpose_block(src + c0, pad, dst + c0 * V, V);
        continue;
      }
#endif
      for (int64_t c = c0; c < std::min(channels, c0 + kLanes); ++c)
        for (int64_t v = 0; v < voxels; ++v) dst[c * V + v] = src[v * pad + c];
    }
  }
}

// One axis of B^T d on vectors: d0..d3 (src_stride apart) to d0 - d2, d1 + d2, d2 - d1, d1 - d3
// (dst_stride apart; in place when dst is src).
inline void input_1d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
#pragma omp simd
  for (int e = 0; e < kLanes; ++e) {
    const float d0 = src[e], d1 = src[src_stride + e], d2 = src[2 * src_stride + e], d3 = src[3 * src_stride + e];
    dst[e] = d0 - d2;
    dst[dst_stride + e] = d1 + d2;
    dst[2 * dst_stride + e] = d2 - d1;
    dst[3 * dst_stride + e] = d1 - d3;
  }
}

// One axis of A^T m on vectors: m0..m3 (src_stride apart) to m0 + m1 + m2 and m1 - m2 - m3
// (dst_stride apart; in place when dst is src).
inline void output_1d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
#pragma omp simd
  for (int e = 0; e < kLanes; ++e) {
    const float m0 = src[e], m1 = src[src_stride + e], m2 = src[2 * src_stride + e], m3 = src[3 * src_stride + e];
    dst[e] = m0 + m1 + m2;
    dst[dst_stride + e] = m1 - m2 - m3;
  }
}

// The tile's coordinates: sample and first output voxel along each axis.
struct TileAt {
  int64_t n, z, y, x;
};
TileAt tile_at(const Layout& s, int64_t tile) {
  const int64_t per_sample = s.tz * s.ty * s.tx, t = tile % per_sample;
  return {tile / per_sample, t / (s.ty * s.tx) * 2, t / s.tx % s.ty * 2, t % s.tx * 2};
}

// A share of the 64 transformed positions: groups [first, last) of 4 (group g = the positions
// (i, j, l) with i * 4 + j = g). wgrad's threads each transform every tile for their own share,
// so that no thread reads what another wrote (shared between them, the transforms took 2.5x their
// time, layer1's wgrad 2.3x, whenever the VM's two vCPUs talked at twice the latency).
struct Groups {
  int first = 0, last = kGroups;
  int z_first() const { return first / 4; }
  int z_last() const { return (last + 3) / 4; }
};

// v [position][t][channel] for the positions of `groups` = tile `tile`'s 4x4x4 patch (zeros outside
// the volume, and for a tile past the last) transformed along each axis; v's position pitch is
// s.pitch rows. Along z first, so that a share of the positions is a share of the later passes.
void transform_input_tile(const Run& r, const Layout& s, const float* xl, int64_t tile, int64_t t, Groups groups,
                          float* v) {
  const int64_t bt = s.pitch;
  if (tile >= s.tiles) {
    for (int pos = groups.first * 4; pos < groups.last * 4; ++pos)
      std::fill_n(v + (pos * bt + t) * s.in_pad, s.in_pad, 0.0f);
    return;
  }
  alignas(64) float d[kPositions * kLanes];  // [i][j][l] vectors
  const TileAt at = tile_at(s, tile);
  // The patch's voxels inside the volume, per axis: [lo, hi) of 0..3.
  const int z_lo = at.z == 0, y_lo = at.y == 0, x_lo = at.x == 0;
  const int z_hi = static_cast<int>(std::min<int64_t>(4, r.D - at.z + 1)),
            y_hi = static_cast<int>(std::min<int64_t>(4, r.H - at.y + 1)),
            x_hi = static_cast<int>(std::min<int64_t>(4, r.W - at.x + 1));
  const bool inside = z_lo == 0 && y_lo == 0 && x_lo == 0 && z_hi == 4 && y_hi == 4 && x_hi == 4;
  // The patch's first voxel (outside the volume at its low borders: an offset, not a pointer).
  const int64_t corner = ((at.n * r.D + at.z - 1) * r.H * r.W + (at.y - 1) * r.W + at.x - 1) * s.in_pad;
  const int64_t plane = r.H * r.W * s.in_pad;
  for (int64_t c0 = 0; c0 < s.in_pad; c0 += kLanes) {
    // Along z, from the patch's columns (a column outside, or its voxels outside, read as zeros).
    for (int j = 0; j < 4; ++j)
      for (int l = 0; l < 4; ++l) {
        const int64_t column = corner + (j * r.W + l) * s.in_pad + c0;
        float* dst = d + (j * 4 + l) * kLanes;
        if (inside) {
          input_1d(xl + column, plane, dst, 16 * kLanes);
          continue;
        }
        alignas(64) float padded[4 * kLanes] = {};
        if (j >= y_lo && j < y_hi && l >= x_lo && l < x_hi)
          for (int i = z_lo; i < z_hi; ++i) std::copy_n(xl + column + i * plane, kLanes, padded + i * kLanes);
        input_1d(padded, kLanes, dst, 16 * kLanes);
      }
    for (int i = groups.z_first(); i < groups.z_last(); ++i)  // along y
      for (int l = 0; l < 4; ++l) input_1d(d + (i * 16 + l) * kLanes, 4 * kLanes, d + (i * 16 + l) * kLanes, 4 * kLanes);
    for (int g = groups.first; g < groups.last; ++g)  // along x, into v
      input_1d(d + g * 4 * kLanes, kLanes, v + (g * 4 * bt + t) * s.in_pad + c0, bt * s.in_pad);
  }
}

// transform_input_tile for each of the block's tiles.
void transform_input(const Run& r, const Layout& s, const float* xl, int64_t first_tile, float* v) {
  for (int64_t t = 0; t < s.block_tiles; ++t) transform_input_tile(r, s, xl, first_tile + t, t, Groups{}, v);
}

// c[row][j] (+= when `add`) the sum over p < depth of a[row * a_row + p * a_step] b[p * b_step + j],
// for ROWS rows and NV vectors j of columns (c's pitch ldc): the products of both directions
// (fprop / dgrad: rows are tiles, the depth channels; wgrad: rows are filters, the depth tiles).
// AVX-512 takes 6 rows x 4 vectors (24 accumulators, 10 loads per 24 multiply-adds), AVX2 6 x 2.
template <int ROWS, int NV>
void outer_products(const float* a, int64_t a_row, int64_t a_step, const float* b, int64_t b_step, int64_t depth,
                    float* c, int64_t ldc, bool add) {
#if defined(MED3D_SIMD)
  using namespace simd;
  Vec acc[ROWS][NV];
#pragma GCC unroll 8
  for (int row = 0; row < ROWS; ++row)
#pragma GCC unroll 4
    for (int h = 0; h < NV; ++h) acc[row][h] = add ? load(c + row * ldc + h * kLanes) : zero();
  for (int64_t p = 0; p < depth; ++p, a += a_step, b += b_step) {
    Vec bv[NV];
#pragma GCC unroll 4
    for (int h = 0; h < NV; ++h) {
      bv[h] = load(b + h * kLanes);
      keep_in_register(bv[h]);
    }
#pragma GCC unroll 8
    for (int row = 0; row < ROWS; ++row) {
      const Vec av = broadcast(a[row * a_row]);
#pragma GCC unroll 4
      for (int h = 0; h < NV; ++h) acc[row][h] = fma(av, bv[h], acc[row][h]);
    }
  }
#pragma GCC unroll 8
  for (int row = 0; row < ROWS; ++row)
#pragma GCC unroll 4
    for (int h = 0; h < NV; ++h) store(c + row * ldc + h * kLanes, acc[row][h]);
#else
  for (int row = 0; row < ROWS; ++row) {
    float acc[NV * kLanes];
    for (int j = 0; j < NV * kLanes; ++j) acc[j] = add ? c[row * ldc + j] : 0.0f;
    for (int64_t p = 0; p < depth; ++p)
      for (int j = 0; j < NV * kLanes; ++j) acc[j] += a[row * a_row + p * a_step] * b[p * b_step + j];
    std::copy_n(acc, NV * kLanes, c + row * ldc);
  }
#endif
}

// m [position][tile][filter] = the block's products, position by position.
template <int NV>
void block_products(const Layout& s, const float* v, const float* u, float* m) {
  const int64_t bt = s.block_tiles;
  for (int pos = 0; pos < kPositions; ++pos)
    for (int64_t o0 = 0; o0 < s.out_pad; o0 += s.panel)
      for (int64_t t0 = 0; t0 < bt; t0 += kTileRows)
        outer_products<kTileRows, NV>(v + (pos * bt + t0) * s.in_pad, s.in_pad, 1, u + pos * s.in_pad * s.out_pad + o0,
                                      s.out_pad, s.in_pad, m + (pos * bt + t0) * s.out_pad + o0, s.out_pad, false);
}

// yl's 2x2x2 voxels (channels last, out_pad filters) of each of the block's tiles (those inside
// the volume): its 64 sums transformed back along each axis, a vector of filters at a time.
void transform_output(const Run& r, const Layout& s, const float* m, int64_t first_tile, float* yl) {
  const int64_t bt = s.block_tiles;
  alignas(64) float d[kPositions * kLanes];
  for (int64_t t = 0; t < bt && first_tile + t < s.tiles; ++t) {
    const TileAt at = tile_at(s, first_tile + t);
    float* corner = yl + ((at.n * r.D + at.z) * r.H * r.W + at.y * r.W + at.x) * s.out_pad;
    for (int64_t o0 = 0; o0 < s.out_pad; o0 += kLanes) {
      // Along x, from m (position p at (p * bt + t) * out_pad): (i, j, l) for l = 0, 1 into d.
      for (int ij = 0; ij < 16; ++ij)
        output_1d(m + (ij * 4 * bt + t) * s.out_pad + o0, bt * s.out_pad, d + ij * 4 * kLanes, kLanes);
      for (int i = 0; i < 4; ++i)
        for (int l = 0; l < 2; ++l) output_1d(d + (i * 16 + l) * kLanes, 4 * kLanes, d + (i * 16 + l) * kLanes, 4 * kLanes);
      for (int j = 0; j < 2; ++j)
        for (int l = 0; l < 2; ++l) {
          alignas(64) float out[2 * kLanes];
          output_1d(d + (j * 4 + l) * kLanes, 16 * kLanes, out, kLanes);  // along z
          if (at.y + j >= r.H || at.x + l >= r.W) continue;
          for (int i = 0; i < 2 && at.z + i < r.D; ++i)
            std::copy_n(out + i * kLanes, kLanes, corner + ((i * r.H + j) * r.W + l) * s.out_pad + o0);
        }
    }
  }
}

// Scratch floats of the run: the transformed weights, the input and the output channels last.
int64_t scratch_floats(const Run& r, const Layout& s) {
  const int64_t volume = r.N * r.D * r.H * r.W;
  return kPositions * s.in_pad * s.out_pad + volume * (s.in_pad + s.out_pad);
}

void run_winograd(const Run& r, const float* x, float* y, float* scratch) {
  const Layout s(r, kBlockTiles);
  const int64_t V = r.D * r.H * r.W;
  float* const u = scratch;
  float* const xl = u + kPositions * s.in_pad * s.out_pad;
  float* const yl = xl + r.N * V * s.in_pad;
  const int64_t macs = s.tiles * kPositions * s.in_pad * s.out_pad;
  // One team for all four steps (each a worksharing loop, then the team's barrier).
#pragma omp parallel if (!omp_in_parallel() && macs > kParallelMacs)
  {
    transform_weights(r, s, u);
    to_channels_last(r.N, r.in, s.in_pad, V, x, xl);
    const std::unique_ptr<float[]> v(new float[static_cast<std::size_t>(kPositions * s.block_tiles * s.in_pad)]);
    const std::unique_ptr<float[]> m(new float[static_cast<std::size_t>(kPositions * s.block_tiles * s.out_pad)]);
    // Contiguous runs of blocks, as to_channels_last and from_channels_last share out the voxels:
    // each thread's tiles read the input it copied and write the output it copies back.
#pragma omp for schedule(static)
    for (int64_t block = 0; block < s.blocks; ++block) {
      const int64_t first = block * s.block_tiles;
      transform_input(r, s, xl, first, v.get());
      switch (s.vectors) {
        case 1: block_products<1>(s, v.get(), u, m.get()); break;
        case 2: block_products<2>(s, v.get(), u, m.get()); break;
        case 3: block_products<3>(s, v.get(), u, m.get()); break;
        default: block_products<4>(s, v.get(), u, m.get()); break;
      }
      transform_output(r, s, m.get(), first, yl);
    }
    from_channels_last(r.N, r.out, s.out_pad, V, yl, y);
  }
}

// wgrad: the weights' gradient is G^T dU G per (filter, channel), where dU at each position is
// the sum over tiles of dy's tile through A (2 -> 4 per axis) times the input's transformed tile.

// One axis of A dy on vectors: dy0, dy1 (src_stride apart) to dy0, dy0 + dy1, dy0 - dy1, -dy1.
inline void grad_output_1d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride) {
#pragma omp simd
  for (int e = 0; e < kLanes; ++e) {
    const float y0 = src[e], y1 = src[src_stride + e];
    dst[e] = y0;
    dst[dst_stride + e] = y0 + y1;
    dst[2 * dst_stride + e] = y0 - y1;
    dst[3 * dst_stride + e] = -y1;
  }
}

// One axis of G^T u on vectors: u0..u3 to u0 + (u1 + u2) / 2, (u1 - u2) / 2, (u1 + u2) / 2 + u3.
inline void kernel_grad_1d(const float* u, int64_t u_stride, float* g, int64_t g_stride) {
#pragma omp simd
  for (int e = 0; e < kLanes; ++e) {
    const float u0 = u[e], u1 = u[u_stride + e], u2 = u[2 * u_stride + e], u3 = u[3 * u_stride + e];
    g[e] = u0 + 0.5f * (u1 + u2);
    g[g_stride + e] = 0.5f * (u1 - u2);
    g[2 * g_stride + e] = 0.5f * (u1 + u2) + u3;
  }
}

// dv [position][t][filter] (pitch out_vec) for the positions of `groups` = tile `tile`'s 2x2x2 dy
// (zeros outside the volume and for a tile past the last) through A along each axis, z first,
// from dyl [n][voxel][filter].
void transform_grad_tile(const Run& r, const Layout& s, int64_t out_vec, const float* dyl, int64_t tile, int64_t t,
                         Groups groups, float* dv) {
  const int64_t bt = s.pitch;
  if (tile >= s.tiles) {
    for (int pos = groups.first * 4; pos < groups.last * 4; ++pos)
      std::fill_n(dv + (pos * bt + t) * out_vec, out_vec, 0.0f);
    return;
  }
  const TileAt at = tile_at(s, tile);
  alignas(64) float y[8 * kLanes], a[16 * kLanes], b[32 * kLanes];
  for (int64_t o0 = 0; o0 < out_vec; o0 += kLanes) {
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        for (int l = 0; l < 2; ++l) {
          float* dst = y + ((i * 2 + j) * 2 + l) * kLanes;
          if (at.z + i < r.D && at.y + j < r.H && at.x + l < r.W)
            std::copy_n(dyl + (((at.n * r.D + at.z + i) * r.H + at.y + j) * r.W + at.x + l) * out_vec + o0, kLanes, dst);
          else
            std::fill_n(dst, kLanes, 0.0f);
        }
    // a [i][j][l] (4 x 2 x 2) along z, b [i][j][l] (4 x 4 x 2) along y for the share's i, then
    // along x into dv for its groups (i, j).
    for (int jl = 0; jl < 4; ++jl) grad_output_1d(y + jl * kLanes, 4 * kLanes, a + jl * kLanes, 4 * kLanes);
    for (int i = groups.z_first(); i < groups.z_last(); ++i)
      for (int l = 0; l < 2; ++l) grad_output_1d(a + (i * 4 + l) * kLanes, 2 * kLanes, b + (i * 8 + l) * kLanes, 2 * kLanes);
    for (int g = groups.first; g < groups.last; ++g)
      grad_output_1d(b + g * 2 * kLanes, kLanes, dv + (g * 4 * bt + t) * out_vec + o0, bt * out_vec);
  }
}

// outer_products over wgrad's tiles: sums[row][channel] (+)= the sum over t of dv[t][row] v[t][channel].
template <int NV>
void grad_products(int rows, const float* dv, int64_t out_vec, const float* v, int64_t in_pad, int64_t tiles,
                   float* sums, bool add) {
  switch (rows) {
    case 1: return outer_products<1, NV>(dv, 1, out_vec, v, in_pad, tiles, sums, in_pad, add);
    case 2: return outer_products<2, NV>(dv, 1, out_vec, v, in_pad, tiles, sums, in_pad, add);
    case 3: return outer_products<3, NV>(dv, 1, out_vec, v, in_pad, tiles, sums, in_pad, add);
    case 4: return outer_products<4, NV>(dv, 1, out_vec, v, in_pad, tiles, sums, in_pad, add);
    case 5: return outer_products<5, NV>(dv, 1, out_vec, v, in_pad, tiles, sums, in_pad, add);
    default: return outer_products<kTileRows, NV>(dv, 1, out_vec, v, in_pad, tiles, sums, in_pad, add);
  }
}

// du [position][filter][channel] (+= after the first block) the block's products at positions
// [pos0, pos1): kTileRows filters x up to kMaxVectors vectors of channels at a time.
void block_grad_products(const Run& r, const Layout& s, int64_t out_vec, const float* v, const float* dv, int pos0,
                         int pos1, bool add, float* du) {
  const int64_t bt = s.block_tiles, pitch = s.pitch;
  for (int pos = pos0; pos < pos1; ++pos)
    for (int64_t k0 = 0; k0 < r.out; k0 += kTileRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kTileRows, r.out - k0));
      for (int64_t c0 = 0; c0 < s.in_pad; c0 += kMaxVectors * kLanes) {
        const int nv = static_cast<int>(std::min<int64_t>(kMaxVectors, (s.in_pad - c0) / kLanes));
        const float* dvp = dv + pos * pitch * out_vec + k0;
        const float* vp = v + pos * pitch * s.in_pad + c0;
        float* sums = du + (pos * r.out + k0) * s.in_pad + c0;
        switch (nv) {
          case 1: grad_products<1>(rows, dvp, out_vec, vp, s.in_pad, bt, sums, add); break;
          case 2: grad_products<2>(rows, dvp, out_vec, vp, s.in_pad, bt, sums, add); break;
          case 3: grad_products<3>(rows, dvp, out_vec, vp, s.in_pad, bt, sums, add); break;
          default: grad_products<4>(rows, dvp, out_vec, vp, s.in_pad, bt, sums, add); break;
        }
      }
    }
}

// dw [filter][channel][27] = G^T du G for each (filter, channel), a vector of channels at a time.
// Called by every thread of the team: the filters are shared out.
void transform_kernel_grads(const Run& r, const Layout& s, const float* du, float* dw) {
  constexpr int L = kLanes;
#pragma omp for schedule(static)
  for (int64_t k = 0; k < r.out; ++k)
    for (int64_t c0 = 0; c0 < r.in; c0 += L) {
      alignas(64) float a[16 * 3 * L], b[4 * 9 * L], g[27 * L];
      for (int ij = 0; ij < 16; ++ij)  // along width, from du (position p at (p * out + k) * in_pad)
        kernel_grad_1d(du + (ij * 4 * r.out + k) * s.in_pad + c0, r.out * s.in_pad, a + ij * 3 * L, L);
      for (int i = 0; i < 4; ++i)
        for (int c = 0; c < 3; ++c) kernel_grad_1d(a + (i * 12 + c) * L, 3 * L, b + (i * 9 + c) * L, 3 * L);  // height
      for (int rs = 0; rs < 9; ++rs) kernel_grad_1d(b + rs * L, 9 * L, g + rs * L, 9 * L);  // depth
      for (int64_t e = 0; e < std::min<int64_t>(L, r.in - c0); ++e) {
        float* run = dw + (k * r.in + c0 + e) * 27;
        for (int tap = 0; tap < 27; ++tap) run[tap] = g[tap * L + e];
      }
    }
}

// wgrad's scratch floats: the input and dy channels last, a block of both transformed, and du.
int64_t wgrad_scratch_floats(const Run& r, const Layout& s) {
  const int64_t volume = r.N * r.D * r.H * r.W, out_vec = round_up(r.out, kLanes);
  return volume * (s.in_pad + out_vec) + kPositions * s.pitch * (s.in_pad + out_vec) +
         kPositions * r.out * s.in_pad;
}

void run_winograd_wgrad(const Run& r, const float* x, const float* dy, float* dw, float* scratch) {
  const Layout s = wgrad_layout(r);
  if (s.tiles == 0) {  // an empty batch: no tile adds to du
    std::fill_n(dw, r.out * r.in * 27, 0.0f);
    return;
  }
  const int64_t V = r.D * r.H * r.W, bt = s.block_tiles, out_vec = round_up(r.out, kLanes);
  float* const xl = scratch;
  float* const dyl = xl + r.N * V * s.in_pad;
  float* const v = dyl + r.N * V * out_vec;
  float* const dv = v + kPositions * s.pitch * s.in_pad;
  float* const du = dv + kPositions * s.pitch * out_vec;
  const int64_t macs = s.tiles * kPositions * s.in_pad * r.out;
  // Each thread transforms every tile for its own share of the positions and sums them over the
  // tiles, block by block: its transforms and its share of du are written and read by it alone.
#pragma omp parallel if (!omp_in_parallel() && macs > kParallelMacs)
  {
    to_channels_last(r.N, r.in, s.in_pad, V, x, xl);
    to_channels_last(r.N, r.out, out_vec, V, dy, dyl);
    const int team = omp_get_num_threads(), id = omp_get_thread_num();
    const Groups mine{id * kGroups / team, (id + 1) * kGroups / team};
    for (int64_t block = 0; mine.first < mine.last && block < s.blocks; ++block) {
      for (int64_t t = 0; t < bt; ++t) {
        transform_input_tile(r, s, xl, block * bt + t, t, mine, v);
        transform_grad_tile(r, s, out_vec, dyl, block * bt + t, t, mine, dv);
      }
      block_grad_products(r, s, out_vec, v, dv, mine.first * 4, mine.last * 4, block > 0, du);
    }
#pragma omp barrier
    transform_kernel_grads(r, s, du, dw);
  }
}

Run fprop_run(const Conv3dParams& p, const float* w) { return {p.N, p.C, p.K, p.D, p.H, p.W, w, p.C * 27, 27, false}; }

// The run conv's filter o is p's channel c, its channel i p's filter k: w[k, c, 26 - tap].
Run dgrad_run(const Conv3dParams& p, const float* w) { return {p.N, p.K, p.C, p.D, p.H, p.W, w, 27, p.C * 27, true}; }

void check_scratch(const char* op, const Conv3dParams& p, int64_t scratch_elements) {
  MED3D_CHECK(conv3d_winograd_applies(p), op, ": needs a single-group 3x3x3 conv with unit strides and ",
              "dilations and padding 1; dispatch through conv3d_fprop / conv3d_dgrad instead");
  MED3D_CHECK(scratch_elements >= conv3d_winograd_scratch_elements(p), op, ": the scratch buffer holds ",
              scratch_elements, " elements but this conv needs at least ", conv3d_winograd_scratch_elements(p),
              "; size it with conv3d_winograd_scratch_elements");
}

}  // namespace

bool conv3d_winograd_applies(const Conv3dParams& p) {
  const Dims3 one{1, 1, 1};
  return p.groups == 1 && p.T == 3 && p.R == 3 && p.S == 3 && p.stride == one && p.dilation == one && p.pad == one &&
         p.output_padding == Dims3{0, 0, 0} && p.Z == p.D && p.P == p.H && p.Q == p.W;
}

int64_t conv3d_winograd_scratch_elements(const Conv3dParams& p) {
  if (!conv3d_winograd_applies(p)) return 0;
  const Run f = fprop_run(p, nullptr), d = dgrad_run(p, nullptr);
  return std::max({scratch_floats(f, Layout(f, kBlockTiles)), scratch_floats(d, Layout(d, kBlockTiles)),
                   wgrad_scratch_floats(f, wgrad_layout(f))});
}

void conv3d_winograd_fprop(const Conv3dParams& p, const float* x, const float* w, float* y, float* scratch,
                           int64_t scratch_elements) {
  check_scratch("conv3d_winograd_fprop", p, scratch_elements);
  run_winograd(fprop_run(p, w), x, y, scratch);
}

void conv3d_winograd_dgrad(const Conv3dParams& p, const float* dy, const float* w, float* dx, float* scratch,
                           int64_t scratch_elements) {
  check_scratch("conv3d_winograd_dgrad", p, scratch_elements);
  run_winograd(dgrad_run(p, w), dy, dx, scratch);
}

void conv3d_winograd_wgrad(const Conv3dParams& p, const float* x, const float* dy, float* dw, float* scratch,
                           int64_t scratch_elements) {
  check_scratch("conv3d_winograd_wgrad", p, scratch_elements);
  run_winograd_wgrad(fprop_run(p, nullptr), x, dy, dw, scratch);
}

}  // namespace med3d::kernels::cpu
