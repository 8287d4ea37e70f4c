// NIfTI writing: nifticlib encodes the header from a nifti_image; the bytes go to a temporary
// file through znzlib with every write checked, then it is fsync'ed and renamed over the
// target. See med3d/data/nifti.h for the contract.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <znzlib.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <vector>

#include "data/nifti_internal.h"
#include "engine/src/op_util.h"

namespace med3d {

using namespace nifti_detail;

namespace {

template <class T>
bool fits(long double v) {
  if constexpr (std::numeric_limits<T>::is_integer) {
    // 2^digits is exact in long double and one past the largest value.
    return v == std::nearbyint(v) && v >= static_cast<long double>(std::numeric_limits<T>::min()) &&
           v < std::ldexp(1.0L, std::numeric_limits<T>::digits);
  } else {
    return !std::isfinite(v) || std::abs(v) <= static_cast<long double>(std::numeric_limits<T>::max());
  }
}

// Tensor values as datatype `code`, native byte order; every value must fit exactly.
std::vector<unsigned char> encode(const char* op, const std::string& path, const Tensor& t, int code) {
  const TypeInfo* type = type_info(code);
  MED3D_CHECK(type, op, ": '", path, "': datatype code ", code, " is not supported for writing");
  const int64_t count = t.numel();
  std::vector<unsigned char> buffer(static_cast<std::size_t>(count) * type->bytes);
  int64_t first_bad = count;
  long double bad_value = 0;
  detail::dispatch_any(t.dtype(), [&]<class S>() {
    const S* src = t.data<S>();
    dispatch_type(code, [&]<class T>() {
      T* dst = reinterpret_cast<T*>(buffer.data());
      for (int64_t i = 0; i < count; ++i) {
        const auto v = static_cast<long double>(src[i]);
        if (!fits<T>(v)) {
          first_bad = i;
          bad_value = v;
          break;
        }
        dst[i] = static_cast<T>(src[i]);
      }
    });
  });
  MED3D_CHECK(first_bad == count, op, ": '", path, "': value ", static_cast<double>(bad_value),
              " at element ", first_bad, " cannot be stored exactly as ", type->name,
              "; choose a wider or floating datatype, or round first");
  return buffer;
}

// nifticlib encodes the header (NIfTI-1, or NIfTI-2 when asked for or when the dimensions do
// not fit NIfTI-1). nifti_image_write is not used: it returns nothing on failure, and in
// nifticlib 2.1 it writes a single-file NIfTI-2 as if it were a two-file pair.
std::vector<unsigned char> encode_header(const char* op, const std::string& path,
                                         nifti_image* nim, int version) {
  std::vector<unsigned char> bytes;
  nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;  // single file; sets the data offset below
  bool fits_n1 = true;  // checked here: nifticlib's converter prints when they do not fit
  for (int i = 0; i < 8; ++i) fits_n1 = fits_n1 && nim->dim[i] <= 32767;
  if (version == 1 && fits_n1) {
    nifti_set_iname_offset(nim, 1);
    nifti_1_header h;
    if (nifti_convert_nim2n1hdr(nim, &h) == 0) {
      bytes.resize(sizeof(h));
      std::memcpy(bytes.data(), &h, sizeof(h));
      return bytes;
    }
  }
  nifti_set_iname_offset(nim, 2);
  nim->nifti_type = NIFTI_FTYPE_NIFTI2_1;  // makes the converter write the "n+2" magic
  nifti_2_header h;
  MED3D_CHECK(nifti_convert_nim2n2hdr(nim, &h) == 0, op, ": '", path,
              "': nifticlib could not encode the header");
  bytes.resize(sizeof(h));
  std::memcpy(bytes.data(), &h, sizeof(h));
  return bytes;
}

// Writes header, an empty extension flag, padding to vox_offset and the data into a temporary
// file beside `path`, checks every write, fsyncs and renames it over `path`.
void write_atomic(const char* op, const std::string& path, const std::vector<unsigned char>& header,
                  int64_t vox_offset, const std::vector<unsigned char>& data) {
  const std::string suffix = nifti_suffix(path);
  MED3D_CHECK(!suffix.empty(), op, ": '", path, "': the file name must end in .nii or .nii.gz");
  const std::filesystem::path target(path);
  const std::filesystem::path folder =
      target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  MED3D_CHECK(std::filesystem::is_directory(folder, ec), op, ": '", path, "': the folder '",
              folder.string(), "' does not exist; create it first");
  std::string stem = target.filename().string();
  stem.resize(stem.size() - suffix.size());
  std::string temp = (folder / ("." + stem + ".tmp-XXXXXX" + suffix)).string();
  const int fd = ::mkstemps(temp.data(), static_cast<int>(suffix.size()));
  MED3D_CHECK(fd >= 0, op, ": '", path, "': cannot create a temporary file in '", folder.string(),
              "': ", std::strerror(errno));
  ::fchmod(fd, 0644);  // mkstemps makes it private; a written image should read like any file
  ::close(fd);
  struct RemoveOnFailure {
    std::string file;
    bool keep = false;
    ~RemoveOnFailure() {
      if (!keep) std::remove(file.c_str());
    }
  } cleanup{temp};

  const bool gzip = suffix == ".nii.gz";
  znzFile fp = znzopen(temp.c_str(), "wb", gzip ? 1 : 0);
  MED3D_CHECK(!znz_isnull(fp), op, ": '", path, "': cannot open '", temp, "' for writing: ",
              std::strerror(errno));
  const std::vector<unsigned char> padding(
      static_cast<std::size_t>(vox_offset - static_cast<int64_t>(header.size())), 0);
  auto put = [&](const std::vector<unsigned char>& bytes) {
    return bytes.empty() || znzwrite(bytes.data(), 1, bytes.size(), fp) == bytes.size();
  };
  // The padding starts with the 4-byte extender, all zero: no extensions.
  const bool written = put(header) && put(padding) && put(data);
  const bool closed = znzclose(fp) == 0;
  MED3D_CHECK(written && closed, op, ": '", path, "': writing failed (is the disk full or the "
              "folder read-only?): ", std::strerror(errno));
  const int sync_fd = ::open(temp.c_str(), O_RDONLY);
  const bool synced = sync_fd >= 0 && ::fsync(sync_fd) == 0;
  if (sync_fd >= 0) ::close(sync_fd);
  MED3D_CHECK(synced, op, ": '", path, "': cannot flush the written file: ", std::strerror(errno));
  MED3D_CHECK(std::rename(temp.c_str(), path.c_str()) == 0, op, ": '", path,
              "': cannot replace the file: ", std::strerror(errno));
  cleanup.keep = true;
}

void write_image(const char* op, const std::string& path, nifti_image* nim, int version,
                 const std::vector<unsigned char>& data) {
  const std::vector<unsigned char> header = encode_header(op, path, nim, version);
  write_atomic(op, path, header, nim->iname_offset, data);
}

NimPtr new_image(const char* op, const std::string& path, const std::array<int64_t, 3>& nxyz,
                 int datatype) {
  int64_t dims[8] = {3, nxyz[0], nxyz[1], nxyz[2], 1, 1, 1, 1};
  NimPtr nim(nifti_make_new_nim(dims, datatype, 0));
  MED3D_CHECK(nim, op, ": '", path, "': nifticlib could not create an image header");
  nim->scl_slope = 1.0;
  nim->scl_inter = 0.0;
  std::snprintf(nim->descrip, sizeof(nim->descrip), "med3d");
  return nim;
}

void set_pixdim(nifti_image* nim, double qfac, double dx, double dy, double dz) {
  nim->qfac = qfac;
  nim->pixdim[0] = qfac;
  nim->pixdim[1] = nim->dx = dx;
  nim->pixdim[2] = nim->dy = dy;
  nim->pixdim[3] = nim->dz = dz;
}

void check_volume_data(const char* op, const std::string& path, const Tensor& data) {
  MED3D_CHECK(data.defined(), op, ": '", path, "': the volume has no data");
  MED3D_CHECK(data.device().is_cpu(), op, ": '", path, "': expected CPU data, got ", data.str());
  MED3D_CHECK(data.rank() == 3, op, ": '", path, "': expected data [D, H, W], got ",
              data.shape().str());
}

}  // namespace

void write_nifti(const std::string& path, const Volume& volume, NiftiDataType datatype) {
  const char* op = "write_nifti";
  quiet_nifticlib();
  check_volume_data(op, path, volume.data);
  int code = static_cast<int>(datatype);
  if (datatype == NiftiDataType::automatic) {
    switch (volume.data.dtype()) {
      case DType::f32:
      case DType::f64: code = DT_FLOAT32; break;
      case DType::i32: code = DT_INT32; break;
      case DType::i64: code = DT_INT64; break;
      case DType::u8: code = DT_UINT8; break;
    }
  }
  const std::array<double, 16>& affine = volume.affine;
  const double scale = column_norm(affine, 0) * column_norm(affine, 1) * column_norm(affine, 2);
  MED3D_CHECK(all_finite(affine) && std::abs(det3(affine)) > 1e-9 * scale, op, ": '", path,
              "': the volume's affine is singular or not finite");
  const Shape& s = volume.data.shape();
  const std::array<int64_t, 3> nxyz{s[2], s[1], s[0]};
  const int version = volume.header.version;  // 2 anyway when dimensions exceed NIfTI-1's
  NimPtr nim = new_image(op, path, nxyz, code);

  const nifti_dmat44 r = to_dmat44(affine);
  double qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
  nifti_dmat44_to_quatern(r, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);
  const NiftiHeaderInfo& h = volume.header;
  const int code_sform = h.sform_code > 0 ? h.sform_code
                         : h.qform_code > 0 ? h.qform_code
                                            : NIFTI_XFORM_SCANNER_ANAT;
  nim->qform_code = h.qform_code > 0 ? h.qform_code : code_sform;
  nim->sform_code = code_sform;
  nim->quatern_b = qb;
  nim->quatern_c = qc;
  nim->quatern_d = qd;
  nim->qoffset_x = qx;
  nim->qoffset_y = qy;
  nim->qoffset_z = qz;
  set_pixdim(nim.get(), qfac, dx, dy, dz);
  nim->qto_xyz = nifti_quatern_to_dmat44(qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac);
  nim->sto_xyz = r;
  nim->xyz_units = h.path.empty() ? NIFTI_UNITS_MM : h.xyz_units;
  nim->time_units = h.path.empty() ? NIFTI_UNITS_SEC : h.time_units;
  write_image(op, path, nim.get(), version, encode(op, path, volume.data, code));
}

void write_like(const std::string& path, const Volume& reference, const Tensor& labels) {
  const char* op = "write_like";
  quiet_nifticlib();
  const NiftiHeaderInfo& h = reference.header;
  MED3D_CHECK(!h.path.empty(), op, ": '", path, "': the reference volume was not read from a "
              "NIfTI file; use write_nifti");
  MED3D_CHECK(labels.defined() && labels.rank() == 3, op, ": '", path,
              "': expected labels [D, H, W] on the reference's grid, got ",
              labels.defined() ? labels.shape().str() : std::string("an undefined tensor"));
  MED3D_CHECK(reference.data.defined() && labels.shape() == reference.data.shape(), op, ": '",
              path, "': labels ", labels.shape().str(), " do not match the reference's grid ",
              reference.data.defined() ? reference.data.shape().str() : std::string("(none)"),
              " [D, H, W] (file '", h.path, "')");
  const Tensor grid = to_file_orientation(reference, labels);
  auto extent = [&](int i) { return i <= h.dim[0] ? h.dim[i] : int64_t{1}; };
  const std::array<int64_t, 3> nxyz{extent(1), extent(2), extent(3)};
  MED3D_CHECK(grid.dim(0) == nxyz[2] && grid.dim(1) == nxyz[1] && grid.dim(2) == nxyz[0], op,
              ": '", path, "': labels ", grid.shape().str(), " (in the file's orientation) do "
              "not match the reference file '", h.path, "' (nx, ny, nz = ", nxyz[0], ", ",
              nxyz[1], ", ", nxyz[2], ")");

  int code = DT_FLOAT32;
  if (!is_floating(grid.dtype())) {
    long double lo = 0, hi = 0;
    detail::dispatch_any(grid.dtype(), [&]<class S>() {
      const S* v = grid.data<S>();
      for (int64_t i = 0; i < grid.numel(); ++i) {
        lo = std::min(lo, static_cast<long double>(v[i]));
        hi = std::max(hi, static_cast<long double>(v[i]));
      }
    });
    code = lo >= 0 && hi <= 255 ? DT_UINT8 : lo >= -32768 && hi <= 32767 ? DT_INT16 : DT_INT32;
  }
  NimPtr nim = new_image(op, path, nxyz, code);
  // The reference's geometry exactly as stored: qform parameters, sform rows, codes, pixdim.
  nim->qform_code = h.qform_code;
  nim->sform_code = h.sform_code;
  nim->quatern_b = h.quatern_b;
  nim->quatern_c = h.quatern_c;
  nim->quatern_d = h.quatern_d;
  nim->qoffset_x = h.qoffset_x;
  nim->qoffset_y = h.qoffset_y;
  nim->qoffset_z = h.qoffset_z;
  set_pixdim(nim.get(), h.qfac, h.pixdim[1], h.pixdim[2], h.pixdim[3]);
  nim->pixdim[0] = h.pixdim[0];
  nim->qto_xyz = to_dmat44(h.qform);
  nim->sto_xyz = to_dmat44(h.sform);
  nim->xyz_units = h.xyz_units;
  nim->time_units = h.time_units;
  write_image(op, path, nim.get(), h.version, encode(op, path, grid, code));
}

}  // namespace med3d
