// gt N C V reps: median ms of to_channel_groups (and from_) of an N x C x V input, in one process.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "med3d/kernels/cpu/conv3d_direct.h"
using namespace med3d::kernels;
int main(int argc, char** argv) {
  const int64_t N = atol(argv[1]), C = atol(argv[2]), V = atol(argv[3]); const int reps = atoi(argv[4]);
  std::vector<float> x(N * C * V + 64), g(cpu::conv3d_grouped_elements(N, C, V) + 64);
  float* xa = x.data() + (16 - reinterpret_cast<uintptr_t>(x.data()) % 64 / 4) % 16;
  float* ga = g.data() + (16 - reinterpret_cast<uintptr_t>(g.data()) % 64 / 4) % 16;
  if (getenv("GOFF")) ga += atoi(getenv("GOFF"));
  for (int64_t i = 0; i < N * C * V; ++i) xa[i] = float(i % 97);
  std::vector<double> t, u;
  for (int r = 0; r < reps + 3; ++r) {
    auto a = std::chrono::steady_clock::now();
    cpu::to_channel_groups(N, C, V, xa, ga);
    auto b = std::chrono::steady_clock::now();
    cpu::from_channel_groups(N, C, V, ga, xa);
    auto c = std::chrono::steady_clock::now();
    if (r >= 3) t.push_back(std::chrono::duration<double, std::milli>(b - a).count()), u.push_back(std::chrono::duration<double, std::milli>(c - b).count());
  }
  std::sort(t.begin(), t.end()); std::sort(u.begin(), u.end());
  printf("to %.4f from %.4f  x%%4096=%lu g%%4096=%lu\n", t[t.size() / 2], u[u.size() / 2], reinterpret_cast<uintptr_t>(xa) % 4096, reinterpret_cast<uintptr_t>(ga) % 4096);
}
