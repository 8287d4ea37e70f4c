// barrier_probe: the two vCPUs' cross-core latency, from 2000 OpenMP barriers on 2 threads (best of 20):
// "fast" about 0.25 us a barrier, "SLOW" about 0.5 us (see 2026-12-06c-compare-cpu-2core-avx512.md).
// g++ -O2 -fopenmp barrier_probe.cpp -o /tmp/mb/probe
#include <chrono>
#include <cstdio>
#include <omp.h>
int main() {
  double best = 1e9;
  for (int rep = 0; rep < 20; ++rep) {
    auto a = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(2)
    { for (int i = 0; i < 2000; ++i) {
#pragma omp barrier
    } }
    double s = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a).count() / 2000;
    if (s < best) best = s;
  }
  printf("%s %.2f\n", best > 0.38 ? "SLOW" : "fast", best);
}
