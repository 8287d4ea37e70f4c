// Runs a conv3d (and its backward) through the installed package and checks the values.
#include <med3d/med3d.h>

#include <cmath>
#include <cstdio>

int main() {
  using namespace med3d;
  Context context;
  // A 3x3x3 box filter of ones over a volume of ones with zero padding: the centre voxel
  // sees 27 ones, a corner voxel 8.
  Tensor x = context.ones({1, 1, 4, 4, 4});
  Tensor w = context.ones({1, 1, 3, 3, 3}).set_requires_grad(true);
  Tensor y = conv3d(x, w, {}, {.padding = {1, 1, 1}});
  const double centre = y.at<float>({0, 0, 1, 1, 1}), corner = y.at<float>({0, 0, 0, 0, 0});
  backward(sum(y));
  const double dw_centre = w.grad().at<float>({0, 0, 1, 1, 1});  // every output sees x there: 64
  std::printf("outside project: conv3d centre %g (27), corner %g (8), dw centre %g (64)\n", centre, corner,
              dw_centre);
  return centre == 27 && corner == 8 && dw_centre == 64 ? 0 : 1;
}
