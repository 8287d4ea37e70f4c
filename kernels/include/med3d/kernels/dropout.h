// Per-element math of inverted dropout, shared by the CPU loops and CUDA launchers. Element i
// is kept when value i of the Philox stream (seed, offset) is >= p; kept values are scaled by
// 1 / (1 - p). The mask is a pure function of (seed, offset, i), so backward regenerates it.
#pragma once

#include <cstdint>

#include "med3d/kernels/hd.h"
#include "med3d/kernels/philox.h"

namespace med3d::kernels {

MED3D_HD inline bool dropout_keeps(uint64_t seed, uint64_t offset, uint64_t index, double p) {
  return philox_uniform(seed, offset, index) >= p;
}

template <class T>
MED3D_HD inline T dropout_apply(T x, bool keep, T scale) {
  return keep ? x * scale : T(0);
}

}  // namespace med3d::kernels
