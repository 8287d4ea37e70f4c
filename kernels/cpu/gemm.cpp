// BLIS-style f32 GEMM (see the header): pack, block, microkernel, OpenMP over blocks of C.
#include "med3d/kernels/cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <type_traits>
#include <vector>

#include "med3d/error.h"
#include "simd.h"

namespace med3d::kernels::cpu {

namespace {

#if defined(__AVX512F__)
// 8 x 32: 16 zmm accumulators, two zmm of B per k, A broadcast from memory (m = 64, conv's K,
// fills whole panels). On Zen 4 (2 threads, against 6 x 64) the 1x1x1 bottleneck fprop/dgrad/wgrad
// took 0.81x/0.82x/0.90x the time, DenseASPP d18 fprop/dgrad 0.95x/0.93x, layer4 wgrad 0.95x,
// the rest level; 12 x 32 and 10 x 32 were between, 14 x 32 and 8 x 48 slower.
constexpr int64_t kMR = 8, kNR = 32;
#elif defined(MED3D_SIMD)
// 6 x 16: 12 of the 16 ymm registers accumulate, two hold B, one A's broadcast.
constexpr int64_t kMR = 6, kNR = 16;
#else
constexpr int64_t kMR = 4, kNR = 16;
#endif
// A's MC x KC block stays in L2: 512 KiB of the AVX-512 machine's 1 MiB, 258 KiB of the AVX2
// (Zen 3) machine's 512 KiB, where 510 rows spilled (the 1x1x1 bottleneck dgrad, 1024 rows of
// A: 7% faster in paired runs with 258). B's KC x NR micro-panel (32 KiB; 16 KiB on AVX2)
// mostly in L1; NC bounds the packed B panel (KC x NC, 4 MiB) in L3. KC = 128 and 192 measured
// within noise of 256 here; 256 halves the passes over C.
constexpr int64_t kKC = 256;
#if defined(__AVX512F__)
constexpr int64_t kMC = kMR * 64;
#else
constexpr int64_t kMC = kMR * 43;
#endif
constexpr int64_t kNC = 4096;
// A block of B at most this wide (a pointwise conv's 64-voxel items) runs row panel by row panel:
// each A panel crosses B's few micro-panels from L1, where column panel by column panel the
// whole A block (258 KiB) came from L2 once per micro-panel (1x1x1 bottleneck fprop 0.97x the
// time, DenseASPP d18 fprop 0.96x).
constexpr int64_t kFewPanelColumns = 4 * kNR;
constexpr int64_t kDeepKC = 1024;
// Below this many multiply-adds one thread is faster than waking a team.
constexpr int64_t kParallelGrain = kGemmParallelMacs;
// Below this many elements of A, GemmPackedA packs on one thread.
constexpr int64_t kPackParallelGrain = int64_t(1) << 14;

struct AlignedDelete {
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }
};
using Buffer = std::unique_ptr<float[], AlignedDelete>;
Buffer make_buffer(int64_t elements) {
  return Buffer(new (std::align_val_t(64)) float[static_cast<std::size_t>(std::max<int64_t>(elements, 1))]);
}

// ap[(panel * kc + p) * MR + r] = A(i0 + panel * MR + r, p0 + p), zero past row m.
void pack_a(const GemmView& a, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* ap) {
  for (int64_t panel = 0; panel < mc; panel += kMR) {
    const int64_t rows = std::min(kMR, mc - panel);
    const float* src = a.data + (i0 + panel) * a.row_stride + p0 * a.col_stride;
    if (a.col_stride == 1) {  // rows of A contiguous: each read front to back
      int64_t done = 0;
#if defined(MED3D_SIMD) && !defined(__AVX512F__)
      // A whole panel 8 depths at a time: its 6 rows' next 8 floats transposed in registers (two
      // zero rows make the 8 x 8 block) into 8 columns of 6, each stored as 8 floats whose last 2
      // the next column overwrites; the last block is left to the loop below, so no store runs
      // past the panel. (Element by element this packing was 9% of the 1x1x1 bottleneck's fprop.)
      static_assert(kMR == 6 && simd::kLanes == 8);
      if (rows == kMR)
        for (; done + 8 < kc; done += 8) {
          __m256 r[8];
          for (int i = 0; i < 6; ++i) r[i] = _mm256_loadu_ps(src + i * a.row_stride + done);
          r[6] = r[7] = _mm256_setzero_ps();
          simd::transpose8_registers(r);
          for (int j = 0; j < 8; ++j) _mm256_storeu_ps(ap + (done + j) * kMR, r[j]);
        }
#endif
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t p = done; p < kc; ++p) ap[p * kMR + r] = src[r * a.row_stride + p];
      for (int64_t r = rows; r < kMR; ++r)
        for (int64_t p = 0; p < kc; ++p) ap[p * kMR + r] = 0.0f;
    } else {
      // Depth outermost: a transposed A (dgrad's W^T) read kMR floats at a time and the panel
      // written front to back (row by row, the 1x1x1 bottleneck dgrad took 2.34 ms, this way 1.60 on
      // 2 threads; for a row-major A depth outermost doubled the classifier wgrad's time).
      int64_t p = 0;
#if defined(MED3D_SIMD) && !defined(__AVX512F__)
      // A column's 6 rows contiguous: one masked 6-float load and one 8-float store per depth
      // (its last 2 floats are overwritten by the next depth's store, so the last depth is left
      // to the loop below). Element by element, the 1x1x1 bottleneck dgrad took 1.035x the time
      // with its weights from memory (level from the caches).
      if (a.row_stride == 1 && rows == kMR) {
        const __m256i six = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
        for (; p + 1 < kc; ++p) _mm256_storeu_ps(ap + p * kMR, _mm256_maskload_ps(src + p * a.col_stride, six));
      }
#elif defined(__AVX512F__)
      // A column's 8 rows contiguous: one 8-float load and store per depth. Element by element this
      // packing was 6.5% of the 1x1x1 bottleneck's dgrad on 2 threads (now 4.2%): the dgrad takes
      // 0.975x the time, the head's transposed conv 0.944x.
      static_assert(kMR == 8);
      if (a.row_stride == 1 && rows == kMR)
        for (; p < kc; ++p) _mm256_storeu_ps(ap + p * kMR, _mm256_loadu_ps(src + p * a.col_stride));
#endif
      for (; p < kc; ++p)
        for (int64_t r = 0; r < kMR; ++r) ap[p * kMR + r] = r < rows ? src[p * a.col_stride + r * a.row_stride] : 0.0f;
    }
    ap += kc * kMR;
  }
}

constexpr int64_t kPackAhead = 16;
// bp[(panel * kc + p) * NR + c] = B(p0 + p, j0 + panel * NR + c), zero past column n.
void pack_b(const GemmView& b, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* bp) {
  if (b.col_stride == 1) {
    // Row by row: each source row is read once, front to back (panel by panel would read it
    // in NR-float pieces, one DRAM page visit each).
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = b.data + (p0 + p) * b.row_stride + j0;
      // The row 16 ahead prefetched: B's rows lie far apart (a pointwise conv's input channels,
      // 8 KiB at 8x16x16), each giving a few lines, which the hardware prefetchers did not fetch
      // ahead (DenseASPP d18 fprop 0.80x the time, the 1x1x1 bottleneck fprop 0.93-0.98x, dgrad
      // 0.99x; 16 rows ahead against 8: 0.96-0.99x the time, 32 against 16: 1.00-1.03x).
      if (p + kPackAhead < kc)
        for (int64_t j = 0; j < nc; j += 16) __builtin_prefetch(src + kPackAhead * b.row_stride + j);
      for (int64_t panel = 0; panel < nc; panel += kNR) {
        const int64_t cols = std::min(kNR, nc - panel);
        float* dst = bp + panel * kc + p * kNR;
        if (cols == kNR) {  // a constant size, copied inline (a call per 64 bytes was half the packing)
          std::memcpy(dst, src + panel, kNR * sizeof(float));
          continue;
        }
        std::memcpy(dst, src + panel, static_cast<std::size_t>(cols) * sizeof(float));
        std::fill(dst + cols, dst + kNR, 0.0f);
      }
    }
    return;
  }
  for (int64_t panel = 0; panel < nc; panel += kNR) {
    const int64_t cols = std::min(kNR, nc - panel);
    // Chunks of k keep the written rows of the panel in L1 (a whole KC x NR panel does not
    // fit when the source is transposed, wgrad's col^T, and every column scatters over it).
    constexpr int64_t kChunk = 16;
    // Rows [0, done) of columns [0, full) are packed by kLanes x kLanes register transposes (a
    // transposed source), the rest element by element (under AVX2 the 1x1x1 classifier's wgrad
    // packing x^T element by element: its wgrad 0.59 -> 0.32 ms, one thread).
    int64_t done = 0, full = 0;
#if defined(MED3D_SIMD)
    if (b.row_stride == 1) {
      constexpr int64_t L = simd::kLanes;
      done = kc / L * L;
      full = cols / L * L;
      for (int64_t c = 0; c < full; c += L)
        for (int64_t pp = 0; pp < done; pp += L)
          simd::transpose_block(b.data + p0 + pp + (j0 + panel + c) * b.col_stride, b.col_stride, bp + pp * kNR + c, kNR);
    }
#endif
    const auto scalar = [&](int64_t p_begin, int64_t p_end, int64_t c_begin) {
      for (int64_t pp = p_begin; pp < p_end; pp += kChunk) {
        const int64_t pn = std::min(kChunk, p_end - pp);
        for (int64_t c = c_begin; c < cols; ++c) {
          const float* src = b.data + (p0 + pp) * b.row_stride + (j0 + panel + c) * b.col_stride;
          float* dst = bp + pp * kNR + c;
          for (int64_t p = 0; p < pn; ++p) dst[p * kNR] = src[p * b.row_stride];
        }
      }
    };
    scalar(0, done, full);
    scalar(done, kc, 0);
    for (int64_t p = 0; p < kc; ++p) std::fill(bp + p * kNR + cols, bp + (p + 1) * kNR, 0.0f);
    bp += kc * kNR;
  }
}

// c[MR x NR] (leading dimension ldc) = (add ? c : 0) + A's panel * B's panel over kc, where
// a_at(i, p) is the panel's A(i, p): packed (a_at reads ap[p * kMR + i]) or read in place.
#if defined(MED3D_SIMD)
template <class AAt>
void microkernel(int64_t kc, AAt a_at, const float* __restrict bp, float* c, int64_t ldc, bool add,
                 bool stream = false) {
  using namespace simd;
  constexpr int kV = kNR / kLanes;
  Vec acc[kMR][kV];
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kV; ++v) acc[i][v] = zero();
  for (int64_t p = 0; p < kc; ++p) {
    Vec b[kV];
#pragma GCC unroll 4
    for (int v = 0; v < kV; ++v) b[v] = load(bp + kLanes * v);
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i) {
      const Vec a = broadcast(a_at(i, p));
#pragma GCC unroll 4
      for (int v = 0; v < kV; ++v) acc[i][v] = fma(a, b[v], acc[i][v]);
    }
    bp += kNR;
  }
  // Streamed where every row of the tile starts on a vector boundary (the caller's C never adds).
  if (stream && reinterpret_cast<uintptr_t>(c) % sizeof(Vec) == 0 && ldc % kLanes == 0) {
#pragma GCC unroll 16
    for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < kV; ++v) store_streaming(c + i * ldc + kLanes * v, acc[i][v]);
    return;
  }
#pragma GCC unroll 16
  for (int i = 0; i < kMR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kV; ++v) {
      float* dst = c + i * ldc + kLanes * v;
      store(dst, add ? simd::add(load(dst), acc[i][v]) : acc[i][v]);
    }
}
#else
template <class AAt>
void microkernel(int64_t kc, AAt a_at, const float* __restrict bp, float* c, int64_t ldc, bool add, bool = false) {
  float acc[kMR][kNR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    for (int64_t i = 0; i < kMR; ++i) {
      const float a = a_at(i, p);
      for (int64_t j = 0; j < kNR; ++j) acc[i][j] += a * bp[j];
    }
    bp += kNR;
  }
  for (int64_t i = 0; i < kMR; ++i)
    for (int64_t j = 0; j < kNR; ++j) c[i * ldc + j] = add ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}
#endif

void packed_microkernel(int64_t kc, const float* __restrict ap, const float* bp, float* c, int64_t ldc, bool add,
                        bool stream = false) {
  microkernel(kc, [ap](int i, int64_t p) { return ap[p * kMR + i]; }, bp, c, ldc, add, stream);
}
// The microkernel over A's panel of rows [i, i + kMR) at depth block pc (its packed panels of the
// block start at apanels, row i0): packed, or read in place where a packed A keeps them there.
void panel_microkernel(const GemmView&, const float* apanels, int64_t i0, int64_t i, int64_t, int64_t kc,
                       const float* bp, float* c, int64_t ldc, bool add, bool stream) {
  packed_microkernel(kc, apanels + (i - i0) * kc, bp, c, ldc, add, stream);
}
void panel_microkernel(const GemmPackedA& a, const float*, int64_t, int64_t i, int64_t pc, int64_t kc, const float* bp,
                       float* c, int64_t ldc, bool add, bool stream) {
  // A deeper block (Packs::depth) runs through blocks of kKC depths in turn, each added into C: a
  // packed A is stored in such blocks, and rows read in place are summed the same way so that they
  // give the bits of a stored A's blocks (which path runs depends on the thread count).
  const int64_t lda = a.row_pitch();
  for (int64_t p = 0; p < kc; p += kKC) {
    const int64_t depth = std::min(kKC, kc - p);
    const bool add_block = add || p > 0;
    // (gemm_block streams C only where its depth is one such block)
    if (const float* __restrict rows = a.rows_in_place(i, pc + p))
      microkernel(depth, [rows, lda](int r, int64_t q) { return rows[r * lda + q]; }, bp + p * kNR, c, ldc, add_block,
                  stream);
    else
      packed_microkernel(depth, a.panels(i, pc + p), bp + p * kNR, c, ldc, add_block, stream);
  }
}

// Packing buffers for one thread's band of C (rows x cols, depth k): `a` unless A comes
// packed, `b` for one panel when the band's rows are one block and B's rows are not contiguous
// (gemm_block packs B panel by panel then), else for one block of `columns`, `tile` for one
// transposed source block (NR x KC) when B is a transposed GemmSource.
struct Packs {
  // With a single block of A rows (conv's K output channels) each B panel is used once: packed
  // one micro-panel at a time it is still in L1/L2 when the microkernels read it, where a whole
  // KC x NC block would go out to L3 and back. A block of up to kL2BlockB floats stays in L2, and
  // is packed whole when B is stored with contiguous rows, reading them front to back (the 1x1x1
  // bottleneck fprop's x, 256 voxels x 1024 channels: packing each panel's 256 rows of 64 bytes at
  // a 1 KiB stride took ~12% of its time, 4% this way). Wider B are packed in blocks of that
  // many columns, `columns` (panel by panel, DenseASPP's d18 fprop read 16 floats from each of
  // x's rows, 8 KiB apart, per panel: 0.87x the time in blocks). A source fills panel by panel.
  static constexpr int64_t kL2BlockB = int64_t(1) << 16;
  bool panel_by_panel;
  int64_t columns;  // of B per packed block (gemm_block's column step)
  // Depths per block: kKC, or, where A comes prepared (GemmPackedA: its rows read in place, a
  // packed panel in kKC blocks in turn) and B's contiguous rows are packed whole for a few
  // micro-panels (a pointwise conv's items), up to kDeepKC, B's block (256 KiB) still in L2: C is
  // then summed in fewer passes. 1x1x1 bottleneck fprop 0.90-0.92x the time (large scale 0.94x),
  // DenseASPP d24 fprop 0.90-0.94x in one binary (d18, the same GEMMs, level against the previous
  // build); 512 deep: 0.95x / 0.96x. (kKC = 512 everywhere made DenseASPP d12's per-tap GEMMs,
  // whose A is packed per block, 1.045x.)
  int64_t depth;
  Buffer a, b, tile;
  // B's columns per packed block (gemm_block's column step) for a band of `rows` rows of C.
  static int64_t column_block(int64_t rows, int64_t k, bool b_rows_contiguous) {
    return rows <= kMC && b_rows_contiguous ? std::clamp(kL2BlockB / std::min(kKC, k) / kNR * kNR, kNR, kNC) : kNC;
  }
  static int64_t block_depth(int64_t rows, int64_t cols, bool pack_a, bool b_rows_contiguous) {
    const bool few = (cols + kNR - 1) / kNR * kNR <= kFewPanelColumns;
    return !pack_a && b_rows_contiguous && rows <= kMC && few ? kDeepKC : kKC;
  }
  Packs(int64_t rows, int64_t cols, int64_t k, bool pack_a, bool source_tile, bool b_rows_contiguous)
      : panel_by_panel(rows <= kMC && !b_rows_contiguous),
        columns(column_block(rows, k, b_rows_contiguous)),
        depth(block_depth(rows, cols, pack_a, b_rows_contiguous)),
        a(pack_a ? make_buffer(std::min(kMC, (rows + kMR - 1) / kMR * kMR) * std::min(kKC, k)) : nullptr),
        b(make_buffer((panel_by_panel ? kNR : std::min(columns, (cols + kNR - 1) / kNR * kNR)) * std::min(depth, k))),
        tile(source_tile ? make_buffer(kNR * std::min(kKC, k)) : nullptr) {}
};

// The A panels of block (ic, mc) x (pc, kc): packed now, or already.
const float* a_panels(const GemmView& a, int64_t ic, int64_t mc, int64_t pc, int64_t kc, Packs& packs) {
  pack_a(a, ic, mc, pc, kc, packs.a.get());
  return packs.a.get();
}
const float* a_panels(const GemmPackedA&, int64_t, int64_t, int64_t, int64_t, Packs&) { return nullptr; }

void pack_b(const GemmView& b, int64_t p0, int64_t kc, int64_t j0, int64_t nc, Packs& packs) {
  pack_b(b, p0, kc, j0, nc, packs.b.get());
}

// The same panels from a source: filled in place panel by panel, or, for a transposed source,
// filled into the tile as M's rows and transposed by the strided packing above.
void pack_b(const GemmSource& b, int64_t p0, int64_t kc, int64_t j0, int64_t nc, Packs& packs) {
  for (int64_t panel = 0; panel < nc; panel += kNR) {
    const int64_t cols = std::min(kNR, nc - panel);
    float* dst = packs.b.get() + panel * kc;
    if (b.transposed) {
      b.fill(j0 + panel, cols, p0, kc, packs.tile.get(), kc);
      pack_b(GemmView{packs.tile.get(), 1, kc}, 0, kc, 0, cols, dst);
      continue;
    }
    b.fill(p0, kc, j0 + panel, cols, dst, kNR);
    if (cols < kNR)
      for (int64_t p = 0; p < kc; ++p) std::fill(dst + p * kNR + cols, dst + (p + 1) * kNR, 0.0f);
  }
}

// C rows [m0, m1) x columns [n0, n1), all of k; one thread, its own packing buffers.
template <class AOperand, class BOperand>
void gemm_block(const AOperand& a, const BOperand& b, float* c, int64_t ldc, int64_t m0, int64_t m1, int64_t n0,
                int64_t n1, int64_t k, bool accumulate, Packs& packs, GemmStore store) {
  Buffer& bpack = packs.b;
  alignas(64) float tile[kMR * kNR];
  const bool panel_by_panel = packs.panel_by_panel;  // (packs was sized for a band at least this large)
  const int64_t depth = packs.depth;
  // C streamed only where each element is stored once, whole: no accumulation, one depth block.
  const bool stream = store == GemmStore::streamed && !accumulate && k <= std::min(depth, kKC);
  for (int64_t jc = n0; jc < n1; jc += packs.columns) {
    const int64_t nc = std::min(packs.columns, n1 - jc);
    for (int64_t pc = 0; pc < k; pc += depth) {
      const int64_t kc = std::min(depth, k - pc);
      const bool add = accumulate || pc > 0;
      if (!panel_by_panel) pack_b(b, pc, kc, jc, nc, packs);
      for (int64_t ic = m0; ic < m1; ic += kMC) {
        const int64_t mc = std::min(kMC, m1 - ic);
        const float* apanels = a_panels(a, ic, mc, pc, kc, packs);
        const auto tile_at = [&](int64_t ir, int64_t jr, const float* bp) {
          const int64_t mr = std::min(kMR, mc - ir), nr = std::min(kNR, nc - jr);
          float* cij = c + (ic + ir) * ldc + jc + jr;
          if (mr == kMR && nr == kNR) {
            panel_microkernel(a, apanels, ic, ic + ir, pc, kc, bp, cij, ldc, add, stream);
            return;
          }
          // Edge tile: the same kernel into a local tile, then the same single add per element.
          panel_microkernel(a, apanels, ic, ic + ir, pc, kc, bp, tile, kNR, false, false);
          for (int64_t i = 0; i < mr; ++i)
            for (int64_t j = 0; j < nr; ++j)
              cij[i * ldc + j] = add ? cij[i * ldc + j] + tile[i * kNR + j] : tile[i * kNR + j];
        };
        if (!panel_by_panel && nc <= kFewPanelColumns) {
          for (int64_t ir = 0; ir < mc; ir += kMR)
            for (int64_t jr = 0; jr < nc; jr += kNR) tile_at(ir, jr, bpack.get() + jr * kc);
          continue;
        }
        for (int64_t jr = 0; jr < nc; jr += kNR) {
          if (panel_by_panel) pack_b(b, pc, kc, jc + jr, std::min(kNR, nc - jr), packs);
          const float* bp = bpack.get() + (panel_by_panel ? 0 : jr * kc);
          for (int64_t ir = 0; ir < mc; ir += kMR) tile_at(ir, jr, bp);
        }
      }
    }
  }
#if defined(MED3D_SIMD)
  if (stream) _mm_sfence();  // the streamed stores ordered before the caller's next synchronisation
#endif
}

// C with m <= kFewRows rows, or a depth k <= kFewRows, from a B with contiguous rows (a
// pointwise conv with few filters, the 2-class classifier over every voxel, and its dgrad).
// Packing B into panels copied all of it to fill panels a third full, or for a few products
// per element; here B's rows are read straight from B, and a tile of at most kFewRows rows of C
// by a few vectors sums in registers, so that each element of C is written once per depth block.
// Columns go in blocks of kFewColumns: long runs of each row of B and C (the classifier's dgrad,
// 32 rows of C written, 0.19 -> 0.10-0.15 ms on 2 threads against blocks of 256; its fprop
// 0.13 -> 0.09). Each element gets the microkernel's operations in its order (a sum from +0 per
// depth block, one fused multiply-add per depth, then one add into C), so the bits are those of
// the packed path.
constexpr int64_t kFewRows = kGemmFewRows, kFewColumns = 2048;

// The microkernel's update of one sum, as it rounds it.
inline float multiply_add(float a, float b, float s) {
#if defined(MED3D_SIMD)
  return std::fma(a, b, s);
#else
  return s + a * b;
#endif
}

#if defined(MED3D_SIMD)
// C rows [i0, i0 + MI) x columns [j, j + NV * kLanes), depth [p0, p0 + kc). With `stream`, B is
// read once (C has a single tile of rows): each of its rows is prefetched 2 KiB ahead (a hint:
// past B's end it reads nothing). The hardware prefetchers alone kept too few of B's many rows
// in flight (the classifier's 32 input channels, 512 KiB apart at 1x32x32x64x64): its fprop took
// 0.84x the time with x from memory, 0.79x at 2x32x16x32x32 from the caches (1 KiB ahead:
// level with 2; 4 KiB: slower).
template <int MI, int NV, bool stream>
void few_rows_tile(const GemmView& a, int64_t i0, const GemmView& b, int64_t p0, int64_t kc, int64_t j, float* c,
                   int64_t ldc, bool add) {
  using namespace simd;
  Vec acc[MI][NV];
#pragma GCC unroll 4
  for (int i = 0; i < MI; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = zero();
  const float* ap = a.data + i0 * a.row_stride + p0 * a.col_stride;
  const float* bp = b.data + p0 * b.row_stride + j;
  for (int64_t p = 0; p < kc; ++p, ap += a.col_stride, bp += b.row_stride) {
    if constexpr (stream)
      for (int v = 0; v < NV * kLanes; v += 16) __builtin_prefetch(bp + 512 + v);
    Vec bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = load(bp + kLanes * v);
#pragma GCC unroll 4
    for (int i = 0; i < MI; ++i) {
      const Vec av = broadcast(ap[i * a.row_stride]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = fma(av, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MI; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* dst = c + (i0 + i) * ldc + j + kLanes * v;
      store(dst, add ? simd::add(load(dst), acc[i][v]) : acc[i][v]);
    }
}

// The tiles of MI rows over columns [j0, j1) while whole ones fit; returns the first column left.
// Eight accumulators (four with one row) cover the FMA latency.
template <int MI, bool stream>
int64_t few_rows_tiles(const GemmView& a, int64_t i0, const GemmView& b, int64_t p0, int64_t kc, int64_t j0, int64_t j1,
                       float* c, int64_t ldc, bool add) {
  constexpr int NV = MI >= 3 ? 2 : 4;
  int64_t j = j0;
  for (; j + NV * simd::kLanes <= j1; j += NV * simd::kLanes)
    few_rows_tile<MI, NV, stream>(a, i0, b, p0, kc, j, c, ldc, add);
  for (; j + simd::kLanes <= j1; j += simd::kLanes) few_rows_tile<MI, 1, stream>(a, i0, b, p0, kc, j, c, ldc, add);
  return j;
}
template <bool stream>
int64_t few_rows_band(int64_t mi, const GemmView& a, int64_t i0, const GemmView& b, int64_t p0, int64_t kc, int64_t j0,
                      int64_t j1, float* c, int64_t ldc, bool add) {
  switch (mi) {
    case 1: return few_rows_tiles<1, stream>(a, i0, b, p0, kc, j0, j1, c, ldc, add);
    case 2: return few_rows_tiles<2, stream>(a, i0, b, p0, kc, j0, j1, c, ldc, add);
    case 3: return few_rows_tiles<3, stream>(a, i0, b, p0, kc, j0, j1, c, ldc, add);
    default: return few_rows_tiles<4, stream>(a, i0, b, p0, kc, j0, j1, c, ldc, add);
  }
}
#endif

void gemm_few_rows(const GemmView& a, const GemmView& b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
                   bool accumulate) {
  const int64_t blocks = (n + kFewColumns - 1) / kFewColumns;
#pragma omp parallel for schedule(static) if (omp_get_level() == 0 && m * n * k > kParallelGrain)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t j0 = block * kFewColumns, j1 = std::min(n, j0 + kFewColumns);
    for (int64_t i0 = 0; i0 < m; i0 += kFewRows) {
      const int64_t mi = std::min(kFewRows, m - i0);
      for (int64_t pc = 0; pc < k; pc += kKC) {
        const int64_t kc = std::min(kKC, k - pc);
        const bool add = accumulate || pc > 0;
        int64_t j = j0;
#if defined(MED3D_SIMD)
        j = m <= kFewRows ? few_rows_band<true>(mi, a, i0, b, pc, kc, j0, j1, c, ldc, add)
                          : few_rows_band<false>(mi, a, i0, b, pc, kc, j0, j1, c, ldc, add);
#endif
        for (int64_t i = i0; i < i0 + mi; ++i)
          for (int64_t jj = j; jj < j1; ++jj) {
            float s = 0.0f;
            for (int64_t p = pc; p < pc + kc; ++p)
              s = multiply_add(a.data[i * a.row_stride + p * a.col_stride], b.data[p * b.row_stride + jj], s);
            c[i * ldc + jj] = add ? c[i * ldc + jj] + s : s;
          }
      }
    }
  }
}

// C = (accumulate ? C : 0) + the sum over terms t of A_t B_t (each m x k times k x n), the terms
// added in turn, each as gemm_f32 alone would (bitwise the same as gemm_f32 term by term), in one
// parallel region: each thread runs its band of C through every term.
template <class AOperand, class BOperand>
void gemm_any(std::span<const AOperand> as, std::span<const BOperand> bs, float* c, int64_t ldc, int64_t m, int64_t n,
              int64_t k, bool accumulate, GemmStore store = GemmStore::cached) {
  MED3D_CHECK(m >= 0 && n >= 0 && k >= 0, "gemm_f32: expected non-negative sizes, got m=", m, " n=", n,
              " k=", k);
  MED3D_CHECK(ldc >= n, "gemm_f32: expected ldc >= n=", n, ", got ", ldc, "; pass the row pitch of C");
  MED3D_CHECK(as.size() == bs.size() && !as.empty(),
              "gemm_f32_sum: expected as many B terms as A terms (at least one), got ", as.size(), " A and ",
              bs.size(), " B");
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    return;
  }
  const std::size_t terms = as.size();
  bool b_rows_contiguous = false;
  if constexpr (std::is_same_v<BOperand, GemmView>)
    b_rows_contiguous = std::all_of(bs.begin(), bs.end(), [](const GemmView& b) { return b.col_stride == 1; });
  if constexpr (std::is_same_v<AOperand, GemmView> && std::is_same_v<BOperand, GemmView>) {
    if ((m <= kFewRows || k <= kFewRows) && b_rows_contiguous && n >= kNR) {
      for (std::size_t t = 0; t < terms; ++t) gemm_few_rows(as[t], bs[t], c, ldc, m, n, k, accumulate || t > 0);
      return;
    }
  }
  // Split C into `parts` bands of whole tiles along its longer side (in tiles); the blocking
  // inside a band is the same as for the whole matrix, so the split never changes a result.
  // A source's B is gathered, not copied, so each thread packing all of it costs more than
  // each packing all of A: split its columns whenever every thread gets two panels.
  const int64_t m_tiles = (m + kMR - 1) / kMR, n_tiles = (n + kNR - 1) / kNR;
  const bool split_n =
      n_tiles >= m_tiles || (std::is_same_v<BOperand, GemmSource> && n_tiles >= 2 * omp_get_max_threads());
  const int64_t tiles = split_n ? n_tiles : m_tiles, tile = split_n ? kNR : kMR;
  int64_t parts = 1;
  if (omp_get_level() == 0 && m * n * k > kParallelGrain)  // inside any region, even an inactive one: one thread
    parts = std::min<int64_t>(omp_get_max_threads(), tiles);
  const int64_t extent = split_n ? n : m, band = (tiles + parts - 1) / parts * tile;
  // A packed once, for all threads and column blocks, where each would pack all of it again:
  // the columns split over the threads, or more of them than one packed block of B (the 1x1x1
  // bottleneck fprop at 1x1024x8x16x16: 4 blocks on each of 2 threads, A packed 8 times).
  const int64_t band_rows = split_n ? m : std::min(band, extent), band_cols = split_n ? std::min(band, extent) : n;
  if constexpr (std::is_same_v<AOperand, GemmView>) {
    if ((split_n && parts > 1) || band_cols > Packs::column_block(band_rows, k, b_rows_contiguous)) {
      std::vector<GemmPackedA> packed;
      packed.reserve(terms);
      for (const GemmView& a : as) packed.emplace_back(a, m, k);
      gemm_any(std::span<const GemmPackedA>(packed), bs, c, ldc, m, n, k, accumulate, store);
      return;
    }
  }
  // Allocated before the parallel region so that a failed allocation throws to the caller.
  std::vector<Packs> packs;
  packs.reserve(static_cast<std::size_t>(parts));
  for (int64_t part = 0; part < parts; ++part)
    packs.emplace_back(band_rows, band_cols, k, std::is_same_v<AOperand, GemmView>,
                       std::is_same_v<BOperand, GemmSource>, b_rows_contiguous);
  if (parts == 1) {
    for (std::size_t t = 0; t < terms; ++t)
      gemm_block(as[t], bs[t], c, ldc, 0, m, 0, n, k, accumulate || t > 0, packs[0], store);
    return;
  }
#pragma omp parallel num_threads(static_cast<int>(parts))
  {
    const int64_t team = omp_get_num_threads();
    for (int64_t part = omp_get_thread_num(); part < parts; part += team) {
      const int64_t lo = std::min(tiles * part / parts * tile, extent);
      const int64_t hi = std::min(tiles * (part + 1) / parts * tile, extent);
      Packs& own = packs[static_cast<std::size_t>(part)];
      for (std::size_t t = 0; t < terms; ++t) {
        if (split_n)
          gemm_block(as[t], bs[t], c, ldc, 0, m, lo, hi, k, accumulate || t > 0, own, store);
        else
          gemm_block(as[t], bs[t], c, ldc, lo, hi, 0, n, k, accumulate || t > 0, own, store);
      }
    }
  }
}
template <class AOperand, class BOperand>
void gemm_any(const AOperand& a, const BOperand& b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
              bool accumulate, GemmStore store = GemmStore::cached) {
  gemm_any(std::span<const AOperand>(&a, 1), std::span<const BOperand>(&b, 1), c, ldc, m, n, k, accumulate, store);
}

}  // namespace

void gemm_f32(const GemmView& a, const GemmView& b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
              bool accumulate) {
  gemm_any(a, b, c, ldc, m, n, k, accumulate);
}

void gemm_f32_sum(std::span<const GemmView> a, std::span<const GemmView> b, float* c, int64_t ldc, int64_t m, int64_t n,
                  int64_t k, bool accumulate) {
  gemm_any(a, b, c, ldc, m, n, k, accumulate);
}

void gemm_f32(const GemmView& a, const GemmSource& b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
              bool accumulate) {
  MED3D_CHECK(b.fill != nullptr, "gemm_f32: the B source has no fill function; set GemmSource::fill");
  gemm_any(a, b, c, ldc, m, n, k, accumulate);
}

void gemm_f32(const GemmPackedA& a, const GemmSource& b, float* c, int64_t ldc, int64_t n, bool accumulate) {
  MED3D_CHECK(b.fill != nullptr, "gemm_f32: the B source has no fill function; set GemmSource::fill");
  gemm_any(a, b, c, ldc, a.rows(), n, a.depth(), accumulate);
}

void gemm_f32(const GemmPackedA& a, const GemmView& b, float* c, int64_t ldc, int64_t n, bool accumulate,
              GemmStore store) {
  gemm_any(a, b, c, ldc, a.rows(), n, a.depth(), accumulate, store);
}

// Rows [0, in_place_) are read in place; depth block pc holds the panels of the other rows, each
// kc(pc) deep: block (i0, p0) starts at p0 * (packed rows) (the blocks before it are KC deep)
// plus (i0 - in_place_) * kc.
namespace {
int64_t padded_rows(int64_t m) { return (m + kMR - 1) / kMR * kMR; }

void check_sizes(int64_t m, int64_t k) {
  MED3D_CHECK(m >= 0 && k >= 0, "GemmPackedA: expected non-negative sizes, got m=", m, " k=", k);
}

// Packs rows [first, padded_rows(m)) of A into dst in that layout.
void pack_rows(const GemmView& a, int64_t m, int64_t k, int64_t first, float* dst) {
  const int64_t packed_rows = padded_rows(m) - first;
  const int64_t panels = packed_rows / kMR, blocks = (k + kKC - 1) / kKC;
#pragma omp parallel for collapse(2) schedule(static) if (omp_get_level() == 0 && packed_rows * k > kPackParallelGrain)
  for (int64_t block = 0; block < blocks; ++block)
    for (int64_t panel = 0; panel < panels; ++panel) {
      const int64_t p0 = block * kKC, kc = std::min(kKC, k - p0), i0 = first + panel * kMR;
      pack_a(a, i0, std::min(kMR, m - i0), p0, kc, dst + p0 * packed_rows + (i0 - first) * kc);
    }
}
}  // namespace

GemmPackedA::GemmPackedA(int64_t m, int64_t k) : m_(m), k_(k), m_padded_(padded_rows(m)) { check_sizes(m, k); }

GemmPackedA::GemmPackedA(const GemmView& a, int64_t m, int64_t k) : GemmPackedA(m, k) {
  a_ = a;
  in_place_ = a.col_stride == 1 ? m / kMR * kMR : 0;
  block_rows_ = m_padded_ - in_place_;
  data_.reset(new float[static_cast<std::size_t>(std::max<int64_t>(block_rows_ * k, 1))]);
  packed_ = data_.get();
  pack_rows(a, m, k, in_place_, data_.get());
}

int64_t GemmPackedA::packed_elements(int64_t m, int64_t k) {
  check_sizes(m, k);
  return padded_rows(m) * k;
}

void GemmPackedA::pack(const GemmView& a, int64_t m, int64_t k, float* dst) {
  check_sizes(m, k);
  pack_rows(a, m, k, 0, dst);
}

GemmPackedA GemmPackedA::view(const float* packed, int64_t m, int64_t k) {
  GemmPackedA v(m, k);
  v.packed_ = packed;
  v.block_rows_ = v.m_padded_;
  return v;
}

GemmPackedA GemmPackedA::rows(int64_t i0, int64_t i1) const {
  MED3D_CHECK(in_place_ == 0 && i0 % kMR == 0 && 0 <= i0 && i0 <= i1 && i1 <= m_,
              "GemmPackedA::rows: expected rows [i0, i1) of a packed-in-advance A with i0 a multiple of ", kMR,
              " and 0 <= i0 <= i1 <= ", m_, ", got [", i0, ", ", i1, ")");
  GemmPackedA v(i1 - i0, k_);
  v.packed_ = packed_;
  v.block_rows_ = block_rows_;
  v.first_row_ = first_row_ + i0;
  return v;
}

const float* GemmPackedA::panels(int64_t i0, int64_t p0) const {
  return packed_ + p0 * block_rows_ + (first_row_ + i0 - in_place_) * std::min(kKC, k_ - p0);
}

const float* GemmPackedA::rows_in_place(int64_t i, int64_t p0) const {
  return i < in_place_ ? a_.data + i * a_.row_stride + p0 : nullptr;
}

int64_t gemm_f32_panel_rows() { return kMR; }

const char* gemm_f32_kernel() {
#if defined(__AVX512F__)
  return "avx512 8x32";
#elif defined(MED3D_SIMD)
  return "avx2 6x16";
#else
  return "portable 4x16";
#endif
}

}  // namespace med3d::kernels::cpu
