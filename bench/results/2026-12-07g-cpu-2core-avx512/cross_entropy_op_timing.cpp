// Times cross_entropy(x, labels) and its backward through the op and the tape (2x2x32x64x64 f32
// logits, i32 labels): min and median ms. Built against the build tree:
//   g++ -O2 -std=c++20 -fopenmp -I engine/include -I kernels/include cross_entropy_op_timing.cpp \
//     build/libmed3d.a -lz -lpng -lnifticdf -lniftiio -lznz -o ce && OMP_NUM_THREADS=2 ./ce 200
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>
#include "med3d/context.h"
#include "med3d/ops/loss.h"
#include "med3d/tape.h"
using namespace med3d;
int main(int argc, char** argv) {
  Context context;
  const int reps = argc > 1 ? atoi(argv[1]) : 200;
  Tensor x = context.randn({2, 2, 32, 64, 64});
  x.set_requires_grad(true);
  Tensor labels = context.empty(Shape({2, 32, 64, 64}), DType::i32);
  int32_t* l = labels.data<int32_t>();
  for (int64_t i = 0; i < labels.numel(); ++i) l[i] = static_cast<int32_t>((i * 7919) % 2);
  std::vector<double> tf, tb;
  for (int i = 0; i < reps; ++i) {
    auto a = std::chrono::steady_clock::now();
    Tensor loss = cross_entropy(x, labels);
    auto b = std::chrono::steady_clock::now();
    backward(loss);
    auto c = std::chrono::steady_clock::now();
    if (i >= 5) tf.push_back(std::chrono::duration<double, std::milli>(b - a).count()), tb.push_back(std::chrono::duration<double, std::milli>(c - b).count());
    x.zero_grad();
  }
  std::sort(tf.begin(), tf.end()); std::sort(tb.begin(), tb.end());
  printf("fwd %.3f %.3f bwd %.3f %.3f\n", tf[0], tf[tf.size() / 2], tb[0], tb[tb.size() / 2]);
}
