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

// Element idx of [planes, e[0], e[1], e[2]] (planes = N * C) as plane and voxel indices.
struct Index {
  int64_t plane, d, h, w;
};

__device__ inline Index unflatten(int64_t idx, const int64_t (&e)[3]) {
  return {idx / (e[0] * e[1] * e[2]), idx / (e[1] * e[2]) % e[0], idx / e[2] % e[1], idx % e[2]};
}

__host__ __device__ inline int64_t volume(const int64_t (&e)[3]) { return e[0] * e[1] * e[2]; }

// Outputs [begin, end) along one axis.
struct Range {
  int64_t begin, end;
};

// The outputs among [0, n) that read input index i, where output o reads the input indices
// first(o) .. last(o) of the axis (both nondecreasing in o).
template <class First, class Last>
__device__ inline Range readers(int64_t n, int64_t i, First first, Last last) {
  return {first_true(n, [&](int64_t o) { return last(o) >= i; }),
          first_true(n, [&](int64_t o) { return first(o) > i; })};
}

}  // namespace med3d::kernels::cuda
