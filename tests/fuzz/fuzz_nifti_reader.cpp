// libFuzzer target for the NIfTI reader. Each input is written to a temporary file named
// .nii.gz when it starts with the gzip magic, else .nii (the reader takes paths, as nifticlib
// does), then read as an image and as labels under small size caps, and reoriented when it
// reads. A med3d::Error is an expected outcome; crashes, sanitizer reports, leaks, hangs and
// allocations beyond libFuzzer's -malloc_limit_mb are bugs.
// Run it through scripts/fuzz.sh (clang, -fsanitize=fuzzer,address).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "med3d/data/nifti.h"

namespace {

// One scratch folder per fuzzing process (under $TMPDIR; scripts/fuzz.sh points it at /dev/shm).
const std::string& scratch_dir() {
  static const std::string dir = [] {
    std::string name = (std::filesystem::temp_directory_path() / "med3d_fuzz_XXXXXX").string();
    if (!::mkdtemp(name.data())) std::abort();
    return name;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const bool gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  const std::string path = scratch_dir() + (gzip ? "/input.nii.gz" : "/input.nii");
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (!file) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, file) != size) std::abort();
  std::fclose(file);

  med3d::Context context;
  med3d::NiftiReadOptions options;
  options.max_voxels = int64_t{1} << 22;  // <= 32 MiB of raw f64 plus the f32 tensor
  options.max_header_bytes = int64_t{1} << 20;
  options.volume_index = size % 2 == 0 ? -1 : 0;  // both the 4D rejection and selection paths
  try {
    const med3d::Volume image = med3d::read_nifti(context, path, options);
    const med3d::Volume canonical = med3d::reorient_to(image, "RAS");
    (void)med3d::to_file_orientation(canonical, canonical.data);
  } catch (const med3d::Error&) {
  }
  try {
    (void)med3d::read_label_nifti(context, path, options);
  } catch (const med3d::Error&) {
  }
  return 0;
}
