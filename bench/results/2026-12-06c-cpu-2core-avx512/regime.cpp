// regime: our conv passes timed in a loop beside a barrier probe, to split their times by the
// host's two regimes (g++ -O2 -std=c++20 -march=native -fopenmp -I kernels/include -I engine/include
// regime.cpp build/libmed3d.a -lz -lpng; run with OMP_NUM_THREADS=2 and the seconds to run).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <omp.h>
#include "med3d/kernels/conv_params.h"
#include "med3d/kernels/cpu/conv3d.h"
using namespace med3d::kernels;
using C = std::chrono::steady_clock;
static double ms(C::time_point a) { return std::chrono::duration<double, std::milli>(C::now() - a).count(); }
struct L { const char* name; int64_t N, C, D, H, W, K, k, s, pd, dl; };
int main(int argc, char** argv) {
  L layers[] = {{"stem", 2, 1, 32, 64, 64, 64, 7, 2, 3, 1}, {"layer1", 2, 64, 8, 16, 16, 64, 3, 1, 1, 1},
                {"layer2", 2, 64, 8, 16, 16, 128, 3, 2, 1, 1}, {"layer3", 2, 128, 4, 8, 8, 256, 3, 1, 2, 2},
                {"layer4", 2, 256, 4, 8, 8, 512, 3, 1, 4, 4}, {"d6", 2, 512, 8, 16, 16, 64, 3, 1, 6, 6}};
  struct Case { Conv3dParams p; std::vector<float> x, w, y, scratch; int64_t se; const char* name; };
  std::vector<Case> cases;
  for (auto& l : layers) {
    Case c; Conv3dParams& p = c.p; c.name = l.name;
    p.N = l.N; p.C = l.C; p.D = l.D; p.H = l.H; p.W = l.W; p.K = l.K; p.T = p.R = p.S = l.k;
    p.pad = {l.pd, l.pd, l.pd}; p.stride = {l.s, l.s, l.s}; p.dilation = {l.dl, l.dl, l.dl};
    p.Z = conv_output_size(l.D, l.k, l.pd, l.s, l.dl); p.P = conv_output_size(l.H, l.k, l.pd, l.s, l.dl); p.Q = conv_output_size(l.W, l.k, l.pd, l.s, l.dl);
    c.x.assign(p.N * p.C * p.input_spatial(), 0.1f); c.w.assign(p.K * p.C * p.taps(), 0.01f); c.y.assign(p.N * p.K * p.output_spatial(), 0.2f);
    c.se = cpu::conv3d_scratch_elements(p); c.scratch.assign(std::max<int64_t>(c.se, 1), 0.0f);
    cases.push_back(std::move(c));
  }
  double seconds = atof(argv[1]);
  auto start = C::now();
  while (ms(start) < seconds * 1000) {
    double bar = 1e9;
    for (int rep = 0; rep < 5; ++rep) { auto a = C::now();
#pragma omp parallel
      { for (int i = 0; i < 400; ++i) {
#pragma omp barrier
      } }
      bar = std::min(bar, ms(a) / 400 * 1000); }
    printf("%5.0fs bar %.2f |", ms(start) / 1000, bar);
    for (auto& c : cases) {
      double t[3] = {1e9, 1e9, 1e9};
      for (int rep = 0; rep < 3; ++rep) {
        auto a = C::now(); cpu::conv3d_fprop<float>(c.p, c.x.data(), c.w.data(), nullptr, c.y.data(), c.scratch.data(), c.se); t[0] = std::min(t[0], ms(a));
        a = C::now(); cpu::conv3d_dgrad<float>(c.p, c.y.data(), c.w.data(), c.x.data(), c.scratch.data(), c.se); t[1] = std::min(t[1], ms(a));
        a = C::now(); cpu::conv3d_wgrad<float>(c.p, c.x.data(), c.y.data(), c.w.data(), c.scratch.data(), c.se); t[2] = std::min(t[2], ms(a));
      }
      printf(" %s %.2f %.2f %.2f |", c.name, t[0], t[1], t[2]);
    }
    printf("\n"); fflush(stdout);
  }
}
