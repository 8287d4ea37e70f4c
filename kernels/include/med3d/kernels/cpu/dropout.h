// CPU loop of inverted dropout: out[i] = in[i] / (1 - p) where the Philox stream (seed, offset)
// keeps element i, else 0 (see kernels/dropout.h). The same call with the same (seed, offset)
// applies the same mask, so it serves forward (in = x) and backward (in = dy). T = float or double.
#pragma once

#include <cstdint>

namespace med3d::kernels::cpu {

template <class T>
void dropout_apply(const T* in, T* out, int64_t n, double p, uint64_t seed, uint64_t offset);

}  // namespace med3d::kernels::cpu
