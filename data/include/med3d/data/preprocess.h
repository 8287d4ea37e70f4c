// Preprocessing of volumes (CPU): resampling to a target spacing, the Med3D median-spacing
// rule, intensity normalisation, and prepare_case() which chains them for one dataset case.
//
// Resampling (resample): spacing is in TENSOR order {D, H, W} (see nifti.h). The output grid
// has exactly the target spacing and n_out = max(1, round(n_in * s_in / s_out)) voxels per
// axis, and starts at the input's first voxel EDGE (align_corners = false geometry): output
// voxel o sits at input index x = (o + 0.5) * s_out / s_in - 0.5. Linear: trilinear
// interpolation of f32/f64 images with indices clamped to the volume (border replicate, as
// PyTorch's grid_sample/interpolate). Nearest: the voxel whose centre is nearest,
// floor((o + 0.5) * s_out / s_in) clamped (any dtype; for labels). The affine is updated so
// every output voxel keeps its world position; the same spacing gives back the input values
// exactly. Downsampling does not low-pass filter (as Med3D/MedicalNet).
// The result keeps the input's header and from_file only as provenance: its grid is no longer
// the file's, so write_like/to_file_orientation do not apply to it.
//
// Median spacing (Med3D, Eq. 1): per domain, the per-axis median of the cases' voxel
// spacings, read from the NIfTI headers only (no voxels), in the tensor order the volumes have
// after reorientation to `orientation` (so cases stored with different axis orders agree).
// Even counts take the mean of the two middle values (numpy.median).
//
// Intensity (normalize_intensity; returns a new f32 tensor, the input is not modified):
//   percentile_zscore: clip to the [lower, upper] percentiles (Med3D: 0.5 / 99.5) of all
//     voxels, then z-score with the clipped volume's mean and standard deviation.
//   ct_window: clip to [window_min, window_max] (LiTS: [-200, 250] HU) and scale to [0, 1].
//   nonzero_zscore (MedicalNet): mean and standard deviation over voxels > 0, applied to
//     the voxels > 0; other voxels become 0 (MedicalNet fills them with N(0,1) noise; med3d
//     keeps preprocessing deterministic).
// Percentiles are exact: numpy.percentile's default linear interpolation between order
// statistics (nth_element), at rank p / 100 * (n - 1). Standard deviations are population
// (divide by n) and must be > 0.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "med3d/context.h"
#include "med3d/data/dataset.h"
#include "med3d/data/nifti.h"

namespace med3d {

enum class Interpolation { linear, nearest };

Volume resample(const Volume& volume, const std::array<double, 3>& target_spacing,
                Interpolation interpolation);

// The output shape resample() gives: max(1, round(n * s_in / s_out)) per axis.
std::array<int64_t, 3> resampled_shape(const std::array<int64_t, 3>& shape,
                                       const std::array<double, 3>& spacing,
                                       const std::array<double, 3>& target_spacing);

// Spacing {D, H, W} in mm of the file after reorientation to `orientation`, from the header.
std::array<double, 3> header_spacing(const NiftiHeaderInfo& header,
                                     const std::string& orientation = "RAS");
// The Med3D target spacing of a domain: per-axis median of header_spacing over its cases.
std::array<double, 3> median_spacing(const Dataset& dataset,
                                     const std::string& orientation = "RAS");

enum class IntensityMode { none, percentile_zscore, ct_window, nonzero_zscore };

struct IntensityOptions {
  IntensityMode mode = IntensityMode::percentile_zscore;
  double lower_percentile = 0.5;  // percent, for percentile_zscore
  double upper_percentile = 99.5;
  double window_min = -200;       // HU, for ct_window
  double window_max = 250;
};

// The p-th percentile (p in [0, 100]) of a tensor's values, exact (see top).
double percentile(const Tensor& values, double p);
// Both percentiles of one volume (one copy of the data).
std::pair<double, double> percentiles(const Tensor& values, double lower, double upper);

Tensor normalize_intensity(const Tensor& image, const IntensityOptions& options);

struct PreprocessOptions {
  std::string orientation = "RAS";                     // empty: keep the file's
  std::optional<std::array<double, 3>> target_spacing; // {D, H, W} mm; none: keep
  IntensityOptions intensity;
  NiftiReadOptions read;
};

// A case ready for cropping and augmentation: image f32 [D, H, W] and label i32 [D, H, W] on
// the same grid, reoriented, resampled and normalised.
struct PreparedCase {
  std::string id;
  int domain = 0;
  Volume image;
  Volume label;
  // Geometry after reorientation, before resampling (to map predictions back).
  std::array<int64_t, 3> original_shape{};
  std::array<double, 3> original_spacing{};
  std::array<double, 16> original_affine{};
};

// load_case (geometry and label checks), reorient_to(options.orientation), resample (image
// linear, label nearest) when target_spacing is set, normalize_intensity of the image.
PreparedCase prepare_case(const Context& context, const DatasetCase& c,
                          const PreprocessOptions& options);

}  // namespace med3d
