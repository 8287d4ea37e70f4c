// Synthetic datasets: writes an MSD-format folder (dataset.json, imagesTr/, labelsTr/) of
// CT-like or MRI-like volumes with labels, the embedded default for demos, benchmarks and
// tests when no real scans are at hand.
//
// Each case is a phantom defined in WORLD coordinates (RAS+, mm) and sampled through the
// case's affine, so after reorientation to RAS every case shows the same anatomy whatever its
// stored orientation:
//   body      ellipsoid, subcutaneous fat shell around soft tissue   (label 0)
//   spine     small ellipsoid of bone, posterior                     (label 0)
//   liver     ellipsoid on the right                                 (label 1)
//   kidney    two small ellipsoids, posterior, left and right        (label 2)
// CT intensities in HU: air -1000, fat -100, soft tissue 40, liver 60, kidney 150 (contrast),
// bone 700, plus Gaussian noise (noise_sd); stored as int16 (rounded), as scanners do.
// MRI-like (T1-ish, arbitrary units >= 0): background 0, fat 800, soft tissue 300, liver 450,
// kidney 250, bone 100, multiplied by a smooth linear bias field, plus noise, stored as f32.
// Per case, from the seed: organ centres and radii are jittered, spacing is anisotropic
// (in-plane in [0.7, 1.0] mm, through-plane in [1.5, 3.0] mm when `anisotropic`), and the
// orientation (which voxel axis points to which world axis, and its sign) is drawn at random
// when `random_orientation` (codes such as RAS, LPS, PIR ...). The dataset is a pure
// function of the options (the Philox stream keyed by `seed`), not of any Context state.
// Speed (see tests/unit/test_synth.cpp): one 128^3 CT case is generated in about 0.1-0.15 s
// and written uncompressed in 0.02-0.08 s on the (loaded, 2-core) development machine;
// .nii.gz adds about 0.4 s of gzip.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "med3d/context.h"
#include "med3d/data/dataset.h"

namespace med3d {

enum class SynthModality { ct, mri };

struct SynthOptions {
  int num_cases = 4;
  std::array<int64_t, 3> shape{64, 64, 64};  // voxels along file axes k, j, i ([D, H, W])
  SynthModality modality = SynthModality::ct;
  uint64_t seed = 0;
  bool anisotropic = true;
  bool random_orientation = true;
  double noise_sd = 15;   // HU for CT; for MRI the same number in its units
  bool compress = false;  // .nii.gz instead of .nii (slower to write)
  std::string name = "synthetic";
};

// Label values of the synthetic set (dataset.json "labels").
inline constexpr int32_t kSynthLiver = 1;
inline constexpr int32_t kSynthKidney = 2;

// Writes the folder (created if needed; existing files of the same names are replaced) and
// returns it loaded with load_msd_dataset.
Dataset write_synthetic_dataset(const Context& context, const std::string& folder,
                                const SynthOptions& options);

// One case in memory (image f32, label i32 on the same grid), as written by
// write_synthetic_dataset for case `index`.
struct SynthCase {
  Volume image;
  Volume label;
};
SynthCase make_synthetic_case(const Context& context, const SynthOptions& options, int index);

// Classification (med3d synth --kind ct-nodule): the CT phantom of case `index` (labels
// dropped) where every odd-numbered case also holds one "nodule", a sphere at 1000 HU (a
// calcified nodule, brighter than the 700 HU bone, plus the same noise) of radius 20-30% of the
// smallest half field of view, centred uniformly within +-30% of the half field of view
// around the volume centre (inside the body). Class 1 = nodule present, 0 = absent;
// alternating classes keep any split near balanced. The nodule is drawn from its own stretch
// of the stream, so the anatomy is that of make_synthetic_case. (A 400 HU nodule, between
// kidney and bone, was not learnt by ResNet-10 in 48 steps; brighter than everything it is.)
struct SynthClassCase {
  Volume image;
  int32_t label = 0;
};
SynthClassCase make_synthetic_nodule_case(const Context& context, const SynthOptions& options,
                                          int index);

// Writes a classification dataset: imagesTr/ and a dataset.json whose "training" entries are
// {"image": "./imagesTr/<name>_NNN.nii", "label": class} and whose "labels" are
// {"0": "no nodule", "1": "nodule"} (options.modality must be ct). Returns it loaded.
Dataset write_synthetic_nodule_dataset(const Context& context, const std::string& folder,
                                       const SynthOptions& options);

}  // namespace med3d
