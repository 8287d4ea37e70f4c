// upsample_kernel: times cpu::upsample_trilinear3d_forward/backward (scale 2) on N C D H W alone,
// without the tape: prints "pass min_ms median_ms check". From the repository root:
//   g++ -O2 -std=c++20 -march=native -fopenmp -I kernels/include -I engine/include \
//       bench/results/2026-12-05d-cpu-2core-avx2/microbench/upsample_kernel.cpp build/libmed3d.a -o /tmp/up
//   OMP_NUM_THREADS=2 /tmp/up b 2 32 16 32 32 30      # the ops table's shape; 1 32 32 64 64: large
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "med3d/kernels/cpu/upsample.h"
using namespace med3d::kernels;
int main(int argc, char** argv) {
  char pass = argv[1][0];
  int64_t N = atol(argv[2]), C = atol(argv[3]), D = atol(argv[4]), H = atol(argv[5]), W = atol(argv[6]);
  int reps = atoi(argv[7]);
  cpu::UpsampleGeometry g;
  g.planes = N * C; g.in = {D, H, W}; g.out = {2 * D, 2 * H, 2 * W}; g.scale = {2, 2, 2};
  std::vector<float> x(N * C * D * H * W), y(8 * x.size()), ws(cpu::upsample_trilinear3d_workspace(g));
  for (auto& v : x) v = (rand() % 1000) / 1000.0f;
  for (auto& v : y) v = (rand() % 1000) / 1000.0f;
  std::vector<double> t;
  for (int i = 0; i < reps + 3; ++i) {
    auto a = std::chrono::steady_clock::now();
    if (pass == 'f') cpu::upsample_trilinear3d_forward<float>(g, x.data(), y.data(), ws.data());
    else cpu::upsample_trilinear3d_backward<float>(g, y.data(), x.data());
    auto b = std::chrono::steady_clock::now();
    if (i >= 3) t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  double s = 0; for (auto v : x) s += v;
  printf("%c %.3f %.3f  check %.6f\n", pass, t[0], t[t.size() / 2], s);
}
