// max_pool_kernel: times cpu::max_pool3d_forward, kernel 3 stride 2 padding 1, on N C D H W alone:
// prints "min_ms median_ms check". From the repository root:
//   g++ -O2 -std=c++20 -march=native -fopenmp -I kernels/include -I engine/include \
//       bench/results/2026-12-05d-cpu-2core-avx2/microbench/max_pool_kernel.cpp build/libmed3d.a -o /tmp/mp
//   OMP_NUM_THREADS=2 /tmp/mp 2 64 16 32 32 100       # the ops table's shape
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "med3d/kernels/cpu/pool.h"
using namespace med3d::kernels;
int main(int argc, char** argv) {
  int64_t N = atol(argv[1]), C = atol(argv[2]), D = atol(argv[3]), H = atol(argv[4]), W = atol(argv[5]);
  int reps = atoi(argv[6]);
  auto plan = cpu::make_pool_plan(N * C, {D, H, W}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, true);
  std::vector<float> x(N * C * D * H * W);
  for (auto& v : x) v = (rand() % 1000) / 1000.0f;
  int64_t out = N * C * plan.out[0] * plan.out[1] * plan.out[2];
  std::vector<float> y(out);
  std::vector<int64_t> am(out);
  std::vector<double> t;
  for (int i = 0; i < reps + 3; ++i) {
    auto a = std::chrono::steady_clock::now();
    cpu::max_pool3d_forward<float>(plan, x.data(), y.data(), am.data());
    auto b = std::chrono::steady_clock::now();
    if (i >= 3) t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  double s = 0; for (int64_t i = 0; i < out; ++i) s += y[i] + am[i] * 1e-9;
  printf("%.3f %.3f  check %.6f\n", t[0], t[t.size() / 2], s);
}
