// NIfTI reader/writer tests. Files are written with nifticlib itself (every datatype, byte
// order, transform variant, scaling, extensions, NIfTI-2, 4D) or patched byte by byte from
// such files (malformed headers), and checked against expectations computed here from the
// NIfTI-1 definitions, not from med3d's code. Real files in ../shared/data are read when
// present.
#include <fcntl.h>
#include <nifti2_io.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "med3d/data/nifti.h"
#include "test_util.h"

// Spec{.edit = ...} leaves the other members at their defaults on purpose.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace fs = std::filesystem;
using namespace med3d;

namespace {

using TempDir = med3d::test::ScratchDir;

// Concatenation by appending (GCC 12 -O3 warns falsely about -Wrestrict on chains of
// std::string operator+).
template <class... Parts>
std::string joined(const Parts&... parts) {
  std::string out;
  (out.append(parts), ...);
  return out;
}

// Calls fn(T{}) with T the C++ type of a NIfTI datatype code.
template <class Fn>
void with_type(int datatype, Fn&& fn) {
  switch (datatype) {
    case DT_UINT8: return fn(uint8_t{});
    case DT_INT8: return fn(int8_t{});
    case DT_INT16: return fn(int16_t{});
    case DT_UINT16: return fn(uint16_t{});
    case DT_INT32: return fn(int32_t{});
    case DT_UINT32: return fn(uint32_t{});
    case DT_INT64: return fn(int64_t{});
    case DT_UINT64: return fn(uint64_t{});
    case DT_FLOAT32: return fn(float{});
    case DT_FLOAT64: return fn(double{});
  }
  FAIL("test: datatype " << datatype);
}

// A file to write with nifticlib: dims, datatype, voxel values in file order (i fastest),
// NIfTI version and an optional edit of the nifti_image (transforms, scaling, extensions).
struct Spec {
  std::array<int64_t, 8> dim{3, 5, 4, 3, 1, 1, 1, 1};
  int datatype = DT_FLOAT32;
  std::vector<double> values;
  int version = 1;
  std::function<void(nifti_image*)> edit;

  int64_t nvox() const {
    int64_t n = 1;
    for (int i = 1; i <= dim[0]; ++i) n *= dim[i];
    return n;
  }
};

std::vector<double> ramp(int64_t n, double scale = 1.5, double offset = -7) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = i * scale + offset;
  return v;
}

void set_pixdim(nifti_image* nim, double dx, double dy, double dz) {
  nim->pixdim[1] = nim->dx = dx;
  nim->pixdim[2] = nim->dy = dy;
  nim->pixdim[3] = nim->dz = dz;
}

void set_sform(nifti_image* nim, int code, const std::array<double, 12>& rows) {
  nim->sform_code = code;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) nim->sto_xyz.m[r][c] = rows[4 * r + c];
  nim->sto_xyz.m[3][0] = nim->sto_xyz.m[3][1] = nim->sto_xyz.m[3][2] = 0;
  nim->sto_xyz.m[3][3] = 1;
}

void set_qform(nifti_image* nim, int code, double b, double c, double d, double x, double y,
               double z, double qfac) {
  nim->qform_code = code;
  nim->quatern_b = b;
  nim->quatern_c = c;
  nim->quatern_d = d;
  nim->qoffset_x = x;
  nim->qoffset_y = y;
  nim->qoffset_z = z;
  nim->qfac = qfac;
  nim->pixdim[0] = qfac;
}

// nifticlib 2.1's nifti_image_write writes NIfTI-2 only when NIfTI-1 cannot hold the
// dimensions (and then correctly); for small NIfTI-2 files it treats the single file as a
// .hdr/.img pair. So these use nifticlib's header encoder and write the layout themselves:
// header, extender, extensions (esize, ecode, data), data at vox_offset.
void write_nifti2_with_nifticlib_header(const std::string& path, nifti_image* nim) {
  nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;  // single file, for the offset computation
  nifti_set_iname_offset(nim, 2);
  nim->nifti_type = NIFTI_FTYPE_NIFTI2_1;
  nifti_2_header h;
  REQUIRE(nifti_convert_nim2n2hdr(nim, &h) == 0);
  REQUIRE(std::memcmp(h.magic, "n+2", 4) == 0);
  std::vector<char> bytes(reinterpret_cast<const char*>(&h), reinterpret_cast<const char*>(&h) + sizeof(h));
  bytes.push_back(nim->num_ext > 0 ? 1 : 0);
  bytes.insert(bytes.end(), 3, 0);
  for (int e = 0; e < nim->num_ext; ++e) {
    const nifti1_extension& ext = nim->ext_list[e];
    const char* head = reinterpret_cast<const char*>(&ext.esize);
    bytes.insert(bytes.end(), head, head + 4);
    head = reinterpret_cast<const char*>(&ext.ecode);
    bytes.insert(bytes.end(), head, head + 4);
    bytes.insert(bytes.end(), ext.edata, ext.edata + ext.esize - 8);
  }
  REQUIRE(static_cast<int64_t>(bytes.size()) <= nim->iname_offset);
  bytes.resize(static_cast<std::size_t>(nim->iname_offset), 0);
  const char* data = static_cast<const char*>(nim->data);
  bytes.insert(bytes.end(), data, data + nim->nvox * nim->nbyper);
  const bool gzip = path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
  znzFile out = znzopen(path.c_str(), "wb", gzip ? 1 : 0);
  REQUIRE(!znz_isnull(out));
  REQUIRE(znzwrite(bytes.data(), 1, bytes.size(), out) == bytes.size());
  REQUIRE(znzclose(out) == 0);
}

void write_with_nifticlib(const std::string& path, Spec spec) {
  if (spec.values.empty()) spec.values = ramp(spec.nvox());
  REQUIRE(static_cast<int64_t>(spec.values.size()) == spec.nvox());
  nifti_image* nim = nifti_make_new_nim(spec.dim.data(), spec.datatype, 1);
  REQUIRE(nim != nullptr);
  with_type(spec.datatype, [&](auto tag) {
    using T = decltype(tag);
    T* data = static_cast<T*>(nim->data);
    for (std::size_t i = 0; i < spec.values.size(); ++i) data[i] = static_cast<T>(spec.values[i]);
  });
  if (spec.edit) spec.edit(nim);
  if (spec.version == 1) {
    REQUIRE(nifti_set_filenames(nim, path.c_str(), 0, 1) == 0);
    nifti_image_write(nim);
  } else {
    write_nifti2_with_nifticlib_header(path, nim);
  }
  nifti_image_free(nim);
  REQUIRE(fs::exists(path));
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Edits the NIfTI-1 header of an uncompressed file in place.
void patch_n1(const std::string& path, const std::function<void(nifti_1_header&)>& edit) {
  std::vector<char> bytes = read_bytes(path);
  REQUIRE(bytes.size() >= sizeof(nifti_1_header));
  nifti_1_header h;
  std::memcpy(&h, bytes.data(), sizeof(h));
  edit(h);
  std::memcpy(bytes.data(), &h, sizeof(h));
  write_bytes(path, bytes);
}

// Rewrites a little-endian single-file NIfTI (no extensions) as big-endian, with nifticlib's
// own swap routines for the header and the data.
void make_big_endian(const std::string& src, const std::string& dst) {
  std::vector<char> bytes = read_bytes(src);
  int32_t sizeof_hdr = 0;
  std::memcpy(&sizeof_hdr, bytes.data(), 4);
  const int version = sizeof_hdr == 348 ? 1 : 2;
  nifti_image* nim = nifti_image_read(src.c_str(), 0);
  REQUIRE(nim != nullptr);
  const int64_t offset = nim->iname_offset, nvox = nim->nvox;
  const int swapsize = nim->swapsize;
  nifti_image_free(nim);
  swap_nifti_header(bytes.data(), version);
  if (swapsize > 1) nifti_swap_Nbytes(nvox, swapsize, bytes.data() + offset);
  write_bytes(dst, bytes);
}

// Expected voxel-to-world matrix of a qform, from the NIfTI-1 definition (nifti1.h, method 2).
std::array<double, 16> qform_matrix(double b, double c, double d, double x, double y, double z,
                                    double dx, double dy, double dz, double qfac) {
  const double a = std::sqrt(std::max(0.0, 1 - b * b - c * c - d * d));
  const double r[3][3] = {{a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)},
                          {2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)},
                          {2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b}};
  const double scale[3] = {dx, dy, qfac * dz};
  const double offset[3] = {x, y, z};
  std::array<double, 16> m{};
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) m[4 * i + j] = r[i][j] * scale[j];
    m[4 * i + 3] = offset[i];
  }
  m[15] = 1;
  return m;
}

std::array<double, 16> matrix(const std::array<double, 12>& rows) {
  std::array<double, 16> m{};
  std::copy(rows.begin(), rows.end(), m.begin());
  m[15] = 1;
  return m;
}

void require_affine(const std::array<double, 16>& actual, const std::array<double, 16>& expected,
                    double tolerance = 1e-5) {
  for (int i = 0; i < 16; ++i) {
    INFO("affine element " << i << ": " << actual[i] << " vs " << expected[i]);
    REQUIRE(std::abs(actual[i] - expected[i]) <= tolerance);
  }
}

double column_norm(const std::array<double, 16>& a, int col) {
  return std::sqrt(a[col] * a[col] + a[4 + col] * a[4 + col] + a[8 + col] * a[8 + col]);
}

// World coordinate of voxel (d, h, w) of a [D, H, W] grid.
std::array<double, 3> world(const std::array<double, 16>& a, int64_t d, int64_t h, int64_t w) {
  std::array<double, 3> out{};
  for (int r = 0; r < 3; ++r)
    out[r] = a[4 * r] * w + a[4 * r + 1] * h + a[4 * r + 2] * d + a[4 * r + 3];
  return out;
}

template <class Fn>
void require_error(Fn&& fn, std::initializer_list<std::string> parts) {
  std::string message;
  try {
    fn();
  } catch (const Error& e) {
    message = e.what();
  }
  INFO("error message: '" << message << "'");
  REQUIRE(!message.empty());
  for (const std::string& part : parts) {
    INFO("expected to contain: '" << part << "'");
    CHECK(message.find(part) != std::string::npos);
  }
}

// Redirects the process's stderr to a file while alive; text() returns what was written.
class StderrCapture {
 public:
  explicit StderrCapture(std::string path) : path_(std::move(path)) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~StderrCapture() { restore(); }
  std::string text() {
    restore();
    const std::vector<char> bytes = read_bytes(path_);
    return std::string(bytes.begin(), bytes.end());
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  std::string path_;
  int saved_ = -1;
};

struct RawHeader {
  int version = 0;
  nifti_1_header n1{};
  nifti_2_header n2{};
};

RawHeader raw_header(const std::string& path) {
  RawHeader h;
  void* p = nifti_read_header(path.c_str(), &h.version, 0);
  REQUIRE(p != nullptr);
  if (h.version == 1) std::memcpy(&h.n1, p, sizeof(h.n1));
  else std::memcpy(&h.n2, p, sizeof(h.n2));
  std::free(p);
  return h;
}

// The fields that place a volume in the world must be bit-identical.
template <class H>
void require_same_geometry_fields(const H& a, const H& b) {
  for (int i = 0; i < 4; ++i) {
    INFO("dim/pixdim " << i);
    REQUIRE(a.dim[i] == b.dim[i]);
    // pixdim[0] is qfac, which only the qform uses (nifticlib writes 0 without a qform).
    if (i > 0 || a.qform_code > 0) REQUIRE(a.pixdim[i] == b.pixdim[i]);
  }
  REQUIRE(a.qform_code == b.qform_code);
  REQUIRE(a.sform_code == b.sform_code);
  // Parameters of a transform whose code is 0 mean nothing and nifticlib writes them as 0.
  if (a.qform_code > 0) {
    REQUIRE(a.quatern_b == b.quatern_b);
    REQUIRE(a.quatern_c == b.quatern_c);
    REQUIRE(a.quatern_d == b.quatern_d);
    REQUIRE(a.qoffset_x == b.qoffset_x);
    REQUIRE(a.qoffset_y == b.qoffset_y);
    REQUIRE(a.qoffset_z == b.qoffset_z);
  }
  for (int c = 0; a.sform_code > 0 && c < 4; ++c) {
    INFO("srow column " << c);
    REQUIRE(a.srow_x[c] == b.srow_x[c]);
    REQUIRE(a.srow_y[c] == b.srow_y[c]);
    REQUIRE(a.srow_z[c] == b.srow_z[c]);
  }
  REQUIRE((a.xyzt_units & 7) == (b.xyzt_units & 7));
}

const int kAllTypes[] = {DT_UINT8, DT_INT8,  DT_INT16,  DT_UINT16,  DT_INT32,
                         DT_UINT32, DT_INT64, DT_UINT64, DT_FLOAT32, DT_FLOAT64};

// Values spanning each type's range, exactly representable in double.
std::vector<double> values_for(int datatype, int64_t n) {
  double lo = 0, hi = 0;
  with_type(datatype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      lo = -3.0e5, hi = 1.25e6;
    } else if constexpr (sizeof(T) == 8) {
      lo = static_cast<double>(std::numeric_limits<T>::min());
      hi = std::ldexp(1.0, std::numeric_limits<T>::digits - 1);
    } else {
      lo = static_cast<double>(std::numeric_limits<T>::min());
      hi = static_cast<double>(std::numeric_limits<T>::max());
    }
  });
  std::vector<double> v(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = std::floor(lo + (hi - lo) * static_cast<double>(i) / (n - 1));
  v[0] = lo;
  v[n - 1] = hi;
  if (datatype == DT_FLOAT32 || datatype == DT_FLOAT64) v[1] = 0.3125;  // a fraction, exact
  return v;
}

}  // namespace

TEST_CASE("nifti: every datatype reads with exact values, .nii and .nii.gz", "[nifti]") {
  Context context;
  TempDir dir;
  for (int datatype : kAllTypes)
    for (const char* suffix : {".nii", ".nii.gz"}) {
      INFO("datatype " << nifti_datatype_string(datatype) << " " << suffix);
      const std::string path = dir.file(joined("t", std::to_string(datatype), suffix));
      Spec spec;
      spec.datatype = datatype;
      spec.values = values_for(datatype, spec.nvox());
      write_with_nifticlib(path, spec);
      Volume v = read_nifti(context, path);
      REQUIRE(v.data.dtype() == DType::f32);
      REQUIRE(v.data.shape() == Shape{3, 4, 5});  // [D, H, W] = [nz, ny, nx]
      const std::vector<float> got = v.data.to_vector<float>();
      for (std::size_t i = 0; i < got.size(); ++i) {
        INFO("voxel " << i);
        REQUIRE(got[i] == static_cast<float>(spec.values[i]));
      }
      REQUIRE(v.header.datatype == datatype);
      REQUIRE(v.header.gzip == (std::string(suffix) == ".nii.gz"));
      REQUIRE_FALSE(v.header.big_endian);
      REQUIRE(v.header.affine_source == "pixdim");
      REQUIRE(v.spacing == std::array<double, 3>{1, 1, 1});
      // Element (d, h, w) is voxel (i, j, k) = (w, h, d).
      REQUIRE(v.data.at<float>({2, 1, 3}) == static_cast<float>(spec.values[3 + 5 * (1 + 4 * 2)]));
    }
}

TEST_CASE("nifti: big-endian files read like little-endian ones", "[nifti]") {
  Context context;
  TempDir dir;
  for (int version : {1, 2})
    for (int datatype : {DT_INT16, DT_UINT32, DT_FLOAT32, DT_FLOAT64, DT_INT64}) {
      INFO("NIfTI-" << version << " " << nifti_datatype_string(datatype));
      const std::string little = dir.file("le.nii"), big = dir.file("be.nii");
      Spec spec;
      spec.version = version;
      spec.datatype = datatype;
      spec.values = values_for(datatype, spec.nvox());
      spec.edit = [](nifti_image* nim) {
        set_pixdim(nim, 0.5, 0.75, 2);
        set_sform(nim, NIFTI_XFORM_SCANNER_ANAT, {0.5, 0, 0, -10, 0, 0.75, 0, 20, 0, 0, 2, 30});
        nim->scl_slope = 2;
        nim->scl_inter = 1;
      };
      write_with_nifticlib(little, spec);
      make_big_endian(little, big);
      REQUIRE(read_bytes(big) != read_bytes(little));
      Volume le = read_nifti(context, little), be = read_nifti(context, big);
      REQUIRE(be.header.big_endian);
      REQUIRE_FALSE(le.header.big_endian);
      REQUIRE(be.header.version == version);
      const std::vector<float> got = be.data.to_vector<float>();
      for (std::size_t i = 0; i < got.size(); ++i)
        REQUIRE(got[i] == static_cast<float>(spec.values[i] * 2 + 1));
      require_affine(be.affine, matrix({0.5, 0, 0, -10, 0, 0.75, 0, 20, 0, 0, 2, 30}));
      REQUIRE(be.header.dim == le.header.dim);
      REQUIRE(be.header.pixdim == le.header.pixdim);
    }
}

TEST_CASE("nifti: affine precedence sform > qform > pixdim", "[nifti]") {
  Context context;
  TempDir dir;
  const std::string path = dir.file("x.nii.gz");
  const std::array<double, 12> sform{0, 0, 2.5, 7, -0.9, 0, 0, 3, 0, 1.1, 0, -4};
  auto both = [&](nifti_image* nim) {
    set_pixdim(nim, 0.9, 1.1, 2.5);
    set_qform(nim, NIFTI_XFORM_SCANNER_ANAT, 0, 0, 0, 1, 2, 3, 1);
    set_sform(nim, NIFTI_XFORM_ALIGNED_ANAT, sform);
  };

  SECTION("both set: sform wins") {
    write_with_nifticlib(path, {.edit = both});
    Volume v = read_nifti(context, path);
    REQUIRE(v.header.affine_source == "sform");
    require_affine(v.affine, matrix(sform));
    // Spacing in tensor order [D, H, W] = column norms k, j, i.
    REQUIRE(std::abs(v.spacing[0] - 2.5) < 1e-6);
    REQUIRE(std::abs(v.spacing[1] - 1.1) < 1e-6);
    REQUIRE(std::abs(v.spacing[2] - 0.9) < 1e-6);
    REQUIRE(v.header.orientation == "PSR");  // columns: i -> -y, j -> +z, k -> +x
    require_affine(v.header.qform, qform_matrix(0, 0, 0, 1, 2, 3, 0.9, 1.1, 2.5, 1));
  }
  SECTION("sform_code 0: qform") {
    write_with_nifticlib(path, {.edit = [&](nifti_image* nim) {
                                  both(nim);
                                  nim->sform_code = 0;
                                }});
    Volume v = read_nifti(context, path);
    REQUIRE(v.header.affine_source == "qform");
    require_affine(v.affine, qform_matrix(0, 0, 0, 1, 2, 3, 0.9, 1.1, 2.5, 1));
    REQUIRE(v.header.orientation == "RAS");
  }
  SECTION("neither: pixdim") {
    write_with_nifticlib(path, {.edit = [&](nifti_image* nim) {
                                  both(nim);
                                  nim->sform_code = 0;
                                  nim->qform_code = 0;
                                }});
    Volume v = read_nifti(context, path);
    REQUIRE(v.header.affine_source == "pixdim");
    require_affine(v.affine, matrix({0.9f, 0, 0, 0, 0, 1.1f, 0, 0, 0, 0, 2.5, 0}));
  }
  SECTION("sform-only file (qform_code 0, sform_code 1)") {
    write_with_nifticlib(path, {.edit = [&](nifti_image* nim) {
                                  both(nim);
                                  nim->qform_code = 0;
                                  nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
                                }});
    Volume v = read_nifti(context, path);
    REQUIRE(v.header.affine_source == "sform");
    REQUIRE(v.header.qform_code == 0);
    require_affine(v.affine, matrix(sform));
  }
}

TEST_CASE("nifti: rotated qform from a quaternion, qfac -1", "[nifti]") {
  Context context;
  TempDir dir;
  const std::string path = dir.file("rot.nii");
  // 60 degrees about z: a = cos 30, d = sin 30.
  const double d = 0.5;
  for (double qfac : {1.0, -1.0}) {
    INFO("qfac " << qfac);
    write_with_nifticlib(path, {.edit = [&](nifti_image* nim) {
                                  set_pixdim(nim, 1.5, 2, 3);
                                  set_qform(nim, NIFTI_XFORM_SCANNER_ANAT, 0, 0, d, -5, 6, 7, qfac);
                                }});
    Volume v = read_nifti(context, path);
    REQUIRE(v.header.affine_source == "qform");
    const std::array<double, 16> expected = qform_matrix(0, 0, d, -5, 6, 7, 1.5, 2, 3, qfac);
    // Independently: column i = 1.5 * (cos 60, sin 60, 0), column j = 2 * (-sin 60, cos 60, 0).
    REQUIRE(std::abs(expected[0] - 0.75) < 1e-12);
    REQUIRE(std::abs(expected[4] - 1.5 * std::sqrt(0.75)) < 1e-12);
    REQUIRE(std::abs(expected[1] + 2 * std::sqrt(0.75)) < 1e-12);
    require_affine(v.affine, expected);
    // i points mostly anterior, j mostly left, k up (or down with qfac -1).
    REQUIRE(v.header.orientation == (qfac > 0 ? "ALS" : "ALI"));
    REQUIRE(orientation_code(v.affine) == v.header.orientation);
    REQUIRE(std::abs(v.spacing[0] - 3) < 1e-6);
    REQUIRE(std::abs(v.spacing[2] - 1.5) < 1e-6);
    REQUIRE(v.header.qfac == qfac);
  }
}

TEST_CASE("nifti: orientation codes", "[nifti]") {
  REQUIRE(orientation_code(matrix({1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0})) == "RAS");
  REQUIRE(orientation_code(matrix({-1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1, 0})) == "LPS");
  REQUIRE(orientation_code(matrix({0, 2, 0, 0, 0, 0, -3, 0, 1, 0, 0, 0})) == "SRP");
  REQUIRE(orientation_code(matrix({0.9, 0.3, 0, 0, -0.3, 0.9, 0, 0, 0, 0, -1, 0})) == "RAI");
  require_error([] { orientation_code(matrix({0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0})); },
                {"orientation_code", "column 0"});
}

TEST_CASE("nifti: reorient to RAS and back keeps every voxel's world position", "[nifti]") {
  Context context;
  TempDir dir;
  const std::string path = dir.file("o.nii");
  const std::vector<std::array<double, 12>> sforms = {
      {-1.5, 0, 0, 10, 0, -2, 0, 20, 0, 0, 3, -30},    // LPS
      {0, 0, 3, 1, -1.5, 0, 0, 2, 0, 2, 0, 3},         // PSR: axes permuted
      {0, -2, 0, 4, 0, 0, -3, 5, 1.5, 0, 0, 6},        // SLP
      {1.4, 0.5, 0, 0, -0.5, 1.9, 0, 0, 0, 0, 3, 0}};  // oblique RAS
  for (const auto& sform : sforms) {
    write_with_nifticlib(path, {.edit = [&](nifti_image* nim) {
                                  set_sform(nim, NIFTI_XFORM_SCANNER_ANAT, sform);
                                }});
    const Volume v = read_nifti(context, path);
    INFO("file orientation " << v.header.orientation);
    REQUIRE(v.from_file.is_identity());
    for (const std::string code : {"RAS", "LPS", "IPL", "ASR"}) {
      INFO("target " << code);
      const Volume r = reorient_to(v, code);
      REQUIRE(orientation_code(r.affine) == code);
      REQUIRE(r.data.numel() == v.data.numel());
      // Values are the ramp i * 1.5 - 7 in file order, so each value names its file voxel.
      const std::vector<float> values = r.data.to_vector<float>();
      const int64_t D = r.data.dim(0), H = r.data.dim(1), W = r.data.dim(2);
      for (int64_t d = 0; d < D; ++d)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w) {
            const auto index = static_cast<int64_t>((values[(d * H + h) * W + w] + 7) / 1.5);
            const int64_t fw = index % 5, fh = (index / 5) % 4, fd = index / 20;
            const auto a = world(r.affine, d, h, w), b = world(v.affine, fd, fh, fw);
            for (int c = 0; c < 3; ++c) REQUIRE(std::abs(a[c] - b[c]) < 1e-9);
          }
      for (int a = 0; a < 3; ++a)
        REQUIRE(std::abs(r.spacing[a] - column_norm(r.affine, 2 - a)) < 1e-12);
      // Back to the file's grid: identical values; twice reoriented composes.
      REQUIRE(to_file_orientation(r, r.data).to_vector<float>() == v.data.to_vector<float>());
      const Volume rr = reorient_to(r, "LIA");
      REQUIRE(to_file_orientation(rr, rr.data).to_vector<float>() == v.data.to_vector<float>());
      // Leading axes (e.g. class probabilities [C, D, H, W]) come along.
      Tensor probs = context.zeros({2, D, H, W});
      std::vector<float> p = probs.to_vector<float>();
      for (std::size_t i = 0; i < values.size(); ++i) p[values.size() + i] = values[i];
      probs = context.from_vector<float>({2, D, H, W}, p);
      Tensor back = to_file_orientation(r, probs);
      REQUIRE(back.shape() == Shape{2, 3, 4, 5});
      const std::vector<float> bv = back.to_vector<float>();
      REQUIRE(std::vector<float>(bv.begin() + 60, bv.end()) == v.data.to_vector<float>());
    }
  }
}

TEST_CASE("nifti: scl_slope 2.5 / scl_inter -1000 applied, slope 0 is identity", "[nifti]") {
  Context context;
  TempDir dir;
  const std::string path = dir.file("ct.nii.gz");
  const std::vector<double> raw = values_for(DT_INT16, 60);
  write_with_nifticlib(path, {.datatype = DT_INT16, .values = raw, .edit = [](nifti_image* nim) {
                                nim->scl_slope = 2.5;
                                nim->scl_inter = -1000;
                              }});
  Volume v = read_nifti(context, path);
  REQUIRE(v.header.scl_slope == 2.5);
  REQUIRE(v.header.scl_inter == -1000);
  std::vector<float> got = v.data.to_vector<float>();
  for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == static_cast<float>(raw[i] * 2.5 - 1000));
  // Scaled labels must land on integers: 2.5 * an odd raw value does not. The first odd raw
  // value is at index 2 (raw[0] = -32768 and raw[1] = -31658 are even).
  REQUIRE(std::fmod(raw[1], 2.0) == 0);
  REQUIRE(std::fmod(raw[2], 2.0) != 0);
  require_error([&] { read_label_nifti(context, path); }, {path, "not an integer label", "(0, 0, 2)"});

  write_with_nifticlib(path, {.datatype = DT_INT16, .values = raw, .edit = [](nifti_image* nim) {
                                nim->scl_slope = 0;
                                nim->scl_inter = 5;  // ignored when slope is 0
                              }});
  got = read_nifti(context, path).data.to_vector<float>();
  for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == static_cast<float>(raw[i]));
}

TEST_CASE("nifti: header extensions and NIfTI-2 files", "[nifti]") {
  Context context;
  TempDir dir;
  for (int version : {1, 2})
    for (const char* suffix : {".nii", ".nii.gz"}) {
      INFO("NIfTI-" << version << suffix);
      const std::string path = dir.file(joined("e", suffix));
      const std::string text = "med3d test extension: some text that is not voxel data";
      write_with_nifticlib(path, {.version = version, .edit = [&](nifti_image* nim) {
                                    REQUIRE(nifti_add_extension(nim, text.data(),
                                                                static_cast<int>(text.size()),
                                                                NIFTI_ECODE_COMMENT) == 0);
                                    set_pixdim(nim, 0.7, 0.8, 0.9);
                                    set_qform(nim, NIFTI_XFORM_SCANNER_ANAT, 0, 0, 0, 1, 2, 3, 1);
                                  }});
      Volume v = read_nifti(context, path);
      REQUIRE(v.header.version == version);
      REQUIRE(v.header.extension_codes == std::vector<int>{NIFTI_ECODE_COMMENT});
      REQUIRE(v.header.vox_offset >= (version == 1 ? 352 : 544) + 8 + static_cast<int64_t>(text.size()));
      REQUIRE(v.data.to_vector<float>() == read_nifti(context, path).data.to_vector<float>());
      const std::vector<float> got = v.data.to_vector<float>();
      const std::vector<double> expected = ramp(60);
      for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == static_cast<float>(expected[i]));
      require_affine(v.affine, qform_matrix(0, 0, 0, 1, 2, 3, 0.7, 0.8, 0.9, 1));
    }
  // Dimensions beyond NIfTI-1's int16 make write_nifti switch to NIfTI-2. (nifticlib's own
  // nifti_image_write does the same but writes the two-file magic "ni2" into the .nii.)
  const std::string wide = dir.file("wide.nii.gz");
  std::vector<uint8_t> values(40000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<uint8_t>(i % 251);
  Volume line;
  line.data = context.from_vector<uint8_t>({1, 1, 40000}, values);
  line.affine = matrix({1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0});
  write_nifti(wide, line);
  const Volume v = read_label_nifti(context, wide);
  REQUIRE(v.header.version == 2);
  REQUIRE(v.header.datatype == DT_UINT8);
  REQUIRE(v.data.shape() == Shape{1, 1, 40000});
  const std::vector<int32_t> got = v.data.to_vector<int32_t>();
  for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == static_cast<int32_t>(i % 251));
}

TEST_CASE("nifti: 4D files are rejected by default, one volume can be selected", "[nifti]") {
  Context context;
  TempDir dir;
  for (const char* suffix : {".nii", ".nii.gz"}) {
    const std::string path = dir.file(joined("fmri", suffix));
    write_with_nifticlib(path, {.dim = {4, 5, 4, 3, 3, 1, 1, 1}});
    require_error([&] { read_nifti(context, path); }, {path, "dim[4] = 3", "4D", "volume_index"});
    for (int k = 0; k < 3; ++k) {
      NiftiReadOptions options;
      options.volume_index = k;
      Volume v = read_nifti(context, path, options);
      REQUIRE(v.data.shape() == Shape{3, 4, 5});
      REQUIRE(v.header.volume_index == k);
      const std::vector<float> got = v.data.to_vector<float>();
      for (std::size_t i = 0; i < got.size(); ++i)
        REQUIRE(got[i] == static_cast<float>((static_cast<double>(i) + 60 * k) * 1.5 - 7));
    }
    NiftiReadOptions options;
    options.volume_index = 3;
    require_error([&] { read_nifti(context, path, options); }, {path, "volume_index = 3", "out of range"});
    options.volume_index = -2;
    require_error([&] { read_nifti(context, path, options); }, {path, "volume_index"});
  }
  const std::string five = dir.file("5d.nii");
  write_with_nifticlib(five, {.dim = {5, 5, 4, 3, 1, 2, 1, 1}});
  require_error([&] { read_nifti(context, five); }, {five, "dim[5] = 2", "more than 4 dimensions"});
  // A 3D file accepts volume_index 0.
  const std::string three = dir.file("3d.nii");
  write_with_nifticlib(three, {});
  NiftiReadOptions first;
  first.volume_index = 0;
  REQUIRE(read_nifti(context, three, first).data.shape() == Shape{3, 4, 5});
}

TEST_CASE("nifti: label volumes keep integer values exactly", "[nifti]") {
  Context context;
  TempDir dir;
  const std::string path = dir.file("labels.nii.gz");
  // 16777217 = 2^24 + 1 is not representable in f32: labels must not go through float.
  std::vector<double> labels(60, 0);
  labels[7] = 16777217;
  labels[8] = -3;
  labels[9] = 2;
  write_with_nifticlib(path, {.datatype = DT_INT32, .values = labels});
  Volume v = read_label_nifti(context, path);
  REQUIRE(v.data.dtype() == DType::i32);
  const std::vector<int32_t> got = v.data.to_vector<int32_t>();
  for (std::size_t i = 0; i < 60; ++i) REQUIRE(got[i] == static_cast<int32_t>(labels[i]));

  // Float-stored labels: rounded when within the tolerance, rejected otherwise.
  std::vector<double> floats(60, 0);
  floats[3] = 0.99999994;
  floats[4] = 2.0000002;
  write_with_nifticlib(path, {.datatype = DT_FLOAT32, .values = floats});
  const std::vector<int32_t> rounded = read_label_nifti(context, path).data.to_vector<int32_t>();
  REQUIRE(rounded[3] == 1);
  REQUIRE(rounded[4] == 2);
  floats[20 * 2 + 5 * 1 + 3] = 0.5;  // voxel (d, h, w) = (2, 1, 3)
  write_with_nifticlib(path, {.datatype = DT_FLOAT32, .values = floats});
  require_error([&] { read_label_nifti(context, path); },
                {"read_label_nifti", path, "(2, 1, 3)", "0.5", "not an integer label"});
  // Outside the i32 range.
  std::vector<double> big(60, 0);
  big[0] = 4294967295.0;
  write_with_nifticlib(path, {.datatype = DT_UINT32, .values = big});
  require_error([&] { read_label_nifti(context, path); }, {path, "i32 range"});
}

TEST_CASE("nifti: write_like reproduces the reference geometry exactly", "[nifti]") {
  Context context;
  TempDir dir;
  for (int version : {1, 2})
    for (bool sform : {true, false}) {
      INFO("NIfTI-" << version << (sform ? " sform+qform" : " qform only"));
      const std::string image = dir.file("image.nii.gz");
      // Oblique qform with qfac -1 and a different sform: every geometry field must survive.
      write_with_nifticlib(image, {.datatype = DT_INT16, .version = version,
                                   .edit = [&](nifti_image* nim) {
                                     set_pixdim(nim, 0.8, 0.9, 2.5);
                                     set_qform(nim, NIFTI_XFORM_SCANNER_ANAT, 0.1, -0.2, 0.3,
                                               -12.5, 30.25, 7, -1);
                                     if (sform)
                                       set_sform(nim, NIFTI_XFORM_ALIGNED_ANAT,
                                                 {-0.8, 0.01, 0, 12, 0, -0.9, 0.02, -8, 0.03, 0, 2.5, 1});
                                     nim->xyz_units = NIFTI_UNITS_MM;
                                   }});
      const Volume reference = read_nifti(context, image);
      const Volume canonical = reorient_to(reference, "RAS");
      // Labels computed on the canonical grid; the file grid's expectation is computed from
      // the file's own values (ramp i * 1.5 - 7 truncated to i16).
      const std::vector<float> values = canonical.data.to_vector<float>();
      std::vector<int32_t> labels(values.size());
      for (std::size_t i = 0; i < values.size(); ++i)
        labels[i] = static_cast<int32_t>(std::lround(values[i]) + 30) % 3 + 1;
      const Tensor predicted = context.from_vector<int32_t>(canonical.data.shape(), labels);
      for (const char* suffix : {".nii", ".nii.gz"}) {
        const std::string out = dir.file(joined("pred", suffix));
        write_like(out, canonical, predicted);
        const RawHeader a = raw_header(image), b = raw_header(out);
        REQUIRE(a.version == version);
        REQUIRE(b.version == version);
        if (version == 1) require_same_geometry_fields(a.n1, b.n1);
        else require_same_geometry_fields(a.n2, b.n2);
        const Volume written = read_label_nifti(context, out);
        REQUIRE(written.header.datatype == DT_UINT8);
        require_affine(written.affine, reference.affine, 0);
        const std::vector<int32_t> got = written.data.to_vector<int32_t>();
        const std::vector<float> file_values = reference.data.to_vector<float>();
        for (std::size_t i = 0; i < got.size(); ++i)
          REQUIRE(got[i] == static_cast<int32_t>(std::lround(file_values[i]) + 30) % 3 + 1);
        check_same_geometry(reference, written);
      }
    }
}

TEST_CASE("nifti: write_like chooses the label datatype and checks the grid", "[nifti]") {
  Context context;
  TempDir dir;
  const std::string image = dir.file("image.nii");
  write_with_nifticlib(image, {});
  const Volume reference = read_nifti(context, image);
  const std::string out = dir.file("pred.nii");
  std::vector<int32_t> labels(60, 0);
  labels[5] = -7;
  write_like(out, reference, context.from_vector<int32_t>({3, 4, 5}, labels));
  REQUIRE(read_label_nifti(context, out).header.datatype == DT_INT16);
  labels[5] = 70000;
  write_like(out, reference, context.from_vector<int32_t>({3, 4, 5}, labels));
  const Volume wide = read_label_nifti(context, out);
  REQUIRE(wide.header.datatype == DT_INT32);
  REQUIRE(wide.data.to_vector<int32_t>() == labels);
  // Probabilities stay floating.
  write_like(out, reference, context.full({3, 4, 5}, 0.25));
  REQUIRE(read_nifti(context, out).data.to_vector<float>() == std::vector<float>(60, 0.25f));
  require_error([&] { write_like(out, reference, context.zeros({3, 5, 4})); },
                {"write_like", out, "[3, 5, 4]", "do not match", image});
  Volume unread;
  unread.data = context.zeros({3, 4, 5});
  require_error([&] { write_like(out, unread, unread.data); }, {"write_like", "write_nifti"});
}

TEST_CASE("nifti: write_nifti round-trips data and affine", "[nifti]") {
  Context context;
  TempDir dir;
  Volume v;
  v.data = context.arange(60).reshape({3, 4, 5});
  // Rotation of 20 degrees about x, spacing (0.7, 0.8, 2.5), translation.
  const double c = std::cos(20 * M_PI / 180), s = std::sin(20 * M_PI / 180);
  v.affine = matrix({0.7, 0, 0, -3, 0, 0.8 * c, -2.5 * s, 4, 0, 0.8 * s, 2.5 * c, 5});
  v.spacing = {2.5, 0.8, 0.7};
  for (const char* suffix : {".nii", ".nii.gz"}) {
    const std::string path = dir.file(joined("w", suffix));
    write_nifti(path, v);
    const Volume r = read_nifti(context, path);
    REQUIRE(r.data.to_vector<float>() == v.data.to_vector<float>());
    require_affine(r.affine, v.affine, 1e-6);
    require_affine(r.header.qform, v.affine, 1e-5);  // rigid: the qform says the same
    REQUIRE(r.header.sform_code == NIFTI_XFORM_SCANNER_ANAT);
    REQUIRE(r.header.qform_code == NIFTI_XFORM_SCANNER_ANAT);
    REQUIRE(r.header.datatype == DT_FLOAT32);
    // Integer on-disk types keep exact values; values that do not fit are refused.
    write_nifti(path, v, NiftiDataType::i16);
    REQUIRE(read_nifti(context, path).header.datatype == DT_INT16);
    REQUIRE(read_nifti(context, path).data.to_vector<float>() == v.data.to_vector<float>());
    Volume reoriented = reorient_to(r, "LPS");
    write_nifti(path, reoriented, NiftiDataType::f64);
    const Volume rr = read_nifti(context, path);
    REQUIRE(rr.header.orientation == "LPS");
    require_affine(rr.affine, reoriented.affine, 1e-6);
  }
  Volume labels;
  labels.affine = v.affine;
  labels.data = context.from_vector<int32_t>({1, 1, 3}, {0, 1, 256});
  require_error([&] { write_nifti(dir.file("u8.nii"), labels, NiftiDataType::u8); },
                {"write_nifti", "u8.nii", "256", "u8"});
  Volume fraction = v;
  fraction.data = context.full({3, 4, 5}, 0.5);
  require_error([&] { write_nifti(dir.file("i16.nii"), fraction, NiftiDataType::i16); },
                {"write_nifti", "0.5", "i16"});
  require_error([&] { write_nifti(dir.file("no/such/folder/x.nii"), v); }, {"does not exist"});
  require_error([&] { write_nifti(dir.file("x.img"), v); }, {".nii or .nii.gz"});
  Volume singular = v;
  singular.affine = matrix({1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0});
  require_error([&] { write_nifti(dir.file("s.nii"), singular); }, {"affine", "singular"});
}

TEST_CASE("nifti: writes are atomic and never leave partial files", "[nifti]") {
  Context context;
  TempDir dir;
  const std::string path = dir.file("keep.nii");
  write_bytes(path, {'K', 'E', 'E', 'P'});
  Volume v;
  v.affine = matrix({1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0});
  v.data = context.full({2, 2, 2}, 300);
  require_error([&] { write_nifti(path, v, NiftiDataType::u8); }, {"300"});
  REQUIRE(read_bytes(path) == std::vector<char>{'K', 'E', 'E', 'P'});
  REQUIRE(dir.count() == 1);  // no temporary file left behind
  write_nifti(path, v);
  REQUIRE(dir.count() == 1);
  REQUIRE(read_nifti(context, path).data.to_vector<float>() == std::vector<float>(8, 300));
  REQUIRE((fs::status(path).permissions() & fs::perms::others_read) != fs::perms::none);
}

TEST_CASE("nifti: image and label geometry mismatches are reported", "[nifti]") {
  Context context;
  TempDir dir;
  const std::string image = dir.file("img.nii"), label = dir.file("lab.nii"),
                    shifted = dir.file("shift.nii");
  auto geometry = [](double x) {
    return [x](nifti_image* nim) {
      set_sform(nim, NIFTI_XFORM_SCANNER_ANAT, {1, 0, 0, x, 0, 1, 0, 0, 0, 0, 1, 0});
    };
  };
  write_with_nifticlib(image, {.edit = geometry(0)});
  write_with_nifticlib(label, {.dim = {3, 5, 4, 2, 1, 1, 1, 1}, .edit = geometry(0)});
  write_with_nifticlib(shifted, {.edit = geometry(0.5)});
  const Volume a = read_nifti(context, image), b = read_nifti(context, label),
               c = read_nifti(context, shifted);
  require_error([&] { check_same_geometry(a, b); }, {image, label, "shape", "[3, 4, 5]", "[2, 4, 5]"});
  require_error([&] { check_same_geometry(a, c); }, {image, shifted, "affine[0][3]", "0.5"});
  check_same_geometry(a, c, 0.6);
  check_same_geometry(a, a);
}

TEST_CASE("nifti: malformed files give clear errors naming the file and the field", "[nifti]") {
  Context context;
  TempDir dir;
  const std::string good = dir.file("good.nii"), good_gz = dir.file("good.nii.gz");
  write_with_nifticlib(good, {});
  write_with_nifticlib(good_gz, {});
  const std::vector<char> good_bytes = read_bytes(good), gz_bytes = read_bytes(good_gz);
  StderrCapture capture(dir.file("stderr.txt"));
  int index = 0;
  // Makes a copy of the good file patched by `edit`; expects read_nifti to fail with `parts`.
  auto patched = [&](const std::function<void(nifti_1_header&)>& edit,
                     std::initializer_list<std::string> parts) {
    const std::string path = dir.file("bad" + std::to_string(index++) + ".nii");
    write_bytes(path, good_bytes);
    patch_n1(path, edit);
    INFO("case " << index);
    require_error([&] { read_nifti(context, path); }, {"read_nifti", path});
    require_error([&] { read_nifti(context, path); }, parts);
  };
  patched([](auto& h) { h.dim[2] = 0; }, {"dim[2] = 0"});
  patched([](auto& h) { h.dim[1] = -3; }, {"dim[1] = -3"});
  patched([](auto& h) { h.dim[0] = 0; }, {"dim[0] = 0"});
  patched([](auto& h) { h.dim[0] = 9; }, {"dim[0] = 9"});
  patched([](auto& h) { h.dim[1] = h.dim[2] = h.dim[3] = 32767; }, {"dim", "max_voxels"});
  patched([](auto& h) { h.pixdim[1] = 0; }, {"pixdim[1] = 0"});
  patched([](auto& h) { h.pixdim[2] = -1; }, {"pixdim[2] = -1"});
  patched([](auto& h) { h.pixdim[3] = std::numeric_limits<float>::quiet_NaN(); }, {"pixdim[3] = nan"});
  patched([](auto& h) { h.datatype = 999; }, {"datatype = 999"});
  patched([](auto& h) { h.datatype = DT_COMPLEX64; }, {"datatype = 32", "not supported"});
  patched([](auto& h) { h.vox_offset = 1e6f; }, {"vox_offset = 1000000", "past the end"});
  patched([](auto& h) { h.vox_offset = 100; }, {"vox_offset = 100"});
  patched([](auto& h) { h.vox_offset = 352.5f; }, {"vox_offset = 352.5"});
  patched([](auto& h) { h.dim[3] = 4; }, {"truncated"});
  patched([](auto& h) { std::memcpy(h.magic, "ni1", 4); }, {"magic", "two-file"});
  patched([](auto& h) { std::memcpy(h.magic, "xyz", 4); }, {"magic"});
  patched([](auto& h) { h.sizeof_hdr = 100; }, {"sizeof_hdr = 100"});
  patched([](auto& h) {
    h.sform_code = 1;
    h.srow_x[0] = std::numeric_limits<float>::infinity();
  }, {"sform", "srow"});
  patched([](auto& h) {
    h.sform_code = 1;
    std::fill(h.srow_y, h.srow_y + 4, 0.0f);
  }, {"sform", "singular"});
  patched([](auto& h) {
    h.qform_code = 1;
    h.quatern_b = std::numeric_limits<float>::quiet_NaN();
  }, {"qform", "quatern"});
  patched([](auto& h) {
    h.scl_slope = 2;
    h.scl_inter = std::numeric_limits<float>::infinity();
  }, {"scl_inter"});

  // A lower cap refuses before allocating.
  NiftiReadOptions small;
  small.max_voxels = 59;
  require_error([&] { read_nifti(context, good, small); }, {good, "max_voxels = 59"});
  small.max_voxels = 60;
  REQUIRE(read_nifti(context, good, small).data.numel() == 60);

  // Truncated files.
  auto cut = [&](const std::vector<char>& bytes, std::size_t size, const char* suffix) {
    const std::string path = dir.file("cut" + std::to_string(index++) + suffix);
    write_bytes(path, std::vector<char>(bytes.begin(), bytes.begin() + static_cast<long>(size)));
    return path;
  };
  std::string p = cut(good_bytes, good_bytes.size() - 1, ".nii");
  require_error([&] { read_nifti(context, p); }, {p, "truncated", "240 data bytes"});
  p = cut(good_bytes, 200, ".nii");
  require_error([&] { read_nifti(context, p); }, {p, "header", "truncated"});
  p = cut(good_bytes, 2, ".nii");
  require_error([&] { read_nifti(context, p); }, {p, "truncated"});
  p = cut(good_bytes, 0, ".nii");
  require_error([&] { read_nifti(context, p); }, {p, "truncated"});
  for (std::size_t size : {gz_bytes.size() - 4, gz_bytes.size() / 2, std::size_t{12}}) {
    p = cut(gz_bytes, size, ".nii.gz");
    INFO("gzip cut to " << size << " of " << gz_bytes.size());
    require_error([&] { read_nifti(context, p); }, {p, "gzip"});
  }
  // Corrupt gzip: flipped bytes in the deflate stream, and a wrong CRC in the trailer.
  for (std::size_t at : {gz_bytes.size() / 2, gz_bytes.size() - 8}) {
    std::vector<char> bytes = gz_bytes;
    bytes[at] = static_cast<char>(bytes[at] ^ 0x5a);
    p = dir.file("corrupt" + std::to_string(at) + ".nii.gz");
    write_bytes(p, bytes);
    INFO("flipped byte " << at);
    require_error([&] { read_nifti(context, p); }, {p, "gzip"});
  }
  // vox_offset past the end of a compressed file.
  {
    const std::string path = dir.file("offset.nii");
    write_bytes(path, good_bytes);
    patch_n1(path, [](auto& h) { h.vox_offset = 4096; });
    nifti_image* nim = nifti_image_read(path.c_str(), 1);
    REQUIRE(nim == nullptr);  // nifticlib agrees the file is bad; now gzip it with znzlib
    const std::vector<char> bytes = read_bytes(path);
    const std::string gz = dir.file("offset.nii.gz");
    znzFile out = znzopen(gz.c_str(), "wb", 1);
    REQUIRE(znzwrite(bytes.data(), 1, bytes.size(), out) == bytes.size());
    znzclose(out);
    require_error([&] { read_nifti(context, gz); }, {gz, "truncated"});
    NiftiReadOptions tight;
    tight.max_header_bytes = 1024;
    require_error([&] { read_nifti(context, gz, tight); }, {gz, "vox_offset = 4096", "max_header_bytes"});
  }
  // Not NIfTI at all, misnamed, missing.
  p = dir.file("text.nii");
  write_bytes(p, std::vector<char>(400, 'x'));
  require_error([&] { read_nifti(context, p); }, {p, "sizeof_hdr", "not a NIfTI"});
  p = dir.file("compressed.nii");
  write_bytes(p, gz_bytes);
  require_error([&] { read_nifti(context, p); }, {p, "rename it to .nii.gz"});
  require_error([&] { read_nifti(context, dir.file("missing.nii")); }, {"missing.nii", "not found"});
  require_error([&] { read_nifti(context, dir.file("image.mha")); }, {"image.mha", ".nii or .nii.gz"});
  require_error([&] { read_label_nifti(context, dir.file("x.hdr")); }, {"read_label_nifti", "x.hdr"});
  require_error([&] { read_nifti_header(dir.file("missing.nii.gz")); }, {"read_nifti_header"});
  // Successful reads are silent too (NIfTI-2, big-endian, extensions).
  const std::string n2 = dir.file("n2.nii.gz"), le = dir.file("le.nii"), be = dir.file("be.nii");
  write_with_nifticlib(n2, {.version = 2, .edit = [](nifti_image* nim) {
                              const char text[] = "comment";
                              nifti_add_extension(nim, text, sizeof(text), NIFTI_ECODE_COMMENT);
                            }});
  write_with_nifticlib(le, {});
  make_big_endian(le, be);
  REQUIRE(read_nifti(context, n2).header.version == 2);
  REQUIRE(read_nifti(context, be).header.big_endian);
  // Library code must stay silent: nothing reached stderr.
  REQUIRE(capture.text().empty());
}

TEST_CASE("nifti: real files in ../shared/data", "[nifti][data]") {
  const fs::path root(MED3D_SHARED_DATA_DIR);
  if (!fs::is_directory(root)) {
    WARN("skipped: " << root << " not found (real data lives beside the repository)");
    return;
  }
  Context context;
  TempDir dir;
  int files = 0;
  std::set<std::string> image_types;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    const std::string path = entry.path().string();
    if (path.size() < 7 || path.compare(path.size() - 7, 7, ".nii.gz") != 0) continue;
    INFO(path);
    ++files;
    const Volume v = read_nifti(context, path);
    REQUIRE(v.data.rank() == 3);
    REQUIRE(v.data.numel() > 0);
    for (double s : v.spacing) REQUIRE((s > 0.1 && s < 10));
    REQUIRE(v.header.orientation.size() == 3);
    const std::vector<float> values = v.data.to_vector<float>();
    REQUIRE(std::all_of(values.begin(), values.end(), [](float x) { return std::isfinite(x); }));
  }
  REQUIRE(files > 0);

  const fs::path ct = root / "abdomen-ct" / "example_ct.nii.gz";
  if (fs::exists(ct)) {
    const Volume v = read_nifti(context, ct.string());
    REQUIRE(v.data.shape() == Shape{112, 101, 122});
    REQUIRE(v.header.datatype == DT_INT32);
    REQUIRE(v.header.orientation == "RAS");
    for (double s : v.spacing) REQUIRE(std::abs(s - 3) < 1e-4);
    const std::vector<float> hu = v.data.to_vector<float>();
    const auto [lo, hi] = std::minmax_element(hu.begin(), hu.end());
    REQUIRE(*lo >= -2048);  // air is about -1000 HU, bone and contrast up to a few thousand
    REQUIRE(*lo < -900);
    REQUIRE(*hi > 500);
    REQUIRE(*hi < 5000);
    const fs::path seg_path = root / "abdomen-ct" / "example_seg.nii.gz";
    const Volume seg = read_label_nifti(context, seg_path.string());
    REQUIRE_FALSE(seg.header.extension_codes.empty());
    std::set<int> known{0};
    std::ifstream json_file(root / "abdomen-ct" / "labels.json");
    const nlohmann::json labels = nlohmann::json::parse(json_file);
    for (const auto& item : labels.at("labels").items()) known.insert(std::stoi(item.key()));
    const std::vector<int32_t> seg_labels = seg.data.to_vector<int32_t>();
    const std::set<int32_t> present(seg_labels.begin(), seg_labels.end());
    for (int32_t l : present) REQUIRE(known.count(l) == 1);
    REQUIRE(present.size() > 5);
    require_affine(seg.affine, v.affine, 1e-4);
    if (seg.data.shape() == v.data.shape()) {
      check_same_geometry(v, seg);
    } else {
      require_error([&] { check_same_geometry(v, seg); }, {"shape", seg_path.string()});
    }
  }

  const fs::path spleen = root / "spleen-ct" / "sub-spleen2_ct.nii.gz";
  if (fs::exists(spleen)) {
    const Volume v = read_nifti(context, spleen.string());
    REQUIRE(v.data.shape() == Shape{26, 166, 164});
    REQUIRE(std::abs(v.spacing[0] - 5) < 1e-3);
    REQUIRE(std::abs(v.spacing[1] - 0.8) < 0.01);
    REQUIRE(std::abs(v.spacing[2] - 0.8) < 0.01);
    const Volume mask =
        read_label_nifti(context, (root / "spleen-ct" / "sub-spleen2_ct_seg-manual.nii.gz").string());
    check_same_geometry(v, mask);
    const std::vector<int32_t> m = mask.data.to_vector<int32_t>();
    REQUIRE(std::set<int32_t>(m.begin(), m.end()) == std::set<int32_t>{0, 1});
    // A prediction written like the CT overlays it exactly.
    const std::string out = dir.file("spleen_pred.nii.gz");
    write_like(out, reorient_to(v, "LPS"), reorient_to(mask, "LPS").data);
    require_same_geometry_fields(raw_header(spleen.string()).n1, raw_header(out).n1);
    REQUIRE(read_label_nifti(context, out).data.to_vector<int32_t>() == m);
  }

  const fs::path hippocampus = root / "hippocampus";
  if (fs::is_directory(hippocampus / "imagesTr")) {
    int cases = 0;
    for (const auto& entry : fs::directory_iterator(hippocampus / "imagesTr")) {
      const std::string name = entry.path().filename().string();
      INFO(name);
      const Volume image = read_nifti(context, entry.path().string());
      image_types.insert(image.header.datatype_name);
      const Volume label = read_label_nifti(context, (hippocampus / "labelsTr" / name).string());
      check_same_geometry(image, label);
      const std::vector<int32_t> l = label.data.to_vector<int32_t>();
      REQUIRE(std::set<int32_t>(l.begin(), l.end()) == std::set<int32_t>{0, 1, 2});
      ++cases;
    }
    REQUIRE(cases == 195);
    REQUIRE(image_types == std::set<std::string>{"f32", "u8"});  // the README's mixed dtypes
  }
}
