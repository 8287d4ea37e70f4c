#include "med3d/kernels/cpu/dropout.h"

#include "med3d/kernels/cpu_loops.h"
#include "med3d/kernels/dropout.h"

namespace med3d::kernels::cpu {

template <class T>
void dropout_apply(const T* in, T* out, int64_t n, double p, uint64_t seed, uint64_t offset) {
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  parallel_for(n, [&](int64_t i) {
    const bool keep = dropout_keeps(seed, offset, static_cast<uint64_t>(i), p);
    out[i] = kernels::dropout_apply(in[i], keep, scale);
  });
}

template void dropout_apply<float>(const float*, float*, int64_t, double, uint64_t, uint64_t);
template void dropout_apply<double>(const double*, double*, int64_t, double, uint64_t, uint64_t);

}  // namespace med3d::kernels::cpu
