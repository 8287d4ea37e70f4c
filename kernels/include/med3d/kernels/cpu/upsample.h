// CPU loops of 3D upsampling (trilinear, nearest) over contiguous [planes, D, H, W] tensors
// (planes = N * C), with the coordinate math of med3d/kernels/upsample.h. Forward loops are
// parallel over output rows; backward loops are parallel over planes, each owned by one
// thread that scatters its dy plane into its zeroed dx plane in a fixed order, so gradients
// are deterministic. Backward functions overwrite dx. Instantiated for T = float and double.
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

template <class T>
void upsample_trilinear3d_forward(const UpsampleGeometry& g, const T* x, T* y);
template <class T>
void upsample_trilinear3d_backward(const UpsampleGeometry& g, const T* dy, T* dx);

template <class T>
void upsample_nearest3d_forward(const UpsampleGeometry& g, const T* x, T* y);
template <class T>
void upsample_nearest3d_backward(const UpsampleGeometry& g, const T* dy, T* dx);

}  // namespace med3d::kernels::cpu
