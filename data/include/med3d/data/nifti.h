// NIfTI-1 and NIfTI-2 volumes (.nii and .nii.gz) read into med3d tensors and written back,
// through nifticlib (Debian libnifti2-dev).
//
// AXIS CONVENTION (the one place it is defined; everything else in med3d refers here):
//   A Volume's tensor is [D, H, W] in the file's memory order, with no transposition:
//     D = NIfTI voxel index k (dim[3], slowest), H = index j (dim[2]), W = index i (dim[1],
//     fastest). Element (d, h, w) is voxel (i, j, k) = (w, h, d).
//   `affine` maps voxel indices (i, j, k, 1) (note: W, H, D order, as in NIfTI and nibabel)
//   to world coordinates (x, y, z, 1) in millimetres, NIfTI RAS+ convention (+x = Right,
//   +y = Anterior, +z = Superior). Row-major 4x4: affine[4 * row + col].
//   `spacing` is in TENSOR order: {spacing along D, along H, along W} in mm (the norms of the
//   affine's columns k, j, i), so it indexes like the tensor's shape.
//   Orientation codes name, for voxel axes i, j, k in that order, the world direction each one
//   points to: "RAS" = i to Right, j to Anterior, k to Superior; "LPS" is DICOM/ITK's.
//
// Reading (read_nifti, read_label_nifti):
//   - datatypes u8, i8, i16, u16, i32, u32, i64, u64, f32, f64 in either byte order; other
//     codes (complex, RGB, float128) fail clearly. Non-finite float voxels read as 0
//     (nifticlib replaces them while reading).
//   - scl_slope/scl_inter applied (value * slope + inter) unless slope is 0 or not finite.
//   - affine precedence: sform if sform_code > 0, else qform if qform_code > 0, else
//     diag(pixdim[1], pixdim[2], pixdim[3]) (NIfTI "method 1"). Header.affine_source says which.
//   - 4D files: NiftiReadOptions::volume_index selects one 3D volume; the default (-1)
//     rejects 4D files with an error that says how to select one. 5D+ files are rejected.
//   - The header is validated before any voxel memory is allocated: sizes are capped by
//     max_voxels and max_header_bytes, uncompressed files must be long enough for their data,
//     and gzip files are read to their end so truncation and CRC errors are detected.
//   - Errors are med3d::Error naming the function, the file and the header field.
//   - nifticlib reports errors by printing; med3d sets its process-wide debug level to 0 once
//     (nifti_set_debug_level is global state in nifticlib) so it stays silent, and turns its
//     failures into med3d::Error.
// Images are f32 tensors. Labels (read_label_nifti) are i32 tensors holding the exact integer
// values; float-stored labels are rounded and must lie within label_tolerance of an integer.
//
// Orientation: reorient_to() permutes and flips the tensor axes to a named orientation (e.g.
// "RAS" for training) and records in `from_file` how to map back; to_file_orientation() undoes
// it for any tensor on the volume's grid (predictions), and write_like() does so itself.
//
// Writing: nifticlib encodes the header; the file goes to a temporary file in the target
// folder with every write checked, is fsync'ed and renamed over the target, so an existing
// file is never partially overwritten. Files are little-endian NIfTI-1 unless the version or
// the dimensions call for NIfTI-2, with scl_slope 1 and no extensions.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "med3d/context.h"
#include "med3d/tensor.h"

namespace med3d {

// NIfTI datatype codes (values as in nifti1.h) that med3d reads and writes.
enum class NiftiDataType : int {
  automatic = -1,  // writers: choose from the tensor's dtype / values
  u8 = 2,
  i16 = 4,
  i32 = 8,
  f32 = 16,
  f64 = 64,
  i8 = 256,
  u16 = 512,
  u32 = 768,
  i64 = 1024,
  u64 = 1280,
};

struct NiftiReadOptions {
  // Refuse files declaring more voxels than this (all volumes of a 4D file together) before
  // allocating anything. 1024^3 voxels is a 4 GiB f32 tensor.
  int64_t max_voxels = int64_t{1} << 30;
  // Refuse vox_offset (header plus extensions) beyond this many bytes.
  int64_t max_header_bytes = int64_t{64} << 20;
  // 4D files: -1 rejects them; k >= 0 reads volume k (k = 0 also accepts a 3D file).
  int volume_index = -1;
  // read_label_nifti: how far a float-stored label may lie from the nearest integer.
  double label_tolerance = 1e-3;
};

// What the file said, kept so predictions can be written with exactly the source geometry.
// Values are as stored (after byte swapping); codes are NIfTI's.
struct NiftiHeaderInfo {
  std::string path;
  int version = 1;                 // 1 = NIfTI-1 (348-byte header), 2 = NIfTI-2 (540)
  bool big_endian = false;         // byte order of the file
  bool gzip = false;               // read from .nii.gz
  int datatype = 0;                // DT_* code on disk
  std::string datatype_name;       // "u8", "i16", "f32", ...
  std::array<int64_t, 8> dim{};    // dim[0] = number of dimensions, dim[1..3] = nx, ny, nz
  std::array<double, 8> pixdim{};  // pixdim[0] = qfac, pixdim[1..3] = voxel sizes
  int xyz_units = 0;               // NIFTI_UNITS_* code of pixdim[1..3]
  int time_units = 0;
  double scl_slope = 0;            // as stored; 0 or non-finite = no scaling
  double scl_inter = 0;
  int qform_code = 0;
  int sform_code = 0;
  // qform parameters as stored, and both transforms as nifticlib decodes them (row-major).
  double quatern_b = 0, quatern_c = 0, quatern_d = 0;
  double qoffset_x = 0, qoffset_y = 0, qoffset_z = 0;
  double qfac = 1;
  std::array<double, 16> qform{};
  std::array<double, 16> sform{};
  std::string affine_source;       // "sform", "qform" or "pixdim"
  std::string orientation;         // of the file's affine, e.g. "RAS"
  int intent_code = 0;
  std::string intent_name;
  std::string descrip;
  int64_t vox_offset = 0;
  std::vector<int> extension_codes;  // NIFTI_ECODE_* of each header extension
  int volume_index = 0;              // which volume of a 4D file was read
};

// How a volume's tensor axes relate to the file it came from: tensor axis a is the file
// tensor's axis `axis[a]`, reversed when flip[a]. Identity for a volume as read.
struct AxisMap {
  std::array<int, 3> axis{0, 1, 2};
  std::array<bool, 3> flip{false, false, false};
  std::array<int64_t, 3> file_shape{0, 0, 0};  // [D, H, W] of the file's grid
  bool is_identity() const;
};

struct Volume {
  Tensor data;                     // [D, H, W]: f32 image or i32 labels (see top of file)
  std::array<double, 16> affine{}; // voxel (i, j, k) -> world (x, y, z), row-major 4x4
  std::array<double, 3> spacing{}; // mm along D, H, W
  NiftiHeaderInfo header;          // the source file's header
  AxisMap from_file;               // how `data` relates to the file's grid
};

// Reads one volume as f32 (scaled).
Volume read_nifti(const Context& context, const std::string& path,
                  const NiftiReadOptions& options = {});
// Reads one label volume as i32 with exact integer values (see top of file).
Volume read_label_nifti(const Context& context, const std::string& path,
                        const NiftiReadOptions& options = {});
// Validates the header (and file size where knowable) without reading voxels.
NiftiHeaderInfo read_nifti_header(const std::string& path, const NiftiReadOptions& options = {});

// Writes `volume` with its current affine (sform and qform, codes kept from its header when
// they are set, else scanner-anatomical). `datatype` automatic: f32 for floating data, the
// same integer type for integer data. Values must fit the chosen type (integers exactly).
// The NIfTI version is the header's (1 for volumes not read from a file).
void write_nifti(const std::string& path, const Volume& volume,
                 NiftiDataType datatype = NiftiDataType::automatic);

// Writes `labels` (on `reference`'s grid; [D, H, W] of reference.data) with exactly the
// dimensions, pixdim, qform and sform (parameters and codes), units and NIfTI version of the
// file `reference` was read from, so it overlays the source image in ITK-SNAP / 3D Slicer.
// (Parameters of a transform whose code is 0 are meaningless and written as 0, as nifticlib
// does; a 4D reference gives a 3D file with its first three dimensions.)
// If `reference` was reoriented, labels are mapped back to the file's grid first. Integer
// labels are stored as the smallest of u8, i16, i32 that holds them; floating ones as f32.
// Extensions are not copied.
void write_like(const std::string& path, const Volume& reference, const Tensor& labels);

// The three-letter orientation of an affine (see top of file). Oblique affines get the
// closest axes (each world axis used once).
std::string orientation_code(const std::array<double, 16>& affine);

// The volume with tensor axes permuted and flipped so its orientation is `code` (three
// letters, one of R/L, A/P, S/I each, e.g. "RAS" or "LPS"). Same world positions: the affine
// is updated so every voxel keeps its world coordinate.
Volume reorient_to(const Volume& volume, const std::string& code);

// Maps a tensor on `volume`'s grid ([..., D, H, W], any dtype, leading axes kept) back to the
// grid of the file `volume` was read from, undoing reorient_to(). Returns `tensor` itself
// (same storage) when the volume was not reoriented.
Tensor to_file_orientation(const Volume& volume, const Tensor& tensor);

// Throws unless the two volumes have the same [D, H, W] and affines equal within `tolerance`
// (mm, element-wise), naming both files and the differing field.
void check_same_geometry(const Volume& image, const Volume& label, double tolerance = 1e-3);

}  // namespace med3d
