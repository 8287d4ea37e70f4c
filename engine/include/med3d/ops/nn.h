// Layers without spatial structure: fully connected, dropout, flatten. Inputs are f32 or f64
// CPU tensors of one Context and dtype; all ops are differentiable and recorded on the tape.
#pragma once

#include "med3d/tensor.h"

namespace med3d {

// y [N, out] = x [N, in] w^T + b, with w [out, in] and an optional bias b [out].
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b = {});

// Inverted dropout: each element is zeroed with probability p and kept ones are scaled by
// 1 / (1 - p), so the expectation is unchanged. p must lie in [0, 1). Returns x itself when
// !training or p == 0. The mask comes from the Context's counter-based random stream (one
// value per element, reserved with take_random_offset), so a run is reproducible from the
// seed; backward regenerates the same mask from the saved (seed, offset).
Tensor dropout(const Tensor& x, double p, bool training);

// [N, d1, d2, ...] -> [N, d1 * d2 * ...]; a reshape view sharing storage (rank >= 2).
Tensor flatten(const Tensor& x);

}  // namespace med3d
