// Deterministic parallel sums: the range is cut into fixed blocks, each block accumulates its
// own partial sums in double, and the partials are added in block order, so the result does
// not depend on the number of threads or their timing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace med3d::kernels::cpu {

inline constexpr int64_t kSumBlock = 8192;

// Calls fn(begin, end, acc) for blocks of [0, count); acc points to `width` zeroed doubles
// private to that block. Returns the `width` totals.
template <class Fn>
std::vector<double> block_sum(int64_t count, int width, Fn&& fn) {
  const int64_t blocks = (count + kSumBlock - 1) / kSumBlock;
  std::vector<double> partial(static_cast<std::size_t>(blocks * width), 0.0);
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t begin = block * kSumBlock;
    fn(begin, std::min(count, begin + kSumBlock), partial.data() + block * width);
  }
  std::vector<double> total(static_cast<std::size_t>(width), 0.0);
  for (int64_t block = 0; block < blocks; ++block)
    for (int k = 0; k < width; ++k) total[k] += partial[block * width + k];
  return total;
}

}  // namespace med3d::kernels::cpu
