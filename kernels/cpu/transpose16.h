// transpose16_registers: a 16 x 16 block of floats transposed in AVX-512 registers (lane j of row i
// in, lane i of row j out), for the kernels that repack matrices (gemm's transposed B panels, the
// direct convs' weights). Under __AVX512F__ it also brings <immintrin.h> for its includers, with
// GCC 12's false -Wuninitialized on its own _mm512_undefined_ps() (reported once the shuffles
// are inlined, at a location inside the header) silenced there.
#pragma once

#if defined(__AVX512F__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

namespace med3d::kernels::cpu {

// In place: r[j] lane i becomes the old r[i] lane j. Three shuffle stages.
inline void transpose16_registers(__m512 (&r)[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // r[4b + q], lane L: column 4L + q of rows 4b..4b+3.
  for (int b = 0; b < 16; b += 4) {
    r[b] = _mm512_shuffle_ps(t[b], t[b + 2], 0x44);
    r[b + 1] = _mm512_shuffle_ps(t[b], t[b + 2], 0xEE);
    r[b + 2] = _mm512_shuffle_ps(t[b + 1], t[b + 3], 0x44);
    r[b + 3] = _mm512_shuffle_ps(t[b + 1], t[b + 3], 0xEE);
  }
  for (int q = 0; q < 4; ++q) {
    const __m512 x = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x88), y = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xDD);
    const __m512 x2 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x88);
    const __m512 y2 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xDD);
    t[q] = _mm512_shuffle_f32x4(x, x2, 0x88);
    t[8 + q] = _mm512_shuffle_f32x4(x, x2, 0xDD);
    t[4 + q] = _mm512_shuffle_f32x4(y, y2, 0x88);
    t[12 + q] = _mm512_shuffle_f32x4(y, y2, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

}  // namespace med3d::kernels::cpu
#endif
