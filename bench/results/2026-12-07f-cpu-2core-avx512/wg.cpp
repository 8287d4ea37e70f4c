// 2026-12-07c: GROUPED=1: the activations in channel groups and the weights packed in advance (the bench's native column).
// 2026-12-06h: PACKED=1 through conv3d_pack_weights (any pass that reads packed weights).
// 2026-12-06f: wg.cpp with x, w, y 64-byte aligned (06d patch) and PACKED=1 in the environment: the weights packed in
// advance (conv3d_direct_pack_weights) and passed to fprop/dgrad. Build and A/B as in 06d (ab2.sh, ab3.sh of 06c).
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
#include <sys/mman.h>
#include "med3d/kernels/conv_params.h"
#include "med3d/kernels/cpu/conv3d.h"
#include "med3d/kernels/cpu/conv3d_direct.h"
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
  std::vector<float> xv(N * C * D * H * W + 32), wv(K * C * k * k * k + 32), yv(N * K * p.output_spatial() + 32);
  static const int64_t skew = getenv("MISALIGN") ? 4 : 0;
  auto aligned = [](std::vector<float>& v) { return v.data() + (16 - reinterpret_cast<uintptr_t>(v.data()) % 64 / 4) % 16 + skew; };
  std::span<float> x(aligned(xv), N * C * D * H * W), w(aligned(wv), K * C * k * k * k),
      y(aligned(yv), N * K * p.output_spatial());
  for (auto& v : x) v = (rand() % 1000) / 1000.0f - 0.5f;
  for (auto& v : w) v = (rand() % 1000) / 1000.0f - 0.5f;
  for (auto& v : y) v = (rand() % 1000) / 1000.0f - 0.5f;
  const int64_t se = cpu::conv3d_scratch_elements(p);
  std::vector<float> scratch(se);
  std::vector<double> t;
  // PACKED=1: the weights packed in advance (fprop/dgrad where the direct kernels run).
  std::vector<float> pk;
  const float* packed = nullptr;
  if (getenv("PACKED") && pass != 'w') {
    const auto pf = pass == 'f' ? PackFor::fprop : PackFor::dgrad;
    const int64_t n = cpu::conv3d_packed_weights_elements(p, pf, se);
    if (n > 0) { pk.resize(n); cpu::conv3d_pack_weights(p, pf, se, w.data(), pk.data()); packed = pk.data(); }
    else fprintf(stderr, "no packing for this pass\n");
  }
  const bool grouped_io = getenv("GROUPED") != nullptr && pass != 'w';
  std::vector<float> gin, gout;
  float* hin = nullptr; float* hout = nullptr;
  if (grouped_io) {
    const auto pf = pass == 'f' ? PackFor::fprop : PackFor::dgrad;
    pk.resize(cpu::conv3d_direct_packed_elements(p, pf));
    cpu::conv3d_direct_pack_weights(p, pf, w.data(), pk.data());
    const int64_t ci = pass == 'f' ? C : K, co = pass == 'f' ? K : C;
    const int64_t vi = pass == 'f' ? p.input_spatial() : p.output_spatial(), vo = pass == 'f' ? p.output_spatial() : p.input_spatial();
    gin.resize(cpu::conv3d_grouped_elements(N, ci, vi) + 16);
    gout.resize(cpu::conv3d_grouped_elements(N, co, vo) + 16);
    if (getenv("HUGE")) {
      auto huge = [](std::vector<float>& v) {
        const size_t n = v.size();
        float* m = static_cast<float*>(std::aligned_alloc(2 << 20, (n * 4 + (2 << 20) - 1) / (2 << 20) * (2 << 20)));
        madvise(m, (n * 4 + (2 << 20) - 1) / (2 << 20) * (2 << 20), MADV_HUGEPAGE);
        return m;
      };
      hin = huge(gin); hout = huge(gout);
    }
    cpu::to_channel_groups(N, ci, vi, pass == 'f' ? x.data() : y.data(), hin ? hin : aligned(gin));
  }
  // GROUPED=1 for wgrad of a 1x1x1 conv: x and dy in channel groups (conv3d_pointwise_wgrad_grouped).
  const bool grouped_w = getenv("GROUPED") != nullptr && pass == 'w';
  std::vector<float> gx, gdy;
  if (grouped_w) {
    gx.resize(cpu::conv3d_grouped_elements(N, C, p.input_spatial()) + 16);
    gdy.resize(cpu::conv3d_grouped_elements(N, K, p.output_spatial()) + 16);
    cpu::to_channel_groups(N, C, p.input_spatial(), x.data(), aligned(gx));
    cpu::to_channel_groups(N, K, p.output_spatial(), y.data(), aligned(gdy));
  }
  for (int i = 0; i < reps + 3; ++i) {
    // FLUSH=1: 64 MiB written on all threads first, so that the conv's data comes from memory,
    // as in med3d-bench conv, where oneDNN's run between two of ours evicts it.
    if (getenv("FLUSH")) {
      static std::vector<float> junk(16 << 20);
#pragma omp parallel for
      for (size_t j = 0; j < junk.size(); ++j) junk[j] += 1.0f;
    }
    auto a = std::chrono::steady_clock::now();
    if (grouped_io && pass == 'f') cpu::conv3d_direct_fprop_grouped(p, hin ? hin : aligned(gin), pk.data(), hout ? hout : aligned(gout));
    else if (grouped_io) cpu::conv3d_direct_dgrad_grouped(p, hin ? hin : aligned(gin), pk.data(), hout ? hout : aligned(gout));
    else if (pass == 'f') cpu::conv3d_fprop<float>(p, x.data(), w.data(), nullptr, y.data(), scratch.data(), se, packed);
    else if (pass == 'd') cpu::conv3d_dgrad<float>(p, y.data(), w.data(), x.data(), scratch.data(), se, packed);
    else if (grouped_w) cpu::conv3d_pointwise_wgrad_grouped(p, aligned(gx), aligned(gdy), w.data());
    else cpu::conv3d_wgrad<float>(p, x.data(), y.data(), w.data(), scratch.data(), se);
    auto b = std::chrono::steady_clock::now();
    if (i >= 3) t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  printf("%c %.3f %.3f\n", pass, t[0], t[t.size() / 2]);
}
