// CUDA launchers of the channel softmax family (f32, contiguous [N, C, S] tensors viewed
// through ChannelLayout, device pointers, queued on `stream`). Each overwrites only its output
// (all N*C*S elements, or N*S for argmax). One thread per position runs the per-position
// functors of med3d/kernels/softmax.h, shared with the CPU loops.
#pragma once

#include <cstdint>

#include "med3d/kernels/cuda/runtime.h"
#include "med3d/kernels/softmax.h"

namespace med3d::kernels::cuda {

void softmax_forward(Stream stream, const float* x, float* y, ChannelLayout layout);
void log_softmax_forward(Stream stream, const float* x, float* y, ChannelLayout layout);
// y is the forward output, dy the incoming gradient; dx is written.
void softmax_backward(Stream stream, const float* y, const float* dy, float* dx, ChannelLayout layout);
void log_softmax_backward(Stream stream, const float* y, const float* dy, float* dx,
                          ChannelLayout layout);
// out [N*S]: index of the largest channel, the first one on ties.
void argmax_channels(Stream stream, const float* x, int32_t* out, ChannelLayout layout);

}  // namespace med3d::kernels::cuda
