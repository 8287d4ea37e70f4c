// NIfTI reading. The header is read and validated field by field here (nifticlib would
// accept, "fix" or blindly allocate for many malformed headers), then nifticlib parses it
// (transforms, extensions) and reads the voxels into a buffer whose size the validated header
// bounds. See med3d/data/nifti.h for the contract.
#include <znzlib.h>

#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>

#include "data/nifti_internal.h"

namespace med3d {
namespace nifti_detail {

void quiet_nifticlib() {
  // nifticlib's debug level is process-wide state; setting it once keeps it silent.
  static std::once_flag once;
  std::call_once(once, [] { nifti_set_debug_level(0); });
}

const TypeInfo* type_info(int code) {
  static constexpr TypeInfo kTypes[] = {
      {DT_UINT8, "u8", 1, true, 0.0, 255.0},
      {DT_INT8, "i8", 1, true, -128.0, 127.0},
      {DT_INT16, "i16", 2, true, -32768.0, 32767.0},
      {DT_UINT16, "u16", 2, true, 0.0, 65535.0},
      {DT_INT32, "i32", 4, true, -2147483648.0, 2147483647.0},
      {DT_UINT32, "u32", 4, true, 0.0, 4294967295.0},
      {DT_INT64, "i64", 8, true, -9223372036854775808.0, 9223372036854775807.0},
      {DT_UINT64, "u64", 8, true, 0.0, 18446744073709551615.0},
      {DT_FLOAT32, "f32", 4, false, -std::numeric_limits<float>::max(),
       std::numeric_limits<float>::max()},
      {DT_FLOAT64, "f64", 8, false, -std::numeric_limits<double>::max(),
       std::numeric_limits<double>::max()},
  };
  for (const TypeInfo& t : kTypes)
    if (t.code == code) return &t;
  return nullptr;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string nifti_suffix(const std::string& path) {
  if (ends_with(path, ".nii.gz")) return ".nii.gz";
  if (ends_with(path, ".nii")) return ".nii";
  return "";
}

namespace {

struct ZnzCloser {
  void operator()(znzptr* fp) const {
    znzFile f = fp;
    znzclose(f);
  }
};
using ZnzPtr = std::unique_ptr<znzptr, ZnzCloser>;

// Header fields widened to NIfTI-2 types, so both versions share the checks below.
struct RawFields {
  int version = 1;
  bool swapped = false;
  std::string magic;
  std::array<int64_t, 8> dim{};
  std::array<double, 8> pixdim{};
  int datatype = 0;
  double vox_offset = 0;
  double scl_slope = 0, scl_inter = 0;
  int qform_code = 0, sform_code = 0;
  std::array<double, 6> quatern{};  // b, c, d, qoffset x, y, z
  std::array<double, 12> srow{};
  int xyzt_units = 0;
  int intent_code = 0;
  std::string intent_name, descrip;
};

std::string fixed_string(const char* chars, std::size_t size) {
  return std::string(chars, strnlen(chars, size));
}

template <class Header>
RawFields widen(const Header& h, int version, bool swapped) {
  RawFields f;
  f.version = version;
  f.swapped = swapped;
  f.magic = std::string(h.magic, sizeof(h.magic));
  for (int i = 0; i < 8; ++i) {
    f.dim[i] = h.dim[i];
    f.pixdim[i] = h.pixdim[i];
  }
  f.datatype = h.datatype;
  f.vox_offset = static_cast<double>(h.vox_offset);
  f.scl_slope = h.scl_slope;
  f.scl_inter = h.scl_inter;
  f.qform_code = h.qform_code;
  f.sform_code = h.sform_code;
  f.quatern = {h.quatern_b, h.quatern_c, h.quatern_d, h.qoffset_x, h.qoffset_y, h.qoffset_z};
  for (int c = 0; c < 4; ++c) {
    f.srow[c] = h.srow_x[c];
    f.srow[4 + c] = h.srow_y[c];
    f.srow[8 + c] = h.srow_z[c];
  }
  f.xyzt_units = static_cast<unsigned char>(h.xyzt_units);
  f.intent_code = h.intent_code;
  f.intent_name = fixed_string(h.intent_name, sizeof(h.intent_name));
  f.descrip = fixed_string(h.descrip, sizeof(h.descrip));
  return f;
}

int32_t byte_swapped(int32_t v) {
  const uint32_t u = static_cast<uint32_t>(v);
  return static_cast<int32_t>((u >> 24) | ((u >> 8) & 0xff00u) | ((u << 8) & 0xff0000u) | (u << 24));
}

// Reads the first bytes of the file and decodes the NIfTI-1 or -2 header they hold.
RawFields read_raw_header(const char* op, const std::string& path, bool gzip) {
  ZnzPtr fp(znzopen(path.c_str(), "rb", gzip ? 1 : 0));
  if (!fp)
    detail::throw_error(op, ": '", path, "': cannot open: ", std::strerror(errno));
  unsigned char bytes[sizeof(nifti_2_header)] = {};
  const std::size_t count = znzread(bytes, 1, sizeof(bytes), fp.get());
  if (count > sizeof(bytes))  // znzread returns (size_t)-1 on a gzip error
    detail::throw_error(op, ": '", path, "': header: the gzip stream is corrupt; the file is "
                        "damaged, re-export or re-download it");
  if (count < 4)
    detail::throw_error(op, ": '", path, "': header: the file is truncated",
                        gzip ? " or its gzip stream is corrupt" : "", " (", count,
                        " bytes; a NIfTI header alone needs 348)");
  int32_t sizeof_hdr = 0;
  std::memcpy(&sizeof_hdr, bytes, 4);
  int version = 0;
  bool swapped = false;
  for (int v : {1, 2}) {
    const int32_t expected = v == 1 ? 348 : 540;
    if (sizeof_hdr == expected) version = v;
    if (byte_swapped(sizeof_hdr) == expected) version = v, swapped = true;
  }
  if (version == 0) {
    if (!gzip && bytes[0] == 0x1f && bytes[1] == 0x8b)
      detail::throw_error(op, ": '", path, "': sizeof_hdr: the file is gzip-compressed but named "
                          ".nii; rename it to .nii.gz");
    detail::throw_error(op, ": '", path, "': sizeof_hdr = ", sizeof_hdr,
                        ": not a NIfTI-1 (348) or NIfTI-2 (540) header; is this a NIfTI file?");
  }
  const std::size_t header_size = version == 1 ? sizeof(nifti_1_header) : sizeof(nifti_2_header);
  if (count < header_size)
    detail::throw_error(op, ": '", path, "': header: the file is truncated",
                        gzip ? " or its gzip stream is corrupt" : "", " (", count, " of ",
                        header_size, " header bytes)");
  if (version == 1) {
    nifti_1_header h;
    std::memcpy(&h, bytes, sizeof(h));
    if (swapped) swap_nifti_header(&h, 1);
    return widen(h, 1, swapped);
  }
  nifti_2_header h;
  std::memcpy(&h, bytes, sizeof(h));
  if (swapped) swap_nifti_header(&h, 2);
  return widen(h, 2, swapped);
}

bool finite_all(const double* v, int n) {
  for (int i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return false;
  return true;
}

}  // namespace

ParsedHeader parse_header(const char* op, const std::string& path, const NiftiReadOptions& options) {
  quiet_nifticlib();
  auto fail = [&](auto&&... parts) {
    detail::throw_error(op, ": '", path, "': ", std::forward<decltype(parts)>(parts)...);
  };
  const std::string suffix = nifti_suffix(path);
  if (suffix.empty())
    fail("the file name must end in .nii or .nii.gz (two-file .hdr/.img and other formats "
         "are not supported)");
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) fail("file not found");
  if (!std::filesystem::is_regular_file(status)) fail("not a regular file");
  const bool gzip = suffix == ".nii.gz";
  int64_t file_size = -1;
  if (!gzip) {
    file_size = static_cast<int64_t>(std::filesystem::file_size(path, ec));
    if (ec) fail("cannot read the file size: ", ec.message());
  }

  const RawFields f = read_raw_header(op, path, gzip);
  const int64_t header_size = f.version == 1 ? 348 : 540;
  if (f.version == 1) {
    if (f.magic.compare(0, 3, "ni1") == 0)
      fail("magic 'ni1': a two-file (.hdr/.img) NIfTI header; convert it to a single .nii");
    if (f.magic != std::string("n+1\0", 4))
      fail("magic is not 'n+1' (an ANALYZE 7.5 header or a damaged file); convert it to NIfTI");
  } else {
    if (f.magic.compare(0, 3, "ni2") == 0)
      fail("magic 'ni2': a two-file (.hdr/.img) NIfTI header; convert it to a single .nii");
    // Only the first four bytes: nifticlib writes "n+2\0" without the \r\n\032\n signature.
    if (f.magic.compare(0, 4, std::string("n+2\0", 4)) != 0)
      fail("magic is not 'n+2' (damaged NIfTI-2 header)");
  }

  // Dimensions, capped before anything is allocated.
  const int64_t ndim = f.dim[0];
  if (ndim < 1 || ndim > 7) fail("dim[0] = ", ndim, ": the number of dimensions must be 1..7");
  int64_t total = 1;
  for (int i = 1; i <= ndim; ++i) {
    if (f.dim[i] < 1) fail("dim[", i, "] = ", f.dim[i], ": every dimension must be >= 1");
    if (total > options.max_voxels / f.dim[i])
      fail("dim: ", f.dim[1], "x", f.dim[2], "x", f.dim[3], " (dim[0] = ", ndim,
           ") exceeds NiftiReadOptions::max_voxels = ", options.max_voxels,
           " voxels; raise it if the file is genuine");
    total *= f.dim[i];
  }
  for (int i = 5; i <= ndim; ++i)
    if (f.dim[i] > 1)
      fail("dim[", i, "] = ", f.dim[i], ": files with more than 4 dimensions are not supported");
  auto extent = [&](int i) { return i <= ndim ? f.dim[i] : int64_t{1}; };
  const int64_t volumes = extent(4);
  if (options.volume_index < -1)
    fail("NiftiReadOptions::volume_index = ", options.volume_index, ": use -1 or a volume number");
  if (volumes > 1 && options.volume_index < 0)
    fail("dim[4] = ", volumes, ": a 4D file with ", volumes,
         " volumes; set NiftiReadOptions::volume_index to the volume to read (0..", volumes - 1,
         ")");
  if (options.volume_index >= volumes)
    fail("dim[4] = ", volumes, ": NiftiReadOptions::volume_index = ", options.volume_index,
         " is out of range (0..", volumes - 1, ")");

  const TypeInfo* type = type_info(f.datatype);
  if (!type)
    fail("datatype = ", f.datatype, " (", nifti_datatype_string(f.datatype),
         "): not supported; med3d reads u8, i8, i16, u16, i32, u32, i64, u64, f32 and f64");

  for (int i = 1; i <= std::min<int64_t>(3, ndim); ++i)
    if (!(std::isfinite(f.pixdim[i]) && f.pixdim[i] > 0))
      fail("pixdim[", i, "] = ", f.pixdim[i], ": voxel sizes must be finite and > 0");

  if (!(std::isfinite(f.vox_offset) && f.vox_offset >= static_cast<double>(header_size) &&
        f.vox_offset == std::floor(f.vox_offset)))
    fail("vox_offset = ", f.vox_offset, ": must be a whole number >= the header size ", header_size);
  if (f.vox_offset > static_cast<double>(options.max_header_bytes))
    fail("vox_offset = ", f.vox_offset, " exceeds NiftiReadOptions::max_header_bytes = ",
         options.max_header_bytes);
  const auto vox_offset = static_cast<int64_t>(f.vox_offset);
  if (total > std::numeric_limits<int64_t>::max() / type->bytes - vox_offset)
    fail("dim: the data size overflows");
  const int64_t total_bytes = total * type->bytes;
  if (!gzip) {
    if (vox_offset > file_size)
      fail("vox_offset = ", vox_offset, " is past the end of the file (", file_size, " bytes)");
    if (vox_offset + total_bytes > file_size)
      fail("the file is truncated: dim and datatype need ", total_bytes, " data bytes from "
           "vox_offset ", vox_offset, ", the file has ", file_size - vox_offset);
  }

  const bool scaled = std::isfinite(f.scl_slope) && f.scl_slope != 0;
  if (scaled && !std::isfinite(f.scl_inter))
    fail("scl_inter = ", f.scl_inter, ": must be finite when scl_slope = ", f.scl_slope);
  if (f.qform_code > 0 && !finite_all(f.quatern.data(), 6))
    fail("qform: quatern_b/c/d or qoffset_x/y/z is not finite (qform_code = ", f.qform_code, ")");
  if (f.sform_code > 0 && !finite_all(f.srow.data(), 12))
    fail("sform: srow_x/y/z is not finite (sform_code = ", f.sform_code, ")");

  // nifticlib parses the now-validated header: transforms and extensions. Extension sizes
  // are bounded by vox_offset, which is bounded above.
  NimPtr nim(nifti_image_read(path.c_str(), 0));
  if (!nim) fail("header: nifticlib could not read it (damaged header or extensions)");
  if (nim->nvox != total || nim->datatype != f.datatype)
    fail("header: nifticlib decoded ", nim->nvox, " voxels of datatype ", nim->datatype,
         ", the header says ", total, " of ", f.datatype);

  ParsedHeader out;
  NiftiHeaderInfo& info = out.info;
  info.path = path;
  info.version = f.version;
  info.big_endian = (std::endian::native == std::endian::big) != f.swapped;
  info.gzip = gzip;
  info.datatype = f.datatype;
  info.datatype_name = type->name;
  info.dim = f.dim;
  info.pixdim = f.pixdim;
  info.xyz_units = f.xyzt_units & 0x07;
  info.time_units = f.xyzt_units & 0x38;
  info.scl_slope = f.scl_slope;
  info.scl_inter = f.scl_inter;
  info.qform_code = f.qform_code;
  info.sform_code = f.sform_code;
  info.quatern_b = f.quatern[0];
  info.quatern_c = f.quatern[1];
  info.quatern_d = f.quatern[2];
  info.qoffset_x = f.quatern[3];
  info.qoffset_y = f.quatern[4];
  info.qoffset_z = f.quatern[5];
  info.qfac = f.pixdim[0] < 0 ? -1.0 : 1.0;
  info.qform = from_dmat44(nim->qto_xyz);
  info.sform = from_dmat44(nim->sto_xyz);
  info.intent_code = f.intent_code;
  info.intent_name = f.intent_name;
  info.descrip = f.descrip;
  info.vox_offset = vox_offset;
  for (int i = 0; i < nim->num_ext; ++i) info.extension_codes.push_back(nim->ext_list[i].ecode);
  info.volume_index = std::max(options.volume_index, 0);

  if (f.sform_code > 0) {
    out.affine = from_dmat44(nim->sto_xyz);
    info.affine_source = "sform";
  } else if (f.qform_code > 0) {
    out.affine = from_dmat44(nim->qto_xyz);
    info.affine_source = "qform";
  } else {
    out.affine = identity4();
    for (int i = 0; i < 3; ++i) out.affine[5 * i] = i + 1 <= ndim ? f.pixdim[i + 1] : 1.0;
    info.affine_source = "pixdim";
  }
  const double scale = column_norm(out.affine, 0) * column_norm(out.affine, 1) *
                       column_norm(out.affine, 2);
  if (!all_finite(out.affine) || !(std::abs(det3(out.affine)) > 1e-9 * scale))
    fail(info.affine_source, ": the voxel-to-world transform is singular or not finite (",
         info.affine_source == "sform" ? "srow_x/y/z" : "quatern_b/c/d, pixdim",
         "); fix the file's geometry");
  info.orientation = orientation_code(out.affine);
  out.volume_voxels = extent(1) * extent(2) * extent(3);
  out.total_bytes = total_bytes;
  out.nim = std::move(nim);
  return out;
}

namespace {

using Buffer = std::unique_ptr<unsigned char[]>;

// Reads the selected volume's bytes (native byte order) through nifticlib. For gzip files the
// stream is then read to its end, so truncation and CRC errors surface even when they lie
// after the selected volume.
Buffer read_volume_bytes(const char* op, const ParsedHeader& h) {
  const std::string& path = h.info.path;
  const int64_t bytes = h.volume_voxels * h.nim->nbyper;
  const int64_t start = h.info.vox_offset + h.info.volume_index * bytes;
  ZnzPtr fp(znzopen(path.c_str(), "rb", h.info.gzip ? 1 : 0));
  if (!fp) detail::throw_error(op, ": '", path, "': cannot open: ", std::strerror(errno));
  auto truncated = [&](const char* where) {
    detail::throw_error(op, ": '", path, "': voxel data: the file is truncated",
                        h.info.gzip ? " or its gzip stream is corrupt" : "", " (", where,
                        "; dim and datatype need ", h.total_bytes, " bytes from vox_offset ",
                        h.info.vox_offset, ")");
  };
  // gzseek returns the new offset, fseek 0; both return -1 on failure.
  if (znzseek(fp.get(), start, SEEK_SET) < 0) truncated("cannot seek to the data");
  Buffer data(new unsigned char[static_cast<std::size_t>(std::max<int64_t>(bytes, 1))]);
  if (nifti_read_buffer(fp.get(), data.get(), bytes, h.nim.get()) != bytes)
    truncated("short read of the selected volume");
  if (h.info.gzip) {
    int64_t remaining = h.total_bytes - (h.info.volume_index + 1) * bytes;
    std::unique_ptr<unsigned char[]> chunk(new unsigned char[1 << 16]);
    // Declared data after the selected volume, then at most one chunk to reach the end of
    // the gzip stream, where zlib checks the CRC; trailing bytes beyond are ignored.
    while (true) {
      const std::size_t got = znzread(chunk.get(), 1, 1 << 16, fp.get());
      if (got > (1u << 16))
        detail::throw_error(op, ": '", path, "': voxel data: the gzip stream is truncated or corrupt "
                            "(data or CRC error); the file is damaged, re-export or re-download it");
      if (got == 0) break;
      remaining -= static_cast<int64_t>(got);
      if (remaining < -(int64_t{1} << 16)) break;
    }
    if (remaining > 0) truncated("the stream ends inside the data of later volumes");
    // zlib reports a stream cut inside its trailer only when closing (Z_BUF_ERROR); that
    // means something only when the loop above reached the end of the stream.
    const bool reached_end = remaining >= -(int64_t{1} << 16);
    znzFile f = fp.release();
    const int closed = znzclose(f);
    if (reached_end && closed != 0) truncated("the gzip stream ends early");
  }
  return data;
}

double scale_slope(const NiftiHeaderInfo& info) {
  return std::isfinite(info.scl_slope) && info.scl_slope != 0 ? info.scl_slope : 1.0;
}
double scale_inter(const NiftiHeaderInfo& info) {
  return std::isfinite(info.scl_slope) && info.scl_slope != 0 ? info.scl_inter : 0.0;
}

Volume make_volume(const Context& context, const ParsedHeader& h, DType dtype) {
  Volume v;
  auto extent = [&](int i) { return i <= h.info.dim[0] ? h.info.dim[i] : int64_t{1}; };
  const Shape shape{extent(3), extent(2), extent(1)};
  v.data = context.empty(shape, dtype);
  v.affine = h.affine;
  v.spacing = spacing_of(h.affine);
  v.header = h.info;
  v.from_file.file_shape = {shape[0], shape[1], shape[2]};
  return v;
}

}  // namespace
}  // namespace nifti_detail

using namespace nifti_detail;

NiftiHeaderInfo read_nifti_header(const std::string& path, const NiftiReadOptions& options) {
  return parse_header("read_nifti_header", path, options).info;
}

Volume read_nifti(const Context& context, const std::string& path, const NiftiReadOptions& options) {
  const char* op = "read_nifti";
  ParsedHeader h = parse_header(op, path, options);
  const Buffer raw = read_volume_bytes(op, h);
  Volume volume = make_volume(context, h, DType::f32);
  float* out = volume.data.data<float>();
  const double slope = scale_slope(h.info), inter = scale_inter(h.info);
  const bool scaled = slope != 1.0 || inter != 0.0;
  const int64_t count = h.volume_voxels;
  dispatch_type(h.info.datatype, [&]<class T>() {
    const T* in = reinterpret_cast<const T*>(raw.get());
#pragma omp parallel for if (count > kParallelVoxels) schedule(static)
    for (int64_t i = 0; i < count; ++i) {
      const double v = static_cast<double>(in[i]);
      out[i] = static_cast<float>(scaled ? v * slope + inter : v);
    }
  });
  return volume;
}

Volume read_label_nifti(const Context& context, const std::string& path,
                        const NiftiReadOptions& options) {
  const char* op = "read_label_nifti";
  ParsedHeader h = parse_header(op, path, options);
  const Buffer raw = read_volume_bytes(op, h);
  Volume volume = make_volume(context, h, DType::i32);
  int32_t* out = volume.data.data<int32_t>();
  const double slope = scale_slope(h.info), inter = scale_inter(h.info);
  const double tolerance = options.label_tolerance;
  const int64_t count = h.volume_voxels;
  double bad_value = 0;
  const int64_t first_bad = dispatch_type(h.info.datatype, [&]<class T>() {
    const T* in = reinterpret_cast<const T*>(raw.get());
    int64_t first = count;
#pragma omp parallel for if (count > kParallelVoxels) schedule(static) reduction(min : first)
    for (int64_t i = 0; i < count; ++i) {
      const double v = static_cast<double>(in[i]) * slope + inter;
      const double r = std::nearbyint(v);
      // The range test also rejects NaN (every comparison with it is false).
      if (std::abs(v - r) <= tolerance && r >= -2147483648.0 && r <= 2147483647.0) {
        out[i] = static_cast<int32_t>(r);
      } else {
        out[i] = 0;
        first = std::min(first, i);
      }
    }
    if (first < count) bad_value = static_cast<double>(in[first]) * slope + inter;
    return first;
  });
  if (first_bad < count) {
    const int64_t w = volume.data.dim(2), hh = volume.data.dim(1);
    detail::throw_error(op, ": '", path, "': voxel (d, h, w) = (", first_bad / (w * hh), ", ",
                        (first_bad / w) % hh, ", ", first_bad % w, ") has value ", bad_value,
                        " (datatype ", h.info.datatype_name, ", scl_slope ", h.info.scl_slope,
                        ", scl_inter ", h.info.scl_inter, "): not an integer label within ",
                        tolerance, " or outside the i32 range; is this a label file?");
  }
  return volume;
}

}  // namespace med3d
