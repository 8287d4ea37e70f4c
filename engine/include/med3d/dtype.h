// DType: element types of tensors. f32 is the compute type, f64 serves CPU gradient checks,
// i32 and u8 hold labels and masks, i64 exists for checkpoints written by PyTorch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace med3d {

enum class DType { f32, f64, i32, i64, u8 };

std::size_t dtype_size(DType dtype);
std::string dtype_name(DType dtype);  // "f32", ...
bool is_floating(DType dtype);

template <class T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::f32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::f64; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::i32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::i64; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::u8; };
template <class T> inline constexpr DType dtype_of = DTypeOf<T>::value;

}  // namespace med3d
