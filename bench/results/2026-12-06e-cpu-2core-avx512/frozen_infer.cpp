// Forward passes of MedicalNet ResNet-N in eval mode under NoGrad, alternating with and without FrozenWeights.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <vector>
#include "med3d/context.h"
#include "med3d/models/heads.h"
#include <optional>
using namespace med3d;

int main(int argc, char** argv) {
  int depth = atoi(argv[1]), rounds = atoi(argv[2]);
  Context context(Device::cpu(), 1);
  MedicalNetSegmentation net(context, depth, 2, std::nullopt, 1);
  net.eval();
  Tensor x = context.randn({1, 1, 64, 64, 64});
  NoGrad no_grad(context);
  auto time = [&](bool frozen) {
    std::vector<double> t;
    std::optional<FrozenWeights> scope;
    if (frozen) scope.emplace(context);
    for (int i = 0; i < 6; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      Tensor y = net.forward(x);
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e3);
    }
    std::sort(t.begin() + 1, t.end());  // the first packs
    return t[3];
  };
  std::vector<double> ratios;
  for (int r = 0; r < rounds; ++r) {
    double a = time(false), b = time(true);
    ratios.push_back(b / a);
    printf("plain %.1f ms frozen %.1f ms ratio %.3f\n", a, b, b / a);
  }
  std::sort(ratios.begin(), ratios.end());
  printf("median ratio %.3f\n", ratios[ratios.size() / 2]);
}
