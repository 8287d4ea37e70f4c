#include <immintrin.h>
#include <chrono>
#include <cstdio>
__attribute__((noinline)) void sep(const float* x, const float* w, long n, float* out) {
  __m512 a0=_mm512_setzero_ps(); __m512 a1=_mm512_setzero_ps(); __m512 a2=_mm512_setzero_ps(); __m512 a3=_mm512_setzero_ps(); __m512 a4=_mm512_setzero_ps(); __m512 a5=_mm512_setzero_ps(); __m512 a6=_mm512_setzero_ps(); __m512 a7=_mm512_setzero_ps(); __m512 a8=_mm512_setzero_ps(); __m512 a9=_mm512_setzero_ps(); __m512 a10=_mm512_setzero_ps(); __m512 a11=_mm512_setzero_ps(); __m512 a12=_mm512_setzero_ps(); __m512 a13=_mm512_setzero_ps(); __m512 a14=_mm512_setzero_ps(); __m512 a15=_mm512_setzero_ps();
  for (long c=0;c<n;++c) {
    const float* xp = x + (c & 63) * 8; const float* wp = w + (c & 63) * 32;
    __m512 w0=_mm512_load_ps(wp), w1=_mm512_load_ps(wp+16);
    { __m512 b; asm volatile("vbroadcastss %1, %0":"=v"(b):"m"(xp[0])); a0=_mm512_fmadd_ps(b,w0,a0); a1=_mm512_fmadd_ps(b,w1,a1); }
    { __m512 b; asm volatile("vbroadcastss %1, %0":"=v"(b):"m"(xp[1])); a2=_mm512_fmadd_ps(b,w0,a2); a3=_mm512_fmadd_ps(b,w1,a3); }
    { __m512 b; asm volatile("vbroadcastss %1, %0":"=v"(b):"m"(xp[2])); a4=_mm512_fmadd_ps(b,w0,a4); a5=_mm512_fmadd_ps(b,w1,a5); }
    { __m512 b; asm volatile("vbroadcastss %1, %0":"=v"(b):"m"(xp[3])); a6=_mm512_fmadd_ps(b,w0,a6); a7=_mm512_fmadd_ps(b,w1,a7); }
    { __m512 b; asm volatile("vbroadcastss %1, %0":"=v"(b):"m"(xp[4])); a8=_mm512_fmadd_ps(b,w0,a8); a9=_mm512_fmadd_ps(b,w1,a9); }
    { __m512 b; asm volatile("vbroadcastss %1, %0":"=v"(b):"m"(xp[5])); a10=_mm512_fmadd_ps(b,w0,a10); a11=_mm512_fmadd_ps(b,w1,a11); }
    { __m512 b; asm volatile("vbroadcastss %1, %0":"=v"(b):"m"(xp[6])); a12=_mm512_fmadd_ps(b,w0,a12); a13=_mm512_fmadd_ps(b,w1,a13); }
    { __m512 b; asm volatile("vbroadcastss %1, %0":"=v"(b):"m"(xp[7])); a14=_mm512_fmadd_ps(b,w0,a14); a15=_mm512_fmadd_ps(b,w1,a15); }
  }
  a0=_mm512_add_ps(a0,a1); a0=_mm512_add_ps(a0,a2); a0=_mm512_add_ps(a0,a3); a0=_mm512_add_ps(a0,a4); a0=_mm512_add_ps(a0,a5); a0=_mm512_add_ps(a0,a6); a0=_mm512_add_ps(a0,a7); a0=_mm512_add_ps(a0,a8); a0=_mm512_add_ps(a0,a9); a0=_mm512_add_ps(a0,a10); a0=_mm512_add_ps(a0,a11); a0=_mm512_add_ps(a0,a12); a0=_mm512_add_ps(a0,a13); a0=_mm512_add_ps(a0,a14); a0=_mm512_add_ps(a0,a15); _mm512_storeu_ps(out,a0);
}
__attribute__((noinline)) void emb(const float* x, const float* w, long n, float* out) {
  __m512 a0=_mm512_setzero_ps(); __m512 a1=_mm512_setzero_ps(); __m512 a2=_mm512_setzero_ps(); __m512 a3=_mm512_setzero_ps(); __m512 a4=_mm512_setzero_ps(); __m512 a5=_mm512_setzero_ps(); __m512 a6=_mm512_setzero_ps(); __m512 a7=_mm512_setzero_ps(); __m512 a8=_mm512_setzero_ps(); __m512 a9=_mm512_setzero_ps(); __m512 a10=_mm512_setzero_ps(); __m512 a11=_mm512_setzero_ps(); __m512 a12=_mm512_setzero_ps(); __m512 a13=_mm512_setzero_ps(); __m512 a14=_mm512_setzero_ps(); __m512 a15=_mm512_setzero_ps();
  for (long c=0;c<n;++c) {
    const float* xp = x + (c & 63) * 8; const float* wp = w + (c & 63) * 32;
    __m512 w0=_mm512_load_ps(wp), w1=_mm512_load_ps(wp+16);
    asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a0):"m"(xp[0]),"v"(w0)); asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a1):"m"(xp[0]),"v"(w1));
    asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a2):"m"(xp[1]),"v"(w0)); asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a3):"m"(xp[1]),"v"(w1));
    asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a4):"m"(xp[2]),"v"(w0)); asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a5):"m"(xp[2]),"v"(w1));
    asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a6):"m"(xp[3]),"v"(w0)); asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a7):"m"(xp[3]),"v"(w1));
    asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a8):"m"(xp[4]),"v"(w0)); asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a9):"m"(xp[4]),"v"(w1));
    asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a10):"m"(xp[5]),"v"(w0)); asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a11):"m"(xp[5]),"v"(w1));
    asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a12):"m"(xp[6]),"v"(w0)); asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a13):"m"(xp[6]),"v"(w1));
    asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a14):"m"(xp[7]),"v"(w0)); asm("vfmadd231ps %1%{1to16%}, %2, %0":"+v"(a15):"m"(xp[7]),"v"(w1));
  }
  a0=_mm512_add_ps(a0,a1); a0=_mm512_add_ps(a0,a2); a0=_mm512_add_ps(a0,a3); a0=_mm512_add_ps(a0,a4); a0=_mm512_add_ps(a0,a5); a0=_mm512_add_ps(a0,a6); a0=_mm512_add_ps(a0,a7); a0=_mm512_add_ps(a0,a8); a0=_mm512_add_ps(a0,a9); a0=_mm512_add_ps(a0,a10); a0=_mm512_add_ps(a0,a11); a0=_mm512_add_ps(a0,a12); a0=_mm512_add_ps(a0,a13); a0=_mm512_add_ps(a0,a14); a0=_mm512_add_ps(a0,a15); _mm512_storeu_ps(out,a0);
}
__attribute__((noinline)) void embw(const float* x, const float* w, long n, float* out) {
  __m512 a0=_mm512_setzero_ps(); __m512 a1=_mm512_setzero_ps(); __m512 a2=_mm512_setzero_ps(); __m512 a3=_mm512_setzero_ps(); __m512 a4=_mm512_setzero_ps(); __m512 a5=_mm512_setzero_ps(); __m512 a6=_mm512_setzero_ps(); __m512 a7=_mm512_setzero_ps(); __m512 a8=_mm512_setzero_ps(); __m512 a9=_mm512_setzero_ps(); __m512 a10=_mm512_setzero_ps(); __m512 a11=_mm512_setzero_ps(); __m512 a12=_mm512_setzero_ps(); __m512 a13=_mm512_setzero_ps(); __m512 a14=_mm512_setzero_ps(); __m512 a15=_mm512_setzero_ps();
  for (long c=0;c<n;++c) {
    const float* xp = x + (c & 63) * 8; const float* wp = w + (c & 63) * 32;
    __m512 w0=_mm512_load_ps(wp), w1=_mm512_load_ps(wp+16);
    { __m512 b=_mm512_set1_ps(xp[0]); a0=_mm512_fmadd_ps(b,w0,a0); a1=_mm512_fmadd_ps(b,w1,a1); }
    { __m512 b=_mm512_set1_ps(xp[1]); a2=_mm512_fmadd_ps(b,w0,a2); a3=_mm512_fmadd_ps(b,w1,a3); }
    { __m512 b=_mm512_set1_ps(xp[2]); a4=_mm512_fmadd_ps(b,w0,a4); a5=_mm512_fmadd_ps(b,w1,a5); }
    { __m512 b=_mm512_set1_ps(xp[3]); a6=_mm512_fmadd_ps(b,w0,a6); a7=_mm512_fmadd_ps(b,w1,a7); }
    { __m512 b=_mm512_set1_ps(xp[4]); a8=_mm512_fmadd_ps(b,w0,a8); a9=_mm512_fmadd_ps(b,w1,a9); }
    { __m512 b=_mm512_set1_ps(xp[5]); a10=_mm512_fmadd_ps(b,w0,a10); a11=_mm512_fmadd_ps(b,w1,a11); }
    { __m512 b=_mm512_set1_ps(xp[6]); a12=_mm512_fmadd_ps(b,w0,a12); a13=_mm512_fmadd_ps(b,w1,a13); }
    { __m512 b=_mm512_set1_ps(xp[7]); a14=_mm512_fmadd_ps(b,w0,a14); a15=_mm512_fmadd_ps(b,w1,a15); }
  }
  a0=_mm512_add_ps(a0,a1); a0=_mm512_add_ps(a0,a2); a0=_mm512_add_ps(a0,a3); a0=_mm512_add_ps(a0,a4); a0=_mm512_add_ps(a0,a5); a0=_mm512_add_ps(a0,a6); a0=_mm512_add_ps(a0,a7); a0=_mm512_add_ps(a0,a8); a0=_mm512_add_ps(a0,a9); a0=_mm512_add_ps(a0,a10); a0=_mm512_add_ps(a0,a11); a0=_mm512_add_ps(a0,a12); a0=_mm512_add_ps(a0,a13); a0=_mm512_add_ps(a0,a14); a0=_mm512_add_ps(a0,a15); _mm512_storeu_ps(out,a0);
}
__attribute__((noinline)) void pure(const float* x, const float* w, long n, float* out) {
  __m512 a0=_mm512_setzero_ps(); __m512 a1=_mm512_setzero_ps(); __m512 a2=_mm512_setzero_ps(); __m512 a3=_mm512_setzero_ps(); __m512 a4=_mm512_setzero_ps(); __m512 a5=_mm512_setzero_ps(); __m512 a6=_mm512_setzero_ps(); __m512 a7=_mm512_setzero_ps(); __m512 a8=_mm512_setzero_ps(); __m512 a9=_mm512_setzero_ps(); __m512 a10=_mm512_setzero_ps(); __m512 a11=_mm512_setzero_ps(); __m512 a12=_mm512_setzero_ps(); __m512 a13=_mm512_setzero_ps(); __m512 a14=_mm512_setzero_ps(); __m512 a15=_mm512_setzero_ps();
  __m512 w0=_mm512_load_ps(w), w1=_mm512_load_ps(w+16), b=_mm512_load_ps(x);
  for (long c=0;c<n;++c) {
    asm volatile("":"+v"(b)); a0=_mm512_fmadd_ps(b,w0,a0); a1=_mm512_fmadd_ps(b,w1,a1);
    asm volatile("":"+v"(b)); a2=_mm512_fmadd_ps(b,w0,a2); a3=_mm512_fmadd_ps(b,w1,a3);
    asm volatile("":"+v"(b)); a4=_mm512_fmadd_ps(b,w0,a4); a5=_mm512_fmadd_ps(b,w1,a5);
    asm volatile("":"+v"(b)); a6=_mm512_fmadd_ps(b,w0,a6); a7=_mm512_fmadd_ps(b,w1,a7);
    asm volatile("":"+v"(b)); a8=_mm512_fmadd_ps(b,w0,a8); a9=_mm512_fmadd_ps(b,w1,a9);
    asm volatile("":"+v"(b)); a10=_mm512_fmadd_ps(b,w0,a10); a11=_mm512_fmadd_ps(b,w1,a11);
    asm volatile("":"+v"(b)); a12=_mm512_fmadd_ps(b,w0,a12); a13=_mm512_fmadd_ps(b,w1,a13);
    asm volatile("":"+v"(b)); a14=_mm512_fmadd_ps(b,w0,a14); a15=_mm512_fmadd_ps(b,w1,a15);
  }
  a0=_mm512_add_ps(a0,a1); a0=_mm512_add_ps(a0,a2); a0=_mm512_add_ps(a0,a3); a0=_mm512_add_ps(a0,a4); a0=_mm512_add_ps(a0,a5); a0=_mm512_add_ps(a0,a6); a0=_mm512_add_ps(a0,a7); a0=_mm512_add_ps(a0,a8); a0=_mm512_add_ps(a0,a9); a0=_mm512_add_ps(a0,a10); a0=_mm512_add_ps(a0,a11); a0=_mm512_add_ps(a0,a12); a0=_mm512_add_ps(a0,a13); a0=_mm512_add_ps(a0,a14); a0=_mm512_add_ps(a0,a15); _mm512_storeu_ps(out,a0);
}
int main(){
  alignas(64) static float x[64*8+64], w[64*32+64], out[16];
  for (int i=0;i<64*8;++i) x[i]=1e-3f*i; for(int i=0;i<64*32;++i) w[i]=1e-3f;
  long n=20000000;
  using F=void(*)(const float*,const float*,long,float*); const char* names[]={"sep","emb","set1","pure"}; F fs[]={sep,emb,embw,pure};
  for (int r=0;r<2;++r) for (int q=0;q<4;++q) { const char* name=names[q]; F f=fs[q];
    auto t0=std::chrono::steady_clock::now(); f(x,w,n,out); double s=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
    printf("%s %.1f GFLOP/s (%g)\n",name,n*16*32/s/1e9,out[0]);
  }
}