#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
__attribute__((noinline)) void tile(const float* s0, long n, const float* wk, float* out, long pitch, const long* offs) {
  __m256 a0=_mm256_setzero_ps(),a1=a0,a2=a0,a3=a0,a4=a0,a5=a0,a6=a0,a7=a0,a8=a0,a9=a0,a10=a0,a11=a0;
  for (long i = 0; i < n; ++i) {
    const __m256 w = _mm256_broadcast_ss(wk + (i & 63));
    const float* s = s0 + offs[i & 63];
    a0=_mm256_fmadd_ps(w,_mm256_loadu_ps(s),a0); a1=_mm256_fmadd_ps(w,_mm256_loadu_ps(s+8),a1);
    a2=_mm256_fmadd_ps(w,_mm256_loadu_ps(s+16),a2); a3=_mm256_fmadd_ps(w,_mm256_loadu_ps(s+24),a3);
    a4=_mm256_fmadd_ps(w,_mm256_loadu_ps(s+pitch),a4); a5=_mm256_fmadd_ps(w,_mm256_loadu_ps(s+pitch+8),a5);
    a6=_mm256_fmadd_ps(w,_mm256_loadu_ps(s+pitch+16),a6); a7=_mm256_fmadd_ps(w,_mm256_loadu_ps(s+pitch+24),a7);
    a8=_mm256_fmadd_ps(w,_mm256_loadu_ps(s+2*pitch),a8); a9=_mm256_fmadd_ps(w,_mm256_loadu_ps(s+2*pitch+8),a9);
    a10=_mm256_fmadd_ps(w,_mm256_loadu_ps(s+2*pitch+16),a10); a11=_mm256_fmadd_ps(w,_mm256_loadu_ps(s+2*pitch+24),a11);
  }
  __m256 t = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0,a1),_mm256_add_ps(a2,a3)),_mm256_add_ps(_mm256_add_ps(a4,a5),_mm256_add_ps(a6,a7)));
  t = _mm256_add_ps(t, _mm256_add_ps(_mm256_add_ps(a8,a9),_mm256_add_ps(a10,a11)));
  _mm256_storeu_ps(out, t);
}
int main(int argc, char** argv) {
  long pitch = atol(argv[1]), shift = atol(argv[2]);
  std::vector<float> src(8192, 0.5f), w(64, 0.001f), out(8);
  std::vector<long> off(64); for (int i = 0; i < 64; ++i) off[i] = 64 + (i % 4) * shift + (i / 4 % 4) * pitch * 0;
  long n = 50000000;
  auto a = std::chrono::steady_clock::now();
  tile(src.data(), n, w.data(), out.data(), pitch, off.data());
  auto b = std::chrono::steady_clock::now();
  printf("pitch %ld shift %ld: %.1f GFLOP/s (%f)\n", pitch, shift, n * 12.0 * 16 / std::chrono::duration<double>(b - a).count() / 1e9, out[0]);
}
