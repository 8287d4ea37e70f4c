// Channel softmax family: one thread per position (adjacent threads read adjacent positions of
// each channel plane, so loads coalesce), running the shared per-position functors.
#include "cuda_common.cuh"

#include "med3d/kernels/cuda/softmax.h"
#include "med3d/kernels/softmax.h"

namespace med3d::kernels::cuda {

namespace {

struct SoftmaxForward {
  __device__ void operator()(const float* x, const float*, float* y, int64_t c, int64_t s) const {
    softmax_at(x, y, c, s);
  }
};
struct LogSoftmaxForward {
  __device__ void operator()(const float* x, const float*, float* y, int64_t c, int64_t s) const {
    log_softmax_at(x, y, c, s);
  }
};
struct SoftmaxBackward {
  __device__ void operator()(const float* y, const float* dy, float* dx, int64_t c,
                             int64_t s) const {
    softmax_backward_at(y, dy, dx, c, s);
  }
};
struct LogSoftmaxBackward {
  __device__ void operator()(const float* y, const float* dy, float* dx, int64_t c,
                             int64_t s) const {
    log_softmax_backward_at(y, dy, dx, c, s);
  }
};

// fn(a + base, b + base, out + base, C, S) per position; b may be nullptr (forwards).
template <class Fn>
__global__ void per_position_kernel(Fn fn, const float* a, const float* b, float* out,
                                    ChannelLayout layout) {
  for (int64_t p = grid_index(); p < layout.positions(); p += grid_stride()) {
    const int64_t base = layout.base(p);
    fn(a + base, b ? b + base : nullptr, out + base, layout.channels, layout.spatial);
  }
}

__global__ void argmax_kernel(const float* x, int32_t* out, ChannelLayout layout) {
  for (int64_t p = grid_index(); p < layout.positions(); p += grid_stride())
    out[p] = argmax_at(x + layout.base(p), layout.channels, layout.spatial);
}

template <class Fn>
void launch_per_position(Stream stream, Fn fn, const float* a, const float* b, float* out,
                         ChannelLayout layout) {
  if (layout.positions() == 0 || layout.channels == 0) return;
  auto kernel = &per_position_kernel<Fn>;
  MED3D_LAUNCH(kernel, element_grid(layout.positions()), dim3(kElementThreads), 0, stream, fn, a,
               b, out, layout);
}

}  // namespace

void softmax_forward(Stream stream, const float* x, float* y, ChannelLayout layout) {
  launch_per_position(stream, SoftmaxForward{}, x, nullptr, y, layout);
}

void log_softmax_forward(Stream stream, const float* x, float* y, ChannelLayout layout) {
  launch_per_position(stream, LogSoftmaxForward{}, x, nullptr, y, layout);
}

void softmax_backward(Stream stream, const float* y, const float* dy, float* dx,
                      ChannelLayout layout) {
  launch_per_position(stream, SoftmaxBackward{}, y, dy, dx, layout);
}

void log_softmax_backward(Stream stream, const float* y, const float* dy, float* dx,
                          ChannelLayout layout) {
  launch_per_position(stream, LogSoftmaxBackward{}, y, dy, dx, layout);
}

void argmax_channels(Stream stream, const float* x, int32_t* out, ChannelLayout layout) {
  if (layout.positions() == 0 || layout.channels == 0) return;
  MED3D_LAUNCH(argmax_kernel, element_grid(layout.positions()), dim3(kElementThreads), 0, stream,
               x, out, layout);
}

}  // namespace med3d::kernels::cuda
