#include "med3d/kernels/cpu/concat.h"

#include <algorithm>

namespace med3d::kernels::cpu {

namespace {
// Calls fn(k, o, part_offset, dst_offset, count) for every contiguous run of part k at outer
// index o, in parallel over (o, k).
template <class Fn>
void for_each_run(const std::vector<int64_t>& extents, int64_t outer, int64_t inner, Fn&& fn) {
  const int64_t parts = static_cast<int64_t>(extents.size());
  std::vector<int64_t> start(extents.size() + 1, 0);
  for (std::size_t k = 0; k < extents.size(); ++k) start[k + 1] = start[k] + extents[k];
  const int64_t total = start.back();
#pragma omp parallel for schedule(static) if (outer * total * inner > 65536)
  for (int64_t job = 0; job < outer * parts; ++job) {
    const int64_t o = job / parts, k = job % parts;
    const int64_t count = extents[k] * inner;
    fn(k, o * count, (o * total + start[k]) * inner, count);
  }
}
}  // namespace

template <class T>
void concat_forward(const std::vector<const T*>& parts, const std::vector<int64_t>& extents,
                    int64_t outer, int64_t inner, T* dst) {
  for_each_run(extents, outer, inner, [&](int64_t k, int64_t from, int64_t to, int64_t count) {
    std::copy_n(parts[k] + from, count, dst + to);
  });
}

template <class T>
void concat_backward(const T* src, const std::vector<T*>& parts, const std::vector<int64_t>& extents,
                     int64_t outer, int64_t inner) {
  for_each_run(extents, outer, inner, [&](int64_t k, int64_t to, int64_t from, int64_t count) {
    if (parts[k]) std::copy_n(src + from, count, parts[k] + to);
  });
}

template <class T>
void zero_pad_channels_subsample(const T* x, T* y, int64_t n, int64_t c, int64_t d, int64_t h,
                                 int64_t w, int64_t stride, int64_t out_channels) {
  const int64_t od = (d + stride - 1) / stride, oh = (h + stride - 1) / stride,
                ow = (w + stride - 1) / stride;
  const int64_t out_volume = od * oh * ow;
#pragma omp parallel for schedule(static) if (n * out_channels * out_volume > 65536)
  for (int64_t plane = 0; plane < n * out_channels; ++plane) {
    const int64_t b = plane / out_channels, k = plane % out_channels;
    T* yp = y + plane * out_volume;
    if (k >= c) {
      std::fill_n(yp, out_volume, T(0));
      continue;
    }
    const T* xp = x + (b * c + k) * d * h * w;
    for (int64_t z = 0; z < od; ++z)
      for (int64_t r = 0; r < oh; ++r)
        for (int64_t q = 0; q < ow; ++q)
          yp[(z * oh + r) * ow + q] = xp[((z * stride) * h + r * stride) * w + q * stride];
  }
}

#define MED3D_INSTANTIATE(T)                                                                   \
  template void concat_forward<T>(const std::vector<const T*>&, const std::vector<int64_t>&,   \
                                  int64_t, int64_t, T*);                                       \
  template void concat_backward<T>(const T*, const std::vector<T*>&, const std::vector<int64_t>&, \
                                   int64_t, int64_t);                                          \
  template void zero_pad_channels_subsample<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                               int64_t, int64_t, int64_t);
MED3D_INSTANTIATE(float)
MED3D_INSTANTIATE(double)
#undef MED3D_INSTANTIATE

}  // namespace med3d::kernels::cpu
