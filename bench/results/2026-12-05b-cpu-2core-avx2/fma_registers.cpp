#include <immintrin.h>
#include <chrono>
#include <cstdio>
int main() {
  __m256 a0=_mm256_set1_ps(0.f),a1=a0,a2=a0,a3=a0,a4=a0,a5=a0,a6=a0,a7=a0,a8=a0,a9=a0,a10=a0,a11=a0;
  __m256 w=_mm256_set1_ps(0.999f), b=_mm256_set1_ps(0.001f);
  long n = 100000000;
  auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < n; ++i) {
    asm volatile("" : "+x"(w), "+x"(b));
    a0=_mm256_fmadd_ps(w,b,a0); a1=_mm256_fmadd_ps(w,b,a1); a2=_mm256_fmadd_ps(w,b,a2); a3=_mm256_fmadd_ps(w,b,a3);
    a4=_mm256_fmadd_ps(w,b,a4); a5=_mm256_fmadd_ps(w,b,a5); a6=_mm256_fmadd_ps(w,b,a6); a7=_mm256_fmadd_ps(w,b,a7);
    a8=_mm256_fmadd_ps(w,b,a8); a9=_mm256_fmadd_ps(w,b,a9); a10=_mm256_fmadd_ps(w,b,a10); a11=_mm256_fmadd_ps(w,b,a11);
  }
  auto t1 = std::chrono::steady_clock::now();
  __m256 t=_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0,a1),_mm256_add_ps(a2,a3)),_mm256_add_ps(_mm256_add_ps(a4,a5),_mm256_add_ps(a6,a7)));
  t=_mm256_add_ps(t,_mm256_add_ps(_mm256_add_ps(a8,a9),_mm256_add_ps(a10,a11)));
  float o[8]; _mm256_storeu_ps(o,t);
  printf("%.1f GFLOP/s %f\n", n*12.0*16/std::chrono::duration<double>(t1-t0).count()/1e9, o[0]);
}
