// Datasets in the Medical Segmentation Decathlon (MSD) layout, multi-domain collections of
// them (3DSeg-8 style) and seeded train/validation splits.
//
// An MSD folder holds `dataset.json` with
//   "labels":   {"0": "background", "1": "...", ...}   (keys are the integer label values)
//   "modality": {"0": "CT"}                             (optional; channel index -> name)
//   "training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}, ...]
// plus imagesTr/ and labelsTr/. Paths in "training" are relative to the folder. Loading checks
// the JSON and that every listed file exists (no voxels are read); a case's id is the image
// file name without .nii/.nii.gz.
// Classification datasets (med3d train --task cls) use the same file with an integer class
// instead of a label file: "training": [{"image": "./imagesTr/x.nii.gz", "label": 1}, ...];
// "labels" then maps the class ids 0..K-1 (every one declared, K >= 2) to class names, and no
// labelsTr/ is needed. A dataset is one kind or the other: mixing string and integer "label"
// entries, a class id not declared in "labels", or class ids that are not 0..K-1 is an error
// naming the entry and its image file.
// A multi-domain set is a list of MSD folders; folder n becomes domain n with its own label
// set, and its cases carry `domain = n`.
//
// Splits: make_split shuffles each domain's cases with a Fisher-Yates shuffle driven by the
// Philox stream keyed by the seed alone (independent of any Context state), so a split is a
// pure function of (cases, fraction, seed). The first round(fraction * n) shuffled cases of a
// domain go to validation (at least 1 and at most n - 1 when fraction > 0 and n >= 2), the
// rest to training, each list kept in dataset order. write_split/read_split store the full
// case records as JSON, so a split saved next to a run's outputs reloads without the dataset.
//
// Errors are med3d::Error naming the file and the field.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "med3d/context.h"
#include "med3d/data/nifti.h"

namespace med3d {

struct DatasetCase {
  std::string id;                    // image file name without .nii / .nii.gz
  std::string image_path;            // absolute or relative to the working directory
  std::string label_path;
  int domain = 0;                    // index of the dataset in a multi-domain set
  std::vector<int32_t> label_values; // the domain's label set, ascending; empty: no check
  int32_t class_label = -1;          // classification: the case's class; -1: segmentation
};

struct Dataset {
  std::string name;                         // dataset.json "name", else the folder name
  std::string root;                         // the folder
  int domain = 0;
  std::map<int32_t, std::string> labels;    // label value -> name
  std::map<int, std::string> modality;      // channel -> name ("CT", "MRI", ...)
  std::vector<DatasetCase> cases;           // in dataset.json order
  bool classification = false;              // "label" entries are class ids, not files

  std::vector<int32_t> label_values() const;  // ascending
  int num_classes() const;                    // max label value + 1
};

// Reads `folder`/dataset.json and checks that every image and label file exists.
Dataset load_msd_dataset(const std::string& folder, int domain = 0);
// One domain per folder, in order.
std::vector<Dataset> load_multi_domain_dataset(const std::vector<std::string>& folders);

// One case's image (f32) and label (i32) as stored, after checking that they share the voxel
// grid (shape and affine, via check_same_geometry) and that every label value is in the
// case's label set.
struct CaseVolumes {
  Volume image;
  Volume label;
};
CaseVolumes load_case(const Context& context, const DatasetCase& c,
                      const NiftiReadOptions& options = {});

// Throws unless every value of `label` (i32 [D, H, W]) is in `label_values` (ascending);
// names `path` and the first offending value. Empty `label_values` accepts everything.
void check_label_values(const Tensor& label, const std::vector<int32_t>& label_values,
                        const std::string& path);

struct Split {
  uint64_t seed = 0;
  double validation_fraction = 0;
  std::vector<DatasetCase> train;
  std::vector<DatasetCase> validation;
};

// validation_fraction in [0, 1). Domains are split separately, so each keeps its proportion.
Split make_split(const Dataset& dataset, double validation_fraction, uint64_t seed);
Split make_split(const std::vector<Dataset>& domains, double validation_fraction,
                 uint64_t seed);

void write_split(const std::string& path, const Split& split);
Split read_split(const std::string& path);

}  // namespace med3d
