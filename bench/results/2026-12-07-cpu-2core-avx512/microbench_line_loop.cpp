#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
__attribute__((noinline)) void run(const float* x, long pitch, const float* w, long tiles, long tile_step, float* sums, long groups, int pf) {
  for (long t=0;t<tiles;++t) {
    const float* xt = x + t*tile_step;
    __m512 a0=_mm512_setzero_ps(); __m512 a1=_mm512_setzero_ps(); __m512 a2=_mm512_setzero_ps(); __m512 a3=_mm512_setzero_ps(); __m512 a4=_mm512_setzero_ps(); __m512 a5=_mm512_setzero_ps(); __m512 a6=_mm512_setzero_ps(); __m512 a7=_mm512_setzero_ps(); __m512 a8=_mm512_setzero_ps(); __m512 a9=_mm512_setzero_ps(); __m512 a10=_mm512_setzero_ps(); __m512 a11=_mm512_setzero_ps(); __m512 a12=_mm512_setzero_ps(); __m512 a13=_mm512_setzero_ps(); __m512 a14=_mm512_setzero_ps(); __m512 a15=_mm512_setzero_ps();
    const float* wp = w;
    for (long g=0; g<groups; ++g) {
      const float* xp = xt + g*pitch;
      if (pf) { for (int l=0;l<64;l+=16) __builtin_prefetch(xp + 4*pitch + l); }
#pragma GCC unroll 2
      for (int cc=0; cc<8; ++cc, wp += 32) {
        __m512 w0=_mm512_load_ps(wp), w1=_mm512_load_ps(wp+16);
        { __m512 b=_mm512_set1_ps(xp[cc+0]); a0=_mm512_fmadd_ps(b,w0,a0); a1=_mm512_fmadd_ps(b,w1,a1); }
        { __m512 b=_mm512_set1_ps(xp[cc+8]); a2=_mm512_fmadd_ps(b,w0,a2); a3=_mm512_fmadd_ps(b,w1,a3); }
        { __m512 b=_mm512_set1_ps(xp[cc+16]); a4=_mm512_fmadd_ps(b,w0,a4); a5=_mm512_fmadd_ps(b,w1,a5); }
        { __m512 b=_mm512_set1_ps(xp[cc+24]); a6=_mm512_fmadd_ps(b,w0,a6); a7=_mm512_fmadd_ps(b,w1,a7); }
        { __m512 b=_mm512_set1_ps(xp[cc+32]); a8=_mm512_fmadd_ps(b,w0,a8); a9=_mm512_fmadd_ps(b,w1,a9); }
        { __m512 b=_mm512_set1_ps(xp[cc+40]); a10=_mm512_fmadd_ps(b,w0,a10); a11=_mm512_fmadd_ps(b,w1,a11); }
        { __m512 b=_mm512_set1_ps(xp[cc+48]); a12=_mm512_fmadd_ps(b,w0,a12); a13=_mm512_fmadd_ps(b,w1,a13); }
        { __m512 b=_mm512_set1_ps(xp[cc+56]); a14=_mm512_fmadd_ps(b,w0,a14); a15=_mm512_fmadd_ps(b,w1,a15); }
      }
    }
    float* s = sums + (t & 31) * 256;
    _mm512_store_ps(s+0, _mm512_add_ps(_mm512_load_ps(s+0), a0));
    _mm512_store_ps(s+16, _mm512_add_ps(_mm512_load_ps(s+16), a1));
    _mm512_store_ps(s+32, _mm512_add_ps(_mm512_load_ps(s+32), a2));
    _mm512_store_ps(s+48, _mm512_add_ps(_mm512_load_ps(s+48), a3));
    _mm512_store_ps(s+64, _mm512_add_ps(_mm512_load_ps(s+64), a4));
    _mm512_store_ps(s+80, _mm512_add_ps(_mm512_load_ps(s+80), a5));
    _mm512_store_ps(s+96, _mm512_add_ps(_mm512_load_ps(s+96), a6));
    _mm512_store_ps(s+112, _mm512_add_ps(_mm512_load_ps(s+112), a7));
    _mm512_store_ps(s+128, _mm512_add_ps(_mm512_load_ps(s+128), a8));
    _mm512_store_ps(s+144, _mm512_add_ps(_mm512_load_ps(s+144), a9));
    _mm512_store_ps(s+160, _mm512_add_ps(_mm512_load_ps(s+160), a10));
    _mm512_store_ps(s+176, _mm512_add_ps(_mm512_load_ps(s+176), a11));
    _mm512_store_ps(s+192, _mm512_add_ps(_mm512_load_ps(s+192), a12));
    _mm512_store_ps(s+208, _mm512_add_ps(_mm512_load_ps(s+208), a13));
    _mm512_store_ps(s+224, _mm512_add_ps(_mm512_load_ps(s+224), a14));
    _mm512_store_ps(s+240, _mm512_add_ps(_mm512_load_ps(s+240), a15));
  }
}
int main(int argc, char** argv){
  long groups = atol(argv[1]);       // channels/8
  long voxels = atol(argv[2]);       // voxels per group plane (footprint)
  long pitch = voxels*8 + 16;
  float* x = (float*)aligned_alloc(64, (groups+8)*pitch*4+4096); for (long i=0;i<(groups+8)*pitch;++i) x[i]=1e-3f*(i%97);
  float* w = (float*)aligned_alloc(64, groups*8*32*4); for (long i=0;i<groups*8*32;++i) w[i]=1e-3f;
  float* sums = (float*)aligned_alloc(64, 32*256*4); memset(sums,0,32*256*4);
  long tiles = voxels/8; long reps = atol(argv[3]);
  for (int pf=0; pf<2; ++pf) for (int r=0;r<3;++r) {
    auto t0=std::chrono::steady_clock::now();
    for (long q=0;q<reps;++q) run(x,pitch,w,tiles,64,sums,groups,pf);
    double s=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
    printf("pf=%d groups %ld voxels %ld: %.1f GFLOP/s\n",pf,groups,voxels,reps*tiles*groups*8*16*32.0/s/1e9);
  }
}
