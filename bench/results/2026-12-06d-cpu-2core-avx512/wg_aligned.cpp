// 2026-12-06d: wg.cpp of 2026-12-03e-cpu-2core-avx2 with x, w and y 64-byte aligned (as the engine's pool
// gives them), so that the line tiles' streamed stores run here as they do in the engine.
// wg pass N C D H W K k stride pad dil reps : prints "pass min_ms median_ms" for one pass of one conv
// through the library it is linked with. Built per library build, e.g. (from the repository root):
//   g++ -O2 -std=c++20 -march=native -I kernels/include -I engine/include wg.cpp build/libmed3d.a -fopenmp -lz -lpng -o /tmp/mb/wg-NAME
// ab.sh A B rounds reps ARGS... then runs /tmp/mb/wg-A and wg-B in turn (THREADS=n for other
// than 2 threads; FLUSH=1 in the environment of both to time them with their data in memory).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
#include <span>
#include <cstdint>
#include "med3d/kernels/conv_params.h"
#include "med3d/kernels/cpu/conv3d.h"
using namespace med3d::kernels;
int main(int argc, char** argv) {
  char pass = argv[1][0];
  int64_t N = atol(argv[2]), C = atol(argv[3]), D = atol(argv[4]), H = atol(argv[5]), W = atol(argv[6]), K = atol(argv[7]);
  int64_t k = atol(argv[8]), s = atol(argv[9]), pd = atol(argv[10]), dl = atol(argv[11]);
  int reps = atoi(argv[12]);
  Conv3dParams p;
  p.N = N; p.C = C; p.D = D; p.H = H; p.W = W; p.K = K; p.T = p.R = p.S = k;
  p.pad = {pd, pd, pd}; p.stride = {s, s, s}; p.dilation = {dl, dl, dl};
  p.Z = conv_output_size(D, k, pd, s, dl); p.P = conv_output_size(H, k, pd, s, dl); p.Q = conv_output_size(W, k, pd, s, dl);
  // Each buffer from its first 64-byte boundary.
  std::vector<float> xv(N * C * D * H * W + 16), wv(K * C * k * k * k + 16), yv(N * K * p.output_spatial() + 16);
  auto aligned = [](std::vector<float>& v) { return v.data() + (16 - reinterpret_cast<uintptr_t>(v.data()) % 64 / 4) % 16; };
  std::span<float> x(aligned(xv), N * C * D * H * W), w(aligned(wv), K * C * k * k * k),
      y(aligned(yv), N * K * p.output_spatial());
  for (auto& v : x) v = (rand() % 1000) / 1000.0f - 0.5f;
  for (auto& v : w) v = (rand() % 1000) / 1000.0f - 0.5f;
  for (auto& v : y) v = (rand() % 1000) / 1000.0f - 0.5f;
  const int64_t se = cpu::conv3d_scratch_elements(p);
  std::vector<float> scratch(se);
  std::vector<double> t;
  for (int i = 0; i < reps + 3; ++i) {
    // FLUSH=1: 64 MiB written on all threads first, so that the conv's data comes from memory,
    // as in med3d-bench conv, where oneDNN's run between two of ours evicts it.
    if (getenv("FLUSH")) {
      static std::vector<float> junk(16 << 20);
#pragma omp parallel for
      for (size_t j = 0; j < junk.size(); ++j) junk[j] += 1.0f;
    }
    auto a = std::chrono::steady_clock::now();
    if (pass == 'f') cpu::conv3d_fprop<float>(p, x.data(), w.data(), nullptr, y.data(), scratch.data(), se);
    else if (pass == 'd') cpu::conv3d_dgrad<float>(p, y.data(), w.data(), x.data(), scratch.data(), se);
    else cpu::conv3d_wgrad<float>(p, x.data(), y.data(), w.data(), scratch.data(), se);
    auto b = std::chrono::steady_clock::now();
    if (i >= 3) t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  printf("%c %.3f %.3f\n", pass, t[0], t[t.size() / 2]);
}
