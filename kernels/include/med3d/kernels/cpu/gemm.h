// CPU single-precision GEMM, BLIS-style: C[m, n] = (accumulate ? C : 0) + A[m, k] * B[k, n].
// Adds gemm_f32 and the strided operand view GemmView; overwrites (or adds into) only the m x n
// elements C[i * ldc + j]; A and B are read only and must not alias C.
// Why our own: Eigen's sgemm reaches ~65% of this machine's FMA peak, below the conv bar of
// issue 7. A and B are views with a row and a column stride, so transposed operands (conv
// dgrad's W^T, wgrad's col^T) cost nothing beyond the packing every GEMM does anyway.
// Method: A is packed into MR-row panels and B into NR-column panels (zero padded at the
// edges), blocked by KC (depth), MC (rows, L2) and NC (columns); one vector microkernel runs
// 8 x 32 under AVX-512 and 6 x 16 under AVX2 + FMA (kernels/cpu/simd.h), a portable C++ one
// 4 x 16 otherwise (gemm_f32_kernel() names the one compiled in).
// Threading: OpenMP (omp_get_max_threads(); one thread when called inside any parallel
// region, active or not, since a nested team would get new threads) over disjoint blocks of C. Each C element is computed by one thread in a fixed k order with
// blocking that does not depend on the thread count, so results are bitwise identical for any
// number of threads. Scratch for the packed panels is allocated per call and per thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

namespace med3d::kernels::cpu {

// Element (i, j) of the view is data[i * row_stride + j * col_stride].
struct GemmView {
  const float* data = nullptr;
  int64_t row_stride = 0;
  int64_t col_stride = 1;
};

// A row-major matrix with leading dimension ld, and the transpose of one (no copy).
inline GemmView gemm_rows(const float* data, int64_t ld) { return {data, ld, 1}; }
inline GemmView gemm_transposed(const float* data, int64_t ld) { return {data, 1, ld}; }

// A B operand that is never stored whole (implicit GEMM: conv's column matrix, gathered from
// the input while packing, so it never travels through memory). `fill` writes a block of the
// stored matrix M row-major: dst[i * ld + j] = M(row0 + i, col0 + j) for i < rows, j < cols;
// it is called concurrently from several threads, on disjoint dst, and must not throw. The operand is M, or M
// transposed when `transposed` (then B(p, j) = M(j, p)).
struct GemmSource {
  std::function<void(int64_t row0, int64_t rows, int64_t col0, int64_t cols, float* dst, int64_t ld)> fill;
  bool transposed = false;
};

// A (m x k) prepared once for many GEMMs with the same A (conv weights, used for every sample and
// every column block): each GEMM otherwise packs its A again in every thread. A row-major A
// (col_stride 1) is read in place but for a partial last panel: the microkernel broadcasts
// from its rows as well as from a packed panel, and no thread waits for a packing (1x1x1
// bottleneck fprop on 2 threads: 0.97x the time; level on one). It then refers to A's storage,
// which must outlive it. Other A are packed into panels, the packing spread over the threads.
// Or packed in advance (pack: every row, none read in place) into a buffer kept between calls
// (conv weights packed once for many passes), which a view then reads where it lies.
class GemmPackedA {
 public:
  GemmPackedA(const GemmView& a, int64_t m, int64_t k);
  // Floats of pack's layout for an m x k A, and the packing into dst (that many floats).
  static int64_t packed_elements(int64_t m, int64_t k);
  static void pack(const GemmView& a, int64_t m, int64_t k, float* dst);
  // A view of A as pack laid it out in `packed` (which must outlive it); gives the bits of
  // GemmPackedA(a, m, k).
  static GemmPackedA view(const float* packed, int64_t m, int64_t k);
  // Rows [i0, i1) of a packed-in-advance A as an A of their own, i0 a multiple of
  // gemm_f32_panel_rows() (a view: this A's storage must outlive it).
  GemmPackedA rows(int64_t i0, int64_t i1) const;
  int64_t rows() const { return m_; }
  int64_t depth() const { return k_; }
  // The panels of rows [i0, ...) for depth block [p0, p0 + KC); i0 a multiple of the panel height.
  const float* panels(int64_t i0, int64_t p0) const;
  // A's row i at depth p0 where the panel of rows [i, ...) is read in place, else nullptr.
  const float* rows_in_place(int64_t i, int64_t p0) const;
  int64_t row_pitch() const { return a_.row_stride; }

 private:
  GemmPackedA(int64_t m, int64_t k);  // checks the sizes; no rows yet
  GemmView a_;
  int64_t m_, k_, m_padded_, in_place_ = 0;
  std::unique_ptr<float[]> data_;  // owned packing, not value-initialised: the packing writes every element
  // The packed panels: depth block p0 of the packed rows at packed_ + p0 * block_rows_ (its panels
  // kc(p0) deep), this A's first packed row first_row_ rows into it.
  const float* packed_ = nullptr;
  int64_t block_rows_ = 0, first_row_ = 0;
};

// Rows per packed panel of A in this build (8, 6 or 4): GemmPackedA::rows splits at multiples.
int64_t gemm_f32_panel_rows();

// gemm_f32 with at most kGemmFewRows rows of C, or that deep, and a stored B with contiguous rows
// streams B without packing it (a packed A has no such path); below kGemmParallelMacs
// multiply-adds it runs on one thread.
inline constexpr int64_t kGemmFewRows = 4, kGemmParallelMacs = int64_t(1) << 18;

// C[m, n] (row-major, leading dimension ldc >= n) = (accumulate ? C : 0) + A[m, k] B[k, n].
// k = 0 leaves C (accumulate) or zeroes it; m = 0 or n = 0 does nothing.
void gemm_f32(const GemmView& a, const GemmView& b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
              bool accumulate);
// C = (accumulate ? C : 0) + the sum over terms t of A_t B_t (as many B as A terms, at least one,
// all A m x k and all B k x n): bitwise gemm_f32 term by term (the first with `accumulate`, the
// others accumulating), in one parallel region where that would open one per term (the 1x1x1
// wgrad's sum over samples).
void gemm_f32_sum(std::span<const GemmView> a, std::span<const GemmView> b, float* c, int64_t ldc, int64_t m, int64_t n,
                  int64_t k, bool accumulate);
// The same with B from a source, or A packed; the result is bitwise identical to passing the
// stored matrices. m and k of a packed A are its own.
void gemm_f32(const GemmView& a, const GemmSource& b, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
              bool accumulate);
void gemm_f32(const GemmPackedA& a, const GemmSource& b, float* c, int64_t ldc, int64_t n, bool accumulate);
// How C is written: kept in the caches, or streamed past them (non-temporal stores on the tiles
// whose rows are aligned to the vector): for a large C written once (not accumulated, its depth
// within one block of the packed A, kKC = 256) that nothing reads again soon.
enum class GemmStore { cached, streamed };
void gemm_f32(const GemmPackedA& a, const GemmView& b, float* c, int64_t ldc, int64_t n, bool accumulate,
              GemmStore store = GemmStore::cached);

// "avx512 8x32" or "portable 4x16": the microkernel this build uses (for benchmarks).
const char* gemm_f32_kernel();

}  // namespace med3d::kernels::cpu
