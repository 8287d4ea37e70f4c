// Backward passes as gathers: each input element sums, in output order, the outputs that read
// it, so no two threads write one element (no atomics, deterministic results). Along one axis
// the outputs reading input index i form a contiguous range whenever the first and last input
// index an output reads are nondecreasing in the output index (pooling windows, interpolation
// taps, nearest sources); first_true finds the range ends by bisection.
#pragma once

#include <cstdint>

namespace med3d::kernels::cuda {

// The first o in [0, n) with pred(o), for a pred that is false then true; n when none.
template <class Pred>
__device__ inline int64_t first_true(int64_t n, Pred pred) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (pred(mid))
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

}  // namespace med3d::kernels::cuda
