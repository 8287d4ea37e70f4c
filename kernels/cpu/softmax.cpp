#include "med3d/kernels/cpu/softmax.h"

#include "med3d/kernels/cpu_loops.h"

namespace med3d::kernels::cpu {

template <class T>
void softmax_forward(const T* x, T* y, ChannelLayout layout) {
  parallel_for(layout.positions(), [&](int64_t p) {
    const int64_t base = layout.base(p);
    softmax_at(x + base, y + base, layout.channels, layout.spatial);
  });
}

template <class T>
void log_softmax_forward(const T* x, T* y, ChannelLayout layout) {
  parallel_for(layout.positions(), [&](int64_t p) {
    const int64_t base = layout.base(p);
    log_softmax_at(x + base, y + base, layout.channels, layout.spatial);
  });
}

template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, ChannelLayout layout) {
  parallel_for(layout.positions(), [&](int64_t p) {
    const int64_t base = layout.base(p);
    softmax_backward_at(y + base, dy + base, dx + base, layout.channels, layout.spatial);
  });
}

template <class T>
void log_softmax_backward(const T* y, const T* dy, T* dx, ChannelLayout layout) {
  parallel_for(layout.positions(), [&](int64_t p) {
    const int64_t base = layout.base(p);
    log_softmax_backward_at(y + base, dy + base, dx + base, layout.channels, layout.spatial);
  });
}

template <class T>
void argmax_channels(const T* x, int32_t* out, ChannelLayout layout) {
  parallel_for(layout.positions(), [&](int64_t p) {
    out[p] = argmax_at(x + layout.base(p), layout.channels, layout.spatial);
  });
}

#define MED3D_INSTANTIATE(T)                                                      \
  template void softmax_forward<T>(const T*, T*, ChannelLayout);                  \
  template void log_softmax_forward<T>(const T*, T*, ChannelLayout);              \
  template void softmax_backward<T>(const T*, const T*, T*, ChannelLayout);       \
  template void log_softmax_backward<T>(const T*, const T*, T*, ChannelLayout);   \
  template void argmax_channels<T>(const T*, int32_t*, ChannelLayout);
MED3D_INSTANTIATE(float)
MED3D_INSTANTIATE(double)
#undef MED3D_INSTANTIATE

}  // namespace med3d::kernels::cpu
