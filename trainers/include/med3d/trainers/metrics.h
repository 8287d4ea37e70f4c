// Evaluation metrics: segmentation overlap and surface distances (LiTS conventions) and
// classification accuracy / ROC AUC. Pure functions on CPU tensors and vectors; nothing is
// overwritten, nothing printed.
//
// SEGMENTATION. Label tensors are [D, H, W] of dtype i32 or u8 (the axis convention of
// med3d/data/nifti.h); `spacing` is {D, H, W} in mm, each finite and > 0. For a label value L the
// binary masks are P = {pred == L} and R = {ref == L}.
//   Dice = 2|P∩R| / (|P|+|R|), IoU (Jaccard) = |P∩R| / |P∪R|, VOE = 1 - IoU,
//   RVD = (|P| - |R|) / |R| (signed; > 0 means over-segmentation).
//   Surface S(M) = M minus its binary erosion with the face-connected (6-neighbour) structuring
//   element, voxels outside the volume counting as background (scipy's
//   binary_erosion(M, generate_binary_structure(3, 1)) with border_value 0, as medpy does), so
//   mask voxels on the volume's faces are surface voxels.
//   Distances: for every voxel of S(P) the Euclidean distance in mm (voxel centres, anisotropic
//   spacing) to the nearest voxel of S(R), and vice versa; computed with an exact separable
//   Euclidean distance transform (Felzenszwalb-Huttenlocher lower envelope of parabolas) on the
//   bounding box of P∪R, which holds every surface voxel, so the result is exact.
//   ASSD = mean of the POOLED distances of both directions,
//     (sum_{S(P)} d + sum_{S(R)} d) / (|S(P)| + |S(R)|),
//   the LiTS paper's definition. medpy 0.4's binary.assd instead averages the two directed
//   means; both directed means are reported (asd_pred_to_ref, asd_ref_to_pred) so that value
//   is (asd_pred_to_ref + asd_ref_to_pred) / 2.
//   HD95 = 95th percentile of the pooled distances of both directions with linear
//   interpolation between order statistics (numpy.percentile's default): with the n pooled
//   distances sorted as x[0..n-1], position p = 0.95 (n - 1), HD95 = x[floor p] +
//   (p - floor p)(x[floor p + 1] - x[floor p]). This is medpy.metric.binary.hd95.
//   Hausdorff = the maximum pooled distance (medpy.metric.binary.hd).
// Empty masks:
//   both P and R empty: Dice 1, IoU 1, VOE 0, RVD 0, ASSD / HD95 / Hausdorff 0.
//   exactly one empty:  Dice 0, IoU 0, VOE 1; RVD -1 when P is empty and NaN when R is empty
//   (division by |R| = 0); every distance is NaN (undefined; written as JSON null by med3d eval).
//   medpy raises in these cases; NaN keeps a case in a table and out of distance means.
//
// CLASSIFICATION. accuracy = fraction of equal predicted and true classes. Binary ROC AUC is
// the Mann-Whitney statistic: the probability that a random positive scores above a random
// negative, ties counted 1/2 (equals sklearn's roc_auc_score). Multi-class: one-vs-rest, class
// k's scores against (truth == k), macro mean over the classes that have both positives and
// negatives in `truth` (others get NaN in per_class and are left out of the mean).
//
// Errors (med3d::Error): shape or dtype mismatch, spacing <= 0, an empty label list, empty or
// mismatched classification inputs, a class outside [0, K).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "med3d/tensor.h"

namespace med3d::trainers {

using Spacing = std::array<double, 3>;  // mm along D, H, W

struct SegmentationMetrics {
  int label = 0;                 // the label value compared
  int64_t pred_voxels = 0;       // |P|
  int64_t ref_voxels = 0;        // |R|
  int64_t intersection = 0;      // |P ∩ R|
  int64_t pred_surface_voxels = 0;  // |S(P)|
  int64_t ref_surface_voxels = 0;   // |S(R)|
  double dice = 0, iou = 0, voe = 0, rvd = 0;
  double assd = 0, hd95 = 0, hausdorff = 0;      // mm; NaN when exactly one mask is empty
  double asd_pred_to_ref = 0, asd_ref_to_pred = 0;  // directed mean distances, mm
};

// Metrics of label `label` in `pred` against `ref` (see top of file).
SegmentationMetrics segmentation_metrics(const Tensor& pred, const Tensor& ref,
                                         const Spacing& spacing, int label);

// segmentation_metrics for each label of `labels` (non-empty), in that order.
std::vector<SegmentationMetrics> evaluate_segmentation(const Tensor& pred, const Tensor& ref,
                                                       const Spacing& spacing,
                                                       const std::vector<int>& labels);

// The sorted distinct non-zero values of a label tensor (i32 or u8), with their voxel counts.
std::vector<std::pair<int, int64_t>> label_counts(const Tensor& labels);

// Mean over cases of one label: each metric averaged over the cases where it is not NaN
// (NaN when it is NaN in every case). dice_global is LiTS's "Dice global":
// 2 sum|P∩R| / sum(|P|+|R|) over all cases (1 when every mask is empty).
struct SegmentationSummary {
  int label = 0;
  int64_t cases = 0;                 // cases averaged
  int64_t cases_with_distances = 0;  // cases whose distances are defined
  double dice = 0, iou = 0, voe = 0, rvd = 0, assd = 0, hd95 = 0, hausdorff = 0;
  double dice_global = 0;
};

// Per label over cases: `cases[c]` is evaluate_segmentation's result for case c. Labels are
// matched by value; the result lists each label once, in order of first appearance.
std::vector<SegmentationSummary> mean_over_cases(
    const std::vector<std::vector<SegmentationMetrics>>& cases);

// Mean of the values that are not NaN; NaN when there are none.
double mean_skip_nan(const std::vector<double>& values);

// ---- Building blocks, public for tests and tools -------------------------------------------

// S(M) for the mask M = {labels == label} (i32 or u8 [D, H, W]): u8 [D, H, W], 1 on the
// surface (see top of file).
Tensor surface_mask(const Tensor& labels, int label);

// Squared Euclidean distance (mm^2) from every voxel to the nearest non-zero voxel of
// `features` (u8 [D, H, W]); +infinity everywhere when there is none. f64 [D, H, W].
Tensor squared_distance_transform(const Tensor& features, const Spacing& spacing);

// For every non-zero voxel of `from` (u8 [D, H, W]) in memory order, the distance in mm to the
// nearest non-zero voxel of `to`. `to` must have one; `from` may be empty.
std::vector<double> directed_distances(const Tensor& from, const Tensor& to,
                                       const Spacing& spacing);

// Percentile q in [0, 100] with linear interpolation (numpy's default); `values` non-empty.
double percentile_linear(std::vector<double> values, double q);

// ---- Classification -------------------------------------------------------------------------

double accuracy(const std::vector<int>& predicted, const std::vector<int>& truth);

// Binary ROC AUC of `scores` (higher = more positive) for `positive` (0/1 each); needs at
// least one positive and one negative.
double roc_auc(const std::vector<double>& scores, const std::vector<int>& positive);

struct RocAuc {
  double macro = 0;                // mean of the defined per-class values
  std::vector<double> per_class;   // one-vs-rest AUC of class k; NaN when undefined
  int classes_defined = 0;
};

// One-vs-rest ROC AUC: scores[i] holds K class scores of sample i, truth[i] in [0, K).
// Needs at least one class with both positives and negatives.
RocAuc roc_auc_one_vs_rest(const std::vector<std::vector<double>>& scores,
                           const std::vector<int>& truth);

}  // namespace med3d::trainers
