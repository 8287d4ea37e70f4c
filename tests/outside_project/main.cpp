// Runs one op through the installed package and checks the value.
#include <med3d/med3d.h>

#include <cmath>
#include <cstdio>

int main() {
  med3d::Context context;
  med3d::Tensor x = context.full({1, 1, 3, 3, 3}, -2.0);
  med3d::Tensor y = med3d::relu(x) + x;  // -2 everywhere
  const double total = med3d::sum(y).item<double>();
  std::printf("outside project: sum = %g (expected -54)\n", total);
  return std::abs(total + 54.0) < 1e-9 ? 0 : 1;
}
