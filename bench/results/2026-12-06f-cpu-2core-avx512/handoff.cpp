// 2026-12-06f: the hand-off microbenchmark behind med3d-bench's host regime: per thread, ns per 64-byte line to read a
// buffer it only read, one it just wrote, and one the other thread just wrote. g++ -O2 -march=native -fopenmp handoff.cpp; ./a.out KiB
// Per thread: sum over a private buffer of B bytes (read, repeated), own-written buffer re-read,
// and buffer written by the other thread read. Reports ns per 64-byte line.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <omp.h>
#include <immintrin.h>
int main(int argc, char** argv) {
  const size_t bytes = atol(argv[1]) * 1024; const int reps = 200;
  const size_t n = bytes / 4;
  std::vector<float> buf[2] = {std::vector<float>(n, 1.f), std::vector<float>(n, 1.f)};
  double t_own = 1e9, t_other = 1e9, t_ro = 1e9;
  volatile float sink = 0;
  for (int mode = 0; mode < 3; ++mode)
  for (int r = 0; r < reps; ++r) {
    double el = 0;
#pragma omp parallel num_threads(2) reduction(max: el)
    {
      const int id = omp_get_thread_num();
      // write phase: each thread writes buffer id (mode 1: own, mode 2: the other then reads it)
      if (mode > 0) { float* w = buf[id].data(); for (size_t i = 0; i < n; i += 16) _mm512_storeu_ps(w + i, _mm512_set1_ps(r)); }
#pragma omp barrier
      const float* src = mode == 2 ? buf[1 - id].data() : buf[id].data();
      auto a = std::chrono::steady_clock::now();
      __m512 s = _mm512_setzero_ps();
      for (size_t i = 0; i < n; i += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(src + i));
      el = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - a).count();
      sink = sink + _mm512_reduce_add_ps(s);
    }
    double per = el / (bytes / 64);
    if (mode == 0) t_ro = std::min(t_ro, per); else if (mode == 1) t_own = std::min(t_own, per); else t_other = std::min(t_other, per);
  }
  printf("%zu KiB: read-only %.2f  own-written %.2f  other-written %.2f ns/line\n", bytes / 1024, t_ro, t_own, t_other);
}
