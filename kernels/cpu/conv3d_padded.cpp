// Direct f32 convolution of convs with few input channels (see the header).
#include "med3d/kernels/cpu/conv3d_padded.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "simd.h"

namespace med3d::kernels::cpu {

namespace {

// A tile: kVoxels consecutive output voxels of a line x kVectors vectors of filters. AVX2 (16
// registers): 4 x 3 = 12 accumulators, three weight registers and one broadcast; AVX-512 (32):
// 8 x 2. The portable loops take AVX2's shapes.
#if defined(MED3D_SIMD)
constexpr int kLanes = simd::kLanes;
#else
constexpr int kLanes = 8;
#endif
#if defined(__AVX512F__)
constexpr int kVoxels = 8, kVectors = 2;
#else
constexpr int kVoxels = 4, kVectors = 3;
#endif
constexpr int kFilters = kVectors * kLanes;
constexpr int64_t kMaxChannels = 4;
// Below this many multiply-adds one thread is faster than waking a team.
constexpr int64_t kParallelMacs = int64_t(1) << 20;

// The input with its padding as zeros, [N, C, Dp, Hp, Wp], and zero slack after it: a tile's
// voxels past the end of a line read on into the next line (their results are dropped).
struct PaddedInput {
  std::vector<float> data;
  int64_t C = 0, Dp = 0, Hp = 0, Wp = 0;
  const float* row(int64_t n, int64_t c, int64_t d, int64_t h) const {
    return data.data() + (((n * C + c) * Dp + d) * Hp + h) * Wp;
  }
};

PaddedInput pad_input(const Conv3dParams& p, const float* x) {
  PaddedInput in;
  in.C = p.C;
  in.Dp = p.D + 2 * p.pad[0];
  in.Hp = p.H + 2 * p.pad[1];
  in.Wp = p.W + 2 * p.pad[2];
  const int64_t slack = (kVoxels + 1) * p.stride[2] + kLanes;
  in.data.assign(static_cast<std::size_t>(p.N * p.C * in.Dp * in.Hp * in.Wp + slack), 0.0f);
  const int64_t rows = p.N * p.C * p.D;
#pragma omp parallel for schedule(static) if (rows * p.H * p.W > kParallelMacs)
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t nc = i / p.D, d = i % p.D;
    for (int64_t h = 0; h < p.H; ++h) {
      const float* src = x + (i * p.H + h) * p.W;
      std::copy(src, src + p.W, in.data.data() + ((nc * in.Dp + d + p.pad[0]) * in.Hp + h + p.pad[1]) * in.Wp + p.pad[2]);
    }
  }
  return in;
}

int64_t panel_count(const Conv3dParams& p) { return (p.K + kFilters - 1) / kFilters; }

// w [K, C, taps] -> [panel][c][tap][kFilters], 0 past K.
std::vector<float> pack_filters_inner(const Conv3dParams& p, const float* w) {
  const int64_t panels = panel_count(p), taps = p.taps();
  std::vector<float> wp(static_cast<std::size_t>(panels * p.C * taps * kFilters), 0.0f);
  for (int64_t k = 0; k < p.K; ++k)
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t tap = 0; tap < taps; ++tap)
        wp[static_cast<std::size_t>(((k / kFilters * p.C + c) * taps + tap) * kFilters + k % kFilters)] = w[(k * p.C + c) * taps + tap];
  return wp;
}

// The output positions a work item covers: one output plane z of sample n for one panel.
struct PlaneItem {
  int64_t panel, n, z;
};
// Samples and planes outermost, panels innermost: both threads get every panel (the last may be
// narrower) and the weights of all panels stay in L2.
PlaneItem plane_item(const Conv3dParams& p, int64_t item) {
  const int64_t panels = panel_count(p);
  return {item % panels, item / panels / p.Z, item / panels % p.Z};
}

#if defined(MED3D_SIMD)
using simd::Vec;
// Width taps per wgrad block (kTapBlock x kVectors accumulators).
constexpr int kTapBlock = 4;

// acc[j][h] = sum over channels and taps of wp[c, tap, h] * the input voxel output voxel j of the
// tile reads through the tap, for the first NV vectors.
template <int NV>
void fprop_tile(const Conv3dParams& p, const PaddedInput& in, int64_t n, int64_t z, int64_t y, int64_t q0,
                const float* wp, Vec (&acc)[kVoxels][kVectors]) {
  const int64_t sx = p.stride[2], dx = p.dilation[2];
#pragma GCC unroll 8
  for (int j = 0; j < kVoxels; ++j)
#pragma GCC unroll 3
    for (int h = 0; h < kVectors; ++h) acc[j][h] = simd::zero();
  const float* a = wp;
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t t = 0; t < p.T; ++t)
      for (int64_t r = 0; r < p.R; ++r) {
        const float* row = in.row(n, c, z * p.stride[0] + t * p.dilation[0], y * p.stride[1] + r * p.dilation[1]) + q0 * sx;
        for (int64_t s = 0; s < p.S; ++s, a += kFilters) {
          const float* xs = row + s * dx;
          Vec w0 = simd::load(a), w1 = simd::zero(), w2 = simd::zero();
          simd::keep_in_register(w0);
          if constexpr (NV > 1) {
            w1 = simd::load(a + kLanes);
            simd::keep_in_register(w1);
          }
          if constexpr (NV > 2) {
            w2 = simd::load(a + 2 * kLanes);
            simd::keep_in_register(w2);
          }
#pragma GCC unroll 8
          for (int j = 0; j < kVoxels; ++j) {
            const Vec b = simd::broadcast(xs[j * sx]);
            acc[j][0] = simd::fma(b, w0, acc[j][0]);
            if constexpr (NV > 1) acc[j][1] = simd::fma(b, w1, acc[j][1]);
            if constexpr (NV > 2) acc[j][2] = simd::fma(b, w2, acc[j][2]);
          }
        }
      }
}

template <int NV>
void fprop_plane(const Conv3dParams& p, const PaddedInput& in, const float* wp, const PlaneItem& it, float* y) {
  const int64_t k0 = it.panel * kFilters, rows = std::min<int64_t>(kFilters, p.K - k0), V = p.output_spatial();
  for (int64_t oy = 0; oy < p.P; ++oy)
    for (int64_t q0 = 0; q0 < p.Q; q0 += kVoxels) {
      Vec acc[kVoxels][kVectors];
      fprop_tile<NV>(p, in, it.n, it.z, oy, q0, wp, acc);
      alignas(64) float out[kVoxels][kFilters];
#pragma GCC unroll 8
      for (int j = 0; j < kVoxels; ++j)
#pragma GCC unroll 3
        for (int h = 0; h < kVectors; ++h) simd::store(out[j] + h * kLanes, acc[j][h]);
      const int64_t voxels = std::min<int64_t>(kVoxels, p.Q - q0);
      float* dst = y + (it.n * p.K + k0) * V + (it.z * p.P + oy) * p.Q + q0;
      for (int64_t k = 0; k < rows; ++k)
        for (int64_t j = 0; j < voxels; ++j) dst[k * V + j] = out[j][k];
    }
}

// out[jt][h] = sum over the plane's voxels of dyp[v, h] * the input voxel v reads through width
// tap s0 + jt (for channel c, taps t, r), for the first NV vectors. Each output row is summed in
// registers, then added into out: one running sum over a whole plane (4096 products on a
// 128x128 stem) missed the model goldens' 1e-4 in the portable loops.
template <int NV, int TAPS>
void wgrad_block(const Conv3dParams& p, const PaddedInput& in, const float* dyp, const PlaneItem& it, int64_t c,
                 int64_t t, int64_t r, int64_t s0, float* out) {
  const int64_t sx = p.stride[2], dx = p.dilation[2];
  std::fill(out, out + TAPS * kFilters, 0.0f);
  const float* d = dyp;
  for (int64_t oy = 0; oy < p.P; ++oy) {
    Vec acc[TAPS][kVectors];
#pragma GCC unroll 4
    for (int j = 0; j < TAPS; ++j)
#pragma GCC unroll 3
      for (int h = 0; h < kVectors; ++h) acc[j][h] = simd::zero();
    const float* row = in.row(it.n, c, it.z * p.stride[0] + t * p.dilation[0], oy * p.stride[1] + r * p.dilation[1]) + s0 * dx;
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
#pragma GCC unroll 4
      for (int j = 0; j < TAPS; ++j) {
        const Vec b = simd::broadcast(xs[j * dx]);
        acc[j][0] = simd::fma(b, d0, acc[j][0]);
        if constexpr (NV > 1) acc[j][1] = simd::fma(b, d1, acc[j][1]);
        if constexpr (NV > 2) acc[j][2] = simd::fma(b, d2, acc[j][2]);
      }
    }
#pragma GCC unroll 4
    for (int j = 0; j < TAPS; ++j)
#pragma GCC unroll 3
      for (int h = 0; h < kVectors; ++h) {
        float* o = out + j * kFilters + h * kLanes;
        simd::store(o, simd::add(simd::load(o), acc[j][h]));
      }
  }
}

template <int NV>
void wgrad_plane(const Conv3dParams& p, const PaddedInput& in, const float* dyp, const PlaneItem& it, float* partial) {
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t t = 0; t < p.T; ++t)
      for (int64_t r = 0; r < p.R; ++r)
        for (int64_t s0 = 0; s0 < p.S; s0 += kTapBlock) {
          float* out = partial + (((c * p.T + t) * p.R + r) * p.S + s0) * kFilters;
          switch (std::min<int64_t>(kTapBlock, p.S - s0)) {
            case 4: wgrad_block<NV, 4>(p, in, dyp, it, c, t, r, s0, out); break;
            case 3: wgrad_block<NV, 3>(p, in, dyp, it, c, t, r, s0, out); break;
            case 2: wgrad_block<NV, 2>(p, in, dyp, it, c, t, r, s0, out); break;
            default: wgrad_block<NV, 1>(p, in, dyp, it, c, t, r, s0, out); break;
          }
        }
}

// The panel's vector count: the last panel of K may fill fewer.
int panel_vectors(const Conv3dParams& p, int64_t panel) {
  return static_cast<int>((std::min<int64_t>(kFilters, p.K - panel * kFilters) + kLanes - 1) / kLanes);
}

void fprop_item(const Conv3dParams& p, const PaddedInput& in, const float* wp, const PlaneItem& it, float* y) {
  switch (panel_vectors(p, it.panel)) {
    case 1: return fprop_plane<1>(p, in, wp, it, y);
#if !defined(__AVX512F__)
    case 2: return fprop_plane<2>(p, in, wp, it, y);
#endif
    default: return fprop_plane<kVectors>(p, in, wp, it, y);
  }
}

void wgrad_item(const Conv3dParams& p, const PaddedInput& in, const float* dyp, const PlaneItem& it, float* partial) {
  switch (panel_vectors(p, it.panel)) {
    case 1: return wgrad_plane<1>(p, in, dyp, it, partial);
#if !defined(__AVX512F__)
    case 2: return wgrad_plane<2>(p, in, dyp, it, partial);
#endif
    default: return wgrad_plane<kVectors>(p, in, dyp, it, partial);
  }
}
#else
// The portable loops: the same tiles and order, one lane at a time.
void fprop_item(const Conv3dParams& p, const PaddedInput& in, const float* wp, const PlaneItem& it, float* y) {
  const int64_t k0 = it.panel * kFilters, rows = std::min<int64_t>(kFilters, p.K - k0), V = p.output_spatial();
  for (int64_t oy = 0; oy < p.P; ++oy)
    for (int64_t q0 = 0; q0 < p.Q; q0 += kVoxels) {
      float acc[kVoxels][kFilters] = {};
      const float* a = wp;
      for (int64_t c = 0; c < p.C; ++c)
        for (int64_t t = 0; t < p.T; ++t)
          for (int64_t r = 0; r < p.R; ++r) {
            const float* row = in.row(it.n, c, it.z * p.stride[0] + t * p.dilation[0], oy * p.stride[1] + r * p.dilation[1]) + q0 * p.stride[2];
            for (int64_t s = 0; s < p.S; ++s, a += kFilters)
              for (int j = 0; j < kVoxels; ++j) {
                const float b = row[s * p.dilation[2] + j * p.stride[2]];
                for (int k = 0; k < kFilters; ++k) acc[j][k] += b * a[k];
              }
          }
      const int64_t voxels = std::min<int64_t>(kVoxels, p.Q - q0);
      float* dst = y + (it.n * p.K + k0) * V + (it.z * p.P + oy) * p.Q + q0;
      for (int64_t k = 0; k < rows; ++k)
        for (int64_t j = 0; j < voxels; ++j) dst[k * V + j] = acc[j][k];
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

}  // namespace

bool conv3d_padded_applies(const Conv3dParams& p) {
  return p.groups == 1 && p.C <= kMaxChannels && p.taps() >= 27 && p.output_padding == Dims3{0, 0, 0};
}

void conv3d_padded_fprop(const Conv3dParams& p, const float* x, const float* w, float* y) {
  MED3D_CHECK(conv3d_padded_applies(p), "conv3d_padded_fprop: needs one group, at most ", kMaxChannels,
              " input channels and at least 27 taps, got ", p.groups, " groups, ", p.C, " channels, ", p.taps(),
              " taps; dispatch through conv3d_fprop instead");
  const PaddedInput in = pad_input(p, x);
  const std::vector<float> wp = pack_filters_inner(p, w);
  const int64_t panels = panel_count(p), items = panels * p.N * p.Z;
  const int64_t macs = p.N * p.K * p.output_spatial() * p.C * p.taps();
#pragma omp parallel for schedule(static) if (macs > kParallelMacs)
  for (int64_t item = 0; item < items; ++item) {
    const PlaneItem it = plane_item(p, item);
    fprop_item(p, in, wp.data() + it.panel * p.C * p.taps() * kFilters, it, y);
  }
}

void conv3d_padded_wgrad(const Conv3dParams& p, const float* x, const float* dy, float* dw) {
  MED3D_CHECK(conv3d_padded_applies(p), "conv3d_padded_wgrad: needs one group, at most ", kMaxChannels,
              " input channels and at least 27 taps, got ", p.groups, " groups, ", p.C, " channels, ", p.taps(),
              " taps; dispatch through conv3d_wgrad instead");
  const PaddedInput in = pad_input(p, x);
  const int64_t panels = panel_count(p), plane = p.P * p.Q, V = p.output_spatial(), taps = p.taps();
  // dyp[panel][n][z][y][q][f] = dy[n][panel * kFilters + f][z][y][q], 0 past K, in blocks of
  // kBlock voxels: a filter at a time over all voxels, every write missed the cache.
  constexpr int64_t kBlock = 64;
  std::vector<float> dyp(static_cast<std::size_t>(panels * p.N * V * kFilters), 0.0f);
  const int64_t blocks = (V + kBlock - 1) / kBlock;
  const int64_t macs = p.N * p.K * V * p.C * taps;
#pragma omp parallel for schedule(static) if (macs > kParallelMacs)
  for (int64_t item = 0; item < panels * p.N * blocks; ++item) {
    const int64_t panel = item / (p.N * blocks), n = item / blocks % p.N, v0 = item % blocks * kBlock;
    const int64_t v1 = std::min(V, v0 + kBlock);
    float* dst = dyp.data() + (panel * p.N + n) * V * kFilters;
    for (int64_t k = panel * kFilters; k < std::min(p.K, (panel + 1) * kFilters); ++k) {
      const float* src = dy + (n * p.K + k) * V;
      for (int64_t v = v0; v < v1; ++v) dst[v * kFilters + k % kFilters] = src[v];
    }
  }
  // Per plane item its sums [c][tap][f]; added up over samples and planes below.
  const int64_t items = panels * p.N * p.Z, per_item = p.C * taps * kFilters;
  std::vector<float> partial(static_cast<std::size_t>(items * per_item));
#pragma omp parallel for schedule(static) if (macs > kParallelMacs)
  for (int64_t item = 0; item < items; ++item) {
    const PlaneItem it = plane_item(p, item);
    const float* plane_dy = dyp.data() + ((it.panel * p.N + it.n) * p.Z + it.z) * plane * kFilters;
    wgrad_item(p, in, plane_dy, it, partial.data() + item * per_item);
  }
  // Sum the items' rows in order (contiguous reads), then transpose [panel][c, tap][f] into dw.
  std::vector<float> sums(static_cast<std::size_t>(panels * per_item));
  const int64_t rows = p.C * taps;
#pragma omp parallel for schedule(static) if (macs > kParallelMacs)
  for (int64_t pr = 0; pr < panels * rows; ++pr) {
    const int64_t panel = pr / rows, row = pr % rows;
    float acc[kFilters] = {};
    for (int64_t nz = 0; nz < p.N * p.Z; ++nz) {
      const float* src = partial.data() + (nz * panels + panel) * per_item + row * kFilters;
      for (int f = 0; f < kFilters; ++f) acc[f] += src[f];
    }
    std::copy(acc, acc + kFilters, sums.data() + pr * kFilters);
  }
  for (int64_t k = 0; k < p.K; ++k)
    for (int64_t row = 0; row < rows; ++row)
      dw[k * rows + row] = sums[static_cast<std::size_t>((k / kFilters * rows + row) * kFilters + k % kFilters)];
}

}  // namespace med3d::kernels::cpu
