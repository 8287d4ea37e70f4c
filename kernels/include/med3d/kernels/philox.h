// Philox4x32-10 (Salmon et al., SC'11): a counter-based generator. Value i of a stream keyed
// by `seed` depends only on (seed, i), so any thread on any device computes it directly.
#pragma once

#include <cmath>
#include <cstdint>

#include "med3d/kernels/hd.h"

namespace med3d::kernels {

struct Philox4x32 {
  uint32_t v[4];
};

MED3D_HD inline Philox4x32 philox4x32_10(uint64_t counter, uint64_t seed) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n1 = static_cast<uint32_t>(p1);
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    const uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// Uniform in [0, 1) from element `index` of the stream starting at `offset`.
MED3D_HD inline double philox_uniform(uint64_t seed, uint64_t offset, uint64_t index) {
  const Philox4x32 r = philox4x32_10(offset + index, seed);
  const uint64_t bits = (static_cast<uint64_t>(r.v[0]) << 21) ^ (static_cast<uint64_t>(r.v[1]) >> 11);
  return static_cast<double>(bits & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

// Standard normal via Box-Muller from the same counter (two words of the block).
MED3D_HD inline double philox_normal(uint64_t seed, uint64_t offset, uint64_t index) {
  const Philox4x32 r = philox4x32_10(offset + index, seed);
  const double u1 = (static_cast<double>(r.v[2]) + 1.0) * (1.0 / 4294967297.0);  // (0, 1)
  const double u2 = static_cast<double>(r.v[3]) * (1.0 / 4294967296.0);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace med3d::kernels
