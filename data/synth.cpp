// Synthetic CT/MRI-like phantoms in the MSD layout. What the phantom holds: see synth.h.
#include "med3d/data/synth.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "med3d/error.h"
#include "med3d/kernels/philox.h"

namespace med3d {

namespace fs = std::filesystem;

namespace {

enum Tissue { kAir, kFat, kSoft, kBone, kLiver, kKidney, kNumTissues };

struct Ellipsoid {
  std::array<double, 3> centre;  // normalised world coordinates (x R, y A, z S) in [-1, 1]
  std::array<double, 3> radius;
  bool contains(double x, double y, double z) const {
    const double a = (x - centre[0]) / radius[0], b = (y - centre[1]) / radius[1],
                 c = (z - centre[2]) / radius[2];
    return a * a + b * b + c * c <= 1.0;
  }
};

// Case parameters drawn from the stream: the case's stretch starts at a fixed offset so cases
// are independent of each other and of the shape.
class CaseRandom {
 public:
  CaseRandom(uint64_t seed, int index)
      : seed_(seed), base_((static_cast<uint64_t>(index) + 1) << 40) {}
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * kernels::philox_uniform(seed_, base_, next_++);
  }
  uint64_t noise_offset() const { return base_ + (uint64_t{1} << 32); }

 private:
  uint64_t seed_, base_;
  uint64_t next_ = 0;
};

double quantised(double spacing) { return std::round(spacing * 32.0) / 32.0; }  // exact in f32

std::string case_file_name(const SynthOptions& options, int index) {
  char name[64];
  std::snprintf(name, sizeof(name), "%s_%03d%s", options.name.c_str(), index,
                options.compress ? ".nii.gz" : ".nii");
  return name;
}

void write_dataset_json(const char* op, const fs::path& root, const SynthOptions& options,
                        const std::string& description, const nlohmann::json& labels,
                        const nlohmann::json& training) {
  const bool ct = options.modality == SynthModality::ct;
  nlohmann::json j;
  j["name"] = options.name;
  j["description"] = description + " (data/synth), seed " + std::to_string(options.seed);
  j["tensorImageSize"] = "3D";
  j["modality"] = {{"0", ct ? "CT" : "MRI"}};
  j["labels"] = labels;
  j["numTraining"] = options.num_cases;
  j["numTest"] = 0;
  j["training"] = training;
  j["test"] = nlohmann::json::array();
  const std::string json_path = (root / "dataset.json").string();
  std::ofstream out(json_path, std::ios::trunc);
  MED3D_CHECK(out.good(), op, ": cannot open '", json_path, "' for writing");
  out << j.dump(1) << "\n";
  out.close();
  MED3D_CHECK(out.good(), op, ": writing '", json_path, "' failed");
}

void create_folders(const char* op, const fs::path& root, std::initializer_list<const char*> subs) {
  std::error_code ec;
  for (const char* sub : subs) {
    fs::create_directories(root / sub, ec);
    MED3D_CHECK(!ec, op, ": cannot create '", (root / sub).string(), "': ", ec.message());
  }
}

}  // namespace

SynthCase make_synthetic_case(const Context& context, const SynthOptions& options, int index) {
  const char* op = "make_synthetic_case";
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(options.shape[a] >= 4 && options.shape[a] <= 1024, op, ": shape[", a, "] = ",
                options.shape[a], " must be in [4, 1024]");
  MED3D_CHECK(index >= 0, op, ": case index must be >= 0, got ", index);
  MED3D_CHECK(std::isfinite(options.noise_sd) && options.noise_sd >= 0, op,
              ": noise_sd must be >= 0, got ", options.noise_sd);
  CaseRandom random(options.seed, index);

  // Voxel axes i, j, k (c = 0, 1, 2) have n[c] voxels; k is the through-plane axis.
  const std::array<int64_t, 3> n{options.shape[2], options.shape[1], options.shape[0]};
  std::array<double, 3> spacing{1.0, 1.0, 1.0};
  if (options.anisotropic) {
    const double in_plane = quantised(random.uniform(0.7, 1.0));
    spacing = {in_plane, in_plane, quantised(random.uniform(1.5, 3.0))};
  }
  // Which world axis each voxel axis points along, and in which sense.
  std::array<int, 3> world{0, 1, 2};
  std::array<double, 3> sign{1, 1, 1};
  if (options.random_orientation) {
    static constexpr std::array<std::array<int, 3>, 6> kPermutations{
        {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}};
    world = kPermutations[std::min<std::size_t>(5, static_cast<std::size_t>(random.uniform(0, 6)))];
    for (double& s : sign) s = random.uniform(0, 1) < 0.5 ? -1.0 : 1.0;
  }
  // Affine: column c = sign * spacing along world axis world[c]; the field of view is centred
  // on the world origin.
  std::array<double, 16> affine{};
  affine[15] = 1;
  std::array<double, 3> half_extent{};  // per world axis, mm
  for (int c = 0; c < 3; ++c) {
    affine[4 * world[c] + c] = sign[c] * spacing[c];
    affine[4 * world[c] + 3] = -sign[c] * spacing[c] * 0.5 * static_cast<double>(n[c] - 1);
    half_extent[world[c]] = 0.5 * spacing[c] * static_cast<double>(n[c]);
  }

  // Anatomy in normalised world coordinates, jittered per case.
  auto jitter = [&](Ellipsoid e) {
    for (int a = 0; a < 3; ++a) {
      e.centre[a] += random.uniform(-0.05, 0.05);
      e.radius[a] *= random.uniform(0.85, 1.15);
    }
    return e;
  };
  const Ellipsoid body = jitter({{0, 0, 0}, {0.85, 0.65, 1.3}});
  Ellipsoid inner = body;
  for (double& r : inner.radius) r -= 0.08;  // fat shell
  const Ellipsoid spine = jitter({{0, -0.42, 0}, {0.1, 0.1, 1.5}});
  const Ellipsoid liver = jitter({{0.33, 0.08, 0.2}, {0.33, 0.32, 0.38}});
  const Ellipsoid kidney_right = jitter({{0.36, -0.3, -0.3}, {0.11, 0.11, 0.22}});
  const Ellipsoid kidney_left = jitter({{-0.36, -0.3, -0.3}, {0.11, 0.11, 0.22}});
  const bool ct = options.modality == SynthModality::ct;
  static constexpr std::array<double, kNumTissues> kHu{-1000, -100, 40, 700, 60, 150};
  static constexpr std::array<double, kNumTissues> kMri{0, 800, 300, 100, 450, 250};
  const double bias_slope = random.uniform(-0.2, 0.2);
  const uint64_t noise_offset = random.noise_offset();

  const Shape shape({options.shape[0], options.shape[1], options.shape[2]});
  SynthCase out;
  out.image.data = context.empty(shape, DType::f32);
  out.label.data = context.empty(shape, DType::i32);
  float* image = out.image.data.data<float>();
  int32_t* label = out.label.data.data<int32_t>();
  const int64_t nd = n[2], nh = n[1], nw = n[0];
#pragma omp parallel for schedule(static)
  for (int64_t d = 0; d < nd; ++d) {
    for (int64_t h = 0; h < nh; ++h) {
      for (int64_t w = 0; w < nw; ++w) {
        const std::array<double, 3> voxel{static_cast<double>(w), static_cast<double>(h),
                                          static_cast<double>(d)};
        std::array<double, 3> u{};
        for (int r = 0; r < 3; ++r) {
          double p = affine[4 * r + 3];
          for (int c = 0; c < 3; ++c) p += affine[4 * r + c] * voxel[c];
          u[r] = p / half_extent[r];
        }
        Tissue tissue = kAir;
        int32_t value = 0;
        if (body.contains(u[0], u[1], u[2])) {
          tissue = inner.contains(u[0], u[1], u[2]) ? kSoft : kFat;
          if (spine.contains(u[0], u[1], u[2])) tissue = kBone;
          if (liver.contains(u[0], u[1], u[2])) {
            tissue = kLiver;
            value = kSynthLiver;
          } else if (kidney_left.contains(u[0], u[1], u[2]) ||
                     kidney_right.contains(u[0], u[1], u[2])) {
            tissue = kKidney;
            value = kSynthKidney;
          }
        }
        const int64_t at = (d * nh + h) * nw + w;
        const double noise = options.noise_sd == 0
            ? 0.0
            : options.noise_sd * kernels::philox_normal(options.seed, noise_offset,
                                                        static_cast<uint64_t>(at));
        double v;
        if (ct) {
          v = std::clamp(std::round(kHu[tissue] + noise), -1024.0, 3071.0);  // int16 CT range
        } else {
          v = std::abs(kMri[tissue] * (1.0 + bias_slope * u[0]) + noise);
        }
        image[at] = static_cast<float>(v);
        label[at] = value;
      }
    }
  }
  for (Volume* volume : {&out.image, &out.label}) {
    volume->affine = affine;
    volume->spacing = {spacing[2], spacing[1], spacing[0]};
    volume->from_file.file_shape = {options.shape[0], options.shape[1], options.shape[2]};
  }
  return out;
}

Dataset write_synthetic_dataset(const Context& context, const std::string& folder,
                                const SynthOptions& options) {
  const char* op = "write_synthetic_dataset";
  MED3D_CHECK(options.num_cases >= 1, op, ": num_cases must be >= 1, got ", options.num_cases);
  const fs::path root(folder);
  create_folders(op, root, {"imagesTr", "labelsTr"});
  const bool ct = options.modality == SynthModality::ct;
  nlohmann::json training = nlohmann::json::array();
  for (int index = 0; index < options.num_cases; ++index) {
    const std::string name = case_file_name(options, index);
    SynthCase c = make_synthetic_case(context, options, index);
    write_nifti((root / "imagesTr" / name).string(), c.image,
                ct ? NiftiDataType::i16 : NiftiDataType::f32);
    write_nifti((root / "labelsTr" / name).string(), c.label, NiftiDataType::u8);
    training.push_back({{"image", "./imagesTr/" + name}, {"label", "./labelsTr/" + name}});
  }
  write_dataset_json(op, root, options, std::string("med3d synthetic ") + (ct ? "CT" : "MRI") + " phantoms",
                     {{"0", "background"}, {"1", "liver"}, {"2", "kidney"}}, training);
  return load_msd_dataset(folder);
}

SynthClassCase make_synthetic_nodule_case(const Context& context, const SynthOptions& options,
                                          int index) {
  MED3D_CHECK(options.modality == SynthModality::ct, "make_synthetic_nodule_case: nodules are ",
              "drawn into CT phantoms; set modality ct");
  SynthCase base = make_synthetic_case(context, options, index);
  SynthClassCase out;
  out.image = std::move(base.image);
  out.label = index % 2;
  if (out.label == 0) return out;
  // Its own stretch of the stream: the anatomy stays that of make_synthetic_case.
  CaseRandom random(options.seed ^ 0x6E6F64756C65ull, index);
  const std::array<double, 3>& spacing = out.image.spacing;  // {D, H, W} mm
  std::array<double, 3> centre{}, half{};
  for (int a = 0; a < 3; ++a) half[a] = 0.5 * static_cast<double>(options.shape[a]) * spacing[a];
  const double radius = random.uniform(0.20, 0.30) * std::min({half[0], half[1], half[2]});
  for (int a = 0; a < 3; ++a)  // voxel units, around the volume centre
    centre[a] = 0.5 * static_cast<double>(options.shape[a] - 1) + random.uniform(-0.3, 0.3) * half[a] / spacing[a];
  const uint64_t noise_offset = random.noise_offset();
  float* image = out.image.data.data<float>();
  const int64_t nd = options.shape[0], nh = options.shape[1], nw = options.shape[2];
  for (int64_t d = 0; d < nd; ++d)
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t w = 0; w < nw; ++w) {
        const double x = (static_cast<double>(d) - centre[0]) * spacing[0];
        const double y = (static_cast<double>(h) - centre[1]) * spacing[1];
        const double z = (static_cast<double>(w) - centre[2]) * spacing[2];
        if (x * x + y * y + z * z > radius * radius) continue;
        const int64_t at = (d * nh + h) * nw + w;
        const double noise = options.noise_sd == 0
            ? 0.0
            : options.noise_sd * kernels::philox_normal(options.seed, noise_offset, static_cast<uint64_t>(at));
        image[at] = static_cast<float>(std::round(1000.0 + noise));
      }
  return out;
}

Dataset write_synthetic_nodule_dataset(const Context& context, const std::string& folder,
                                       const SynthOptions& options) {
  const char* op = "write_synthetic_nodule_dataset";
  MED3D_CHECK(options.num_cases >= 1, op, ": num_cases must be >= 1, got ", options.num_cases);
  const fs::path root(folder);
  create_folders(op, root, {"imagesTr"});
  nlohmann::json training = nlohmann::json::array();
  for (int index = 0; index < options.num_cases; ++index) {
    const std::string name = case_file_name(options, index);
    const SynthClassCase c = make_synthetic_nodule_case(context, options, index);
    write_nifti((root / "imagesTr" / name).string(), c.image, NiftiDataType::i16);
    training.push_back({{"image", "./imagesTr/" + name}, {"label", c.label}});
  }
  write_dataset_json(op, root, options, "med3d synthetic CT nodule classification",
                     {{"0", "no nodule"}, {"1", "nodule"}}, training);
  return load_msd_dataset(folder);
}

}  // namespace med3d
