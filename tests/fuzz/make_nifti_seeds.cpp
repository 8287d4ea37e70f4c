// Writes small NIfTI seeds for the reader's fuzz target:
//   make_nifti_seeds synthetic OUT_DIR       tiny files in every variant the reader handles
//                                            (tests/fuzz/seeds/ was made this way)
//   make_nifti_seeds crops DATA_DIR OUT_DIR  8x8x8 crops of every .nii.gz under DATA_DIR
//                                            (../shared/data), each as .nii and .nii.gz
// Synthetic files are written with nifticlib itself (as in tests/unit/test_nifti.cpp); crops
// go through med3d's reader and writer, keeping the source datatype and geometry.
#include <nifti2_io.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "med3d/data/nifti.h"

namespace fs = std::filesystem;

namespace {

nifti_image* small_image(int datatype, int64_t nt = 1) {
  int64_t dims[8] = {nt > 1 ? 4 : 3, 4, 3, 2, nt, 1, 1, 1};
  nifti_image* nim = nifti_make_new_nim(dims, datatype, 1);
  auto* bytes = static_cast<unsigned char*>(nim->data);
  for (int64_t i = 0; i < nim->nvox * nim->nbyper; ++i) bytes[i] = static_cast<unsigned char>(i * 37);
  return nim;
}

void write(nifti_image* nim, const std::string& path) {
  nifti_set_filenames(nim, path.c_str(), 0, 1);
  nifti_image_write(nim);
  nifti_image_free(nim);
}

void synthetic(const std::string& out) {
  nifti_set_debug_level(0);
  nifti_image* nim = small_image(DT_FLOAT32);
  nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
  const double sform[3][4] = {{0, 0, 2.5, 7}, {-0.9, 0.1, 0, 3}, {0, 1.1, 0, -4}};
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) nim->sto_xyz.m[r][c] = sform[r][c];
  write(nim, out + "/sform_f32.nii");

  nim = small_image(DT_INT16);
  nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
  nim->quatern_b = 0.1, nim->quatern_c = -0.2, nim->quatern_d = 0.3, nim->qfac = -1;
  nim->pixdim[0] = -1;
  nim->scl_slope = 2.5, nim->scl_inter = -1000;
  write(nim, out + "/qform_scaled_i16.nii.gz");

  nim = small_image(DT_UINT8);
  const char text[] = "an extension";
  nifti_add_extension(nim, text, sizeof(text), NIFTI_ECODE_COMMENT);
  write(nim, out + "/extension_u8.nii");

  write(small_image(DT_FLOAT64, 2), out + "/4d_f64.nii.gz");
  write(small_image(DT_INT64), out + "/i64.nii");

  // Big-endian copy of an i32 file, swapped with nifticlib's routines.
  write(small_image(DT_INT32), out + "/le_i32.nii");
  std::ifstream in(out + "/le_i32.nii", std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
  swap_nifti_header(bytes.data(), 1);
  nifti_swap_4bytes(24, bytes.data() + 352);
  std::ofstream(out + "/be_i32.nii", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  fs::remove(out + "/le_i32.nii");

  // NIfTI-2 through med3d's writer (nifticlib 2.1's own writer cannot write small NIfTI-2).
  med3d::Context context;
  med3d::Volume v;
  v.data = context.arange(24, med3d::DType::f32).reshape({2, 3, 4});
  v.affine = {-1, 0, 0, 1, 0, -1, 0, 2, 0, 0, 1, 3, 0, 0, 0, 1};
  v.header.version = 2;
  med3d::write_nifti(out + "/nifti2_f32.nii", v);
}

// The centre 8x8x8 (or smaller) block of a volume, with its affine moved to the block's corner.
med3d::Volume crop(const med3d::Context& context, const med3d::Volume& v) {
  const med3d::Shape& s = v.data.shape();
  int64_t start[3], size[3];
  for (int a = 0; a < 3; ++a) {
    size[a] = std::min<int64_t>(8, s[a]);
    start[a] = (s[a] - size[a]) / 2;
  }
  med3d::Volume out = v;
  out.data = context.empty({size[0], size[1], size[2]}, v.data.dtype());
  const std::size_t esize = med3d::dtype_size(v.data.dtype());
  const auto* src = static_cast<const char*>(v.data.raw_data());
  auto* dst = static_cast<char*>(out.data.raw_data());
  for (int64_t d = 0; d < size[0]; ++d)
    for (int64_t h = 0; h < size[1]; ++h)
      std::memcpy(dst + ((d * size[1] + h) * size[2]) * esize,
                  src + (((start[0] + d) * s[1] + start[1] + h) * s[2] + start[2]) * esize,
                  static_cast<std::size_t>(size[2]) * esize);
  // Voxel (i, j, k) = (w, h, d) of the crop is voxel (i + start_w, ...) of the source.
  for (int r = 0; r < 3; ++r)
    out.affine[4 * r + 3] += v.affine[4 * r] * start[2] + v.affine[4 * r + 1] * start[1] +
                             v.affine[4 * r + 2] * start[0];
  return out;
}

void crops(const std::string& data_dir, const std::string& out) {
  med3d::Context context;
  int count = 0;
  for (const auto& entry : fs::recursive_directory_iterator(data_dir)) {
    const std::string path = entry.path().string();
    if (path.size() < 7 || path.compare(path.size() - 7, 7, ".nii.gz") != 0) continue;
    const med3d::NiftiHeaderInfo header = med3d::read_nifti_header(path);
    const bool integer = header.datatype != DT_FLOAT32 && header.datatype != DT_FLOAT64;
    const med3d::Volume v =
        integer ? med3d::read_label_nifti(context, path) : med3d::read_nifti(context, path);
    const med3d::Volume c = crop(context, v);
    const auto datatype = static_cast<med3d::NiftiDataType>(header.datatype);
    const std::string stem = out + "/crop" + std::to_string(count++);
    med3d::write_nifti(stem + ".nii", c, datatype);
    med3d::write_nifti(stem + ".nii.gz", c, datatype);
  }
  std::printf("make_nifti_seeds: %d crops from %s\n", count, data_dir.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "synthetic" && argc == 3) {
      fs::create_directories(argv[2]);
      synthetic(argv[2]);
      return 0;
    }
    if (mode == "crops" && argc == 4) {
      fs::create_directories(argv[3]);
      crops(argv[2], argv[3]);
      return 0;
    }
    std::fprintf(stderr, "usage: %s synthetic OUT_DIR | crops DATA_DIR OUT_DIR\n", argv[0]);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_nifti_seeds: %s\n", e.what());
    return 1;
  }
}
