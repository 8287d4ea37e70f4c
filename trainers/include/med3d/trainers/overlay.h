// Three orthogonal slices of a 3D scan with label contours drawn over it, for looking at a
// training or validation case: dir/<case>_axial.png, <case>_coronal.png, <case>_sagittal.png.
//
// Inputs: `image` is a [D, H, W] floating tensor (any device; copied to the CPU), `spacing`
// the voxel size in mm along D, H, W (the data layer's Volume::spacing), and two optional
// label maps of the same shape (i32 or u8; an undefined Tensor means absent): the reference
// (ground truth) and a prediction. Value 0 is background.
//
// Orientation: planes are named for the data layer's canonical RAS order (see the AXIS
// CONVENTION in med3d/data/nifti.h; reorient_to(volume, "RAS")): D = k runs to Superior,
// H = j to Anterior, W = i to the patient's Right. So axial = fixed D (rows H, columns W),
// coronal = fixed H (rows D, columns W), sagittal = fixed W (rows D, columns H). Pictures use
// the radiological display convention: superior (axial: anterior) at the top, the patient's
// right (sagittal: anterior) on the viewer's LEFT. Volumes in another orientation are drawn
// the same way, but the plane names and the R/L/A/P/S/I letters are then wrong.
//
// Slices go through the centre of the foreground: the rounded centroid of the reference's
// non-zero voxels, else the prediction's, else the volume centre (size / 2).
// Intensity: the 0.5 and 99.5 percentiles (linear interpolation, as numpy) of the finite
// voxels map to black and white (computed on at most 2^20 evenly strided voxels, exact for
// volumes up to that size); non-finite voxels are black.
// Size: each voxel becomes a block of pixels (nearest neighbour) proportional to its physical
// size, scaled so that the smaller side is at least `min_side` pixels, and never coarser than
// one pixel per the finest voxel spacing; if that makes the larger side exceed `max_side`, the
// scale is reduced to fit it (the smaller side then falls below min_side).
// Contours: computed on the displayed (scaled) label map, so they are one pixel wide: a pixel
// with a non-zero label whose left/right/up/down neighbour has a different label or lies
// outside the picture. Colours: label_colour(value), one per label value. Reference contours
// are solid; prediction contours are drawn over them dashed: 4 pixels in the label colour,
// 4 in black, counted along the line (breadth-first distance over the 8-connected contour
// pixels from the first one in raster order), so they stand out on bright and dark tissue. A solid line is reference boundary the prediction misses; a dashed line is
// prediction boundary (on top of the reference where the two agree). With `annotate`, the
// plane name and slice index (top-left, "axial d=12/40") and the orientation letters (edge
// centres) // are written in white with a black shadow.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "med3d/tensor.h"
#include "med3d/trainers/png.h"

namespace med3d::trainers {

struct OverlayOptions {
  int64_t min_side = 256;
  int64_t max_side = 2048;
  bool annotate = true;
};

struct OverlayPlane {
  std::string name;   // "axial", "coronal" or "sagittal"
  int axis = 0;       // the tensor axis held fixed: 0 (D), 1 (H) or 2 (W)
  int64_t slice = 0;  // its index
  Image image;        // RGB
};

// Contour colour of a label value: a palette of 8 distinct colours, label 1 first (red, green,
// yellow, blue, orange, purple, cyan, magenta), repeating every 8 values.
std::array<uint8_t, 3> label_colour(int32_t label);

// The three pictures in the order axial, coronal, sagittal.
std::vector<OverlayPlane> render_overlays(const Tensor& image, const std::array<double, 3>& spacing,
                                          const Tensor& reference = Tensor(),
                                          const Tensor& prediction = Tensor(),
                                          const OverlayOptions& options = {});

// Renders and writes the three PNGs into `dir` (created if missing), each atomically; returns
// their paths in the order axial, coronal, sagittal. `case_name` must be a plain file name.
std::vector<std::string> write_overlays(const std::string& dir, const std::string& case_name,
                                        const Tensor& image, const std::array<double, 3>& spacing,
                                        const Tensor& reference = Tensor(),
                                        const Tensor& prediction = Tensor(),
                                        const OverlayOptions& options = {});

}  // namespace med3d::trainers
