// CPU loops of the channel softmax family over [N, C, S] tensors (see kernels/softmax.h),
// parallel over the N*S positions. Outputs are overwritten. T = float or double.
#pragma once

#include <cstdint>

#include "med3d/kernels/softmax.h"

namespace med3d::kernels::cpu {

template <class T> void softmax_forward(const T* x, T* y, ChannelLayout layout);
template <class T> void log_softmax_forward(const T* x, T* y, ChannelLayout layout);
// y is the forward output, dy its gradient; writes dx.
template <class T> void softmax_backward(const T* y, const T* dy, T* dx, ChannelLayout layout);
template <class T> void log_softmax_backward(const T* y, const T* dy, T* dx, ChannelLayout layout);
// out [N*S]: the first channel holding the maximum.
template <class T> void argmax_channels(const T* x, int32_t* out, ChannelLayout layout);

}  // namespace med3d::kernels::cpu
