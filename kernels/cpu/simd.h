// The one float vector of the CPU kernels' hot loops (GEMM microkernel, direct convs): 16 lanes
// under AVX-512, 8 under AVX2 + FMA, so that one kernel text serves both; MED3D_SIMD is defined
// when either is compiled in (else the kernels take their portable loops). Also
// transpose16_registers (AVX-512), transpose8_registers (AVX2), transpose_registers (the vector's)
// and transpose_block (through memory); copy_streaming; kLoopLanes (every build).
// <immintrin.h> comes with GCC 12's false -Wuninitialized on its own _mm512_undefined_ps()
// (reported once the shuffles are inlined, at a location inside the header) silenced here.
#pragma once

#include <cstdint>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define MED3D_SIMD 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

namespace med3d::kernels::cpu::simd {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
using Vec = __m512;
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec broadcast(float a) { return _mm512_set1_ps(a); }
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float sum(Vec v) { return _mm512_reduce_add_ps(v); }

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
#else
constexpr int kLanes = 8;
using Vec = __m256;
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec broadcast(float a) { return _mm256_set1_ps(a); }
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float sum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
#endif

// r[j] lane i = r[i] lane j: an 8 x 8 block transposed in registers.
inline void transpose8_registers(__m256 (&r)[8]) {
  __m256 t[8], u[8];
  for (int q = 0; q < 8; q += 2) {
    t[q] = _mm256_unpacklo_ps(r[q], r[q + 1]);
    t[q + 1] = _mm256_unpackhi_ps(r[q], r[q + 1]);
  }
  for (int q = 0; q < 8; q += 4) {
    u[q] = _mm256_shuffle_ps(t[q], t[q + 2], 0x44);
    u[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], 0xEE);
    u[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0x44);
    u[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0xEE);
  }
  for (int q = 0; q < 4; ++q) {
    r[q] = _mm256_permute2f128_ps(u[q], u[q + 4], 0x20);
    r[q + 4] = _mm256_permute2f128_ps(u[q], u[q + 4], 0x31);
  }
}

// dst[j * ldd + i] = src[i * lds + j] for an 8 x 8 block (AVX-512 builds too); with kStreaming,
// non-temporal stores (store_streaming's contract: dst on 32 bytes, the caller fences).
// (Each row stored from its own register: GCC 12 under AVX-512 otherwise joined pairs of rows
// through the stack into 64-byte stores, whose loads waited on a failed store forwarding: 86% of
// the copy's time, 6% of DenseASPP d12's dgrad.)
template <bool kStreaming = false>
inline void transpose8_block(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  transpose8_registers(r);
  for (int j = 0; j < 8; ++j) {
    asm("" : "+x"(r[j]));
    if constexpr (kStreaming)
      _mm256_stream_ps(dst + j * ldd, r[j]);
    else
      _mm256_storeu_ps(dst + j * ldd, r[j]);
  }
}

// Keeps v in a register where it is used: GCC otherwise may fold its load into every
// multiply-add that reads it (a load per product, more than the load ports feed) or spill it.
inline void keep_in_register(Vec& v) { asm("" : "+v"(v)); }

// r[j] lane i = r[i] lane j: a kLanes x kLanes block transposed in registers.
inline void transpose_registers(Vec (&r)[kLanes]) {
#if defined(__AVX512F__)
  transpose16_registers(r);
#else
  transpose8_registers(r);
#endif
}

// dst[j * ldd + i] = src[i * lds + j] for a kLanes x kLanes block.
inline void transpose_block(const float* src, int64_t lds, float* dst, int64_t ldd) {
  Vec r[kLanes];
  for (int i = 0; i < kLanes; ++i) r[i] = load(src + i * lds);
  transpose_registers(r);
  for (int j = 0; j < kLanes; ++j) store(dst + j * ldd, r[j]);
}

// *p = v with a non-temporal store (no read for ownership, not kept in the caches); p aligned to
// the vector. The caller fences (_mm_sfence) before its next synchronisation.
inline void store_streaming(float* p, Vec v) {
#if defined(__AVX512F__)
  _mm512_stream_ps(p, v);
#else
  _mm256_stream_ps(p, v);
#endif
}

// dst[0, n) = src[0, n): the whole 64-byte lines of dst with non-temporal stores (no read for
// ownership, and not kept in the caches), the partial lines at its ends with ordinary stores;
// then a store fence, so that the copy is ordered before the caller's next synchronisation. For
// large outputs that nothing reads again soon.
inline void copy_streaming(const float* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i < n && reinterpret_cast<uintptr_t>(dst + i) % 64 != 0; ++i) dst[i] = src[i];
  for (; i + 16 <= n; i += 16)
    for (int v = 0; v < 16; v += kLanes) store_streaming(dst + i + v, load(src + i + v));
  for (; i < n; ++i) dst[i] = src[i];
  _mm_sfence();
}

}  // namespace med3d::kernels::cpu::simd
#endif

namespace med3d::kernels::cpu {
// From this size an output that a pass writes once (wgrad's dw, the line tiles' y, a pointwise
// conv's GEMM output) goes out with non-temporal stores: no read for ownership of lines that the
// kernel overwrites whole, and nothing evicted for data that the next op reads from memory anyway.
inline constexpr int64_t kStreamedBytes = int64_t(4) << 20;

// The lanes of the kernels' loops over vectors: the vector's, and AVX-512's 16 in the portable
// loops (so that their tiles keep one shape).
#if defined(MED3D_SIMD)
inline constexpr int kLoopLanes = simd::kLanes;
#else
inline constexpr int kLoopLanes = 16;
#endif
}  // namespace med3d::kernels::cpu
