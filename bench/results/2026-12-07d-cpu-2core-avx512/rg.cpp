// rg: the bench's measure_host_regime (bench/common.cpp) alone: prints "own_ns handoff_ns ratio".
#include <omp.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>
using Clock = std::chrono::steady_clock;
double median(std::vector<double> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }
int main() {
  constexpr std::size_t kFloats = (std::size_t(256) << 10) / sizeof(float), kLineFloats = 16, kChains = 8;
  std::vector<float> buffers[2] = {std::vector<float>(kFloats), std::vector<float>(kFloats)};
  std::vector<double> seconds[2];
  volatile float sink = 0;
  for (int rep = 0; rep < 61; ++rep)
    for (int from_other = 0; from_other < 2; ++from_other) {
      double s = 0;
#pragma omp parallel num_threads(2)
      {
        const int id = omp_get_thread_num();
        std::fill(buffers[id].begin(), buffers[id].end(), static_cast<float>(rep));
#pragma omp barrier
        if (id == 1) {
          const float* src = buffers[from_other ? 0 : 1].data();
          const auto start = Clock::now();
          float sums[kChains] = {};
          for (std::size_t i = 0; i < kFloats; i += kChains * kLineFloats)
            for (std::size_t j = 0; j < kChains; ++j) sums[j] += src[i + j * kLineFloats];
          s = std::chrono::duration<double>(Clock::now() - start).count();
          for (float v : sums) sink = sink + v;
        }
      }
      seconds[from_other].push_back(s);
    }
  const double lines = kFloats / kLineFloats, own = median(seconds[0]) / lines * 1e9, hand = median(seconds[1]) / lines * 1e9;
  printf("%.2f %.2f %.1f\n", own, hand, hand / own);
}
