// The CPU conv ops' side of FrozenWeights (med3d/context.h): while a scope of w's context is
// alive, w packed once for the pass that reads it packed (kernels/cpu/conv3d.h) and kept
// until the scope ends. Adds to the context's cache; overwrites nothing.
#pragma once

#include <cstdint>

#include "med3d/kernels/conv_params.h"
#include "med3d/tensor.h"

namespace med3d::detail {

// w [K, C/groups, T, R, S] (f32, CPU) packed for pass `pass` of conv p, for a scratch of
// scratch_elements: packed on first use in the scope, then the same copy. Null outside a scope,
// or where that pass reads no packed weights (conv3d_packed_weights_elements is 0).
const float* frozen_packed_weights(const Tensor& w, const kernels::Conv3dParams& p, kernels::PackFor pass,
                                   int64_t scratch_elements);

}  // namespace med3d::detail
