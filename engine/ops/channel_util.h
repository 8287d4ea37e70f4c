// Helpers shared by the channel-wise ops (softmax family and losses): the [N, C, S] view of a
// tensor and the validation of class labels. Not installed.
#pragma once

#include <cstdint>
#include <optional>

#include "med3d/kernels/softmax.h"
#include "med3d/tensor.h"

namespace med3d::detail {

// Throws unless x has rank 2..5 and at least one channel; returns its [N, C, S] view.
kernels::ChannelLayout channel_layout(const char* op, const Tensor& x);

// Checks labels (i32, i64 or u8 [N, spatial...], same Context and device as logits) and returns
// them as i32 class indices, with kernels::kIgnoredTarget where the label equals ignore_index.
// Any other label outside [0, C) throws, naming the value and its position.
Tensor class_targets(const char* op, const Tensor& logits, const Tensor& labels,
                     std::optional<int64_t> ignore_index);

}  // namespace med3d::detail
