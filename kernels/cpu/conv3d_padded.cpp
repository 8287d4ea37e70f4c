// Direct f32 convolution of convs with few input channels (see the header).
#include "med3d/kernels/cpu/conv3d_padded.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include <omp.h>

#include "med3d/kernels/cpu/conv3d_direct.h"
#include "med3d/kernels/cpu_loops.h"
#include "parallel_items.h"
#include "simd.h"

namespace med3d::kernels::cpu {

namespace {

// wgrad's tile: kTapBlock width taps x kVectors vectors of filters. AVX2 (16 registers): 4 x 3 =
// 12 accumulators, three dy registers and one broadcast; AVX-512 (32): 7 x 2, the stem's whole
// kernel row, so that dy's plane is read once per row, not twice (stem wgrad 0.87x the time on Zen
// 4 against 4 x 2, 4 of 4 paired rounds). The portable loops take AVX2's shapes.
#if defined(MED3D_SIMD)
constexpr int kLanes = simd::kLanes;
#else
constexpr int kLanes = 8;
#endif
#if defined(__AVX512F__)
constexpr int kVectors = 2;
#else
constexpr int kVectors = 3;
#endif
constexpr int kFilters = kVectors * kLanes;
// fprop's panels: 32 filters, so that Med3D's 64 (and any multiple of 32) need no narrower tail
// panel (on AVX2 a 16-filter tail ran at 1.2-1.4x the time per filter of the main panels).
constexpr int kFpropVectors = 32 / kLanes;
constexpr int kFpropFilters = 32;
// An fprop tile: consecutive output voxels of a plane x the panel's vectors, about 12 (AVX2) or
// 16 (AVX-512) accumulators: enough independent sums to cover the FMA latency, and the registers
// left for one operand held per voxel or per vector. A panel of 4 vectors takes 3 voxels.
constexpr int fprop_tile_voxels(int vectors) {
#if defined(__AVX512F__)
  return vectors == 1 ? 12 : 8;
#else
  return vectors == 4 ? 3 : vectors == 3 ? 4 : vectors == 2 ? 6 : 8;
#endif
}
constexpr int kMaxTileVoxels = 12;  // the most fprop_tile_voxels gives
static_assert(fprop_tile_voxels(1) <= kMaxTileVoxels && fprop_tile_voxels(2) <= kMaxTileVoxels);
constexpr int64_t kMaxChannels = 4;

// A volume with zero borders, [N, C, Dp, Hp, Wp] (pad_input).
struct PaddedInput {
  std::unique_ptr<float[]> data;
  int64_t C = 0, Dp = 0, Hp = 0, Wp = 0;
  const float* row(int64_t n, int64_t c, int64_t d, int64_t h) const {
    return data.get() + (((n * C + c) * Dp + d) * Hp + h) * Wp;
  }
};

// `volumes` volumes of extent `in` at src, each placed at `lo` inside zeros of extent `extent`,
// written to out [volumes, Dp, Hp, Wp]. Plane by plane on all threads, each element written
// once: zeros or the input. (Zero-filled whole on one thread, then copied into on one thread below
// kParallelMacs: ~2% of the stem's fprop, the other thread waiting.) Inside a parallel region, on
// the calling thread. lo may be negative: the volumes' parts from -lo on.
void pad_volumes_into(const float* src, int64_t volumes, const Dims3& in, const Dims3& lo, const Dims3& extent,
                      float* out) {
  const int64_t plane = extent[1] * extent[2], planes = volumes * extent[0];
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && planes * plane >= kParallelGrain)
  for (int64_t i = 0; i < planes; ++i) {
    const int64_t v = i / extent[0], d = i % extent[0] - lo[0];
    float* dst = out + i * plane;
    if (d < 0 || d >= in[0]) {
      std::fill(dst, dst + plane, 0.0f);
      continue;
    }
    std::fill(dst, dst + lo[1] * extent[2], 0.0f);
    for (int64_t h = 0; h < in[1]; ++h) {
      float* row = dst + (h + lo[1]) * extent[2];
      const float* from = src + ((v * in[0] + d) * in[1] + h) * in[2];
      std::fill(row, row + lo[2], 0.0f);
      std::copy(from, from + in[2], row + lo[2]);
      std::fill(row + lo[2] + in[2], row + extent[2], 0.0f);
    }
    std::fill(dst + (lo[1] + in[1]) * extent[2], dst + plane, 0.0f);
  }
}

// The input with its padding as zeros, [N, C, Dp, Hp, Wp].
PaddedInput pad_input(const Conv3dParams& p, const float* x) {
  const Dims3 in = p.input_extent();
  PaddedInput padded;
  padded.C = p.C;
  padded.Dp = in[0] + 2 * p.pad[0];
  padded.Hp = in[1] + 2 * p.pad[1];
  padded.Wp = in[2] + 2 * p.pad[2];
  padded.data.reset(new float[static_cast<std::size_t>(p.N * p.C * padded.Dp * padded.Hp * padded.Wp)]);
  pad_volumes_into(x, p.N * p.C, in, p.pad, {padded.Dp, padded.Hp, padded.Wp}, padded.data.get());
  return padded;
}

int64_t panel_count(const Conv3dParams& p, int64_t filters) { return (p.K + filters - 1) / filters; }

// w [K, C, taps] -> [panel][c][tap][kFpropFilters], 0 past K.
std::vector<float> pack_filters_inner(const Conv3dParams& p, const float* w) {
  const int64_t panels = panel_count(p, kFpropFilters), taps = p.taps();
  std::vector<float> wp(static_cast<std::size_t>(panels * p.C * taps * kFpropFilters), 0.0f);
  for (int64_t k = 0; k < p.K; ++k)
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t tap = 0; tap < taps; ++tap)
        wp[static_cast<std::size_t>(((k / kFpropFilters * p.C + c) * taps + tap) * kFpropFilters + k % kFpropFilters)] =
            w[(k * p.C + c) * taps + tap];
  return wp;
}

// Each tap's offset in the padded input from the voxel an output voxel reads through its first
// tap (channel 0), in the packed weights' order (c, t, r, s): one list for every tile, and the tile
// loop runs over all taps without recomputing a row's address every S taps.
std::vector<int64_t> tap_offsets(const Conv3dParams& p, const PaddedInput& in) {
  std::vector<int64_t> offsets;
  offsets.reserve(static_cast<std::size_t>(p.C * p.taps()));
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t t = 0; t < p.T; ++t)
      for (int64_t r = 0; r < p.R; ++r)
        for (int64_t s = 0; s < p.S; ++s)
          offsets.push_back(((c * in.Dp + t * p.dilation[0]) * in.Hp + r * p.dilation[1]) * in.Wp + s * p.dilation[2]);
  return offsets;
}

// The input voxel output voxel v of plane z of sample n reads through its first tap.
const float* first_tap(const Conv3dParams& p, const PaddedInput& in, int64_t n, int64_t z, int64_t v) {
  return in.row(n, 0, z * p.stride[0], v / p.Q * p.stride[1]) + v % p.Q * p.stride[2];
}

// The output positions a work item covers: one output plane z of sample n for one panel.
struct PlaneItem {
  int64_t panel, n, z;
};
// Samples and planes outermost, panels innermost: both threads get every panel (the last may be
// narrower) and the weights of all panels stay in L2.
PlaneItem plane_item(int64_t panels, int64_t Z, int64_t item) { return {item % panels, item / panels / Z, item / panels % Z}; }

// Where fprop_item stores an item's sums straight into y's channel groups: its plane in the
// panel's first group, the groups `pitch` apart (first null: into the plane sums, then y).
struct GroupedPlane {
  float* first = nullptr;
  int64_t pitch = 0;
};
// The item's plane in y's channel groups (conv3d_direct.h's layout: filter k of output voxel v at
// [(n * ceil(K / 8) + k / 8) * pitch + v * 8 + k % 8]).
GroupedPlane grouped_plane(const Conv3dParams& p, const PlaneItem& it, float* y) {
  constexpr int64_t G = kConv3dChannelGroup;
  static_assert(kFpropFilters % G == 0, "a panel starts a channel group");
  const int64_t pitch = conv3d_group_pitch(p.output_spatial());
  return {y + (it.n * ((p.K + G - 1) / G) + it.panel * kFpropFilters / G) * pitch + it.z * p.P * p.Q * G, pitch};
}

#if defined(MED3D_SIMD)
// An fprop tile: `count` output voxels of a plane (fprop_tile_voxels of them but in the last tile),
// each with its index in the plane and the offset of its first tap from the plane's first (in a
// padded input channel), and the hull of the height and width taps that read inside the input for
// its voxels (those dead for some of its voxels read the padding's zeros).
struct PlaneTile {
  int64_t count = 0;
  std::array<int64_t, kMaxTileVoxels> voxel{}, offset{};
  AxisRange rows{0, 0}, cols{0, 0};
};

// The tiles of `voxels` voxels that cover a plane, the same for every plane: first the columns
// whose width taps all read inside, line by line, then the other columns one column at a time, so
// that no tile holds voxels of a border column with others (their hull read padding through 3% of
// the stem's products, a tile of 8 voxels per line's start and end).
std::vector<PlaneTile> plane_tiles(const Conv3dParams& p, const PaddedInput& in, int voxels) {
  std::vector<AxisRange> height_taps, width_taps;  // per output line, per output column
  for (int64_t y = 0; y < p.P; ++y)
    height_taps.push_back(inside_range(p.R, p.H, p.dilation[1], y * p.stride[1] - p.pad[1]));
  for (int64_t x = 0; x < p.Q; ++x)
    width_taps.push_back(inside_range(p.S, p.W, p.dilation[2], x * p.stride[2] - p.pad[2]));
  auto whole = [&](int64_t x) {
    const AxisRange s = width_taps[static_cast<std::size_t>(x)];
    return s.lo == 0 && s.hi == p.S;
  };
  std::vector<int64_t> order;
  order.reserve(static_cast<std::size_t>(p.P * p.Q));
  for (int64_t y = 0; y < p.P; ++y)
    for (int64_t x = 0; x < p.Q; ++x)
      if (whole(x)) order.push_back(y * p.Q + x);
  for (int64_t x = 0; x < p.Q; ++x)
    if (!whole(x))
      for (int64_t y = 0; y < p.P; ++y) order.push_back(y * p.Q + x);
  std::vector<PlaneTile> tiles;
  for (std::size_t i = 0; i < order.size(); i += static_cast<std::size_t>(voxels)) {
    PlaneTile tile;
    tile.count = std::min<int64_t>(voxels, static_cast<int64_t>(order.size() - i));
    tile.rows = {p.R, 0};
    tile.cols = {p.S, 0};
    for (int64_t j = 0; j < tile.count; ++j) {
      const int64_t v = order[i + static_cast<std::size_t>(j)], y = v / p.Q, x = v % p.Q;
      tile.voxel[j] = v;
      tile.offset[j] = y * p.stride[1] * in.Wp + x * p.stride[2];
      const AxisRange r = height_taps[static_cast<std::size_t>(y)], s = width_taps[static_cast<std::size_t>(x)];
      tile.rows = {std::min(tile.rows.lo, r.lo), std::max(tile.rows.hi, r.hi)};
      tile.cols = {std::min(tile.cols.lo, s.lo), std::max(tile.cols.hi, s.hi)};
    }
    // The missing voxels of the last tile repeat its last one; their sums land in the slack.
    for (int64_t j = tile.count; j < voxels; ++j) {
      tile.voxel[j] = p.P * p.Q + j;
      tile.offset[j] = tile.offset[tile.count - 1];
    }
    tiles.push_back(tile);
  }
  return tiles;
}

using simd::Vec;
// Width taps per wgrad block (kTapBlock x kVectors accumulators).
#if defined(__AVX512F__)
constexpr int kTapBlock = 7;
#else
constexpr int kTapBlock = 4;
#endif

// A voxel's kLanes sums of consecutive filters, from the first of a channel group, into their
// kLanes / 8 channel groups (`pitch` apart).
inline void store_voxel_groups(Vec sums, float* dst, int64_t pitch) {
  static_assert(kLanes % kConv3dChannelGroup == 0 && kConv3dChannelGroup == 8);
#if defined(__AVX512F__)
  _mm256_storeu_ps(dst, _mm512_castps512_ps256(sums));
  _mm256_storeu_ps(dst + pitch, _mm512_extractf32x8_ps(sums, 1));
#else
  (void)pitch;
  _mm256_storeu_ps(dst, sums);
#endif
}

// Adds a run of consecutive taps into a tile's sums: acc[j][h] += sum over the run of
// wp[tap, h] * first[j][offsets[tap]], for output voxel j (whose first tap reads first[j]) and the
// panel's vector h. The operand used by more products stays in registers: the panel's vectors when
// the tile has more voxels than vectors, else the voxels' broadcasts (12 accumulators + 3 + 1 of
// AVX2's 16 registers).
template <int VOXELS, int NV>
void fprop_taps(const float* const (&first)[VOXELS], const int64_t* offsets, int64_t taps, const float* wp,
                Vec (&acc)[VOXELS][NV]) {
  const float* a = wp;
#pragma GCC unroll 4  // 3% on the stem (the loop's own instructions)
  for (int64_t i = 0; i < taps; ++i, a += kFpropFilters) {
    const int64_t o = offsets[i];
    if constexpr (VOXELS > NV) {
      Vec w[NV];
#pragma GCC unroll 4
      for (int h = 0; h < NV; ++h) {
        w[h] = simd::load(a + h * kLanes);
        simd::keep_in_register(w[h]);
      }
#pragma GCC unroll 12
      for (int j = 0; j < VOXELS; ++j) {
        const Vec b = simd::broadcast(first[j][o]);
#pragma GCC unroll 4
        for (int h = 0; h < NV; ++h) acc[j][h] = simd::fma(b, w[h], acc[j][h]);
      }
    } else {
      Vec b[VOXELS];
#pragma GCC unroll 12
      for (int j = 0; j < VOXELS; ++j) b[j] = simd::broadcast(first[j][o]);
#pragma GCC unroll 4
      for (int h = 0; h < NV; ++h) {
        Vec w = simd::load(a + h * kLanes);
        simd::keep_in_register(w);  // one load for the tile's voxels, not one per product
#pragma GCC unroll 12
        for (int j = 0; j < VOXELS; ++j) acc[j][h] = simd::fma(b[j], w, acc[j][h]);
      }
    }
  }
}

// One output plane for one panel of NV vectors into plane_sums [voxel][kFpropFilters], tile by tile
// (plane_tiles of fprop_tile_voxels(NV) voxels). A tile sums the depth taps that read inside the
// input for this plane and, of its hull of height and width taps, each row's run of width taps:
// the stem skips a tenth of its products this way (8% with every width tap summed).
template <int NV>
void fprop_plane(const Conv3dParams& p, const PaddedInput& in, const std::vector<int64_t>& offsets, const float* wp,
                 const std::vector<PlaneTile>& tiles, const PlaneItem& it, float* plane_sums, const GroupedPlane& out) {
  constexpr int kVoxels = fprop_tile_voxels(NV);
  const AxisRange ts = inside_range(p.T, p.D, p.dilation[0], it.z * p.stride[0] - p.pad[0]);
  const float* plane_first = first_tap(p, in, it.n, it.z, 0);
  for (const PlaneTile& tile : tiles) {
    const float* first[kVoxels];
#pragma GCC unroll 12
    for (int j = 0; j < kVoxels; ++j) first[j] = plane_first + tile.offset[j];
    const int64_t r0 = tile.rows.lo, r1 = tile.rows.hi, s0 = tile.cols.lo, s1 = tile.cols.hi;
    Vec acc[kVoxels][NV];
#pragma GCC unroll 12
    for (int j = 0; j < kVoxels; ++j)
#pragma GCC unroll 4
      for (int h = 0; h < NV; ++h) acc[j][h] = simd::zero();
    // Runs of consecutive taps, one call each: with every width tap live a channel's live rows of a
    // depth tap, and with every height tap live too (all but the border lines) its live depth taps.
    const bool whole_lines = s0 == 0 && s1 == p.S, whole_rows = whole_lines && r0 == 0 && r1 == p.R;
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t t = ts.lo; t < ts.hi && r0 < r1 && s0 < s1; t = whole_rows ? ts.hi : t + 1)
        for (int64_t r = r0; r < r1; r = whole_lines ? r1 : r + 1) {
          const int64_t tap = ((c * p.T + t) * p.R + r) * p.S + s0;
          const int64_t taps = whole_rows ? (ts.hi - ts.lo) * p.R * p.S : whole_lines ? (r1 - r0) * p.S : s1 - s0;
          fprop_taps<kVoxels, NV>(first, offsets.data() + tap, taps, wp + tap * kFpropFilters, acc);
        }
    if (out.first != nullptr) {
      for (int j = 0; j < tile.count; ++j)
#pragma GCC unroll 4
        for (int h = 0; h < NV; ++h)
          store_voxel_groups(acc[j][h], out.first + h * (kLanes / kConv3dChannelGroup) * out.pitch +
                                            tile.voxel[j] * kConv3dChannelGroup, out.pitch);
      continue;
    }
#pragma GCC unroll 12
    for (int j = 0; j < kVoxels; ++j)
#pragma GCC unroll 4
      for (int h = 0; h < NV; ++h) simd::store(plane_sums + tile.voxel[j] * kFpropFilters + h * kLanes, acc[j][h]);
  }
}

// Output rows summed in registers before they are added into a block's sums: 4 rows of the stem's
// 32 voxels, 128 products, as the other kernels' register sums (a row at a time, the adds were a
// tenth of the stem's wgrad; one running sum over a whole plane, 4096 products on a 128x128 stem,
// missed the model goldens' 1e-4 in the portable loops).
constexpr int64_t kWgradSumRows = 4;

// out[jt][h] = sum over the plane's rows [y0, y1) of dyp[v, h] * the input voxel v reads through
// width tap s0 + jt (for channel c, taps t, r), for the first NV vectors; the other rows read only
// the padding for tap row r.
template <int NV, int TAPS>
void wgrad_block(const Conv3dParams& p, const PaddedInput& in, const float* dyp, const PlaneItem& it, int64_t c,
                 int64_t t, int64_t r, int64_t s0, int64_t y0, int64_t y1, float* out) {
  const int64_t sx = p.stride[2], dx = p.dilation[2];
  std::fill(out, out + TAPS * kFilters, 0.0f);
  const float* d = dyp + y0 * p.Q * kFilters;
  for (int64_t block = y0; block < y1; block += kWgradSumRows) {
    Vec acc[TAPS][kVectors];
#pragma GCC unroll 8
    for (int j = 0; j < TAPS; ++j)
#pragma GCC unroll 3
      for (int h = 0; h < kVectors; ++h) acc[j][h] = simd::zero();
    for (int64_t oy = block; oy < std::min(y1, block + kWgradSumRows); ++oy) {
      const float* row =
          in.row(it.n, c, it.z * p.stride[0] + t * p.dilation[0], oy * p.stride[1] + r * p.dilation[1]) + s0 * dx;
      for (int64_t q = 0; q < p.Q; ++q, d += kFilters) {
        const float* xs = row + q * sx;
        Vec d0 = simd::load(d), d1 = simd::zero(), d2 = simd::zero();
        simd::keep_in_register(d0);
        if constexpr (NV > 1) {
          d1 = simd::load(d + kLanes);
          simd::keep_in_register(d1);
        }
        if constexpr (NV > 2) {
          d2 = simd::load(d + 2 * kLanes);
          simd::keep_in_register(d2);
        }
#pragma GCC unroll 8
        for (int j = 0; j < TAPS; ++j) {
          const Vec b = simd::broadcast(xs[j * dx]);
          acc[j][0] = simd::fma(b, d0, acc[j][0]);
          if constexpr (NV > 1) acc[j][1] = simd::fma(b, d1, acc[j][1]);
          if constexpr (NV > 2) acc[j][2] = simd::fma(b, d2, acc[j][2]);
        }
      }
    }
#pragma GCC unroll 8
    for (int j = 0; j < TAPS; ++j)
#pragma GCC unroll 3
      for (int h = 0; h < kVectors; ++h) {
        float* o = out + j * kFilters + h * kLanes;
        simd::store(o, simd::add(simd::load(o), acc[j][h]));
      }
  }
}

// A plane's blocks: the depth taps that read only the padding for this plane, and each height
// tap's rows that do, are skipped (the stem: a tenth of its products; their sums stay 0).
template <int NV>
void wgrad_plane(const Conv3dParams& p, const PaddedInput& in, const float* dyp, const PlaneItem& it, float* partial) {
  const AxisRange ts = inside_range(p.T, p.D, p.dilation[0], it.z * p.stride[0] - p.pad[0]);
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t t = 0; t < p.T; ++t)
      for (int64_t r = 0; r < p.R; ++r) {
        const AxisRange ys = t >= ts.lo && t < ts.hi ? inside_range(p.P, p.H, p.stride[1], r * p.dilation[1] - p.pad[1])
                                                     : AxisRange{0, 0};
        for (int64_t s0 = 0; s0 < p.S; s0 += kTapBlock) {
          float* out = partial + (((c * p.T + t) * p.R + r) * p.S + s0) * kFilters;
          const int64_t y0 = ys.lo, y1 = std::max(ys.lo, ys.hi);
          switch (std::min<int64_t>(kTapBlock, p.S - s0)) {
#if defined(__AVX512F__)
            case 7: wgrad_block<NV, 7>(p, in, dyp, it, c, t, r, s0, y0, y1, out); break;
            case 6: wgrad_block<NV, 6>(p, in, dyp, it, c, t, r, s0, y0, y1, out); break;
            case 5: wgrad_block<NV, 5>(p, in, dyp, it, c, t, r, s0, y0, y1, out); break;
#endif
            case 4: wgrad_block<NV, 4>(p, in, dyp, it, c, t, r, s0, y0, y1, out); break;
            case 3: wgrad_block<NV, 3>(p, in, dyp, it, c, t, r, s0, y0, y1, out); break;
            case 2: wgrad_block<NV, 2>(p, in, dyp, it, c, t, r, s0, y0, y1, out); break;
            default: wgrad_block<NV, 1>(p, in, dyp, it, c, t, r, s0, y0, y1, out); break;
          }
        }
      }
}

// The panel's vector count: the last panel of K may fill fewer.
int panel_vectors(const Conv3dParams& p, int64_t panel, int64_t filters) {
  return static_cast<int>((std::min<int64_t>(filters, p.K - panel * filters) + kLanes - 1) / kLanes);
}

// The tiles of the panels' loops, by their vector count (only those K's panels run are filled).
using FpropTiles = std::array<std::vector<PlaneTile>, kFpropVectors + 1>;
FpropTiles fprop_tiles(const Conv3dParams& p, const PaddedInput& in) {
  FpropTiles tiles;
  for (const int64_t panel : {int64_t(0), panel_count(p, kFpropFilters) - 1}) {
    const int vectors = panel_vectors(p, panel, kFpropFilters);
    if (tiles[vectors].empty()) tiles[vectors] = plane_tiles(p, in, fprop_tile_voxels(vectors));
  }
  return tiles;
}

void fprop_item(const Conv3dParams& p, const PaddedInput& in, const std::vector<int64_t>& offsets, const float* wp,
                const FpropTiles& tiles, const PlaneItem& it, float* plane_sums, const GroupedPlane& out) {
  switch (panel_vectors(p, it.panel, kFpropFilters)) {
    case 1: return fprop_plane<1>(p, in, offsets, wp, tiles[1], it, plane_sums, out);
#if !defined(__AVX512F__)
    case 2: return fprop_plane<2>(p, in, offsets, wp, tiles[2], it, plane_sums, out);
    case 3: return fprop_plane<3>(p, in, offsets, wp, tiles[3], it, plane_sums, out);
#endif
    default: return fprop_plane<kFpropVectors>(p, in, offsets, wp, tiles[kFpropVectors], it, plane_sums, out);
  }
}

void wgrad_item(const Conv3dParams& p, const PaddedInput& in, const float* dyp, const PlaneItem& it, float* partial) {
  switch (panel_vectors(p, it.panel, kFilters)) {
    case 1: return wgrad_plane<1>(p, in, dyp, it, partial);
#if !defined(__AVX512F__)
    case 2: return wgrad_plane<2>(p, in, dyp, it, partial);
#endif
    default: return wgrad_plane<kVectors>(p, in, dyp, it, partial);
  }
}
#else
// The portable loops: the same sums in the same order, one voxel and filter at a time.
// (All taps: those the vector loops skip add exact zeros.)
struct FpropTiles {};
FpropTiles fprop_tiles(const Conv3dParams&, const PaddedInput&) { return {}; }

void fprop_item(const Conv3dParams& p, const PaddedInput& in, const std::vector<int64_t>& offsets, const float* wp,
                const FpropTiles&, const PlaneItem& it, float* plane_sums, const GroupedPlane& out) {
  constexpr int64_t G = kConv3dChannelGroup;
  for (int64_t v = 0; v < p.P * p.Q; ++v) {
    const float* first = first_tap(p, in, it.n, it.z, v);
    float* acc = plane_sums + v * kFpropFilters;
    std::fill(acc, acc + kFpropFilters, 0.0f);
    for (std::size_t i = 0; i < offsets.size(); ++i)
      for (int k = 0; k < kFpropFilters; ++k) acc[k] += first[offsets[i]] * wp[i * kFpropFilters + k];
    if (out.first != nullptr)
      for (int64_t k = 0; k < kFpropFilters; ++k) out.first[k / G * out.pitch + v * G + k % G] = acc[k];
  }
}

void wgrad_item(const Conv3dParams& p, const PaddedInput& in, const float* dyp, const PlaneItem& it, float* partial) {
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t t = 0; t < p.T; ++t)
      for (int64_t r = 0; r < p.R; ++r)
        for (int64_t s = 0; s < p.S; ++s) {
          float total[kFilters] = {};
          const float* d = dyp;
          for (int64_t oy = 0; oy < p.P; ++oy) {
            float acc[kFilters] = {};  // a row at a time, as the vector loops
            const float* row = in.row(it.n, c, it.z * p.stride[0] + t * p.dilation[0], oy * p.stride[1] + r * p.dilation[1]) + s * p.dilation[2];
            for (int64_t q = 0; q < p.Q; ++q, d += kFilters)
              for (int k = 0; k < kFilters; ++k) acc[k] += row[q * p.stride[2]] * d[k];
            for (int k = 0; k < kFilters; ++k) total[k] += acc[k];
          }
          std::copy(total, total + kFilters, partial + (((c * p.T + t) * p.R + r) * p.S + s) * kFilters);
        }
}
#endif

// y's rows of the item's filters, from plane_sums [voxel][kFpropFilters]: kLanes x kLanes blocks
// transposed in registers (one scalar store per output was 8% of the stem's time).
void store_plane(const Conv3dParams& p, const PlaneItem& it, const float* plane_sums, float* y) {
  const int64_t k0 = it.panel * kFpropFilters, rows = std::min<int64_t>(kFpropFilters, p.K - k0);
  const int64_t V = p.output_spatial(), plane = p.P * p.Q;
  float* dst = y + (it.n * p.K + k0) * V + it.z * plane;
  int64_t v = 0;
#if defined(MED3D_SIMD)
  // A block of kLanes filters at a time across the plane: kLanes rows of y written front to back
  // (the plane's vectors outermost wrote all 32 rows in turn: the stem's fprop 0.96x the time so).
  const int64_t vector_end = plane / kLanes * kLanes;
  for (int64_t k = 0; k < rows; k += kLanes)
    for (v = 0; v < vector_end; v += kLanes) {
      if (k + kLanes <= rows) {
        simd::transpose_block(plane_sums + v * kFpropFilters + k, kFpropFilters, dst + k * V + v, V);
        continue;
      }
      alignas(64) float block[kLanes * kLanes];
      simd::transpose_block(plane_sums + v * kFpropFilters + k, kFpropFilters, block, kLanes);
      for (int64_t i = 0; i < rows - k; ++i) std::copy(block + i * kLanes, block + (i + 1) * kLanes, dst + (k + i) * V + v);
    }
  v = vector_end;
#endif
  for (; v < plane; ++v)
    for (int64_t k = 0; k < rows; ++k) dst[k * V + v] = plane_sums[v * kFpropFilters + k];
}

// The item's filters into y in channel groups (grouped_plane): each voxel's 8 filters of a group
// one copy from plane_sums, no transpose; the filters past K in the last group written as 0.
void store_plane_grouped(const Conv3dParams& p, const PlaneItem& it, const float* plane_sums, float* y) {
  constexpr int64_t G = kConv3dChannelGroup;
  const int64_t rows = std::min<int64_t>(kFpropFilters, p.K - it.panel * kFpropFilters), plane = p.P * p.Q;
  const GroupedPlane out = grouped_plane(p, it, y);
  for (int64_t g = 0; g * G < rows; ++g) {
    const int64_t filters = std::min(G, rows - g * G);
    float* dst = out.first + g * out.pitch;
    for (int64_t v = 0; v < plane; ++v, dst += G) {
      const float* src = plane_sums + v * kFpropFilters + g * G;
      if (filters == G) {
        std::copy_n(src, G, dst);
      } else {
        std::copy_n(src, filters, dst);
        std::fill(dst + filters, dst + G, 0.0f);
      }
    }
  }
}

// --- dgrad: voxels in the lanes --------------------------------------------------------
// dx has few channels (the stem's one), so the lanes hold consecutive input voxels. Along each
// axis input index i = stride * m + r (phase r < stride) receives output index m + off through
// every tap t with (r + pad - t * dilation) divisible by the stride, off being the quotient: per
// phase (rz, ry, rx) dgrad is a unit-stride correlation of dy with that phase's taps (the stem's
// 7 taps split 4 / 3 per axis). dy is copied with zero borders (each thread the planes it reads)
// so that every tap of every tile reads inside (the borders' products are wasted: 10% more than
// land inside on the stem, 5% with the depth taps that read only borders skipped per plane); a
// tile is kDgradRows rows of kDgradVoxels phase voxels, summed over filters and the phase's taps
// in registers, then scattered into dx at the stride (a few stores per ~2700 products). The
// vol2col GEMM it replaces ran the stem's dgrad at 0.35 of the FMA peak, scattering a 343-row
// column matrix back into dx; this runs it in 0.59x the time (large scale 0.93x: dy's copy no
// longer fits L3).
// 4 rows x 2 vectors: 8 accumulators, up to 4 height taps' weights and a row's 2 vectors of dy
// in AVX2's 16 registers. AVX-512's 32 take 8 rows: each row of dy loaded feeds up to 4 rows of
// sums, so that 8 rows load 11 rows per 4 taps where 4 load 7 (the stem's dgrad on one thread in
// 0.93x the time; with each row's load kept in its register, 0.85x that).
#if defined(__AVX512F__)
constexpr int kDgradRows = 8, kDgradVectors = 2;
#else
constexpr int kDgradRows = 4, kDgradVectors = 2;
#endif
constexpr int64_t kDgradVoxels = kDgradVectors * kLanes;

// One axis' phases: phase r covers input indices r, r + stride, ... (`count` of them) and reads
// dy at m + offs[i] through kernel tap taps[i].
struct AxisPhase {
  int64_t count = 0;
  std::vector<int64_t> taps, offs;
};
std::vector<AxisPhase> axis_phases(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  std::vector<AxisPhase> phases;
  for (int64_t r = 0; r < std::min(stride, in); ++r) {
    AxisPhase ph;
    ph.count = (in - r + stride - 1) / stride;
    for (int64_t t = 0; t < kernel; ++t) {
      const int64_t num = r + pad - t * dilation;
      if (num % stride != 0) continue;
      ph.taps.push_back(t);
      ph.offs.push_back(num / stride);  // exact: C++ division truncates, num is a multiple
    }
    phases.push_back(ph);
  }
  return phases;
}

// dy's zero-padded copy along one axis: `lo` before the out extent, `extent` in all, enough for
// every phase's reads m + off (m below its count rounded up to `round`).
struct PaddedAxis {
  int64_t lo = 0, extent = 0;
};
PaddedAxis padded_axis(const std::vector<AxisPhase>& phases, int64_t out, int64_t round) {
  PaddedAxis a;
  int64_t hi = out;
  for (const AxisPhase& ph : phases)
    for (const int64_t off : ph.offs) {
      a.lo = std::max(a.lo, -off);
      hi = std::max(hi, (ph.count + round - 1) / round * round + off);
    }
  a.extent = a.lo + hi;
  return a;
}

// Filters per block: a block's dy rows (4 filters x ~4.6 KiB on the stem, ~8.4 KiB with AVX-512's
// 8 rows) stay in L1 or near it while every phase of the tile sums them (AVX-512: 2 filters took
// 1.03x the time).
constexpr int64_t kDgradFilterBlock = 4;

#if defined(MED3D_SIMD)
// A tile's accumulators, loaded from and stored to its sums [kDgradRows][kDgradVoxels].
using DgradAcc = Vec[kDgradRows][kDgradVectors];
[[gnu::always_inline]] inline void load_tile(const float* sums, DgradAcc& acc) {
#pragma GCC unroll 16
  for (int j = 0; j < kDgradRows; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < kDgradVectors; ++v) acc[j][v] = simd::load(sums + j * kDgradVoxels + v * kLanes);
}
[[gnu::always_inline]] inline void store_tile(const DgradAcc& acc, float* sums) {
#pragma GCC unroll 16
  for (int j = 0; j < kDgradRows; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < kDgradVectors; ++v) simd::store(sums + j * kDgradVoxels + v * kLanes, acc[j][v]);
}
#endif

// sums[j][m] += sum over `filters` filters k and `taps` of the phase's taps i of wk[k * w_pitch + i] *
// dy0[k * k_pitch + offsets[i] + j * row_pitch + m]: one phase's tile over a block of filters.
void dgrad_tile(const float* dy0, int64_t k_pitch, int64_t filters, const float* wk, int64_t w_pitch,
                const int64_t* offsets, int64_t taps, int64_t row_pitch, float* sums) {
#if defined(MED3D_SIMD)
  DgradAcc acc;
  load_tile(sums, acc);
  for (int64_t k = 0; k < filters; ++k, dy0 += k_pitch, wk += w_pitch)
    for (int64_t i = 0; i < taps; ++i) {
      const Vec w = simd::broadcast(wk[i]);
      const float* src = dy0 + offsets[i];
#pragma GCC unroll 16
      for (int j = 0; j < kDgradRows; ++j)
#pragma GCC unroll 4
        for (int v = 0; v < kDgradVectors; ++v) acc[j][v] = simd::fma(w, simd::load(src + j * row_pitch + v * kLanes), acc[j][v]);
    }
  store_tile(acc, sums);
#else
  for (int64_t k = 0; k < filters; ++k, dy0 += k_pitch, wk += w_pitch)
    for (int64_t i = 0; i < taps; ++i)
      for (int j = 0; j < kDgradRows; ++j)
        for (int64_t m = 0; m < kDgradVoxels; ++m) sums[j * kDgradVoxels + m] += wk[i] * dy0[offsets[i] + j * row_pitch + m];
#endif
}

// dgrad_tile where the phase's height taps read consecutive rows of dy (dilation 1, the stem), TY
// of them (offsets[i] for each (depth, width) tap pair i, at its lowest row; filter k's weight of
// pair i's height tap t at wk[k * w_pitch + i * TY + t]): each row of dy is loaded once for the
// TY output rows that read it through some height tap, not once per product (the tile above, one
// unaligned load per multiply-add, about half of them crossing a cache line, ran the stem at 0.4
// of the FMA peak; on this Zen 3, 12 multiply-adds with 13 loads run at 0.84 of the peak aligned
// and 0.56 with every other load crossing a line:
// bench/results/2026-12-05c-cpu-2core-avx2/fma_check.cpp).
template <int TY>
void dgrad_tile_rows(const float* dy0, int64_t k_pitch, int64_t filters, const float* wk, int64_t w_pitch,
                     const int64_t* offsets, int64_t pairs, int64_t row_pitch, float* sums) {
#if defined(MED3D_SIMD)
  DgradAcc acc;
  load_tile(sums, acc);
  for (int64_t k = 0; k < filters; ++k, dy0 += k_pitch)
    for (int64_t i = 0; i < pairs; ++i) {
      const float* wt = wk + k * w_pitch + i * TY;
      Vec w[TY];
#pragma GCC unroll 4
      for (int t = 0; t < TY; ++t) w[t] = simd::broadcast(wt[t]);
      const float* src = dy0 + offsets[i];
      // Row r of dy feeds output row j through height tap t where j = r - (TY - 1 - t): tap t's
      // rows lie TY - 1 - t below the lowest.
#pragma GCC unroll 16
      for (int r = 0; r < kDgradRows + TY - 1; ++r) {
        Vec d[kDgradVectors];
#pragma GCC unroll 4
        for (int v = 0; v < kDgradVectors; ++v) {
          d[v] = simd::load(src + r * row_pitch + v * kLanes);
          simd::keep_in_register(d[v]);  // GCC folded it into each of its up to 4 FMAs as a load of its own
        }
#pragma GCC unroll 4
        for (int t = 0; t < TY; ++t) {
          const int j = r - (TY - 1 - t);
          if (j < 0 || j >= kDgradRows) continue;
#pragma GCC unroll 4
          for (int v = 0; v < kDgradVectors; ++v) acc[j][v] = simd::fma(w[t], d[v], acc[j][v]);
        }
      }
    }
  store_tile(acc, sums);
#else
  for (int64_t k = 0; k < filters; ++k, dy0 += k_pitch)
    for (int64_t i = 0; i < pairs; ++i)
      for (int t = 0; t < TY; ++t)
        for (int j = 0; j < kDgradRows; ++j)
          for (int64_t m = 0; m < kDgradVoxels; ++m)
            sums[j * kDgradVoxels + m] +=
                wk[k * w_pitch + i * TY + t] * dy0[offsets[i] + (j + TY - 1 - t) * row_pitch + m];
#endif
}

}  // namespace

bool conv3d_padded_applies(const Conv3dParams& p) {
  return p.groups == 1 && p.C <= kMaxChannels && p.taps() >= 27 && p.output_padding == Dims3{0, 0, 0};
}

namespace {

void padded_fprop(const char* op, const Conv3dParams& p, const float* x, const float* w, float* y, bool grouped) {
  MED3D_CHECK(conv3d_padded_applies(p), op, ": needs one group, at most ", kMaxChannels,
              " input channels and at least 27 taps, got ", p.groups, " groups, ", p.C, " channels, ", p.taps(),
              " taps; dispatch through conv3d_fprop instead");
  const PaddedInput in = pad_input(p, x);
  const std::vector<float> wp = pack_filters_inner(p, w);
  const std::vector<int64_t> offsets = tap_offsets(p, in);
  const FpropTiles tiles = fprop_tiles(p, in);
  const int64_t panels = panel_count(p, kFpropFilters), items = panels * p.N * p.Z;
  const int64_t macs = p.N * p.K * p.output_spatial() * p.C * p.taps();
  // Each thread's plane sums, with slack for the last tile's repeated voxels.
  const int64_t per_thread = (p.P * p.Q + kMaxTileVoxels) * kFpropFilters;
  std::vector<float> plane_sums(static_cast<std::size_t>(per_thread * omp_get_max_threads()));
  // Each thread on a run of planes (the items go sample by sample: its own sample's padded
  // input, and the output planes it wrote in the last call), then on the other's leftovers: under
  // the host's other work static halves left one thread waiting (taken whichever thread was free,
  // the stem's fprop was 5% faster than that), and with every plane to whichever thread was free
  // half the input and output changed hands between the cores at every call (the stem's fprop
  // 0.985x the time with static halves, 356 of 400 paired rounds; 0.93x this way, 97 of 100).
  const bool team = macs > kParallelMacs && !omp_in_parallel() && omp_get_max_threads() > 1;
  for_costed_items(items, 1, team, [](int64_t) { return 1; }, [&](int64_t item) {
    const PlaneItem it = plane_item(panels, p.Z, item);
    float* sums = plane_sums.data() + (team ? omp_get_thread_num() : 0) * per_thread;
    // A whole panel in channel groups goes straight into y as fprop_item sums it, not through the
    // plane sums (the stem's fprop against oneDNN's formats: 0.93 paired, median of 6 runs, where
    // it was 0.905); a partial one goes through them, which write 0 past K.
    const bool direct = grouped && p.K - it.panel * kFpropFilters >= kFpropFilters;
    fprop_item(p, in, offsets, wp.data() + it.panel * p.C * p.taps() * kFpropFilters, tiles, it, sums,
               direct ? grouped_plane(p, it, y) : GroupedPlane{});
    if (direct) return;
    if (grouped)
      store_plane_grouped(p, it, sums, y);
    else
      store_plane(p, it, sums, y);
  });
}

}  // namespace

void conv3d_padded_fprop(const Conv3dParams& p, const float* x, const float* w, float* y) {
  padded_fprop("conv3d_padded_fprop", p, x, w, y, false);
}

void conv3d_padded_fprop_grouped(const Conv3dParams& p, const float* x, const float* w, float* y) {
  padded_fprop("conv3d_padded_fprop_grouped", p, x, w, y, true);
}

void conv3d_padded_dgrad(const Conv3dParams& p, const float* dy, const float* w, float* dx, float* scratch,
                         int64_t scratch_elements) {
  MED3D_CHECK(conv3d_padded_applies(p), "conv3d_padded_dgrad: needs one group, at most ", kMaxChannels,
              " input channels and at least 27 taps, got ", p.groups, " groups, ", p.C, " channels, ", p.taps(),
              " taps; dispatch through conv3d_dgrad instead");
  const std::vector<AxisPhase> pz = axis_phases(p.D, p.T, p.stride[0], p.pad[0], p.dilation[0]);
  const std::vector<AxisPhase> py = axis_phases(p.H, p.R, p.stride[1], p.pad[1], p.dilation[1]);
  const std::vector<AxisPhase> px = axis_phases(p.W, p.S, p.stride[2], p.pad[2], p.dilation[2]);
  const PaddedAxis az = padded_axis(pz, p.Z, 1), ay = padded_axis(py, p.P, kDgradRows),
                   ax = padded_axis(px, p.Q, kDgradVoxels);
  // dyp [K][Zp][Pp][Qp] of one sample: dy inside its zero borders (a slab of its planes per thread, below).
  const int64_t row_pitch = ax.extent, plane = ay.extent * row_pitch;
  // Per phase (rz, ry, rx): its taps in (depth, width, height) order, their offsets in dyp and
  // weights [c][k][tap]; where the height taps read consecutive rows (up to 4 of them), `rows`
  // counts them and pair_offsets holds each (depth, width) pair's offset at its lowest row.
  struct Phase {
    int64_t rz, ry, rx, taps, rows;
    Dims3 count;  // its input indices along each axis
    int64_t per_depth_tap;  // consecutive taps (or pairs where `rows`) of one depth tap
    std::vector<int64_t> offsets, pair_offsets;
    std::vector<float> weights;
  };
  std::vector<Phase> phases;
  std::vector<int64_t> lines;  // a tile's cache lines of one filter's dy, over all phases (prefetched)
  for (std::size_t a = 0; a < pz.size(); ++a)
    for (std::size_t b = 0; b < py.size(); ++b)
      for (std::size_t e = 0; e < px.size(); ++e) {
        const std::vector<int64_t>& oy = py[b].offs;
        bool consecutive = !oy.empty() && oy.size() <= 4;
        for (std::size_t j = 1; j < oy.size(); ++j) consecutive = consecutive && oy[j] == oy[j - 1] - 1;
        Phase ph{static_cast<int64_t>(a), static_cast<int64_t>(b), static_cast<int64_t>(e), 0,
                 consecutive ? static_cast<int64_t>(oy.size()) : 0, {pz[a].count, py[b].count, px[e].count},
                 static_cast<int64_t>(px[e].taps.size() * (consecutive ? 1 : oy.size())), {}, {}, {}};
        std::vector<int64_t> kernel_taps;
        for (std::size_t i = 0; i < pz[a].taps.size(); ++i)
          for (std::size_t l = 0; l < px[e].taps.size(); ++l) {
            const int64_t pair = (pz[a].offs[i] + az.lo) * plane + px[e].offs[l] + ax.lo;
            if (consecutive) ph.pair_offsets.push_back(pair + (oy.back() + ay.lo) * row_pitch);
            for (std::size_t j = 0; j < oy.size(); ++j) {
              const int64_t offset = pair + (oy[j] + ay.lo) * row_pitch;
              ph.offsets.push_back(offset);
              kernel_taps.push_back((pz[a].taps[i] * p.R + py[b].taps[j]) * p.S + px[e].taps[l]);
              for (int64_t row = 0; row < kDgradRows; ++row)
                for (int64_t x = 0; x <= kDgradVoxels; x += 16)
                  lines.push_back((offset + row * row_pitch + std::min(x, kDgradVoxels - 1)) / 16);
            }
          }
        ph.taps = static_cast<int64_t>(kernel_taps.size());
        ph.weights.resize(static_cast<std::size_t>(p.C * p.K * ph.taps));
        for (int64_t c = 0; c < p.C; ++c)
          for (int64_t k = 0; k < p.K; ++k)
            for (int64_t i = 0; i < ph.taps; ++i)
              ph.weights[static_cast<std::size_t>((c * p.K + k) * ph.taps + i)] =
                  w[(k * p.C + c) * p.taps() + kernel_taps[static_cast<std::size_t>(i)]];
        phases.push_back(std::move(ph));
      }
  std::sort(lines.begin(), lines.end());
  lines.erase(std::unique(lines.begin(), lines.end()), lines.end());
  // Items: (sample, phase plane mz, channel, block of rows, block of voxels), each summing all
  // phases' tiles filter block by filter block: a block's dy serves every phase from L1 (a phase
  // at a time over all filters read each filter's rows from L2 or L3: 0.4 of the FMA peak).
  const auto phase_count = static_cast<int64_t>(phases.size());
  const int64_t row_blocks = (py.front().count + kDgradRows - 1) / kDgradRows;
  const int64_t voxel_blocks = (px.front().count + kDgradVoxels - 1) / kDgradVoxels;
  const int64_t tile = kDgradRows * kDgradVoxels;
  // Per phase, the depth taps [first, end) that read planes of dy inside it for phase plane mz;
  // the others read only its zero borders (the stem: 5% of the products). The same for every
  // filter block and item of the plane.
  using TapRange = std::array<int64_t, 2>;
  auto live_depth_taps = [&](int64_t mz, TapRange* live) {
    for (int64_t f = 0; f < phase_count; ++f) {
      const std::vector<int64_t>& dz = pz[static_cast<std::size_t>(phases[static_cast<std::size_t>(f)].rz)].offs;
      TapRange& r = live[f];
      r = {0, 0};
      for (std::size_t i = 0; i < dz.size(); ++i)
        if (mz + dz[i] >= 0 && mz + dz[i] < p.Z) {
          if (r[1] == r[0]) r[0] = static_cast<int64_t>(i);
          r[1] = static_cast<int64_t>(i) + 1;
        }
    }
  };
  auto sum_item = [&](const float* dyp, int64_t k_pitch, int64_t n, int64_t mz, int64_t c, int64_t my0, int64_t mx0,
                      const TapRange* live, float* sums) {
    std::fill(sums, sums + phase_count * tile, 0.0f);
    const float* dy0 = dyp + my0 * row_pitch + mx0;
    for (int64_t k0 = 0; k0 < p.K; k0 += kDgradFilterBlock) {
      const int64_t filters = std::min(kDgradFilterBlock, p.K - k0);
      if (k0 + filters < p.K)  // the next block's rows, fetched while this block sums
        for (int64_t k = k0 + filters; k < std::min(p.K, k0 + 2 * filters); ++k)
          for (const int64_t line : lines) __builtin_prefetch(dy0 + k * k_pitch + line * 16);
      for (int64_t f = 0; f < phase_count; ++f) {
        const Phase& ph = phases[static_cast<std::size_t>(f)];
        // (Later phases may hold one index fewer.)
        const auto [t0, t1] = live[f];
        if (ph.taps == 0 || t1 == t0 || mz >= ph.count[0] || my0 >= ph.count[1] || mx0 >= ph.count[2]) continue;
        const float* dyk = dy0 + k0 * k_pitch;
        const int64_t first = t0 * ph.per_depth_tap, count = (t1 - t0) * ph.per_depth_tap;
        const float* wk = ph.weights.data() + (c * p.K + k0) * ph.taps + first * std::max<int64_t>(ph.rows, 1);
        const int64_t* po = ph.pair_offsets.data() + first;
        float* phase_sums = sums + f * tile;
        switch (ph.rows) {
          case 1: dgrad_tile_rows<1>(dyk, k_pitch, filters, wk, ph.taps, po, count, row_pitch, phase_sums); break;
          case 2: dgrad_tile_rows<2>(dyk, k_pitch, filters, wk, ph.taps, po, count, row_pitch, phase_sums); break;
          case 3: dgrad_tile_rows<3>(dyk, k_pitch, filters, wk, ph.taps, po, count, row_pitch, phase_sums); break;
          case 4: dgrad_tile_rows<4>(dyk, k_pitch, filters, wk, ph.taps, po, count, row_pitch, phase_sums); break;
          default:
            dgrad_tile(dyk, k_pitch, filters, wk, ph.taps, ph.offsets.data() + first, count, row_pitch, phase_sums);
        }
      }
    }
    for (int64_t f = 0; f < phase_count; ++f) {
      const Phase& ph = phases[static_cast<std::size_t>(f)];
      if (mz >= ph.count[0]) continue;
      const int64_t z = ph.rz + mz * p.stride[0];
      for (int64_t j = 0; j < kDgradRows && my0 + j < ph.count[1]; ++j) {
        float* dst = dx + ((n * p.C + c) * p.D + z) * p.H * p.W + (ph.ry + (my0 + j) * p.stride[1]) * p.W + ph.rx;
        const float* src = sums + f * tile + j * kDgradVoxels;
        for (int64_t m = mx0; m < std::min(ph.count[2], mx0 + kDgradVoxels); ++m) dst[m * p.stride[2]] = src[m - mx0];
      }
    }
  };
  // Each thread takes an equal share of the (sample, phase plane) units in order and pads, for each
  // sample in it, the planes of dy its units read into a slab of its own: every thread reads only
  // what it wrote (each share's few edge planes are padded by both). Items of one padded dy on
  // whichever thread was free took 1.10x the time on the stem with the host in its fast regime,
  // about 1.5x in its slow one, where reading what the other thread wrote costs 7-9x more.
  const int64_t Zc = pz.front().count, units = p.N * Zc;
  // The planes a slab of phase planes [a, b) reads past b - a: phase plane m reads dyp's planes up to
  // m + az.lo + the largest depth offset of any phase (one with a plane fewer may have it).
  int64_t extra = 0;
  for (const AxisPhase& ph : pz)
    for (const int64_t off : ph.offs) extra = std::max(extra, az.lo + off);
  const int64_t macs = p.N * p.K * p.output_spatial() * p.C * p.taps();
  const int threads = !omp_in_parallel() && macs > kParallelMacs ? omp_get_max_threads() : 1;
  // A slab per thread in the caller's scratch where it holds the padding of at least one phase
  // plane per thread, a share then padded and summed a chunk of phase planes at a time (each
  // chunk pads `extra` planes again); else in a buffer of its own, each share in one chunk. In the
  // scratch (the engine's pool) no page is faulted in per call: 1x1x64x128x128's 56 MiB of new
  // slabs per call took ~15% of the time in page faults and clearing.
  const int64_t share = std::min(Zc, (units + threads - 1) / threads), thread_plane = p.K * plane;
  const bool in_scratch = scratch != nullptr && scratch_elements >= threads * thread_plane * (extra + 1);
  const int64_t chunk = in_scratch ? std::min(share, scratch_elements / (threads * thread_plane) - extra) : share;
  const int64_t slab_elements = (extra + chunk) * thread_plane;
  // Uninitialized: each thread's padding writes all of what its items read (and touches its own pages first).
  std::unique_ptr<float[]> own;
  if (!in_scratch) own.reset(new float[static_cast<std::size_t>(threads * slab_elements)]);
  float* const slabs = in_scratch ? scratch : own.get();
  std::vector<float> thread_sums(static_cast<std::size_t>(threads * phase_count * tile));
  std::vector<TapRange> thread_live(static_cast<std::size_t>(threads * phase_count));
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    float* slab = slabs + t * slab_elements;
    float* sums = thread_sums.data() + t * phase_count * tile;
    TapRange* live = thread_live.data() + t * phase_count;
    for (int64_t u = units * t / T, end = units * (t + 1) / T; u < end;) {
      const int64_t n = u / Zc, a = u % Zc, b = std::min({Zc, a + end - u, a + chunk});
      const int64_t k_pitch = (extra + b - a) * plane;
      u += b - a;
      pad_volumes_into(dy + n * p.K * p.output_spatial(), p.K, p.output_extent(), {az.lo - a, ay.lo, ax.lo},
                       {extra + b - a, ay.extent, ax.extent}, slab);
      for (int64_t mz = a; mz < b; ++mz) {
        live_depth_taps(mz, live);
        for (int64_t c = 0; c < p.C; ++c)
          for (int64_t my0 = 0; my0 < row_blocks * kDgradRows; my0 += kDgradRows)
            for (int64_t mx0 = 0; mx0 < voxel_blocks * kDgradVoxels; mx0 += kDgradVoxels)
              sum_item(slab + (mz - a) * plane, k_pitch, n, mz, c, my0, mx0, live, sums);
      }
    }
  }
}

namespace {

// dst[v][f] = dy[it.n][it.panel * kFilters + f][it.z plane's voxel v], 0 past K: kLanes filters x
// kLanes voxels at a time through a transpose where whole (a filter at a time, each store 4-8 lines
// from the last, the repacking was a seventh of the stem's wgrad).
void repack_plane_dy(const Conv3dParams& p, const float* dy, const PlaneItem& it, float* dst) {
  const int64_t plane = p.P * p.Q, V = p.output_spatial(), k0 = it.panel * kFilters;
  const float* src = dy + (it.n * p.K + k0) * V + it.z * plane;
  int64_t k = k0;
#if defined(MED3D_SIMD)
  for (; k + kLanes <= std::min(p.K, k0 + kFilters); k += kLanes) {
    int64_t v = 0;
    for (; v + kLanes <= plane; v += kLanes)
      simd::transpose_block(src + (k - k0) * V + v, V, dst + v * kFilters + (k - k0), kFilters);
    for (; v < plane; ++v)
      for (int64_t f = k - k0; f < k - k0 + kLanes; ++f) dst[v * kFilters + f] = src[f * V + v];
  }
#endif
  for (; k < k0 + kFilters; ++k) {
    const int64_t f = k - k0;
    if (k >= p.K) {  // the last panel's lanes past K: their sums are dropped, zeros keep them cheap
      for (int64_t v = 0; v < plane; ++v) dst[v * kFilters + f] = 0.0f;
      continue;
    }
    for (int64_t v = 0; v < plane; ++v) dst[v * kFilters + f] = src[f * V + v];
  }
}

}  // namespace

void conv3d_padded_wgrad(const Conv3dParams& p, const float* x, const float* dy, float* dw) {
  MED3D_CHECK(conv3d_padded_applies(p), "conv3d_padded_wgrad: needs one group, at most ", kMaxChannels,
              " input channels and at least 27 taps, got ", p.groups, " groups, ", p.C, " channels, ", p.taps(),
              " taps; dispatch through conv3d_wgrad instead");
  const PaddedInput in = pad_input(p, x);
  const int64_t panels = panel_count(p, kFilters), plane = p.P * p.Q, V = p.output_spatial(), taps = p.taps();
  const int64_t macs = p.N * p.K * V * p.C * taps;
  // Per plane item its sums [c][tap][f]; added up over samples and planes below.
  const int64_t items = panels * p.N * p.Z, per_item = p.C * taps * kFilters;
  const std::unique_ptr<float[]> partial(new float[static_cast<std::size_t>(items * per_item)]);
#pragma omp parallel if (macs > kParallelMacs)
  {
    // The item's plane of dy repacked per thread, plane_dy[y][q][f] = dy[n][panel * kFilters + f][z][y][q]
    // (0 past K), while its sums read it from L2. (All of dy repacked up front, 34 MB on a 128x128
    // stem, came from fresh pages on every call: its wgrad took 1.5x the time.)
    const std::unique_ptr<float[]> plane_dy(new float[static_cast<std::size_t>(plane * kFilters)]);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const PlaneItem it = plane_item(panels, p.Z, item);
      repack_plane_dy(p, dy, it, plane_dy.get());
      wgrad_item(p, in, plane_dy.get(), it, partial.get() + item * per_item);
    }
  }
  // Sum the items' rows in order (contiguous reads), then transpose [panel][c, tap][f] into dw.
  std::vector<float> sums(static_cast<std::size_t>(panels * per_item));
  const int64_t rows = p.C * taps;
#pragma omp parallel for schedule(static) if (macs > kParallelMacs)
  for (int64_t pr = 0; pr < panels * rows; ++pr) {
    const int64_t panel = pr / rows, row = pr % rows;
    float acc[kFilters] = {};
    for (int64_t nz = 0; nz < p.N * p.Z; ++nz) {
      const float* src = partial.get() + (nz * panels + panel) * per_item + row * kFilters;
      for (int f = 0; f < kFilters; ++f) acc[f] += src[f];
    }
    std::copy(acc, acc + kFilters, sums.data() + pr * kFilters);
  }
  for (int64_t k = 0; k < p.K; ++k)
    for (int64_t row = 0; row < rows; ++row)
      dw[k * rows + row] = sums[static_cast<std::size_t>((k / kFilters * rows + row) * kFilters + k % kFilters)];
}

}  // namespace med3d::kernels::cpu
