// CPU loops of 3D upsampling (trilinear, nearest) over contiguous [planes, D, H, W] tensors
// (planes = N * C), with the coordinate math of med3d/kernels/upsample.h. Loops are parallel
// over rows, planes or (plane, range of input depths); every gradient element is summed by one
// thread in a fixed order, so gradients are deterministic and independent of the thread count.
// Backward functions overwrite dx. Instantiated for T = float and double.
#pragma once

#include <array>
#include <cstdint>

namespace med3d::kernels::cpu {

struct UpsampleGeometry {
  int64_t planes = 0;
  std::array<int64_t, 3> in{};
  std::array<int64_t, 3> out{};
  // Scale factor per axis as given by the caller; 0 when the output size was given.
  std::array<double, 3> scale{};
  bool align_corners = false;  // trilinear only
};

// Trilinear's forward runs separably through a caller-provided workspace of this many elements
// of T (planes x D_in x H_in x W_out; its contents on entry do not matter).
int64_t upsample_trilinear3d_workspace(const UpsampleGeometry& g);
template <class T>
void upsample_trilinear3d_forward(const UpsampleGeometry& g, const T* x, T* y, T* workspace);
template <class T>
void upsample_trilinear3d_backward(const UpsampleGeometry& g, const T* dy, T* dx);

template <class T>
void upsample_nearest3d_forward(const UpsampleGeometry& g, const T* x, T* y);
template <class T>
void upsample_nearest3d_backward(const UpsampleGeometry& g, const T* dy, T* dx);

}  // namespace med3d::kernels::cpu
