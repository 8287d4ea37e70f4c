#include "med3d/device.h"
#include "med3d/dtype.h"
#include "med3d/error.h"

namespace med3d {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  detail::throw_error("dtype_size: unknown dtype ", static_cast<int>(dtype));
}

std::string dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
  }
  detail::throw_error("dtype_name: unknown dtype ", static_cast<int>(dtype));
}

bool is_floating(DType dtype) { return dtype == DType::f32 || dtype == DType::f64; }

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

}  // namespace med3d
