#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <omp.h>
// write a [512][2048] float plane per sample (8 MiB for 2 samples), as line_kernel does: per tile pair
// 32 filters x 16 voxels, filters at V=2048 floats stride.
int main(int argc, char** argv) {
  const long V = 2048, K = 512, N = 2; int mode = atoi(argv[1]);
  float* y = (float*)aligned_alloc(64, N * K * V * 4);
  for (long i = 0; i < N * K * V; ++i) y[i] = 0;
  for (int r = 0; r < 5; ++r) {
    auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static)
    for (long n = 0; n < N; ++n)
      for (long panel = 0; panel < K / 32; ++panel)
        for (long v = 0; v < V; v += 16)
          for (int k = 0; k < 32; ++k) {
            float* dst = y + (n * K + panel * 32 + k) * V + v;
            __m512 val = _mm512_set1_ps(float(k + v));
            if (mode == 0) _mm512_stream_ps(dst, val); else _mm512_store_ps(dst, val);
          }
    _mm_sfence();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("mode %d: %.3f ms, %.1f GB/s\n", mode, s * 1e3, N * K * V * 4 / s / 1e9);
  }
}
