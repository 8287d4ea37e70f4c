// Parallel CPU loops over element ranges (OpenMP on both cores for large ranges).
#pragma once

#include <cstdint>

namespace med3d::kernels {

inline constexpr int64_t kParallelGrain = 32768;

template <class Fn>
void parallel_for(int64_t count, Fn&& fn) {
#pragma omp parallel for if (count > kParallelGrain) schedule(static)
  for (int64_t i = 0; i < count; ++i) fn(i);
}

}  // namespace med3d::kernels
