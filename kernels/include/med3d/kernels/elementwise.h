// Per-element math of the element-wise ops, shared by CPU loops and CUDA launchers.
#pragma once

#include <cmath>

#include "med3d/kernels/hd.h"

namespace med3d::kernels {

template <class T> MED3D_HD inline T relu_forward(T x) { return x > T(0) ? x : T(0); }
// Gradient at 0 is 0, as in PyTorch.
template <class T> MED3D_HD inline T relu_backward(T y, T dy) { return y > T(0) ? dy : T(0); }

// Numerically stable in both tails.
template <class T> MED3D_HD inline T sigmoid_forward(T x) {
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}
template <class T> MED3D_HD inline T sigmoid_backward(T y, T dy) { return dy * y * (T(1) - y); }

}  // namespace med3d::kernels
