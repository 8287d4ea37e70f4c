// cp: the bench's CopyProbe (64 MiB each way, 2 threads, best of 3), read+write GB/s.
#include <omp.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>
int main() {
  const std::size_t bytes = std::size_t(64) << 20;
  std::vector<char> a(bytes, 1), b(bytes, 0);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto s0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(2)
    {
      const std::size_t t = omp_get_thread_num(), n = omp_get_num_threads();
      std::memcpy(b.data() + bytes * t / n, a.data() + bytes * t / n, bytes / n);
    }
    best = std::max(best, 2.0 * bytes / std::chrono::duration<double>(std::chrono::steady_clock::now() - s0).count() / 1e9);
  }
  printf("%.1f\n", best);
}
