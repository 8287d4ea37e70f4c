// The emulator itself: shared memory, barriers, shuffles and atomics behave as on a GPU, and a
// divergent barrier fails with a message instead of hanging.
#include <catch2/catch.hpp>

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "cuda_emu.h"

namespace {

// Block reduction: warp shuffles, one partial per warp in dynamic shared memory, then warp 0
// reduces the partials; thread 0 adds the block's sum to *total with an atomic.
__global__ void block_sum(const float* x, int64_t n, float* block_sums, float* total,
                          int* max_block) {
  MED3D_EXTERN_SHARED(float, partial);
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  float v = i < n ? x[i] : 0.0f;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < blockDim.x / 32 ? partial[lane] : 0.0f;
    for (int mask = 16; mask > 0; mask /= 2) v += __shfl_xor_sync(0xffffffffu, v, mask);
    if (lane == 0) {
      block_sums[blockIdx.x] = v;
      atomicAdd(total, v);
      atomicMax(max_block, static_cast<int>(blockIdx.x));
    }
  }
}

// Rotates each block's values by one through static shared memory; `with_barrier` = false is
// the classic missing-barrier bug.
__global__ void rotate(const float* x, float* y, bool with_barrier) {
  __shared__ float tile[64];
  tile[threadIdx.x] = x[blockIdx.x * 64 + threadIdx.x];
  if (with_barrier) __syncthreads();
  y[blockIdx.x * 64 + threadIdx.x] = tile[(threadIdx.x + 1) % 64];
}

// Each warp publishes a value; warp 0 reads them all; then every warp publishes again. Without
// the second barrier a later warp may overwrite before warp 0 has read.
__global__ void publish_twice(int* seen, bool with_barrier) {
  __shared__ int slot[4];
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) slot[warp] = static_cast<int>(warp);
  __syncthreads();
  if (warp == 0 && lane < 4) seen[lane] = slot[lane];
  if (with_barrier) __syncthreads();
  if (lane == 0) slot[warp] = -1;
  __syncthreads();
}

__global__ void divergent_barrier(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void early_exit_then_barrier(int* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void two_barriers(int* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void broadcast_and_indices(int* lanes, unsigned* ids) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int from_lane3 = __shfl_sync(0xffffffffu, static_cast<int>(t), 3);
  const unsigned block = blockIdx.x + gridDim.x * blockIdx.y;
  const unsigned global = block * (blockDim.x * blockDim.y * blockDim.z) + t;
  lanes[global] = from_lane3;
  ids[global] = block;
}

__global__ void throws_inside(int) { throw std::runtime_error("thrown by a kernel"); }

}  // namespace

TEST_CASE("cuda_emu block reduction with shuffles dynamic shared memory and atomics", "[emu]") {
  const int64_t n = 1000;
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(i % 7) - 2.0f;
  const unsigned blocks = 4, threads = 256;
  std::vector<float> sums(blocks, -1.0f);
  float total = 0.0f;
  int max_block = -1;
  for (bool reverse : {false, true}) {
    cuda_emu::ScopedReverseOrder order(reverse);
    total = 0.0f;
    cuda_emu::launch(block_sum, dim3(blocks), dim3(threads), threads / 32 * sizeof(float),
                     x.data(), n, sums.data(), &total, &max_block);
    for (unsigned b = 0; b < blocks; ++b) {
      const int64_t lo = b * threads, hi = std::min<int64_t>(n, lo + threads);
      CHECK(sums[b] == std::accumulate(x.begin() + lo, x.begin() + hi, 0.0f));
    }
    CHECK(total == std::accumulate(x.begin(), x.end(), 0.0f));
    CHECK(max_block == 3);
  }
}

TEST_CASE("cuda_emu static shared memory needs the barrier in both orders", "[emu]") {
  std::vector<float> x(128), y(128);
  std::iota(x.begin(), x.end(), 1.0f);
  for (bool reverse : {false, true}) {
    cuda_emu::ScopedReverseOrder order(reverse);
    cuda_emu::launch(rotate, dim3(2), dim3(64), 0, x.data(), y.data(), true);
    for (int i = 0; i < 128; ++i) CHECK(y[i] == x[i / 64 * 64 + (i % 64 + 1) % 64]);
  }
  // Without the barrier, forward order lets thread 0 read tile[1] before thread 1 wrote it:
  // it sees the previous launch's (stale) value of block 1, not block 0's.
  cuda_emu::launch(rotate, dim3(2), dim3(64), 0, x.data(), y.data(), false);
  CHECK(y[0] != x[1]);
  // Reverse order lets thread 63 read tile[0] before thread 0 wrote it.
  cuda_emu::ScopedReverseOrder order;
  cuda_emu::launch(rotate, dim3(2), dim3(64), 0, x.data(), y.data(), false);
  CHECK(y[63] != x[0]);
}

TEST_CASE("cuda_emu runs warps ahead of each other to expose a missing barrier", "[emu]") {
  std::vector<int> seen(4, 9);
  for (bool reverse : {false, true}) {
    cuda_emu::ScopedReverseOrder order(reverse);
    cuda_emu::launch(publish_twice, dim3(1), dim3(128), 0, seen.data(), true);
    CHECK(seen == std::vector<int>{0, 1, 2, 3});
  }
  // Reverse order: warps 3, 2, 1 overwrite their slots before warp 0 reads them.
  cuda_emu::ScopedReverseOrder order;
  cuda_emu::launch(publish_twice, dim3(1), dim3(128), 0, seen.data(), false);
  CHECK(seen == std::vector<int>{0, -1, -1, -1});
}

TEST_CASE("cuda_emu reports a divergent barrier instead of hanging", "[emu]") {
  std::vector<int> out(64, 0);
  CHECK_THROWS_WITH(cuda_emu::launch(divergent_barrier, dim3(1), dim3(64), 0, out.data()),
                    Catch::Contains("divergent barrier") && Catch::Contains("has exited") &&
                        Catch::Contains("test_emulator.cpp"));
  CHECK_THROWS_WITH(cuda_emu::launch(early_exit_then_barrier, dim3(1), dim3(64), 0, out.data()),
                    Catch::Contains("thread (5,0,0) has exited"));
  CHECK_THROWS_AS(cuda_emu::launch(two_barriers, dim3(1), dim3(64), 0, out.data()),
                  cuda_emu::EmulationError);
  // The emulator is usable again after a failed launch.
  cuda_emu::launch(divergent_barrier, dim3(1), dim3(8), 0, out.data());
  CHECK(out[7] == 1);
}

TEST_CASE("cuda_emu 3D blocks and grids and shuffle broadcast", "[emu]") {
  const dim3 grid(3, 2), block(8, 4, 2);  // 64 threads: two warps
  std::vector<int> lanes(6 * 64);
  std::vector<unsigned> ids(6 * 64);
  cuda_emu::launch(broadcast_and_indices, grid, block, 0, lanes.data(), ids.data());
  for (int i = 0; i < 6 * 64; ++i) {
    CHECK(lanes[i] == (i % 64) / 32 * 32 + 3);
    CHECK(ids[i] == static_cast<unsigned>(i / 64));
  }
}

TEST_CASE("cuda_emu rethrows an exception thrown inside a kernel", "[emu]") {
  CHECK_THROWS_WITH(cuda_emu::launch(throws_inside, dim3(2), dim3(32), 0, 0),
                    "thrown by a kernel");
  CHECK_THROWS_AS(cuda_emu::launch(throws_inside, dim3(1), dim3(2048), 0, 0),
                  cuda_emu::EmulationError);
}
