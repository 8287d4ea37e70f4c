// FMA throughput on one thread with 12 independent accumulators, each started at another value
// so that the compiler cannot merge them (the session-18 fma_registers.cpp started all at zero
// with the same operands: GCC kept one FMA per iteration, and its "152 GFLOP/s" was that one
// chain's rate times 12). Check the build with
//   g++ -O2 -march=native fma_check.cpp -o fma_check
//   objdump -d fma_check | awk '/<_Z4regsl>:/,/ret/' | grep -c vfmadd     # 12
// and run ./fma_check regs | tile | loads 0 | loads 4 on an idle machine:
//   regs      12 FMAs on registers (2 weight + 2 input registers);
//   tile      the AVX2 line tile: 3 weight loads + 4 broadcasts per 12 FMAs (7 loads);
//   loads S   12 FMAs each with its own 256-bit load (S floats past 64-byte alignment: 0 aligned,
//             4 = every other load crosses a cache line) and one broadcast (13 loads).
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
using V = __m256;
#define F(a, b, c) c = _mm256_fmadd_ps(a, b, c)
#define DECL V a0 = _mm256_set1_ps(0.f), a1 = _mm256_set1_ps(1.f), a2 = _mm256_set1_ps(2.f), a3 = _mm256_set1_ps(3.f), a4 = _mm256_set1_ps(4.f), a5 = _mm256_set1_ps(5.f), a6 = _mm256_set1_ps(6.f), a7 = _mm256_set1_ps(7.f), a8 = _mm256_set1_ps(8.f), a9 = _mm256_set1_ps(9.f), a10 = _mm256_set1_ps(10.f), a11 = _mm256_set1_ps(11.f)
#define SUM _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)), _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7))), _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)))
__attribute__((noinline)) V regs(long n) {
  DECL;
  V w0 = _mm256_set1_ps(1e-7f), w1 = _mm256_set1_ps(2e-7f), b0 = _mm256_set1_ps(1.f), b1 = _mm256_set1_ps(2.f);
  for (long i = 0; i < n; ++i) {
    asm volatile("" : "+x"(w0), "+x"(w1), "+x"(b0), "+x"(b1));
    F(w0, b0, a0); F(w1, b0, a1); F(w0, b1, a2); F(w1, b1, a3); F(w0, b0, a4); F(w1, b0, a5);
    F(w0, b1, a6); F(w1, b1, a7); F(w0, b0, a8); F(w1, b0, a9); F(w0, b1, a10); F(w1, b1, a11);
  }
  return SUM;
}
__attribute__((noinline)) V tile(long n, const float* w, const float* x, long xstep) {
  DECL;
  for (long i = 0; i < n; ++i) {
    const float* wp = w + (i & 127) * 24; const float* xp = x + (i & 127) * xstep;
    V w0 = _mm256_load_ps(wp), w1 = _mm256_load_ps(wp + 8), w2 = _mm256_load_ps(wp + 16);
    V b = _mm256_broadcast_ss(xp); F(w0, b, a0); F(w1, b, a1); F(w2, b, a2);
    b = _mm256_broadcast_ss(xp + 16); F(w0, b, a3); F(w1, b, a4); F(w2, b, a5);
    b = _mm256_broadcast_ss(xp + 32); F(w0, b, a6); F(w1, b, a7); F(w2, b, a8);
    b = _mm256_broadcast_ss(xp + 48); F(w0, b, a9); F(w1, b, a10); F(w2, b, a11);
  }
  return SUM;
}
// 12 FMAs per iteration, each with its own 256-bit load (offset `shift` floats from 64-byte
// alignment: 0 = aligned, 4 = every other load crosses a cache line), one broadcast.
__attribute__((noinline)) V loads(long n, const float* w, const float* x, long shift) {
  DECL;
  for (long i = 0; i < n; ++i) {
    const float* s = x + (i & 63) * 128 + shift; V b = _mm256_broadcast_ss(w + (i & 127));
    F(b, _mm256_loadu_ps(s), a0); F(b, _mm256_loadu_ps(s + 8), a1); F(b, _mm256_loadu_ps(s + 16), a2);
    F(b, _mm256_loadu_ps(s + 24), a3); F(b, _mm256_loadu_ps(s + 32), a4); F(b, _mm256_loadu_ps(s + 40), a5);
    F(b, _mm256_loadu_ps(s + 48), a6); F(b, _mm256_loadu_ps(s + 56), a7); F(b, _mm256_loadu_ps(s + 64), a8);
    F(b, _mm256_loadu_ps(s + 72), a9); F(b, _mm256_loadu_ps(s + 80), a10); F(b, _mm256_loadu_ps(s + 88), a11);
  }
  return SUM;
}
int main(int argc, char** argv) {
  const char* which = argv[1];
  long n = 200000000;
  float* w = (float*)aligned_alloc(64, 128 * 32 * 4 + 64); float* x = (float*)aligned_alloc(64, 128 * 128 * 4 + 4096);
  for (int i = 0; i < 128 * 32; ++i) w[i] = 1e-6f;
  for (int i = 0; i < 128 * 128 + 1024; ++i) x[i] = 1e-3f;
  auto t0 = std::chrono::steady_clock::now();
  V r;
  if (!strcmp(which, "regs")) r = regs(n);
  else if (!strcmp(which, "tile")) r = tile(n, w, x, 8);
  else r = loads(n, w, x, atol(argv[2]));
  auto t1 = std::chrono::steady_clock::now();
  float o[8]; _mm256_storeu_ps(o, r);
  printf("%s %s: %.1f GFLOP/s (%g)\n", which, argc > 2 ? argv[2] : "", n * 12.0 * 16 / std::chrono::duration<double>(t1 - t0).count() / 1e9, o[0]);
}
