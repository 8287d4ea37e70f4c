// The CUDA batch-norm reductions (kernels/cuda/batch_norm.cuh) under the emulator match the CPU
// kernels (kernels/cpu/batch_norm.cpp) in both thread orders.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "cuda_emu.h"
// The kernels, compiled by g++ exactly as nvcc sees them:
#include "cuda/batch_norm.cuh"
#include "med3d/kernels/cpu/batch_norm.h"

namespace {

namespace kc = med3d::kernels::cuda;
namespace cpu = med3d::kernels::cpu;
using DVec = std::vector<double>;

// Doubles summed in another order: equal to ~1e-15 relative; 1e-10 leaves room without hiding
// a wrong term.
void check_close(const DVec& got, const DVec& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("channel " << i);
    CHECK(got[i] == Approx(want[i]).epsilon(1e-10).margin(1e-12));
  }
}

struct Case {
  kc::BatchNormDims d;
  int64_t values_per_block;  // small values force many level-1 chunks
  float offset;              // |mean| >> std tests the shifted moments
};

std::vector<float> random_vector(int64_t n, unsigned seed, float offset) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(offset, 0.5f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& e : v) e = dist(gen);
  return v;
}

const Case kCases[] = {
    {{3, 5, 7 * 6 * 5}, 16384, 0.0f},  // one chunk per channel
    {{3, 5, 7 * 6 * 5}, 100, 0.3f},    // 7 chunks, the last one short
    {{2, 3, 1}, 16384, -1.0f},         // [N, C] input
    {{1, 2, 4099}, 512, 1000.0f},      // many chunks, large offset
};

}  // namespace

TEST_CASE("emulated batch_norm_stats matches the CPU kernel in both thread orders", "[emu]") {
  for (const Case& c : kCases)
    for (bool reverse : {false, true}) {
      INFO("N " << c.d.n << " C " << c.d.c << " spatial " << c.d.spatial << " values per block "
                << c.values_per_block << (reverse ? " (reverse order)" : ""));
      cuda_emu::ScopedReverseOrder order(reverse);
      const auto x = random_vector(c.d.n * c.d.c * c.d.spatial, 7, c.offset);
      DVec want_mean(c.d.c), want_var(c.d.c);
      cpu::batch_norm_stats<float>({c.d.n, c.d.c, c.d.spatial}, x.data(), want_mean.data(),
                                   want_var.data());

      const kc::BatchNormLaunch l = kc::batch_norm_reduce_launch(c.d, c.values_per_block);
      DVec sum(c.d.c * l.chunks, NAN), sumsq(sum.size(), NAN), mean(c.d.c, NAN), var(c.d.c, NAN);
      cuda_emu::launch(kc::batch_norm_stats_partial, l.partial_grid, l.block, l.shared_bytes, c.d,
                       x.data(), l.chunk_len, sum.data(), sumsq.data());
      cuda_emu::launch(kc::batch_norm_stats_finalize, l.finalize_grid, l.block, l.shared_bytes,
                       c.d, x.data(), l.chunks, sum.data(), sumsq.data(), mean.data(), var.data());
      check_close(mean, want_mean);
      check_close(var, want_var);
    }
}

TEST_CASE("emulated batch_norm_reduce_grad matches the CPU kernel in both thread orders", "[emu]") {
  for (const Case& c : kCases)
    for (bool reverse : {false, true}) {
      INFO("N " << c.d.n << " C " << c.d.c << " spatial " << c.d.spatial << " values per block "
                << c.values_per_block << (reverse ? " (reverse order)" : ""));
      cuda_emu::ScopedReverseOrder order(reverse);
      const int64_t n = c.d.n * c.d.c * c.d.spatial;
      const auto x = random_vector(n, 8, c.offset), dy = random_vector(n, 9, 0.1f);
      DVec mean(c.d.c);
      for (int64_t ch = 0; ch < c.d.c; ++ch) mean[ch] = c.offset + 0.01 * static_cast<double>(ch);
      DVec want_dy(c.d.c), want_dy_xmu(c.d.c);
      cpu::batch_norm_reduce_grad<float>({c.d.n, c.d.c, c.d.spatial}, x.data(), dy.data(),
                                         mean.data(), want_dy.data(), want_dy_xmu.data());

      const kc::BatchNormLaunch l = kc::batch_norm_reduce_launch(c.d, c.values_per_block);
      DVec pa(c.d.c * l.chunks, NAN), pb(pa.size(), NAN), got_dy(c.d.c, NAN),
          got_dy_xmu(c.d.c, NAN);
      cuda_emu::launch(kc::batch_norm_reduce_grad_partial, l.partial_grid, l.block,
                       l.shared_bytes, c.d, x.data(), dy.data(), mean.data(), l.chunk_len,
                       pa.data(), pb.data());
      cuda_emu::launch(kc::batch_norm_reduce_grad_finalize, l.finalize_grid, l.block,
                       l.shared_bytes, l.chunks, pa.data(), pb.data(), got_dy.data(),
                       got_dy_xmu.data());
      check_close(got_dy, want_dy);
      check_close(got_dy_xmu, want_dy_xmu);
    }
}

TEST_CASE("batch norm reduction launch geometry", "[emu]") {
  const kc::BatchNormLaunch l = kc::batch_norm_reduce_launch({3, 5, 210}, 100);
  CHECK(l.chunks == 7);  // 630 values in chunks of 90
  CHECK(l.chunk_len == 90);
  CHECK(l.partial_grid.x == 7);
  CHECK(l.partial_grid.y == 5);
  CHECK(l.finalize_grid.x == 5);
  CHECK(kc::batch_norm_reduce_launch({1, 1, int64_t(1) << 40}).chunks == 4096);
}
