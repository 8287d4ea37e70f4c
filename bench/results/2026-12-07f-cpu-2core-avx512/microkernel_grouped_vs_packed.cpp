// 8x32 zmm packed microkernel vs 8x24 ymm kernel reading channel groups of 8 in place
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <vector>
__attribute__((noinline)) void packed(long kc, const float* __restrict a, long lda, const float* __restrict bp, float* c) {
  __m512 acc[8][2];
  for (int i = 0; i < 8; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (long p = 0; p < kc; ++p) {
    __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) { __m512 av = _mm512_set1_ps(a[i * lda + p]); acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]); acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]); }
    bp += 32;
  }
  for (int i = 0; i < 8; ++i) { _mm512_storeu_ps(c + i * 32, _mm512_add_ps(_mm512_loadu_ps(c + i * 32), acc[i][0])); _mm512_storeu_ps(c + i * 32 + 16, _mm512_add_ps(_mm512_loadu_ps(c + i * 32 + 16), acc[i][1])); }
}
// A: one group of 8 rows, a[p * 8 + i]; B: NV groups, g + j * pitch + p * 8
template <int NV>
__attribute__((noinline)) void grouped(long kc, const float* __restrict a, const float* __restrict g, long pitch, float* c, long ldc) {
  __m256 acc[8][NV];
  for (int i = 0; i < 8; ++i) for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();
  for (long p = 0; p < kc; ++p) {
    __m256 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = _mm256_loadu_ps(g + v * pitch + p * 8);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) { __m256 av = _mm256_broadcast_ss(a + p * 8 + i);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(av, b[v], acc[i][v]); }
  }
  for (int i = 0; i < 8; ++i) for (int v = 0; v < NV; ++v) _mm256_storeu_ps(c + i * ldc + v * 8, _mm256_add_ps(_mm256_loadu_ps(c + i * ldc + v * 8), acc[i][v]));
}
int main() {
  const long kc = 512, lda = 512, pitch = 512 * 8;
  std::vector<float> a(8 * lda, 0.5f), bp(kc * 32, 0.25f), g(4 * pitch, 0.25f), c(8 * 32, 0);
  const int reps = 100000;
  for (int round = 0; round < 3; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) packed(kc, a.data(), lda, bp.data(), c.data());
    auto t1 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) grouped<3>(kc, a.data(), g.data(), pitch, c.data(), 32);
    auto t2 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) grouped<2>(kc, a.data(), g.data(), pitch, c.data(), 32);
    auto t3 = std::chrono::steady_clock::now();
    auto gf = [](double f, auto d) { return f / std::chrono::duration<double>(d).count() / 1e9; };
    printf("packed 8x32 zmm %.1f  grouped 8x24 ymm %.1f  8x16 ymm %.1f GFLOP/s\n", gf(2.0 * 8 * 32 * kc * reps, t1 - t0), gf(2.0 * 8 * 24 * kc * reps, t2 - t1), gf(2.0 * 8 * 16 * kc * reps, t3 - t2));
  }
  printf("%f\n", c[5]);
}
