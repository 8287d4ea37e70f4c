// Direct f32 convolution of "same" convs (see the header).
#include "med3d/kernels/cpu/conv3d_direct.h"

#include <omp.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "med3d/kernels/cpu_loops.h"
#include "parallel_items.h"
#include "simd.h"

namespace med3d::kernels::cpu {

namespace {

constexpr int kLanes = kLoopLanes;  // voxels per vector
constexpr int kMaxVectors = 4;
// Products summed in registers before they are added into the output (fprop and dgrad).
constexpr int64_t kSumDepth = 256;
// Runs body(item) for every item: across the threads, each taking the next item when done (a
// thread slowed by the host's other work takes fewer: static halves left the other waiting, up to
// a tenth of layer1's fprop and layer3's dgrad), or in turn inside a parallel region or below
// kParallelMacs multiply-adds.
template <class Body>
void for_items(int64_t items, int64_t macs, Body&& body) {
  if (omp_in_parallel() || omp_get_max_threads() == 1 || macs < kParallelMacs) {
    for (int64_t item = 0; item < items; ++item) body(item);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t item = 0; item < items; ++item) body(item);
}

// Channels per register block of the fprop/dgrad kernels: about kSumDepth products per output.
int64_t sum_block(int64_t live) { return std::max<int64_t>(kSumDepth / std::max<int64_t>(live, 1), 1); }

// Where kernel tap (t, r, s) reads relative to the input voxel at the output voxel's strided
// position: per axis, and as a flat shift within an input sample.
struct TapOffset {
  int64_t dz, dy, dx, shift;
};
TapOffset tap_offset(const Conv3dParams& p, int64_t t, int64_t r, int64_t s) {
  const int64_t dz = t * p.dilation[0] - p.pad[0], dy = r * p.dilation[1] - p.pad[1], dx = s * p.dilation[2] - p.pad[2];
  return {dz, dy, dx, (dz * p.H + dy) * p.W + dx};
}

// One tap that reads the input for some lane of a tile: where (flat shift), which weights
// (index among the live taps) and through which lanes of each of the tile's vectors.
struct TileTap {
  int64_t shift;
  int64_t tap;
  std::array<uint16_t, kMaxVectors> mask;
};

// Every tile's live taps (the tiles of one sample; all samples share them): tile i's taps are
// taps[first[i], first[i + 1]), and store[i] masks its lanes past the last voxel.
struct Tiles {
  int64_t count = 0;
  std::vector<int64_t> first;
  std::vector<TileTap> taps;
  std::vector<std::array<uint16_t, kMaxVectors>> store;
  std::vector<int64_t> live;  // the kernel taps live in some tile; TileTap::tap indexes this
};

// The kernel taps that occur in `taps` (entries with a kernel tap index), in kernel order; each
// entry's index becomes its position there (the packed weights hold only the live taps).
template <class Tap>
std::vector<int64_t> number_live_taps(int64_t kernel_taps, std::vector<Tap>& taps) {
  std::vector<int64_t> index(static_cast<std::size_t>(kernel_taps), -1), live;
  for (const Tap& tap : taps) index[static_cast<std::size_t>(tap.tap)] = 0;
  for (int64_t tap = 0; tap < kernel_taps; ++tap)
    if (index[static_cast<std::size_t>(tap)] == 0) {
      index[static_cast<std::size_t>(tap)] = static_cast<int64_t>(live.size());
      live.push_back(tap);
    }
  for (Tap& tap : taps) tap.tap = index[static_cast<std::size_t>(tap.tap)];
  return live;
}

Tiles make_tiles(const Conv3dParams& p, int vectors) {
  const int64_t V = p.output_spatial(), width = int64_t(vectors) * kLanes;
  const Dims3 kernel = p.kernel_extent(), out = p.output_extent();
  Tiles tiles;
  tiles.count = (V + width - 1) / width;
  tiles.first.push_back(0);
  // axis_mask[a][t][j]: lanes of vector j whose coordinate along axis a, shifted by tap t, stays inside.
  std::vector<std::array<uint16_t, kMaxVectors>> axis_mask[3];
  for (int a = 0; a < 3; ++a) axis_mask[a].resize(static_cast<std::size_t>(kernel[a]));
  for (int64_t tile = 0; tile < tiles.count; ++tile) {
    for (int a = 0; a < 3; ++a)
      for (auto& m : axis_mask[a]) m.fill(0);
    std::array<uint16_t, kMaxVectors> store{};
    for (int64_t l = 0; l < width; ++l) {
      const int64_t v = tile * width + l;
      if (v >= V) break;
      const int64_t coord[3] = {v / (p.P * p.Q), v / p.Q % p.P, v % p.Q};
      const auto bit = static_cast<uint16_t>(1u << (l % kLanes));
      store[static_cast<std::size_t>(l / kLanes)] |= bit;
      for (int a = 0; a < 3; ++a)
        for (int64_t t = 0; t < kernel[a]; ++t) {
          const int64_t at = coord[a] + t * p.dilation[a] - p.pad[a];
          if (at >= 0 && at < out[a]) axis_mask[a][static_cast<std::size_t>(t)][static_cast<std::size_t>(l / kLanes)] |= bit;
        }
    }
    tiles.store.push_back(store);
    for (int64_t t = 0; t < p.T; ++t)
      for (int64_t r = 0; r < p.R; ++r)
        for (int64_t s = 0; s < p.S; ++s) {
          TileTap tap{tap_offset(p, t, r, s).shift, (t * p.R + r) * p.S + s, {}};
          bool live = false;
          for (int j = 0; j < vectors; ++j) {
            const auto m = static_cast<uint16_t>(axis_mask[0][static_cast<std::size_t>(t)][j] &
                                                 axis_mask[1][static_cast<std::size_t>(r)][j] &
                                                 axis_mask[2][static_cast<std::size_t>(s)][j]);
            tap.mask[static_cast<std::size_t>(j)] = m;
            live = live || m != 0;
          }
          if (live) tiles.taps.push_back(tap);
        }
    tiles.first.push_back(static_cast<int64_t>(tiles.taps.size()));
  }
  tiles.live = number_live_taps(p.taps(), tiles.taps);
  return tiles;
}

// The packed weights: per panel of MR filters, the MR weights of input channel c and live tap l
// side by side, 0 past K, in the order the kernel reads them: channels outermost (the voxel-lane
// tiles, at ((panel * C + c) * live + l) * MR) or taps outermost (the line tiles: per panel, tap l
// at l * LinePanels::tap_pitch, channel c at c * MR within it).

// Where the run conv's weight (k, c, tap) lies: w[k * k_stride + c * c_stride + tap], or at
// taps - 1 - tap when `flip` (dgrad reads w with the kernel flipped and the channel roles swapped).
struct WeightLayout {
  const float* w;
  int64_t k_stride, c_stride, taps;
  bool flip;
  // The (filter, channel) pair's taps, one contiguous run (in reverse tap order when `flip`).
  const float* run(int64_t k, int64_t c) const { return w + k * k_stride + c * c_stride; }
  const float* at(int64_t k, int64_t c, int64_t tap) const { return run(k, c) + (flip ? taps - 1 - tap : tap); }
};

#if defined(__AVX512F__)
// A panel's blocks when the live taps are consecutive: 16 filters at a time (for each, channel by
// channel), 16 taps at a time, each row's run loaded at once (reversed in the register when
// flipped) and the 16 x 16 block transposed. 16 filters at a time, not the panel's 32 for each
// channel: 16 streams through w, not 32, which the prefetchers kept up with (layer4_d4 fprop 0.83x
// the time, dgrad 0.95x, 256 -> 512 fprop 0.81x, dgrad 0.88x).
void pack_runs(const WeightLayout& wl, int64_t k0, int64_t rows, int64_t C, const std::vector<int64_t>& live, int mr,
               int64_t tap_stride, int64_t channel_stride, float* panel_block) {
  // The chunks of 16 taps, the same for every (filter, channel): their count, load mask, lowest
  // address in a run (the first tap, or the last one when flipped) and the lane order that
  // reverses a flipped run.
  struct Chunk {
    int n;
    __mmask16 mask;
    int64_t tap;
    __m512i order;
  };
  const int64_t taps = static_cast<int64_t>(live.size());
  std::vector<Chunk> chunks;
  for (int64_t l0 = 0; l0 < taps; l0 += 16) {
    const int n = static_cast<int>(std::min<int64_t>(16, taps - l0));
    alignas(64) int32_t reverse[16];
    for (int j = 0; j < 16; ++j) reverse[j] = j < n ? n - 1 - j : j;
    chunks.push_back({n, static_cast<__mmask16>((1u << n) - 1),
                      wl.flip ? live[static_cast<std::size_t>(l0 + n - 1)] : live[static_cast<std::size_t>(l0)],
                      _mm512_load_si512(reverse)});
  }
  // 4 channels ahead into L2 (prefetcht1: into L1, layer4_d4 dgrad 1.06-1.09x the time, fprop
  // 1.05x), adjacent runs (dgrad's rows) as one span, a prefetch per line (a prefetch per run
  // left the prefetches waiting for room among the misses).
  const bool adjacent = wl.k_stride == wl.taps;
  for (int h = 0; h < mr; h += 16) {  // 16 filters at a time
    const auto lanes = static_cast<__mmask16>(mr - h >= 16 ? 0xFFFF : (1u << (mr - h)) - 1);
    const int n_rows = static_cast<int>(std::clamp<int64_t>(rows - h, 0, 16));
    for (int64_t c = 0; c < C; ++c) {
      if (c + 4 < C && n_rows > 0) {
        for (int i = 0; i < (adjacent ? 1 : n_rows); ++i) {
          const float* next = wl.run(k0 + h + i, c + 4);
          const int64_t span = adjacent ? n_rows * wl.taps : wl.taps;
          for (int64_t at = 0; at < span; at += 16) __builtin_prefetch(next + at, 0, 2);
          __builtin_prefetch(next + span - 1, 0, 2);
        }
      }
      float* dst = panel_block + c * channel_stride;
      for (std::size_t k = 0; k < chunks.size(); ++k) {
        const Chunk& chunk = chunks[k];
        __m512 r[16];
        for (int i = 0; i < 16; ++i) {
          r[i] = i < n_rows ? _mm512_maskz_loadu_ps(chunk.mask, wl.at(k0 + h + i, c, chunk.tap)) : _mm512_setzero_ps();
          if (wl.flip) r[i] = _mm512_permutexvar_ps(chunk.order, r[i]);
        }
        simd::transpose16_registers(r);
        const int64_t l0 = static_cast<int64_t>(k) * 16;
        for (int j = 0; j < chunk.n; ++j) _mm512_mask_storeu_ps(dst + (l0 + j) * tap_stride + h, lanes, r[j]);
      }
    }
  }
}
#endif

// One panel: filters [k0, k0 + rows) into its block at panel_block, channel c's mr weights for
// live tap l at c * channel_stride + l * tap_stride.
void pack_panel(int64_t k0, int64_t rows, int64_t C, const std::vector<int64_t>& live, int mr, int64_t tap_stride,
                int64_t channel_stride, const WeightLayout& wl, float* panel_block) {
  const int64_t taps = static_cast<int64_t>(live.size());
  // Each (filter, channel) run of taps is contiguous in w (reversed when flipped). Where kLanes
  // live taps are consecutive, kLanes filters' runs of them are loaded as rows and transposed in
  // registers into the taps' vectors of filters; the other taps and filters element by element.
  // (Through a staging copy of each block of channels' runs, the packing was 6% of layer2's fprop
  // on one thread, half of it in the copy's calls.)
  if (taps == 0) return;
#if defined(__AVX512F__)
  if (live.back() - live.front() == taps - 1 && mr % 16 == 0)
    return pack_runs(wl, k0, rows, C, live, mr, tap_stride, channel_stride, panel_block);
#endif
  for (int64_t c = 0; c < C; ++c) {
    float* dst = panel_block + c * channel_stride;
    // The runs 4 channels ahead prefetched: with w in memory (as in the bench, where oneDNN's
    // run evicts it) each run's load stalled (AVX-512's pack_runs too: layer4_d4 dgrad 0.91x the
    // time, 8 of 8 paired rounds, fprop 0.97x; 8 channels ahead 1.05x).
    if (c + 4 < C)
      for (int64_t i = 0; i < rows; ++i) {
        const float* next = wl.run(k0 + i, c + 4);
        for (int64_t at = 0; at < wl.taps; at += 16) __builtin_prefetch(next + at);
        __builtin_prefetch(next + wl.taps - 1);
      }
    // Taps [0, vector_taps) have filters [0, vector_rows) written by the transposes.
    int64_t vector_taps = 0, vector_rows = 0;
#if defined(MED3D_SIMD)
    constexpr int64_t L = simd::kLanes;
    vector_rows = rows / L * L;
    if (vector_rows > 0)
      for (; vector_taps + L <= taps &&
             live[static_cast<std::size_t>(vector_taps + L - 1)] - live[static_cast<std::size_t>(vector_taps)] == L - 1;
           vector_taps += L) {
        // The block's lowest address in each run: its first tap, or its last one when flipped
        // (whose element j is then tap L - 1 - j of the block).
        const int64_t tap = live[static_cast<std::size_t>(vector_taps)];
        const int64_t at = wl.flip ? wl.taps - tap - L : tap;
        for (int64_t i0 = 0; i0 < vector_rows; i0 += L) {
          simd::Vec r[L];
          for (int64_t i = 0; i < L; ++i) r[i] = simd::load(wl.run(k0 + i0 + i, c) + at);
          simd::transpose_registers(r);
          for (int64_t j = 0; j < L; ++j)
            simd::store(dst + (vector_taps + (wl.flip ? L - 1 - j : j)) * tap_stride + i0, r[j]);
        }
      }
#endif
    for (int64_t l = 0; l < taps; ++l) {
      const int64_t tap = live[static_cast<std::size_t>(l)];
      float* out = dst + l * tap_stride;
      for (int64_t i = l < vector_taps ? vector_rows : 0; i < rows; ++i) out[i] = *wl.at(k0 + i, c, tap);
      for (int64_t i = rows; i < mr; ++i) out[i] = 0.0f;
    }
  }
}

void pack_weights(int64_t K, int64_t C, const std::vector<int64_t>& live, int mr, const WeightLayout& wl,
                  float* wp) {
  const int64_t panels = (K + mr - 1) / mr, taps = static_cast<int64_t>(live.size());
#pragma omp parallel for schedule(static) if (panels * taps * C * mr > (int64_t(1) << 16))
  for (int64_t panel = 0; panel < panels; ++panel)
    pack_panel(panel * mr, std::min<int64_t>(mr, K - panel * mr), C, live, mr, mr, taps * mr, wl, wp + panel * taps * C * mr);
}

// One tile: y[i, v0 + l] = sum over channels c and the tile's taps of wp[c, tap, i] * x[c, v0 +
// l + shift] for i < rows (lanes in `store`), where x and y are one sample's [C, V] and [.., V].
// Channels outermost: a channel's taps read neighbouring windows of its planes and MR x live
// weights, all from L1. The registers sum blocks of `block` channels, which are then added into
// y: about 256 products per block, as the GEMMs' depth blocks, so rounding grows as there.
template <int MR, int NV>
void tile_kernel(const float* x, int64_t C, int64_t V, int64_t v0, const TileTap* taps, int64_t count,
                 const float* wp, int64_t live, int64_t block, float* y, int rows,
                 const std::array<uint16_t, kMaxVectors>& store) {
  constexpr int kWidth = NV * kLanes;
  for (int64_t c0 = 0; c0 < C; c0 += block) {
    float acc[MR][kWidth] = {};
    for (int64_t c = c0; c < std::min(C, c0 + block); ++c)
      for (const TileTap* e = taps; e != taps + count; ++e) {
        const float* a = wp + (c * live + e->tap) * MR;
        float b[kWidth];
        for (int l = 0; l < kWidth; ++l)
          b[l] = (e->mask[static_cast<std::size_t>(l / kLanes)] >> (l % kLanes) & 1) ? x[c * V + v0 + e->shift + l] : 0.0f;
        for (int i = 0; i < MR; ++i)
          for (int l = 0; l < kWidth; ++l) acc[i][l] += a[i] * b[l];
      }
    for (int i = 0; i < rows; ++i)
      for (int l = 0; l < kWidth; ++l)
        if (store[static_cast<std::size_t>(l / kLanes)] >> (l % kLanes) & 1)
          y[i * V + v0 + l] = c0 == 0 ? acc[i][l] : y[i * V + v0 + l] + acc[i][l];
  }
}

// dgrad's conv: dx[c, v] = sum over k and taps of w[k, c, tap] dy[k, v - shift(tap)], the conv of
// dy with C and K swapped whose tap T-1-tap has shift -shift(tap) (the same padding).
Conv3dParams transposed(const Conv3dParams& p) {
  Conv3dParams f = p;
  std::swap(f.C, f.K);
  return f;
}

// Whether f runs on the line tiles (filters in the lanes): every vector build. Measured against
// the voxel-lane tiles (kTileFilters x kTileVectors) on 16x16 planes: AVX2, layer1 7.0 -> 5.3 ms,
// DenseASPP's d3/d6 branches 1.7-2.3x faster; AVX-512 (Zen 4), layer1 fprop/dgrad 0.85x/0.86x the
// time, DenseASPP d3 0.85x/0.90x, d6 0.64x/0.68x, d12 0.40x/0.46x. The portable loops keep the
// voxel-lane tiles on planes of more than 64 voxels.
bool line_tiles([[maybe_unused]] const Conv3dParams& f) {
#if defined(MED3D_SIMD)
  return true;
#else
  return f.P * f.Q <= 64;
#endif
}

// --- small planes: filters in the lanes --------------------------------------------------
// On planes of up to 64 voxels (ResNet layers 2-4 at 8x8) lanes over voxels waste the lanes of
// width-shifted taps (dilation 4 on a width of 8: half of them). There the lanes hold filters: a
// tile is up to 8 consecutive voxels of one output line x 32 filters (16 accumulators), and each
// (channel, tap) multiplies exactly the voxels whose input lies inside: the tap's line must lie
// inside the volume (else the tap is skipped), and its voxels are then one range [lo, hi).
// Under AVX2 (16 registers) 4 voxels x 24 filters (three vectors): 12 accumulators, the weights
// in the other three registers, 7 loads per 12 multiply-adds (4 x 16 leaves the 4-cycle FMA
// latency no slack: layer3 fprop 3.0 -> 2.8 ms, ASPP d3 dgrad 31 -> 27.5); 8 x 8 (9 loads per 8)
// was slower. The filters past the last multiple of 24 go to panels of 16 (kLineTailFilters):
// 24 + 8 as 16 + 16, so that no panel runs on 4 accumulators.
#if defined(MED3D_SIMD) && !defined(__AVX512F__)
constexpr int kLineVoxels = 4, kLineFilters = 24, kLineTailFilters = 16, kLineTailCost = 19;
#else
constexpr int kLineVoxels = 8, kLineFilters = 32, kLineTailFilters = 0, kLineTailCost = 0;
#endif

// A pitch of at least `floats` floats spanning an odd number of 64-byte lines: rows that far apart
// fall into different L1 sets (at multiples of 4 KiB they all fall into one).
int64_t odd_lines_pitch(int64_t floats) { return (floats + 15) / 16 % 2 == 0 ? floats + 16 : floats; }

// The line tiles' filter panels: `main` of kLineFilters, then `tail` of kLineTailFilters
// holding the last `tail_filters` filters.
struct LinePanels {
  int64_t main = 0, tail = 0, tail_filters = 0;
  int64_t count() const { return main + tail; }
  int64_t k0(int64_t panel) const {
    return panel < main ? panel * kLineFilters : main * kLineFilters + (panel - main) * kLineTailFilters;
  }
  int width(int64_t panel) const { return panel < main ? kLineFilters : kLineTailFilters; }
  // A panel's time in units where a main panel's is its width: a tail panel's 8 accumulators
  // barely cover the FMA latency, so it takes more than its width's share (measured per thread
  // on layer1 fprop, 24 + 24 + 16 filters: 1.2x per filter; at cost 16 the thread with the tail
  // panel worked 10% longer).
  int64_t cost(int64_t panel) const { return panel < main ? kLineFilters : kLineTailCost; }
  int64_t packed_filters() const { return main * kLineFilters + tail * kLineTailFilters; }
  // The packed weights of a panel: per live tap, C channels' `width` weights, the taps
  // tap_pitch apart: an odd number of 64-byte lines, so that the packing's stores to a block of
  // channels' consecutive taps fall into different L1 sets (C x 24 or 16 filters is a multiple of
  // 4 KiB from C = 128 on: every tap's stores into one set, evicting each other's half-written
  // lines).
  static int64_t tap_pitch(int64_t C, int width) { return odd_lines_pitch(C * width); }
  // Where panel p's packed weights begin, for C channels and `live` taps; offset(count()) is their size.
  int64_t offset(int64_t panel, int64_t C, int64_t live) const {
    const int64_t mains = std::min(panel, main);
    return live * (mains * tap_pitch(C, kLineFilters) + (panel - mains) * tap_pitch(C, kLineTailFilters));
  }
};
LinePanels line_panels(int64_t K) {
  LinePanels panels;
  // AVX2: a rest of 1-8 filters joins the last 24 in two panels of 16, 9-16 take one, 17-23 stay
  // in a panel of 24.
  const int64_t rest = K % kLineFilters;
  if (rest > 0 && rest <= kLineTailFilters)
    panels.tail_filters = rest <= kLineFilters - kLineTailFilters && K > kLineFilters ? rest + kLineFilters : rest;
  panels.main = (K - panels.tail_filters + kLineFilters - 1) / kLineFilters;
  if constexpr (kLineTailFilters > 0) panels.tail = (panels.tail_filters + kLineTailFilters - 1) / kLineTailFilters;
  return panels;
}
// Input channels a strided conv needs for the line tiles: each (tile, tap) sums its channels in
// registers between a zeroing and an add into the sums, so few channels leave mostly overhead
// (the stem's single channel goes to the padded kernels). Measured on 3x3x3 stride-2 convs from
// 16 to 128 channels: 1.3-1.6x faster than the implicit GEMM.
constexpr int64_t kLineMinChannels = 16;

// Whether some input voxel is read by two taps: along some axis the dilated kernel is wider than
// the stride. Where it is not (the head's k2 s2 transposed conv, whose backward is this fprop)
// the implicit GEMM gathers each input voxel once and was measured faster than the line tiles
// (0.81-0.83 against 0.94-1.10 ms for 32 -> 512 channels).
bool taps_overlap(const Conv3dParams& p) {
  const Dims3 kernel = p.kernel_extent();
  for (int a = 0; a < 3; ++a)
    if (p.dilation[a] * (kernel[a] - 1) + 1 > p.stride[a]) return true;
  return false;
}
// Tiles per work item: their sums stay in L1/L2 while each tap's weights for a channel block (in
// L1) serve all of them, where a tile at a time would read the panel's weights from L2 for each.
// Halved first while the item's input rows for a channel block exceed kLineWindowBytes, so that
// they stay in L2 beside the panel's weights: a strided conv's item reads twice the rows (layer2's
// fprop, 16 output lines at C = 64: 768 KiB; 4 lines: 216 KiB). With its data from memory, as in
// med3d-bench, layer2's fprop takes 0.98x the time at large scale (8 of 8 paired rounds), 0.97x at
// small; DenseASPP d3 and d6 (large scale: 42 rows of 16 KiB per block, then 8 tiles of 24 rows),
// layer3_d2 and layer4_d4 level.
constexpr int64_t kLineWindowBytes = int64_t(256) << 10;
// Halved (down to kLineMinChunk) while the threads would get fewer than kLineItemsPerThread items
// each: on 8x8 output planes (64 tiles per sample) layer 2's fprop and layer 3's dgrad had 24
// items of 24 or 19 units, and one thread did 288 units while the other did 248.
constexpr int64_t kLineChunk = 32, kLineMinChunk = 8, kLineItemsPerThread = 16;
// Weights (live taps x C x K) above this many are packed per thread and panel (run_lines): from
// 2^17 (512 KiB), not 2^20, layer3_d2 fprop/dgrad take 0.93x/0.94x the time with their weights in
// memory (0.95x/0.89x from L3), layer2 fprop 0.96x, DenseASPP d6/d3 dgrad 0.92x/0.97x.
constexpr int64_t kLinePackPerThread = int64_t(1) << 17;
// The line tiles read the input in groups of kChannelGroup channels interleaved voxel by voxel
// (run_lines' copy): channel c's voxel v at group c / 8, element v * 8 + c % 8. A tile's voxels
// for 8 channels are then 2 lines (3-4 at width stride 2), where with one channel per line they
// were 8, each in another page (in a synthetic loop over 128 channels the 24 x 4 tile ran 25%
// faster, the 16 x 4 tail panel 55%). Paired against one channel per line: layer1 fprop/dgrad
// 0.95x/0.94x the time, DenseASPP d3 0.94x/0.96x (large-scale fprop 0.89x), layer2 fprop 0.98x,
// the 8-voxel lines of layers 3-4 level.
constexpr int64_t kChannelGroup = kConv3dChannelGroup;
static_assert(kChannelGroup == 8, "the copies transpose 8 x 8 blocks");

// Channels per register sum: 128, not kSumDepth, so that a tile's input lines for a block
// (128 x 64 bytes) and the tap's weights (128 x 64) stay in L1 together (layers 3-4 and the
// ASPP branches 7-10% faster than with 256).
constexpr int64_t kLineBlock = 128;
static_assert(kLineBlock % kChannelGroup == 0, "a register sum's channels start a channel group");

// Whether all of a tile's taps sum in one pass over its channels (line_kernel; else a pass per
// tap): where the channels are one register block. Its whole taps then sum in one set of
// registers, added into the tile's sums once, where a pass per kernel row added them in per row:
// DenseASPP d12's dgrad takes 0.984x the time, layer2's dgrad 0.95x, layer3_d2's fprop 0.985x,
// layer1, layer2's fprop and the other DenseASPP dgrads 0.99-1.00x (at large scale alike; d12's
// NCDHW dgrad 1.01x). A tile's weights for all its taps (221 KiB for 3x3x3 at 64 channels) then
// come from L2, where a kernel row's stayed in L1 for the chunk's tiles: that did not cost more.
// Above one block even a kernel row's width taps (36 KiB at 128 channels) did not fit L1 beside
// the input (layer3_d2's dgrad took 1.013x).
bool one_pass(int64_t channels) { return channels <= kLineBlock; }

// The line tiles' input copied into channel groups (kChannelGroup): the groups' pitch, with an
// odd number of 64-byte lines between groups (at 4 KiB strides the groups the kernel reads in
// turn all fall into one L1 set), and the copy's floats.
int64_t grouped_pitch(const Conv3dParams& f) { return odd_lines_pitch(f.input_spatial() * kChannelGroup); }
int64_t output_group_pitch(const Conv3dParams& f) { return odd_lines_pitch(f.output_spatial() * kChannelGroup); }
// (Plus 16 floats of room to start it on a cache line.)
int64_t grouped_elements(const Conv3dParams& f) {
  return f.N * ((f.C + kChannelGroup - 1) / kChannelGroup) * grouped_pitch(f) + 16;
}
// Whether the grouped input goes into the caller's scratch (reused by the engine's pool), not a
// buffer of run_lines' own: from 32 MiB, glibc's largest mmap threshold, where malloc maps and
// faults in fresh pages on every call (DenseASPP d3's large-scale fprop took 0.91x the time in
// the scratch). Below it malloc hands back the same heap memory, and the scratch was slower with
// the data from memory (layer1 at 1x64x16x32x32, 4 MiB: 1.03-1.05x).
bool grouped_in_scratch(const Conv3dParams& f) {
  return line_tiles(f) && grouped_elements(f) * int64_t(sizeof(float)) >= (int64_t(32) << 20);
}

// From this size the channel groups go out with non-temporal stores (on 32 bytes): a copy that
// the caches cannot hold is read back from memory anyway, and no line is read for ownership.
// DenseASPP d24's large-scale fprop (32 MiB in) takes 0.95x the time, 0.90x in the host's SLOW
// state (4 of 4 paired rounds each, its input from memory as in med3d-bench); d3's
// 0.97x. Not below: the small-scale 8 MiB stays in L3 between calls (d12's fprop 1.05x the time
// streamed, 0.97x with its input from memory).
constexpr int64_t kStreamedGroupsBytes = int64_t(32) << 20;

// x [N, C, V] into channel groups `pitch` floats apart (channels past C in the last group and the
// floats past V * 8 set to 0), on all threads from kParallelGrain floats (on one thread the copy
// left the others waiting: layer1's 1 MiB input, ~2% of its fprop).
void group_channels(int64_t N, int64_t C, int64_t V, int64_t pitch, const float* x, float* grouped) {
  const int64_t groups = (C + kChannelGroup - 1) / kChannelGroup, rows = N * groups;
  [[maybe_unused]] const bool streamed =
      rows * pitch * int64_t(sizeof(float)) >= kStreamedGroupsBytes && reinterpret_cast<uintptr_t>(grouped) % 32 == 0;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && rows * pitch >= kParallelGrain)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t n = row / groups, c0 = row % groups * kChannelGroup, channels = std::min(kChannelGroup, C - c0);
    const float* src = x + (n * C + c0) * V;
    float* dst = grouped + row * pitch;
    int64_t v = 0;
#if defined(MED3D_SIMD)
    if (channels == kChannelGroup)
      for (; v + kChannelGroup <= V; v += kChannelGroup) {
        if (streamed)
          simd::transpose8_block<true>(src + v, V, dst + v * kChannelGroup, kChannelGroup);
        else
          simd::transpose8_block(src + v, V, dst + v * kChannelGroup, kChannelGroup);
      }
#endif
    for (; v < V; ++v)
      for (int64_t c = 0; c < kChannelGroup; ++c) dst[v * kChannelGroup + c] = c < channels ? src[c * V + v] : 0.0f;
    std::fill(dst + V * kChannelGroup, dst + pitch, 0.0f);
#if defined(MED3D_SIMD)
    if (streamed) _mm_sfence();  // this thread's stores ordered before the region's end
#endif
  }
}

// The inverse: x [N, C, V] from the groups.
void ungroup_channels(int64_t N, int64_t C, int64_t V, int64_t pitch, const float* grouped, float* x) {
  const int64_t groups = (C + kChannelGroup - 1) / kChannelGroup, rows = N * groups;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && rows * pitch >= kParallelGrain)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t n = row / groups, c0 = row % groups * kChannelGroup, channels = std::min(kChannelGroup, C - c0);
    const float* src = grouped + row * pitch;
    float* dst = x + (n * C + c0) * V;
    int64_t v = 0;
#if defined(MED3D_SIMD)
    if (channels == kChannelGroup)
      for (; v + kChannelGroup <= V; v += kChannelGroup)
        simd::transpose8_block(src + v * kChannelGroup, kChannelGroup, dst + v, V);
#endif
    for (; v < V; ++v)
      for (int64_t c = 0; c < channels; ++c) dst[c * V + v] = src[v * kChannelGroup + c];
  }
}

struct Lines {
  std::vector<int64_t> v0;     // first (output) voxel of each tile
  std::vector<int64_t> x0;     // the input voxel at its strided position (tap offsets 0)
  std::vector<int> voxels;     // its voxel count (<= kLineVoxels)
  int64_t out_step = 1;        // output voxels between a tile's voxels (the width's classes)
  std::vector<int64_t> live;   // the kernel taps that read inside for some tile
  std::vector<int64_t> shift;  // per live tap: input voxel - x0 for the tile's first voxel
  // Live taps per pass over the channels (line_kernel): all of them where one_pass, else 1.
  int64_t pass_taps = 1;
  // Per tile and live tap (range[tile * live + l]): lo * 16 + hi, the tile's voxels [lo, hi)
  // whose input the tap reads inside; 0 where it reads none.
  std::vector<uint8_t> range;
  int64_t pairs = 0;  // (tile, live tap) pairs with a range
};

// How the output positions along one axis read the input. Output position i = u * classes + c
// is position u of class c, and reads input u * in_step + offset through a kernel tap of its
// class (tap_class[t] = c, offset tap_offset[t]); taps of other classes do not reach it. A conv
// has one class (u = i, in_step its stride); a strided conv's dgrad, stride classes (below).
struct LineAxis {
  int64_t classes = 1, out = 0, in = 0, in_step = 1;
  std::vector<int64_t> tap_class, tap_offset;
  int64_t count(int64_t c) const { return (out - c + classes - 1) / classes; }  // positions of class c
};

LineAxis conv_axis(int64_t out, int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
  LineAxis axis{1, out, in, stride, {}, {}};
  for (int64_t t = 0; t < kernel; ++t) {
    axis.tap_class.push_back(0);
    axis.tap_offset.push_back(t * dilation - pad);
  }
  return axis;
}

// dgrad of a conv with this stride along the axis, as a direct conv of dy (`in` positions) into
// dx (`out`): dx position i gets tap t from dy position (i + pad - t dilation) / stride where that
// divides, so class c = i mod stride gets the taps with t dilation - pad = c (mod stride), each
// reading dy position u + (c + pad - t dilation) / stride for dx position u * stride + c.
LineAxis dgrad_axis(int64_t dx_extent, int64_t dy_extent, int64_t kernel, int64_t stride, int64_t pad,
                    int64_t dilation) {
  LineAxis axis{stride, dx_extent, dy_extent, 1, {}, {}};
  for (int64_t t = 0; t < kernel; ++t) {
    const int64_t c = ((t * dilation - pad) % stride + stride) % stride;
    axis.tap_class.push_back(c);
    axis.tap_offset.push_back((c + pad - t * dilation) / stride);
  }
  return axis;
}

// The tiles (kLineVoxels consecutive positions u of one class's output line, classes outermost)
// and their taps' ranges, for a conv with `channels` input channels.
Lines make_lines(const LineAxis (&axes)[3], int64_t channels) {
  Lines lines;
  const LineAxis &az = axes[0], &ay = axes[1], &ax = axes[2];
  const int64_t R = static_cast<int64_t>(ay.tap_offset.size()), S = static_cast<int64_t>(ax.tap_offset.size());
  const int64_t taps = static_cast<int64_t>(az.tap_offset.size()) * R * S;
  lines.out_step = ax.classes;
  // The tiles in order (depth and height classes, lines, tiles along a line, width classes: the
  // width classes of one stretch of a line follow each other, so that line_kernel writes them
  // together), and per class combination the index of its tile j of line (uz, uy).
  struct ClassBlock {
    int64_t cz, cy, cx, per_line;
    std::vector<int64_t> index;
  };
  std::vector<ClassBlock> blocks;
  for (int64_t cz = 0; cz < az.classes; ++cz)
    for (int64_t cy = 0; cy < ay.classes; ++cy) {
      const std::size_t first = blocks.size();
      int64_t most = 0;
      for (int64_t cx = 0; cx < ax.classes; ++cx) {
        blocks.push_back({cz, cy, cx, (ax.count(cx) + kLineVoxels - 1) / kLineVoxels, {}});
        most = std::max(most, blocks.back().per_line);
      }
      for (int64_t uz = 0; uz < az.count(cz); ++uz)
        for (int64_t uy = 0; uy < ay.count(cy); ++uy)
          for (int64_t j = 0, u0 = 0; j < most; ++j, u0 += kLineVoxels)
            for (int64_t cx = 0; cx < ax.classes; ++cx) {
              ClassBlock& b = blocks[first + static_cast<std::size_t>(cx)];
              if (j >= b.per_line) continue;
              b.index.push_back(static_cast<int64_t>(lines.v0.size()));
              lines.v0.push_back(((uz * az.classes + cz) * ay.out + uy * ay.classes + cy) * ax.out + u0 * ax.classes + cx);
              lines.x0.push_back((uz * az.in_step * ay.in + uy * ay.in_step) * ax.in + u0 * ax.in_step);
              lines.voxels.push_back(static_cast<int>(std::min<int64_t>(kLineVoxels, ax.count(cx) - u0)));
            }
    }
  const auto tiles = static_cast<int64_t>(lines.v0.size());
  // Every kernel tap's ranges first, then the live taps' columns. Only the lines a tap reads
  // inside are visited: with every tile visited and divided into its line, this one-thread part
  // took 1% of layer1's fprop samples, now half that.
  std::vector<uint8_t> all(static_cast<std::size_t>(tiles * taps), 0);
  for (int64_t tap = 0; tap < taps; ++tap) {
    const auto t = static_cast<std::size_t>(tap / (R * S)), r = static_cast<std::size_t>(tap / S % R),
               s = static_cast<std::size_t>(tap % S);
    bool live = false;
    for (const ClassBlock& b : blocks) {
      if (az.tap_class[t] != b.cz || ay.tap_class[r] != b.cy || ax.tap_class[s] != b.cx) continue;
      const AxisRange zs = inside_range(az.count(b.cz), az.in, az.in_step, az.tap_offset[t]),
                      ys = inside_range(ay.count(b.cy), ay.in, ay.in_step, ay.tap_offset[r]),
                      qs = inside_range(ax.count(b.cx), ax.in, ax.in_step, ax.tap_offset[s]);
      for (int64_t z = zs.lo; z < zs.hi; ++z)
        for (int64_t y = ys.lo; y < ys.hi; ++y)
          for (int64_t j = 0, u0 = 0; j < b.per_line; ++j, u0 += kLineVoxels) {
            const int64_t tile = b.index[static_cast<std::size_t>((z * ay.count(b.cy) + y) * b.per_line + j)];
            const int64_t lo = std::max<int64_t>(u0, qs.lo);
            const int64_t hi = std::min<int64_t>(u0 + lines.voxels[static_cast<std::size_t>(tile)], qs.hi);
            if (lo >= hi) continue;
            all[static_cast<std::size_t>(tile * taps + tap)] = static_cast<uint8_t>((lo - u0) * 16 + hi - u0);
            live = true;
            ++lines.pairs;
          }
    }
    if (live) {
      lines.live.push_back(tap);
      lines.shift.push_back((az.tap_offset[t] * ay.in + ay.tap_offset[r]) * ax.in + ax.tap_offset[s]);
    }
  }
  const auto live = static_cast<int64_t>(lines.live.size());
  if (one_pass(channels)) lines.pass_taps = std::max<int64_t>(live, 1);
  lines.range.resize(static_cast<std::size_t>(tiles * live));
  for (int64_t tile = 0; tile < tiles; ++tile)
    for (int64_t l = 0; l < live; ++l)
      lines.range[static_cast<std::size_t>(tile * live + l)] = all[static_cast<std::size_t>(tile * taps + lines.live[static_cast<std::size_t>(l)])];
  return lines;
}

// The lines of conv p.
Lines make_lines(const Conv3dParams& p) {
  const LineAxis axes[3] = {conv_axis(p.Z, p.D, p.T, p.stride[0], p.pad[0], p.dilation[0]),
                            conv_axis(p.P, p.H, p.R, p.stride[1], p.pad[1], p.dilation[1]),
                            conv_axis(p.Q, p.W, p.S, p.stride[2], p.pad[2], p.dilation[2])};
  return make_lines(axes, p.C);
}

// The sums [tile][voxel][filter] of tiles [t0, t1) into y in channel groups (y at the panel's
// first group, groups out_pitch apart): filter k of voxel v at y[k / 8 * out_pitch + v * 8 + k % 8],
// a tile's voxels out_step apart; the panel's filters past `rows` in its last group written as 0.
// A group's 8 voxels of a tile are 4 whole cache lines at step 1 (streamed from 4 MiB of y, as the
// NCDHW stores): no transpose. At step 2 (a strided dgrad's width classes) a line holds one voxel
// of each class: the two classes' tiles of one stretch, which follow each other, are stored
// together, each line's halves back to back or as one store (streamed a whole tile apart, the
// write-combining buffers let the halves go out alone: layer2's large-scale dgrad took 1.09x the
// time of its NCDHW output).
void store_grouped(const Lines& lines, const float (*sums)[kLineVoxels][kLineFilters], int64_t t0, int64_t t1,
                   float* y, int rows, int64_t out_pitch, [[maybe_unused]] bool stream) {
  const int groups = (rows + kChannelGroup - 1) / kChannelGroup, full = rows / kChannelGroup;
#if defined(MED3D_SIMD)
  const bool streamed = stream && reinterpret_cast<uintptr_t>(y) % 32 == 0;
#endif
  for (int64_t t = t0; t < t1;) {
    const int64_t v0 = lines.v0[static_cast<std::size_t>(t)];
    const bool pair = lines.out_step == 2 && t + 1 < t1 && lines.v0[static_cast<std::size_t>(t + 1)] == v0 + 1;
    const int span = pair ? 2 : 1;
    int first_group = 0;
#if defined(__AVX512F__)
    // Each line's two voxels as one 64-byte store: where a tile (or a pair's two tiles, each line
    // a voxel of either) fills whole lines. Two 32-byte streamed stores a line left the stores
    // waiting (half of store_grouped's samples): DenseASPP d12's dgrad takes 0.98x the time, d24's
    // 0.97x, d3 and d6 0.99x.
    const int n = lines.voxels[static_cast<std::size_t>(t)];
    if ((lines.out_step == 1 || (pair && lines.voxels[static_cast<std::size_t>(t + 1)] == n)) && v0 % 2 == 0 &&
        n % 2 == 0 && reinterpret_cast<uintptr_t>(y) % 64 == 0 && out_pitch % 16 == 0) {
      // Line k holds voxels j and j + 1 of the tile (step 1), or voxel j of both tiles (a pair).
      const float(*tile)[kLineFilters] = sums[t - t0];
      const float(*odd)[kLineFilters] = pair ? sums[t + 1 - t0] : tile + 1;
      const int j_step = pair ? 1 : 2;
      for (int g = 0; g < full; ++g) {
        float* dst = y + g * out_pitch + v0 * kChannelGroup;
#pragma GCC unroll 8
        for (int j = 0, k = 0; j < n; j += j_step, ++k) {
          const __m512 line = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_load_ps(tile[j] + g * kChannelGroup)),
                                                 _mm256_load_ps(odd[j] + g * kChannelGroup), 1);
          if (streamed)
            _mm512_stream_ps(dst + k * 2 * kChannelGroup, line);
          else
            _mm512_store_ps(dst + k * 2 * kChannelGroup, line);
        }
      }
      first_group = full;
    }
#endif
    for (int g = first_group; g < groups; ++g)
      for (int j = 0; j < kLineVoxels; ++j)
        for (int i = 0; i < span; ++i) {
          if (j >= lines.voxels[static_cast<std::size_t>(t + i)]) continue;
          const float* src = sums[t + i - t0][j] + g * kChannelGroup;
          float* dst = y + g * out_pitch + (v0 + i + j * lines.out_step) * kChannelGroup;
          if (g == full) {  // the last group, partly past `rows`
            for (int c = 0; c < kChannelGroup; ++c) dst[c] = g * kChannelGroup + c < rows ? src[c] : 0.0f;
            continue;
          }
#if defined(MED3D_SIMD)
          const __m256 value = _mm256_load_ps(src);
          if (streamed)
            _mm256_stream_ps(dst, value);
          else
            _mm256_storeu_ps(dst, value);
#else
          std::copy_n(src, kChannelGroup, dst);
#endif
        }
    t += span;
  }
#if defined(MED3D_SIMD)
  if (streamed) _mm_sfence();
#endif
}

// One tile: y[k, v0 + j] = sum over channels and the tile's taps of wp[c, tap, k] * x[c, v0 + j +
// shift] for k < rows, j < n (x one sample's input in channel groups, their pitch group_pitch; y its
// output at the panel's first filter).
// As tile_kernel, blocks of `block` channels are summed in registers, then added up in `sums`.
#if defined(MED3D_SIMD)
constexpr int kLineVectors = kLineFilters / simd::kLanes;

// One tap over a block of channels: its input at x (+ x_step per channel), its packed weights
// at w (+ w_step per channel).
struct TapRun {
  const float* x;
  int64_t x_step;
  const float* w;
  int64_t w_step;
  int64_t channels;
};

using LineAcc = simd::Vec[kLineVoxels][kLineVectors];

// acc[j][h] += w[h] x[j SX] for one channel (its input at xp, in the channel groups' layout, and
// its packed weights at a), voxels j in [LO, HI) and the first NV vectors of filters h (the last
// panel of K may fill fewer); SX is the width stride.
template <int LO, int HI, int NV, int SX, int OFF = 0>
[[gnu::always_inline]] inline void line_channel(const float* xp, const float* a, LineAcc& acc) {
  // Named vectors, not an array: GCC kept an array of asm operands on the stack and stored the
  // weights there on every channel.
  simd::Vec w0 = simd::load(a), w1 = simd::zero(), w2 = simd::zero();
  simd::keep_in_register(w0);
  if constexpr (NV > 1) {
    w1 = simd::load(a + simd::kLanes);
    simd::keep_in_register(w1);
  }
  if constexpr (NV > 2) {
    w2 = simd::load(a + 2 * simd::kLanes);
    simd::keep_in_register(w2);
  }
#pragma GCC unroll 8
  for (int j = LO; j < HI; ++j) {
    const simd::Vec b = simd::broadcast(xp[j * SX * kChannelGroup]);
    acc[j + OFF][0] = simd::fma(b, w0, acc[j + OFF][0]);
    if constexpr (NV > 1) acc[j + OFF][1] = simd::fma(b, w1, acc[j + OFF][1]);
    if constexpr (NV > 2) acc[j + OFF][2] = simd::fma(b, w2, acc[j + OFF][2]);
  }
}

// line_channel over the run's channels: run.x is its first channel group, run.x_step the groups'
// pitch.
template <int LO, int HI, int NV, int SX>
[[gnu::always_inline]] inline void line_fma(const TapRun& run, LineAcc& acc) {
  static_assert(NV >= 1 && NV <= kLineVectors && kLineVectors <= 3);
  // A tap that covers at most half an 8-voxel tile (DenseASPP's width-shifted taps: d6's [0, 2) and
  // [6, 8), d12's [0, 4) and [4, 8)) chains each channel's products onto as few as 2-8
  // accumulators, fewer than the FMA latency wants. Its odd channels sum in the other half's
  // (unused) registers, added in at the end: d3 and d6 fprop, d6 dgrad take 0.98x the time.
  constexpr bool kSplit = kLineVoxels == 8 && HI - LO <= 4 && (HI <= 4 || LO >= 4);
  constexpr int kOther = LO >= 4 ? -4 : 4;
  const float* group = run.x;
  const float* a = run.w;
  int64_t c = 0;
  for (; c + kChannelGroup <= run.channels; c += kChannelGroup, group += run.x_step) {
    // Prefetched 4 groups ahead (the groups lie x_step apart): with it DenseASPP d3's fprop on
    // its 32 MiB large-scale input takes 0.97x the time, the small-scale rows 1.00-1.02x. Not past
    // the run's channels: at C = 64 half of layer2's prefetches went past x's last group (its
    // large-scale fprop/dgrad in channel groups 0.985x/0.982x the time without them).
    if (c + 4 * kChannelGroup < run.channels) {
#pragma GCC unroll 8
      for (int line = 0; line < kLineVoxels * SX * kChannelGroup; line += 16)
        __builtin_prefetch(group + 4 * run.x_step + line);
    }
    // Two channels per iteration (AVX2: DenseASPP d3 fprop 0.92x the time, layer1 fprop 0.94-0.96x,
    // layer3_d2 and layer4_d4 dgrad 0.97-0.98x, layer2 fprop 0.97-1.01x); 4 and 8 were no better,
    // and fully unrolled GCC interleaved the channels' loads and spilled accumulators.
    if constexpr (kSplit) {
#pragma GCC unroll 4
      for (int cc = 0; cc < kChannelGroup; cc += 2, a += 2 * run.w_step) {
        line_channel<LO, HI, NV, SX>(group + cc, a, acc);
        line_channel<LO, HI, NV, SX, kOther>(group + cc + 1, a + run.w_step, acc);
      }
    } else {
#pragma GCC unroll 2
      for (int cc = 0; cc < kChannelGroup; ++cc, a += run.w_step) line_channel<LO, HI, NV, SX>(group + cc, a, acc);
    }
  }
  for (int cc = 0; c < run.channels; ++c, ++cc, a += run.w_step) line_channel<LO, HI, NV, SX>(group + cc, a, acc);
  if constexpr (kSplit) {
#pragma GCC unroll 8
    for (int j = LO; j < HI; ++j)
#pragma GCC unroll 4
      for (int h = 0; h < NV; ++h) {
        acc[j][h] = simd::add(acc[j][h], acc[j + kOther][h]);
        acc[j + kOther][h] = simd::zero();
      }
  }
}

// line_fma for the tap's voxels [lo, hi), unrolled for the ranges a line gives: on 4-voxel lines
// all of them; on 8-voxel lines those that start at its first voxel or end at its last (a tap
// cuts a line on one side, both only on lines under 8 voxels). The rest run a generic loop,
// which was slow enough to matter where a common range fell into it: DenseASPP d3's [0, 5) and
// [3, 8), d6's [0, 2) and [6, 8) (unrolled, d3 fprop/dgrad take 0.80x the time, d6 0.89x).
template <int VOXELS, int NV, int SX>
[[gnu::always_inline]] inline void line_tap(int lo, int hi, const TapRun& run, LineAcc& acc) {
  if constexpr (VOXELS == 4) {
    switch (lo * 16 + hi) {
      case 4: return line_fma<0, 4, NV, SX>(run, acc);
      case 3: return line_fma<0, 3, NV, SX>(run, acc);
      case 2: return line_fma<0, 2, NV, SX>(run, acc);
      case 1: return line_fma<0, 1, NV, SX>(run, acc);
      case 16 + 4: return line_fma<1, 4, NV, SX>(run, acc);
      case 16 + 3: return line_fma<1, 3, NV, SX>(run, acc);
      case 16 + 2: return line_fma<1, 2, NV, SX>(run, acc);
      case 32 + 4: return line_fma<2, 4, NV, SX>(run, acc);
      case 32 + 3: return line_fma<2, 3, NV, SX>(run, acc);
      default: return line_fma<3, 4, NV, SX>(run, acc);
    }
  } else {
    static_assert(VOXELS == 8, "the unrolled ranges are those of 4- and 8-voxel lines");
    switch (lo * 16 + hi) {
      case 8: return line_fma<0, 8, NV, SX>(run, acc);
      case 7: return line_fma<0, 7, NV, SX>(run, acc);
      case 6: return line_fma<0, 6, NV, SX>(run, acc);
      case 5: return line_fma<0, 5, NV, SX>(run, acc);
      case 4: return line_fma<0, 4, NV, SX>(run, acc);
      case 3: return line_fma<0, 3, NV, SX>(run, acc);
      case 2: return line_fma<0, 2, NV, SX>(run, acc);
      case 1: return line_fma<0, 1, NV, SX>(run, acc);
      case 16 + 8: return line_fma<1, 8, NV, SX>(run, acc);
      case 32 + 8: return line_fma<2, 8, NV, SX>(run, acc);
      case 48 + 8: return line_fma<3, 8, NV, SX>(run, acc);
      case 64 + 8: return line_fma<4, 8, NV, SX>(run, acc);
      case 80 + 8: return line_fma<5, 8, NV, SX>(run, acc);
      case 96 + 8: return line_fma<6, 8, NV, SX>(run, acc);
      case 112 + 8: return line_fma<7, 8, NV, SX>(run, acc);
      default: {
        const float* a = run.w;
        for (int64_t c = 0; c < run.channels; ++c, a += run.w_step) {
          const float* xp = run.x + c / kChannelGroup * run.x_step + c % kChannelGroup;
#pragma GCC unroll 8
          for (int j = 0; j < VOXELS; ++j)
            if (j >= lo && j < hi) {
              const simd::Vec b = simd::broadcast(xp[j * SX * kChannelGroup]);
#pragma GCC unroll 4
              for (int h = 0; h < NV; ++h) acc[j][h] = simd::fma(b, simd::load(a + simd::kLanes * h), acc[j][h]);
            }
        }
      }
    }
  }
}

#if defined(__AVX512F__)
// Lane 2j set for each bit j < 8 of `bits`.
inline __mmask16 every_other_lane(unsigned bits) {
  unsigned mask = 0;
  for (int j = 0; j < 8; ++j) mask |= (bits >> j & 1u) << (2 * j);
  return static_cast<__mmask16>(mask);
}
#endif

template <int NV, int SX>
void line_kernel(const float* x, int64_t C, int64_t group_pitch, int64_t V, const Lines& lines, int64_t t0, int64_t t1,
                 const float* wp, int mr, int64_t tap_pitch, int64_t live, int64_t block, float* y, int rows,
                 [[maybe_unused]] bool stream, int64_t out_pitch) {
  using namespace simd;
  alignas(64) float sums[kLineChunk][kLineVoxels][kLineFilters];
  std::fill_n(&sums[0][0][0], (t1 - t0) * kLineVoxels * kLineFilters, 0.0f);
  // Passes over the taps (Lines::pass_taps: all of them, or one tap each) outermost, then channel
  // blocks, then the chunk's tiles: a pass's weights for a block (wp holds each tap's channels
  // consecutively) serve every tile of the chunk, and the range of each (tap, tile) is dispatched
  // once for the block's channels. The pass's taps that cover all of a tile's voxels sum in the
  // same registers, added into its sums once; a tap covering part of them sums on its own (on
  // fewer accumulators than the FMA latency wants: chained to the others, the next tap's products
  // waited for it).
  for (int64_t first = 0; first < live; first += lines.pass_taps) {
    const int64_t last = std::min(live, first + lines.pass_taps);
    for (int64_t c0 = 0; c0 < C; c0 += block) {
      const int64_t channels = std::min(C, c0 + block) - c0;
      const float* xc = x + c0 / kChannelGroup * group_pitch;
      for (int64_t t = t0; t < t1; ++t) {
        const uint8_t* keys = lines.range.data() + t * live;
        const int whole = lines.voxels[static_cast<std::size_t>(t)];
        auto run = [&](int64_t l) -> TapRun {
          return {xc + (lines.x0[static_cast<std::size_t>(t)] + lines.shift[static_cast<std::size_t>(l)]) * kChannelGroup,
                  group_pitch, wp + l * tap_pitch + c0 * mr, mr, channels};
        };
        auto zero_acc = [](LineAcc& acc) {
#pragma GCC unroll 8
          for (int j = 0; j < kLineVoxels; ++j)
#pragma GCC unroll 4
            for (int h = 0; h < kLineVectors; ++h) acc[j][h] = zero();
        };
        auto add_to_sums = [&](const LineAcc& acc) {
#pragma GCC unroll 8
          for (int j = 0; j < kLineVoxels; ++j)
#pragma GCC unroll 4
            for (int h = 0; h < kLineVectors; ++h) {
              float* dst = sums[t - t0][j] + kLanes * h;
              store(dst, add(load(dst), acc[j][h]));
            }
        };
        // The whole taps first, then each partial one (so that their registers are never live together).
        LineAcc acc;
        bool any = false;
        for (int64_t l = first; l < last; ++l) {
          if (keys[l] != whole) continue;
          if (!any) zero_acc(acc);
          line_tap<kLineVoxels, NV, SX>(0, whole, run(l), acc);
          any = true;
        }
        if (any) add_to_sums(acc);
        for (int64_t l = first; l < last; ++l) {
          const int key = keys[l];
          if (key == 0 || key == whole) continue;
          zero_acc(acc);
          line_tap<kLineVoxels, NV, SX>(key >> 4, key & 15, run(l), acc);
          add_to_sums(acc);
        }
      }
    }
  }
  if (out_pitch > 0) return store_grouped(lines, sums, t0, t1, y, rows, out_pitch, stream);
  // sums [voxel][filter] -> y [filter][voxel], the tile's voxels out_step apart (a strided
  // dgrad's width classes).
  const int64_t step = lines.out_step;
#if defined(__AVX512F__)
  // 16 filters at a time through a transpose of 16 voxels, two tiles' where they fill one stretch
  // of a line: one 64-byte store per filter. At step 1 the two tiles continue the line; at step 2
  // they are its two width classes, interleaved in the register.
  const __m512i interleave = _mm512_set_epi32(15, 7, 14, 6, 13, 5, 12, 4, 11, 3, 10, 2, 9, 1, 8, 0);
  for (int64_t t = t0; t < t1;) {
    const int64_t v0 = lines.v0[static_cast<std::size_t>(t)];
    const int n = lines.voxels[static_cast<std::size_t>(t)];
    const int64_t next = t + 1 < t1 ? lines.v0[static_cast<std::size_t>(t + 1)] : -1;
    const bool pair = step == 1 ? n == kLineVoxels && next == v0 + kLineVoxels : step == 2 && next == v0 + 1;
    const int m = pair ? lines.voxels[static_cast<std::size_t>(t + 1)] : 0;
    const __mmask16 lanes = step == 1 ? static_cast<__mmask16>((1u << (n + m)) - 1)
                                      : static_cast<__mmask16>(every_other_lane((1u << n) - 1) | every_other_lane((1u << m) - 1) << 1);
    for (int h = 0; h < kLineFilters && h < rows; h += 16) {
      __m512 r[16];
      for (int j = 0; j < kLineVoxels; ++j) {
        r[j] = _mm512_load_ps(sums[t - t0][j] + h);
        r[kLineVoxels + j] = pair ? _mm512_load_ps(sums[t + 1 - t0][j] + h) : _mm512_setzero_ps();
      }
      transpose16_registers(r);
      for (int k = 0; k < 16 && h + k < rows; ++k) {
        float* dst = y + (h + k) * V + v0;
        // Streamed where the store fills one whole, aligned line.
        if (stream && step == 1 && lanes == 0xFFFF && reinterpret_cast<uintptr_t>(dst) % 64 == 0) {
          _mm512_stream_ps(dst, r[k]);
        } else if (step <= 2) {
          _mm512_mask_storeu_ps(dst, lanes, step == 1 ? r[k] : _mm512_permutexvar_ps(interleave, r[k]));
        } else {
          alignas(64) float row[16];
          _mm512_store_ps(row, r[k]);
          for (int j = 0; j < n; ++j) dst[j * step] = row[j];
        }
      }
    }
    t += pair ? 2 : 1;
  }
  if (stream) _mm_sfence();
#else
  for (int64_t t = t0; t < t1; ++t)
    for (int k = 0; k < rows; ++k)
      for (int j = 0; j < lines.voxels[static_cast<std::size_t>(t)]; ++j)
        y[k * V + lines.v0[static_cast<std::size_t>(t)] + j * step] = sums[t - t0][j][k];
#endif
}

// The kernel for the panel's filter vectors (the last panels of K may need fewer) and the width
// stride sx (1 or 2).
template <int SX>
void line_kernel_rows(const float* x, int64_t C, int64_t group_pitch, int64_t V, const Lines& lines, int64_t t0,
                      int64_t t1, const float* wp, int mr, int64_t tap_pitch, int64_t live, int64_t block, float* y,
                      int rows, bool stream, int64_t out_pitch) {
  switch ((rows + simd::kLanes - 1) / simd::kLanes) {
    case 1:
      return line_kernel<1, SX>(x, C, group_pitch, V, lines, t0, t1, wp, mr, tap_pitch, live, block, y, rows, stream,
                                out_pitch);
#if !defined(__AVX512F__)
    case 2:
      return line_kernel<2, SX>(x, C, group_pitch, V, lines, t0, t1, wp, mr, tap_pitch, live, block, y, rows, stream,
                                out_pitch);
#endif
    default:
      return line_kernel<kLineVectors, SX>(x, C, group_pitch, V, lines, t0, t1, wp, mr, tap_pitch, live, block, y, rows,
                                           stream, out_pitch);
  }
}
void line_kernel(const float* x, int64_t C, int64_t group_pitch, int64_t V, const Lines& lines, int64_t t0, int64_t t1,
                 const float* wp, int mr, int64_t tap_pitch, int64_t live, int64_t block, float* y, int rows,
                 int64_t sx, bool stream, int64_t out_pitch) {
  if (sx == 2)
    return line_kernel_rows<2>(x, C, group_pitch, V, lines, t0, t1, wp, mr, tap_pitch, live, block, y, rows, stream,
                               out_pitch);
  line_kernel_rows<1>(x, C, group_pitch, V, lines, t0, t1, wp, mr, tap_pitch, live, block, y, rows, stream, out_pitch);
}
#else
void line_kernel(const float* x, int64_t C, int64_t group_pitch, int64_t V, const Lines& lines, int64_t t0, int64_t t1,
                 const float* wp, int mr, int64_t tap_pitch, int64_t live, int64_t block, float* y, int rows,
                 int64_t sx, bool stream, int64_t out_pitch) {
  float sums[kLineChunk][kLineVoxels][kLineFilters];
  std::fill_n(&sums[0][0][0], (t1 - t0) * kLineVoxels * kLineFilters, 0.0f);
  for (int64_t l = 0; l < live; ++l)
    for (int64_t c0 = 0; c0 < C; c0 += block) {
      const int64_t channels = std::min(C, c0 + block) - c0;
      for (int64_t t = t0; t < t1; ++t) {
        const int key = lines.range[static_cast<std::size_t>(t * live + l)];
        if (key == 0) continue;
        const int64_t x0 = lines.x0[static_cast<std::size_t>(t)] + lines.shift[static_cast<std::size_t>(l)];
        float acc[kLineVoxels][kLineFilters] = {};
        for (int64_t c = c0; c < c0 + channels; ++c) {
          const float* a = wp + l * tap_pitch + c * mr;
          for (int j = key >> 4; j < (key & 15); ++j) {
            const float b = x[c / kChannelGroup * group_pitch + (x0 + j * sx) * kChannelGroup + c % kChannelGroup];
            for (int k = 0; k < mr; ++k) acc[j][k] += b * a[k];
          }
        }
        for (int j = 0; j < kLineVoxels; ++j)
          for (int k = 0; k < kLineFilters; ++k) sums[t - t0][j][k] += acc[j][k];
      }
    }
  if (out_pitch > 0) return store_grouped(lines, sums, t0, t1, y, rows, out_pitch, stream);
  for (int64_t t = t0; t < t1; ++t)
    for (int k = 0; k < rows; ++k)
      for (int j = 0; j < lines.voxels[static_cast<std::size_t>(t)]; ++j)
        y[k * V + lines.v0[static_cast<std::size_t>(t)] + j * lines.out_step] = sums[t - t0][j][k];
}
#endif

// Panel `panel` of the line tiles' packed weights of conv f (wl) into dst.
void pack_line_panel(const Conv3dParams& f, const Lines& lines, const WeightLayout& wl, int64_t panel, float* dst) {
  const LinePanels plan = line_panels(f.K);
  const int64_t k0 = plan.k0(panel);
  const int width = plan.width(panel);
  pack_panel(k0, std::min<int64_t>(width, f.K - k0), f.C, lines.live, width, LinePanels::tap_pitch(f.C, width), width,
             wl, dst);
}

// All of them, panel p at plan.offset(p): the layout run_lines reads where the weights are small
// or packed in advance.
void pack_lines(const Conv3dParams& f, const Lines& lines, const WeightLayout& wl, float* wp) {
  const LinePanels plan = line_panels(f.K);
  const auto live = static_cast<int64_t>(lines.live.size());
  const bool parallel = !omp_in_parallel() && plan.packed_filters() * live * f.C > (int64_t(1) << 16);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t panel = 0; panel < plan.count(); ++panel)
    pack_line_panel(f, lines, wl, panel, wp + plan.offset(panel, f.C, live));
}

// Bytes of input a work item of `chunk` tiles reads per channel block: its tiles' input rows (the
// first chunk's, every live tap's) x the row's voxels x the block's channels.
int64_t input_window_bytes(const Conv3dParams& f, const Lines& lines, int64_t chunk, int64_t block) {
  const auto live = static_cast<int64_t>(lines.live.size());
  std::vector<int64_t> rows;
  for (int64_t t = 0; t < std::min<int64_t>(chunk, static_cast<int64_t>(lines.v0.size())); ++t)
    for (int64_t l = 0; l < live; ++l)
      if (const int key = lines.range[static_cast<std::size_t>(t * live + l)]; key != 0)
        rows.push_back((lines.x0[static_cast<std::size_t>(t)] + lines.shift[static_cast<std::size_t>(l)] +
                        (key >> 4) * f.stride[2]) / f.W);
  std::sort(rows.begin(), rows.end());
  const auto distinct = std::unique(rows.begin(), rows.end()) - rows.begin();
  return distinct * f.W * std::min(block, f.C) * int64_t(sizeof(float));
}

// Whether run_lines' input is already in channel groups (then not copied) and its output is to be
// written in them (then not transposed into NCDHW).
struct LineIo {
  bool input_grouped = false, output_grouped = false;
};

// y = the direct conv f of x with weights wl on the line tiles `lines` (f's, or a strided dgrad's),
// wp room for their packing, grouped for the grouped input (or null: a buffer of its own); or
// with the weights packed in advance (`packed`, pack_lines' layout: wl and wp are not read).
void run_lines(const Conv3dParams& f, const Lines& lines, const float* x, float* y, const WeightLayout& wl, float* wp,
               float* grouped, const float* packed, LineIo io) {
  const int64_t V = f.output_spatial();
  const LinePanels plan = line_panels(f.K);
  const int64_t panels = plan.count(), live = static_cast<int64_t>(lines.live.size()), tiles = static_cast<int64_t>(lines.v0.size());
  // Large weights are packed a panel at a time by the thread that runs it, into its own buffer,
  // when it moves to that panel: packed all at once up front they went out to memory and came
  // back for the kernel (layer 4's fprop 6% faster this way; the packing itself, a fifth of that
  // fprop, is bound by reading its 14-28 MB of weights from memory); a thread's panel stays in
  // its L2 for the kernel, where a panel packed up front was written out and read back. Each
  // thread runs its own items panel by panel, then the others' leftovers from their ends
  // (for_costed_items), so it packs each panel about once. Small weights stay in the caches
  // either way and are packed once, all panels up front.
  // With a panel or so per thread, so where the input is the smaller of the two: then each thread
  // reads the whole input (half of it grouped by the other) instead of the other's packed panels.
  // Layer2's dgrad (2 panels, 1 MiB of weights, 256 KiB of dy): 0.97x the time, 0.86x in the
  // host's SLOW state; DenseASPP's fprop (2 panels and 8 MiB of input) stays, 1.05x that way.
  // Weights packed in advance leave nothing to share out: their items go sample by sample, so
  // that a thread reads only the input it grouped (layer2 fprop/dgrad 0.985x the time, layer4_d4
  // dgrad 0.987x).
  const int threads = omp_get_max_threads();
  const int64_t weights = live * f.C * f.K;
  const bool per_thread = packed == nullptr && !omp_in_parallel() && weights > kLinePackPerThread &&
                          (panels >= 2 * threads || (panels >= threads && f.N * f.C * f.input_spatial() < weights));
  const int64_t panel_elements = live * LinePanels::tap_pitch(f.C, kLineFilters);
  std::vector<int64_t> held(static_cast<std::size_t>(threads), -1);  // per thread: the panel in its buffer
  if (packed == nullptr && !per_thread) pack_lines(f, lines, wl, wp);
  // Where panel p's packed weights are, packing them first if this thread holds another panel.
  auto panel_weights = [&](int64_t panel) -> const float* {
    if (packed != nullptr) return packed + plan.offset(panel, f.C, live);
    if (!per_thread) return wp + plan.offset(panel, f.C, live);
    const int id = omp_get_thread_num();
    float* own = wp + id * panel_elements;
    if (held[static_cast<std::size_t>(id)] != panel) {
      pack_line_panel(f, lines, wl, panel, own);
      held[static_cast<std::size_t>(id)] = panel;
    }
    return own;
  };
  // DenseASPP's dgrad writes 8 MiB of dx: streamed, d12 takes 0.92x the time, d3 0.98x (d6, d18 level).
  const bool stream = f.N * f.K * V * int64_t(sizeof(float)) >= kStreamedBytes;
  const int64_t block = kLineBlock;
  int64_t chunk = kLineChunk;
  while (chunk > kLineMinChunk && input_window_bytes(f, lines, chunk, block) > kLineWindowBytes) chunk /= 2;
  while (chunk > kLineMinChunk && panels * f.N * ((tiles + chunk - 1) / chunk) < kLineItemsPerThread * threads)
    chunk /= 2;
  const int64_t chunks = (tiles + chunk - 1) / chunk, per_panel = f.N * chunks, items = panels * per_panel;
  // The input copied into channel groups (into `grouped`, or a buffer of our own: see
  // grouped_in_scratch) unless it comes in them. Channels past C in the last group are never read.
  const int64_t x_volume = f.input_spatial(), groups = (f.C + kChannelGroup - 1) / kChannelGroup;
  const int64_t group_pitch = grouped_pitch(f);
  // The output's groups where it is written in them (panels start at multiples of 8 filters).
  static_assert(kLineFilters % kChannelGroup == 0 && kLineTailFilters % kChannelGroup == 0);
  const int64_t out_groups = (f.K + kChannelGroup - 1) / kChannelGroup;
  const int64_t out_pitch = io.output_grouped ? output_group_pitch(f) : 0;
  std::unique_ptr<float[]> own;
  if (grouped == nullptr && !io.input_grouped) {
    own.reset(new float[static_cast<std::size_t>(grouped_elements(f))]);
    grouped = own.get();
  }
  if (!io.input_grouped) {
    group_channels(f.N, f.C, x_volume, group_pitch, x, grouped);
    x = grouped;
  }
  // Items panel by panel where each thread packs its own panels (per_thread); else sample by
  // sample, so that a thread's run of items reads the samples whose input it copied.
  const auto item_at = [&](int64_t item) -> std::array<int64_t, 3> {
    if (per_thread) return {item / per_panel, item % per_panel / chunks, item % chunks * chunk};
    return {item / chunks % panels, item / (chunks * panels), item % chunks * chunk};
  };
  auto body = [&](int64_t item) {
    const auto [panel, n, t0] = item_at(item);
    const int64_t k0 = plan.k0(panel);
    const int width = plan.width(panel);
    float* y_panel =
        io.output_grouped ? y + (n * out_groups + k0 / kChannelGroup) * out_pitch : y + (n * f.K + k0) * V;
    line_kernel(x + n * groups * group_pitch, f.C, group_pitch, V, lines, t0, std::min(tiles, t0 + chunk),
                panel_weights(panel), width, LinePanels::tap_pitch(f.C, width), live, block, y_panel,
                static_cast<int>(std::min<int64_t>(width, f.K - k0)), f.stride[2], stream, out_pitch);
  };
  const int64_t macs = lines.pairs * f.N * plan.packed_filters() * kLineVoxels * f.C;
  for_costed_items(items, per_thread ? per_panel : chunks, macs >= kParallelMacs,
                   [&](int64_t item) { return plan.cost(item_at(item)[0]); },
                   body);
}

// The portable loops' voxel-lane tiles (planes of more than 64 voxels): kTileFilters x
// kTileVectors * 16 voxels, 8 x 48 (no filter wasted when K % 8 = 0). (Under AVX-512 the best
// of (6,4), (8,3), (12,2), (16,1) and (24,1) on 8x16x16 maps, before the line tiles beat it.)
constexpr int kTileFilters = 8, kTileVectors = 3;

// Elements of the packed weights of the kernel that runs f, for `live` taps.
int64_t packed_elements(const Conv3dParams& f, int64_t live) {
  if (!line_tiles(f)) return (f.K + kTileFilters - 1) / kTileFilters * kTileFilters * f.C * live;
  const LinePanels plan = line_panels(f.K);
  return plan.offset(plan.count(), f.C, live);
}

// y = the direct conv f of x with weights wl, wp room for their packing; or with the weights packed
// in advance (`packed`, pack_weights' layout for `tiles`: wl and wp are not read).
template <int MR, int NV>
void run_tiles(const Conv3dParams& f, const Tiles& tiles, const float* x, float* y, const WeightLayout& wl, float* wp,
               const float* packed) {
  const int64_t V = f.output_spatial(), panels = (f.K + MR - 1) / MR, live = static_cast<int64_t>(tiles.live.size());
  if (packed == nullptr) pack_weights(f.K, f.C, tiles.live, MR, wl, wp);
  const float* weights = packed != nullptr ? packed : wp;
  const int64_t per_panel = f.N * tiles.count, items = panels * per_panel;
  const int64_t block = sum_block(live);
  auto body = [&](int64_t item) {
    const int64_t panel = item / per_panel, n = item % per_panel / tiles.count, tile = item % tiles.count;
    const int64_t first = tiles.first[static_cast<std::size_t>(tile)];
    const float* a = weights + panel * live * f.C * MR;
    tile_kernel<MR, NV>(x + n * f.C * V, f.C, V, tile * NV * kLanes, tiles.taps.data() + first,
                        tiles.first[static_cast<std::size_t>(tile + 1)] - first, a, live, block,
                        y + (n * f.K + panel * MR) * V, static_cast<int>(std::min<int64_t>(MR, f.K - panel * MR)),
                        tiles.store[static_cast<std::size_t>(tile)]);
  };
  const int64_t macs = static_cast<int64_t>(tiles.taps.size()) * f.N * panels * MR * NV * kLanes * f.C;
  for_items(items, macs, body);
}

// An upper bound of the live taps: the product of the axes' taps that read inside for some output.
int64_t live_tap_count(const Conv3dParams& p) {
  int64_t count = 1;
  const Dims3 kernel = p.kernel_extent(), in = p.input_extent(), out = p.output_extent();
  for (int a = 0; a < 3; ++a) {
    int64_t live = 0;
    for (int64_t t = 0; t < kernel[a]; ++t) {
      const AxisRange range = inside_range(out[a], in[a], p.stride[a], t * p.dilation[a] - p.pad[a]);
      live += range.lo < range.hi;
    }
    count *= live;
  }
  return count;
}

// The scratch of the kernel that runs f: its packed weights for up to `live_bound` live taps, then
// (line tiles) its grouped input.
int64_t direct_scratch_elements(const Conv3dParams& f, int64_t live_bound) {
  const int64_t packed = packed_elements(f, live_bound);
  return grouped_in_scratch(f) ? packed + grouped_elements(f) : packed;
}

// run_lines with the grouped input where grouped_in_scratch puts it: after room for the packed
// weights of `live_bound` taps (direct_scratch_elements).
void run_lines_in_scratch(const Conv3dParams& f, const Lines& lines, int64_t live_bound, const float* x, float* y,
                          const WeightLayout& wl, float* wp, const float* packed) {
  if (!grouped_in_scratch(f)) return run_lines(f, lines, x, y, wl, wp, nullptr, packed, {});
  // From the first cache line after the packed weights: a tile's 4 voxels x 8 channels are 2 lines.
  const auto after_weights = reinterpret_cast<uintptr_t>(wp + packed_elements(f, live_bound));
  run_lines(f, lines, x, y, wl, wp, reinterpret_cast<float*>((after_weights + 63) / 64 * 64), packed, {});
}

// --- strided dgrad on the line tiles -----------------------------------------------------
// A strided conv's dgrad as a direct conv of dy into dx, one per class of dx positions (their
// residues modulo the strides, see dgrad_axis): each class gets only its own taps, each reading dy
// at unit stride, so no product is spent on the zeros that the transposed conv's upsampled dy
// would hold, and the classes' tiles write every other voxel (per the width stride) of dx's
// lines. The run conv: dy's K channels in, dx's C out, over dy's extent into dx's.
Conv3dParams strided_dgrad_conv(const Conv3dParams& p) {
  Conv3dParams f = transposed(p);
  f.D = p.Z, f.H = p.P, f.W = p.Q;
  f.Z = p.D, f.P = p.H, f.Q = p.W;
  f.stride = {1, 1, 1};
  f.output_padding = {0, 0, 0};
  return f;
}

Lines strided_dgrad_lines(const Conv3dParams& p) {
  const LineAxis axes[3] = {dgrad_axis(p.D, p.Z, p.T, p.stride[0], p.pad[0], p.dilation[0]),
                            dgrad_axis(p.H, p.P, p.R, p.stride[1], p.pad[1], p.dilation[1]),
                            dgrad_axis(p.W, p.Q, p.S, p.stride[2], p.pad[2], p.dilation[2])};
  return make_lines(axes, p.K);
}

// A 1x1x1 conv (ResNet-50's bottlenecks) on the line tiles: the dispatcher gives it to the GEMM
// (conv3d.cpp's plan.pointwise), which reads NCDHW rows but packs x at every call (a tenth of the
// large-scale bottleneck's fprop); with its activations in channel groups the line tiles need no
// packing (conv3d_direct_fprop_grouped: 0.92x the GEMM's time at 1024 -> 256 channels on 8x16x16).
bool pointwise_on_lines(const Conv3dParams& p) {
  return p.groups == 1 && p.taps() == 1 && p.stride == Dims3{1, 1, 1} && p.pad == Dims3{0, 0, 0} &&
         p.output_padding == Dims3{0, 0, 0} && p.C >= kLineMinChannels && p.K >= kLineMinChannels && line_tiles(p);
}

// Where no two taps reach one dx voxel (the head's k2 s2 transposed conv: 1.25x the time of the
// GEMM and col2vol), each class is a 1x1x1 conv, which the GEMM runs better.
bool strided_dgrad_applies(const Conv3dParams& p) {
  return p.groups == 1 && p.stride != Dims3{1, 1, 1} && p.taps() > 1 && p.K >= kLineMinChannels &&
         p.C >= kLineMinChannels && taps_overlap(p) && line_tiles(strided_dgrad_conv(p));
}

// --- the passes: which conv the kernels run, with which weights --------------------------
// fprop runs p itself; a "same" conv's dgrad the transposed conv (channel roles swapped) with the
// kernel flipped; a strided conv's dgrad its classes (strided_dgrad_conv on strided_dgrad_lines,
// each tap at its own offsets, no flip).
struct DirectRun {
  Conv3dParams f;
  WeightLayout wl;
  bool on_lines = false;  // else the voxel-lane tiles
  Lines lines;            // on the line tiles
  Tiles tiles;            // on the voxel-lane tiles
  int64_t live_bound = 0; // the scratch's room for live taps (direct_scratch_elements)
  int64_t live() const { return static_cast<int64_t>(on_lines ? lines.live.size() : tiles.live.size()); }
};

// Whether the pass runs a strided conv's dgrad classes (always on the line tiles); else it runs
// run_conv(p, pass), on the line tiles where line_tiles says so.
bool runs_dgrad_classes(const Conv3dParams& p, PackFor pass) {
  return pass == PackFor::dgrad && !conv3d_direct_applies(p) && !pointwise_on_lines(p);
}
Conv3dParams run_conv(const Conv3dParams& p, PackFor pass) { return pass == PackFor::fprop ? p : transposed(p); }

DirectRun direct_run(const Conv3dParams& p, PackFor pass, const float* w) {
  const int64_t C = p.C, T = p.taps();
  DirectRun r;
  if (runs_dgrad_classes(p, pass)) {
    // The run conv's filter k is p's channel c and its channel p's filter: w[c_f, k_f, tap].
    r.f = strided_dgrad_conv(p);
    r.wl = {w, T, C * T, T, false};
    r.on_lines = true;
    r.lines = strided_dgrad_lines(p);
    r.live_bound = T;  // (its class taps' live count is not live_tap_count's: room for every tap)
    return r;
  }
  // dgrad: the run conv's filter k is p's channel c and its channel p's filter: w[c_f, k_f, taps - 1 - tap].
  r.f = run_conv(p, pass);
  r.wl = pass == PackFor::fprop ? WeightLayout{w, C * T, T, T, false} : WeightLayout{w, T, C * T, T, true};
  r.on_lines = line_tiles(r.f);
  if (r.on_lines)
    r.lines = make_lines(r.f);
  else
    r.tiles = make_tiles(r.f, kTileVectors);
  r.live_bound = live_tap_count(r.f);
  return r;
}

void run_direct(const DirectRun& r, const float* x, float* y, float* scratch, const float* packed) {
  if (!r.on_lines) return run_tiles<kTileFilters, kTileVectors>(r.f, r.tiles, x, y, r.wl, scratch, packed);
  run_lines_in_scratch(r.f, r.lines, r.live_bound, x, y, r.wl, scratch, packed);
}

// --- wgrad -------------------------------------------------------------------------------
// dw[k, c, tap] = sum over samples n and voxels v of dy[n, k, v] * x[n, c, v + shift(tap)] where
// the tap reads inside. Filters in the lanes, as on the line tiles: dy is repacked once into
// panels of kWgradFilters filters, [panel][n][v][filter], so a voxel's filters are one load per
// vector, and a block of kWgradFilters filters x kWgradChannels channels accumulates in registers
// over every sample and line of one tap, each line's voxels one exact range (no lane multiplies
// padding and no lanes are summed across). AVX-512: 64 x 6 (24 accumulators, 10 loads per 24
// multiply-adds); AVX2: 16 x 6 (12 accumulators, 8 loads per 12; measured ahead of 24 x 4, whose
// third of a panel is wasted on 64 filters).
#if defined(MED3D_SIMD) && !defined(__AVX512F__)
constexpr int kWgradVectors = 2, kWgradChannels = 6;
#else
constexpr int kWgradVectors = 4, kWgradChannels = 6;
#endif
constexpr int kWgradFilters = kWgradVectors * kLanes;

// Output voxels [v, v + count) of a line whose tap reads inside the input: input voxels x, x +
// stride, ... (the width stride).
struct Segment {
  int64_t v, x, count;
};

// One live tap of wgrad: its index in the kernel and its segments.
struct WgradTap {
  int64_t tap;
  std::vector<Segment> segments;
};

std::vector<WgradTap> wgrad_taps(const Conv3dParams& p) {
  std::vector<WgradTap> taps;
  const int64_t sz = p.stride[0], sy = p.stride[1], sx = p.stride[2];
  for (int64_t t = 0; t < p.T; ++t)
    for (int64_t r = 0; r < p.R; ++r)
      for (int64_t s = 0; s < p.S; ++s) {
        const TapOffset o = tap_offset(p, t, r, s);
        WgradTap tap{(t * p.R + r) * p.S + s, {}};
        const AxisRange zs = inside_range(p.Z, p.D, sz, o.dz), ys = inside_range(p.P, p.H, sy, o.dy),
                        qs = inside_range(p.Q, p.W, sx, o.dx);
        if (qs.lo >= qs.hi) continue;
        for (int64_t z = zs.lo; z < zs.hi; ++z)
          for (int64_t y = ys.lo; y < ys.hi; ++y) {
            const int64_t v = (z * p.P + y) * p.Q + qs.lo;
            const int64_t x = ((z * sz + o.dz) * p.H + y * sy + o.dy) * p.W + qs.lo * sx + o.dx;
            // Lines that continue each other in the output and the input (a same conv's whole
            // lines) join into one run.
            Segment* last = tap.segments.empty() ? nullptr : &tap.segments.back();
            if (last && last->v + last->count == v && last->x + last->count * sx == x)
              last->count += qs.hi - qs.lo;
            else
              tap.segments.push_back({v, x, qs.hi - qs.lo});
          }
        if (!tap.segments.empty()) taps.push_back(std::move(tap));
      }
  return taps;
}

// A block's sums of one tap: [channel][filter].
using WgradSums = float[kWgradChannels][kWgradFilters];

// out[j][f] = the block's sums for channel j and filter f of one tap: dyp is the panel's packed dy
// [n][V][kWgradFilters], xs[j] channel j's input in sample 0 (samples sample_x apart), SX the
// width stride.
#if defined(MED3D_SIMD)
template <int SX>
void wgrad_block(const float* dyp, const float* const* xs, int64_t samples, int64_t V, int64_t sample_x,
                 const WgradTap& tap, WgradSums& out) {
  using namespace simd;
  Vec acc[kWgradChannels][kWgradVectors];
#pragma GCC unroll 8
  for (int j = 0; j < kWgradChannels; ++j)
#pragma GCC unroll 4
    for (int h = 0; h < kWgradVectors; ++h) acc[j][h] = zero();
  for (int64_t n = 0; n < samples; ++n)
    for (const Segment& seg : tap.segments) {
      const float* d = dyp + (n * V + seg.v) * kWgradFilters;
      const float* x[kWgradChannels];
#pragma GCC unroll 8
      for (int j = 0; j < kWgradChannels; ++j) x[j] = xs[j] + n * sample_x + seg.x;
      for (int64_t i = 0; i < seg.count; ++i, d += kWgradFilters) {
        Vec dv[kWgradVectors];
#pragma GCC unroll 4
        for (int h = 0; h < kWgradVectors; ++h) {
          dv[h] = load(d + kLanes * h);
          keep_in_register(dv[h]);
        }
#pragma GCC unroll 8
        for (int j = 0; j < kWgradChannels; ++j) {
          const Vec b = broadcast(x[j][i * SX]);
#pragma GCC unroll 4
          for (int h = 0; h < kWgradVectors; ++h) acc[j][h] = fma(b, dv[h], acc[j][h]);
        }
      }
    }
#pragma GCC unroll 8
  for (int j = 0; j < kWgradChannels; ++j)
#pragma GCC unroll 4
    for (int h = 0; h < kWgradVectors; ++h) store(out[j] + kLanes * h, acc[j][h]);
}
#else
template <int SX>
void wgrad_block(const float* dyp, const float* const* xs, int64_t samples, int64_t V, int64_t sample_x,
                 const WgradTap& tap, WgradSums& out) {
  float acc[kWgradChannels][kWgradFilters] = {};
  for (int64_t n = 0; n < samples; ++n)
    for (const Segment& seg : tap.segments)
      for (int64_t i = 0; i < seg.count; ++i) {
        const float* d = dyp + (n * V + seg.v + i) * kWgradFilters;
        for (int j = 0; j < kWgradChannels; ++j) {
          const float b = xs[j][n * sample_x + seg.x + i * SX];
          for (int f = 0; f < kWgradFilters; ++f) acc[j][f] += b * d[f];
        }
      }
  for (int j = 0; j < kWgradChannels; ++j)
    for (int f = 0; f < kWgradFilters; ++f) out[j][f] = acc[j][f];
}
#endif

void check_applies(const Conv3dParams& p, PackFor pass) {
  if (pass == PackFor::fprop)
    MED3D_CHECK(conv3d_direct_fprop_applies(p), "conv3d_direct_fprop: needs a single-group conv whose output ",
                "extent equals its input extent, or one with a width stride of at most 2 on the line tiles, or ",
                "a 1x1x1 one with at least ", kLineMinChannels, " channels and filters on them; dispatch ",
                "through conv3d_fprop instead");
  else
    MED3D_CHECK(conv3d_direct_dgrad_applies(p), "conv3d_direct_dgrad: needs a unit-stride single-group conv whose ",
                "output extent equals its input extent, or a strided one or a 1x1x1 one with at least ",
                kLineMinChannels, " channels and filters on the line tiles; dispatch through conv3d_dgrad instead");
}

void check_scratch(const char* op, const Conv3dParams& p, int64_t scratch_elements) {
  MED3D_CHECK(scratch_elements >= conv3d_direct_scratch_elements(p), op, ": the scratch buffer holds ",
              scratch_elements, " elements but this conv needs at least ", conv3d_direct_scratch_elements(p),
              "; size it with conv3d_direct_scratch_elements");
}

}  // namespace

bool conv3d_direct_applies(const Conv3dParams& p) {
  return p.groups == 1 && p.stride == Dims3{1, 1, 1} && p.taps() > 1 && p.Z == p.D && p.P == p.H &&
         p.Q == p.W && p.output_padding == Dims3{0, 0, 0} &&
         2 * p.pad[0] == p.dilation[0] * (p.T - 1) && 2 * p.pad[1] == p.dilation[1] * (p.R - 1) &&
         2 * p.pad[2] == p.dilation[2] * (p.S - 1);
}

bool conv3d_direct_fprop_applies(const Conv3dParams& p) {
  if (conv3d_direct_applies(p) || pointwise_on_lines(p)) return true;
  return p.groups == 1 && p.taps() > 1 && p.C >= kLineMinChannels && p.output_padding == Dims3{0, 0, 0} &&
         p.stride[2] <= 2 && taps_overlap(p) && line_tiles(p);
}

bool conv3d_direct_wgrad_applies(const Conv3dParams& p) {
  if (conv3d_direct_applies(p)) return true;
  return p.groups == 1 && p.stride != Dims3{1, 1, 1} && p.stride[2] <= 2 && p.taps() > 1 &&
         p.C >= kLineMinChannels && p.K >= kLineMinChannels && taps_overlap(p);
}

bool conv3d_direct_dgrad_applies(const Conv3dParams& p) {
  return conv3d_direct_applies(p) || strided_dgrad_applies(p) || pointwise_on_lines(p);
}

// Packed weights in advance: a header of kPackedWeightsHeader floats (kPackedMagic, the pass and
// the layout, and a fingerprint of the conv's shape, so that a buffer packed for another conv,
// pass or kernel is refused, not read as garbage), then the layout the kernel reads. The batch
// size is not in the fingerprint: the packing does not depend on it.
namespace {
constexpr uint32_t kPackedMagic = 0x4d335057;  // "M3PW"

std::array<uint32_t, 4> packed_header(const Conv3dParams& p, PackFor pass, PackedLayout layout) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a over the shape's fields
  for (int64_t v : fields_but_batch(p))
    for (int b = 0; b < 8; ++b) hash = (hash ^ (static_cast<uint64_t>(v) >> (8 * b) & 0xff)) * 1099511628211ull;
  return {kPackedMagic, static_cast<uint32_t>(pass) | static_cast<uint32_t>(layout) << 8, static_cast<uint32_t>(hash),
          static_cast<uint32_t>(hash >> 32)};
}
}  // namespace

void write_packed_weights_header(const Conv3dParams& p, PackFor pass, PackedLayout layout, float* packed) {
  const std::array<uint32_t, 4> header = packed_header(p, pass, layout);
  std::fill_n(packed, kPackedWeightsHeader, 0.0f);
  std::memcpy(packed, header.data(), sizeof(header));
}

const float* packed_weights_layout(const char* op, const Conv3dParams& p, PackFor pass, PackedLayout layout,
                                   const float* packed) {
  if (packed == nullptr) return nullptr;
  std::array<uint32_t, 4> got;
  std::memcpy(got.data(), packed, sizeof(got));
  const std::array<uint32_t, 4> want = packed_header(p, pass, layout);
  const auto got_pass = static_cast<PackFor>(got[1] & 0xff);
  MED3D_CHECK(got == want, op, ": the packed weights were made for ",
              got[0] != kPackedMagic               ? std::string("nothing (no packed-weights header)")
              : got_pass != pass                   ? std::string(got_pass == PackFor::fprop ? "fprop" : "dgrad")
              : (got[1] >> 8) != (want[1] >> 8)    ? std::string("another kernel (made with another scratch size?)")
                                                   : std::string("a conv of another shape"),
              ", not for this conv's ", pass == PackFor::fprop ? "fprop" : "dgrad",
              "; pack them with conv3d_pack_weights for the same params, pass and scratch size");
  return packed + kPackedWeightsHeader;
}

int64_t conv3d_direct_packed_elements(const Conv3dParams& p, PackFor pass) {
  check_applies(p, pass);
  const DirectRun r = direct_run(p, pass, nullptr);
  return kPackedWeightsHeader + packed_elements(r.f, r.live());
}

void conv3d_direct_pack_weights(const Conv3dParams& p, PackFor pass, const float* w, float* packed) {
  check_applies(p, pass);
  const DirectRun r = direct_run(p, pass, w);
  write_packed_weights_header(p, pass, PackedLayout::direct, packed);
  if (r.on_lines)
    pack_lines(r.f, r.lines, r.wl, packed + kPackedWeightsHeader);
  else
    pack_weights(r.f.K, r.f.C, r.tiles.live, kTileFilters, r.wl, packed + kPackedWeightsHeader);
}

int64_t conv3d_direct_scratch_elements(const Conv3dParams& p) {
  int64_t most = direct_scratch_elements(p, live_tap_count(p));
  if (conv3d_direct_applies(p) || pointwise_on_lines(p)) {
    const Conv3dParams f = transposed(p);
    most = std::max(most, direct_scratch_elements(f, live_tap_count(f)));
  }
  // (Its class taps' live count is not live_tap_count's: room for every tap, as run below.)
  if (strided_dgrad_applies(p)) most = std::max(most, direct_scratch_elements(strided_dgrad_conv(p), p.taps()));
  return most;
}

void conv3d_direct_fprop(const Conv3dParams& p, const float* x, const float* w, float* y, float* scratch,
                         int64_t scratch_elements, const float* packed) {
  check_applies(p, PackFor::fprop);
  check_scratch("conv3d_direct_fprop", p, scratch_elements);
  const float* layout = packed_weights_layout("conv3d_direct_fprop", p, PackFor::fprop, PackedLayout::direct, packed);
  run_direct(direct_run(p, PackFor::fprop, w), x, y, scratch, layout);
}

namespace {

// out_dw[(f * width + j) * T + tap] = sums[l][j][f] for every filter f and channel j of a block
// and live tap l (its index `tap`): each (filter, channel)'s run of T taps. Dead taps keep what
// the run holds (0).
void place_tap_sums(const std::vector<WgradSums>& sums, const std::vector<WgradTap>& taps, int64_t T, int64_t width,
                    float* out_dw) {
#if defined(__AVX512F__)
  // Up to 2 vectors of taps per run (every 3x3x3 kernel): 16 live taps at a time, 16 filters'
  // sums over them transposed in registers into one vector per filter, whose lanes a permutation
  // puts in their taps' places in the run's two vectors, stored under the live taps' masks.
  // (Element by element, this was a tenth of layer4_d4's wgrad: now 0.93x the time, layer3_d2's
  // 0.91x, layer2's 0.97x, layer1's 0.98x, DenseASPP d3/d12 0.99x, layer4_d4 at large scale 0.97x.)
  static_assert(kLanes == 16 && kWgradFilters % kLanes == 0);
  if (T <= 2 * kLanes) {
    for (std::size_t l0 = 0; l0 < taps.size(); l0 += kLanes) {
      const int n = static_cast<int>(std::min<std::size_t>(kLanes, taps.size() - l0));
      alignas(64) int32_t lane_of[2][kLanes] = {};
      __mmask16 live[2] = {0, 0};
      for (int i = 0; i < n; ++i) {
        const int64_t tap = taps[l0 + static_cast<std::size_t>(i)].tap;
        lane_of[tap / kLanes][tap % kLanes] = i;
        live[tap / kLanes] = static_cast<__mmask16>(live[tap / kLanes] | 1u << (tap % kLanes));
      }
      const __m512i place[2] = {_mm512_load_si512(lane_of[0]), _mm512_load_si512(lane_of[1])};
      for (int j = 0; j < kWgradChannels; ++j)
        for (int f0 = 0; f0 < kWgradFilters; f0 += kLanes) {
          __m512 r[kLanes];
          for (int i = 0; i < kLanes; ++i)
            r[i] = i < n ? _mm512_loadu_ps(sums[l0 + static_cast<std::size_t>(i)][j] + f0) : _mm512_setzero_ps();
          simd::transpose16_registers(r);  // r[q] lane i: tap l0 + i's sum for filter f0 + q
          for (int q = 0; q < kLanes; ++q) {
            float* run = out_dw + ((f0 + q) * width + j) * T;
            for (int half = 0; half < 2; ++half)
              if (live[half])
                _mm512_mask_storeu_ps(run + half * kLanes, live[half], _mm512_permutexvar_ps(place[half], r[q]));
          }
        }
    }
    return;
  }
#endif
  for (int f = 0; f < kWgradFilters; ++f)
    for (int j = 0; j < kWgradChannels; ++j) {
      float* run = out_dw + (f * width + j) * T;
      for (std::size_t l = 0; l < taps.size(); ++l) run[taps[l].tap] = sums[l][j][f];
    }
}

}  // namespace

void conv3d_direct_wgrad(const Conv3dParams& p, const float* x, const float* dy, float* dw) {
  MED3D_CHECK(conv3d_direct_wgrad_applies(p), "conv3d_direct_wgrad: needs a unit-stride single-group conv whose ",
              "output extent equals its input extent, or a strided one with a width stride of at most 2 and at least ",
              kLineMinChannels, " channels; dispatch through conv3d_wgrad instead");
  const std::vector<WgradTap> taps = wgrad_taps(p);
  const int64_t V = p.output_spatial(), V_in = p.input_spatial(), T = p.taps();
  const int64_t panels = (p.K + kWgradFilters - 1) / kWgradFilters, c_blocks = (p.C + kWgradChannels - 1) / kWgradChannels;
  // dyp[panel][n][v][f] = dy[n][panel * F + f][v], 0 past K: every element written below, so not
  // value-initialised first.
  const std::unique_ptr<float[]> dyp(new float[static_cast<std::size_t>(panels * p.N * V * kWgradFilters)]);
  // This loop and the sums below share out whole panels alike (for_costed_items' runs of equal
  // cost), so that each thread sums over the dyp it packed.
  const auto same_cost = [](int64_t) { return int64_t(1); };
  for_costed_items(panels * p.N, p.N, panels * p.N * V * kWgradFilters >= kParallelMacs, same_cost, [&](int64_t item) {
    const int64_t panel = item / p.N, n = item % p.N;
    float* dst = dyp.get() + item * V * kWgradFilters;
    int f = 0;
#if defined(MED3D_SIMD)
    // kLanes filters x kLanes voxels at a time through a register transpose. Element by element,
    // the stores kWgradFilters floats apart, this packing was 8% of DenseASPP d18's wgrad: d18
    // wgrad now takes 0.90x the time, layer4_d4's 0.967x (in the host's slow regime d18/d24
    // measured 1.04x).
    for (; f + kLanes <= kWgradFilters && panel * kWgradFilters + f + kLanes <= p.K; f += kLanes) {
      const float* src = dy + (n * p.K + panel * kWgradFilters + f) * V;
      int64_t v = 0;
      for (; v + kLanes <= V; v += kLanes) simd::transpose_block(src + v, V, dst + v * kWgradFilters + f, kWgradFilters);
      for (; v < V; ++v)
        for (int i = 0; i < kLanes; ++i) dst[v * kWgradFilters + f + i] = src[i * V + v];
    }
#endif
    for (; f < kWgradFilters; ++f) {
      const int64_t k = panel * kWgradFilters + f;
      if (k >= p.K) {
        for (int64_t v = 0; v < V; ++v) dst[v * kWgradFilters + f] = 0.0f;
        continue;
      }
      const float* src = dy + (n * p.K + k) * V;
      for (int64_t v = 0; v < V; ++v) dst[v * kWgradFilters + f] = src[v];
    }
  });
  // A large dw is written around the caches: the optimizer reads it after the rest of the
  // backward pass has evicted it anyway, and its lines are not read from memory first. Its items
  // then take a run of channel blocks each (one panel of filters), so that each filter's dw is one
  // long run of whole lines, as long as the threads keep enough items. (Written a block of 6
  // channels at a time, in 648-byte runs 55 KB apart, the copy into dw was a fifth of layer4's
  // wgrad; now 0.83x the time. Small ones are read back from the caches: DenseASPP d12 1.02x.)
  const bool stream_dw = p.K * p.C * T * int64_t(sizeof(float)) > kStreamedBytes;
  const int64_t blocks_per_item =
      stream_dw ? std::clamp<int64_t>(panels * c_blocks / (16 * omp_get_max_threads()), 1, 8) : 1;
  const int64_t runs = (c_blocks + blocks_per_item - 1) / blocks_per_item;
  auto body = [&](int64_t item) {
    const int64_t panel = item / runs, b0 = item % runs * blocks_per_item;
    const int64_t b1 = std::min(c_blocks, b0 + blocks_per_item), c_first = b0 * kWgradChannels;
    const int64_t width = (b1 - b0) * kWgradChannels;
    const float* panel_dy = dyp.get() + panel * p.N * V * kWgradFilters;
    // The item's dw, dead taps zero, gathered here and written as one contiguous run per filter:
    // scattered into dw tap by tap, every store missed the cache (13% of layer 4's wgrad).
    std::vector<float> block_dw(static_cast<std::size_t>(kWgradFilters * width * T), 0.0f);
    std::vector<WgradSums> sums(taps.size());
    for (int64_t b = b0; b < b1; ++b) {
      // A block past the last channel repeats it and drops the result.
      const int64_t c0 = b * kWgradChannels;
      const float* xs[kWgradChannels];
      for (int j = 0; j < kWgradChannels; ++j) xs[j] = x + std::min(c0 + j, p.C - 1) * V_in;
      // All taps' sums first, then each (filter, channel)'s taps written in turn: scattered tap
      // by tap, each store went to another line (a fifth of layer4_d4's wgrad).
      for (std::size_t l = 0; l < taps.size(); ++l) {
        if (p.stride[2] == 2)
          wgrad_block<2>(panel_dy, xs, p.N, V, p.C * V_in, taps[l], sums[l]);
        else
          wgrad_block<1>(panel_dy, xs, p.N, V, p.C * V_in, taps[l], sums[l]);
      }
      place_tap_sums(sums, taps, T, width, block_dw.data() + (c0 - c_first) * T);
    }
    const int64_t channels = std::min(p.C, c_first + width) - c_first;
    for (int f = 0; f < kWgradFilters && panel * kWgradFilters + f < p.K; ++f) {
      const float* src = block_dw.data() + f * width * T;
      float* dst = dw + ((panel * kWgradFilters + f) * p.C + c_first) * T;
#if defined(MED3D_SIMD)
      if (stream_dw) {
        simd::copy_streaming(src, channels * T, dst);
        continue;
      }
#endif
      std::copy(src, src + channels * T, dst);
    }
  };
  int64_t macs = 0;
  for (const WgradTap& tap : taps)
    for (const Segment& seg : tap.segments) macs += seg.count;
  for_costed_items(panels * runs, runs, macs * p.N * panels * kWgradFilters * c_blocks * kWgradChannels >= kParallelMacs,
                   same_cost,
                   body);
}

void conv3d_direct_dgrad(const Conv3dParams& p, const float* dy, const float* w, float* dx, float* scratch,
                         int64_t scratch_elements, const float* packed) {
  check_applies(p, PackFor::dgrad);
  check_scratch("conv3d_direct_dgrad", p, scratch_elements);
  const float* layout = packed_weights_layout("conv3d_direct_dgrad", p, PackFor::dgrad, PackedLayout::direct, packed);
  run_direct(direct_run(p, PackFor::dgrad, w), dy, dx, scratch, layout);
}


int64_t conv3d_group_pitch(int64_t voxels) {
  MED3D_CHECK(voxels >= 0, "conv3d_group_pitch: needs a voxel count of at least 0, got ", voxels);
  return odd_lines_pitch(voxels * kChannelGroup);
}

int64_t conv3d_grouped_elements(int64_t N, int64_t C, int64_t voxels) {
  MED3D_CHECK(N >= 0 && C >= 0, "conv3d_grouped_elements: needs sizes of at least 0, got N ", N, " and C ", C);
  return N * ((C + kChannelGroup - 1) / kChannelGroup) * conv3d_group_pitch(voxels);
}

void to_channel_groups(int64_t N, int64_t C, int64_t voxels, const float* x, float* grouped) {
  group_channels(N, C, voxels, conv3d_group_pitch(voxels), x, grouped);
}

void from_channel_groups(int64_t N, int64_t C, int64_t voxels, const float* grouped, float* x) {
  ungroup_channels(N, C, voxels, conv3d_group_pitch(voxels), grouped, x);
}

bool conv3d_direct_grouped_applies(const Conv3dParams& p, PackFor pass) {
  const bool applies = pass == PackFor::fprop ? conv3d_direct_fprop_applies(p) : conv3d_direct_dgrad_applies(p);
  return applies && (runs_dgrad_classes(p, pass) || line_tiles(run_conv(p, pass)));
}

namespace {

void run_grouped(const char* op, const Conv3dParams& p, PackFor pass, const float* in, const float* packed,
                 float* out) {
  MED3D_CHECK(conv3d_direct_grouped_applies(p, pass), op, ": needs a conv whose ",
              pass == PackFor::fprop ? "fprop" : "dgrad", " runs on the line tiles (conv3d_direct_grouped_applies); ",
              "convert to NCDHW (from_channel_groups) and dispatch through conv3d_",
              pass == PackFor::fprop ? "fprop" : "dgrad", " instead");
  MED3D_CHECK(packed != nullptr, op, ": needs the weights packed in advance (conv3d_direct_pack_weights for this ",
              "conv and pass), got none");
  const float* layout = packed_weights_layout(op, p, pass, PackedLayout::direct, packed);
  const DirectRun r = direct_run(p, pass, nullptr);
  run_lines(r.f, r.lines, in, out, r.wl, nullptr, nullptr, layout, {true, true});
}

}  // namespace

void conv3d_direct_fprop_grouped(const Conv3dParams& p, const float* x, const float* packed, float* y) {
  run_grouped("conv3d_direct_fprop_grouped", p, PackFor::fprop, x, packed, y);
}

void conv3d_direct_dgrad_grouped(const Conv3dParams& p, const float* dy, const float* packed, float* dx) {
  run_grouped("conv3d_direct_dgrad_grouped", p, PackFor::dgrad, dy, packed, dx);
}

}  // namespace med3d::kernels::cpu
