// CPU loops of concatenation and of MedicalNet's shortcut type A. T = float or double.
// Concatenation views every part as [outer, extent_k, inner] (outer: the product of the axes
// before the concatenation axis, inner: after it) and the result as [outer, sum extent, inner].
#pragma once

#include <cstdint>
#include <vector>

namespace med3d::kernels::cpu {

// Copies every part into its slice of dst (overwritten).
template <class T>
void concat_forward(const std::vector<const T*>& parts, const std::vector<int64_t>& extents,
                    int64_t outer, int64_t inner, T* dst);
// Copies each slice of src back into parts[k] (overwritten); a nullptr part is skipped.
template <class T>
void concat_backward(const T* src, const std::vector<T*>& parts, const std::vector<int64_t>& extents,
                     int64_t outer, int64_t inner);

// y [n, out_channels, ceil(d/s), ceil(h/s), ceil(w/s)] = x [n, c, d, h, w] at every s-th voxel
// of each spatial axis for channels < c, zero for channels c .. out_channels-1 (overwritten).
template <class T>
void zero_pad_channels_subsample(const T* x, T* y, int64_t n, int64_t c, int64_t d, int64_t h,
                                 int64_t w, int64_t stride, int64_t out_channels);

}  // namespace med3d::kernels::cpu
