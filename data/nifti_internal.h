// Shared by the NIfTI reader, writer and orientation code: nifticlib handles, the supported
// datatypes, small 4x4 affine helpers and error formatting. Not installed.
#pragma once

#include <nifti2_io.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "med3d/data/nifti.h"
#include "med3d/error.h"

namespace med3d::nifti_detail {

// nifticlib prints its errors to stderr unless its (process-wide) debug level is 0. Library
// code must not print, so every entry point calls this before using nifticlib; it sets the
// level once per process and never changes it back.
void quiet_nifticlib();

struct NimDeleter {
  void operator()(nifti_image* nim) const { nifti_image_free(nim); }
};
using NimPtr = std::unique_ptr<nifti_image, NimDeleter>;

// The datatypes med3d reads and writes.
struct TypeInfo {
  int code;
  const char* name;
  int bytes;
  bool integer;
  double min, max;  // representable range (integers: exactly; floats: finite range)
};
const TypeInfo* type_info(int code);  // nullptr when unsupported

// Calls fn.template operator()<T>() with T the C++ type of a supported datatype code.
template <class Fn>
decltype(auto) dispatch_type(int code, Fn&& fn) {
  switch (code) {
    case DT_UINT8: return fn.template operator()<uint8_t>();
    case DT_INT8: return fn.template operator()<int8_t>();
    case DT_INT16: return fn.template operator()<int16_t>();
    case DT_UINT16: return fn.template operator()<uint16_t>();
    case DT_INT32: return fn.template operator()<int32_t>();
    case DT_UINT32: return fn.template operator()<uint32_t>();
    case DT_INT64: return fn.template operator()<int64_t>();
    case DT_UINT64: return fn.template operator()<uint64_t>();
    case DT_FLOAT32: return fn.template operator()<float>();
    case DT_FLOAT64: return fn.template operator()<double>();
  }
  detail::throw_error("nifti: unsupported datatype code ", code);
}

// Voxel loops here are a load and a store per voxel: threads only pay off on large volumes
// (a 60k-voxel volume reads 10x slower with two threads on a busy two-core machine).
inline constexpr int64_t kParallelVoxels = int64_t{1} << 20;

using Mat4 = std::array<double, 16>;  // row-major

Mat4 identity4();
Mat4 mul4(const Mat4& a, const Mat4& b);
Mat4 from_dmat44(const nifti_dmat44& m);
nifti_dmat44 to_dmat44(const Mat4& m);
// Norm of column `col` (0..2) of the 3x3 part.
double column_norm(const Mat4& m, int col);
double det3(const Mat4& m);
bool all_finite(const Mat4& m);
// Spacing in tensor order [D, H, W] = norms of columns k, j, i.
std::array<double, 3> spacing_of(const Mat4& affine);

bool ends_with(const std::string& s, const std::string& suffix);
// ".nii.gz" or ".nii" for a supported name, else "".
std::string nifti_suffix(const std::string& path);

// Reads the validated header of `path` (see read_nifti_header) and keeps nifticlib's image
// structure (header and extensions, no data) for the voxel reader.
struct ParsedHeader {
  NiftiHeaderInfo info;
  NimPtr nim;
  Mat4 affine{};
  int64_t volume_voxels = 0;  // voxels of the selected 3D volume
  int64_t total_bytes = 0;    // data bytes of the whole file (all volumes)
};
ParsedHeader parse_header(const char* op, const std::string& path, const NiftiReadOptions& options);

}  // namespace med3d::nifti_detail
