// med3d info FILE... [--json]: what a NIfTI file holds (header, geometry, intensity range and,
// for integer data, the label values with their voxel counts). Human-readable by default;
// --json prints one JSON array with an object per file. Files that cannot be read are
// reported (an "error" member in JSON) and make the command exit with status 1 after the rest.
#include <cmath>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "med3d/context.h"
#include "med3d/data/nifti.h"
#include "med3d/error.h"

namespace med3d::cli {
namespace {

constexpr std::size_t kMaxListedValues = 64;

bool is_integer_datatype(const std::string& name) {
  return !name.empty() && (name[0] == 'u' || name[0] == 'i');
}

bool identity_scaling(const NiftiHeaderInfo& h) {
  const bool no_slope = h.scl_slope == 0 || !std::isfinite(h.scl_slope) || h.scl_slope == 1;
  const bool no_inter = h.scl_slope == 0 || !std::isfinite(h.scl_slope) || h.scl_inter == 0;
  return no_slope && no_inter;
}

nlohmann::json describe(const Context& context, const std::string& path) {
  nlohmann::json j;
  NiftiReadOptions options;
  options.volume_index = 0;  // a 4D file: statistics of its first volume
  const NiftiHeaderInfo h = read_nifti_header(path, options);
  j["path"] = path;
  j["format"] = "NIfTI-" + std::to_string(h.version);
  j["gzip"] = h.gzip;
  j["byte_order"] = h.big_endian ? "big-endian" : "little-endian";
  std::vector<int64_t> dims;
  for (int64_t a = 1; a <= h.dim[0] && a < 8; ++a) dims.push_back(h.dim[a]);
  j["dims"] = dims;  // NIfTI order: i, j, k[, t]
  j["datatype"] = h.datatype_name;
  j["datatype_code"] = h.datatype;
  j["qform_code"] = h.qform_code;
  j["sform_code"] = h.sform_code;
  j["affine_source"] = h.affine_source;
  j["orientation"] = h.orientation;
  j["scl_slope"] = h.scl_slope;
  j["scl_inter"] = h.scl_inter;
  j["xyz_units"] = h.xyz_units;
  j["intent_code"] = h.intent_code;
  j["descrip"] = h.descrip;
  j["extensions"] = h.extension_codes.size();

  // Integer data without scaling holds labels: read it exactly. Otherwise (or when values do
  // not fit i32) read the scaled f32 image.
  Volume volume;
  bool exact = false;
  std::string label_note;
  if (is_integer_datatype(h.datatype_name) && identity_scaling(h)) {
    try {
      volume = read_label_nifti(context, path, options);
      exact = true;
    } catch (const Error& e) {
      label_note = std::string("values not listed: ") + e.what();
    }
  }
  if (!exact) volume = read_nifti(context, path, options);
  if (h.dim[0] >= 4 && h.dim[4] > 1) j["statistics_of_volume"] = 0;
  // Spacing in file order (i, j, k) like dims, and in tensor order (D, H, W).
  j["spacing"] = {volume.spacing[2], volume.spacing[1], volume.spacing[0]};
  j["spacing_dhw"] = volume.spacing;
  j["shape_dhw"] = {volume.data.dim(0), volume.data.dim(1), volume.data.dim(2)};
  nlohmann::json affine = nlohmann::json::array();
  for (int r = 0; r < 4; ++r)
    affine.push_back({volume.affine[4 * r], volume.affine[4 * r + 1], volume.affine[4 * r + 2],
                      volume.affine[4 * r + 3]});
  j["affine"] = affine;

  double lo = INFINITY, hi = -INFINITY, sum = 0;
  const int64_t n = volume.data.numel();
  auto add = [&](double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    sum += v;
  };
  std::map<int64_t, int64_t> counts;
  if (exact) {
    const int32_t* p = volume.data.data<int32_t>();
    for (int64_t i = 0; i < n; ++i) {
      add(p[i]);
      ++counts[p[i]];
    }
  } else {
    const float* p = volume.data.data<float>();
    for (int64_t i = 0; i < n; ++i) add(p[i]);
  }
  j["voxels"] = n;
  j["min"] = n > 0 ? lo : NAN;
  j["max"] = n > 0 ? hi : NAN;
  j["mean"] = n > 0 ? sum / static_cast<double>(n) : NAN;
  if (exact) {
    nlohmann::json values = nlohmann::json::array();
    for (const auto& entry : counts) {
      if (values.size() == kMaxListedValues) break;
      values.push_back({{"value", entry.first}, {"voxels", entry.second}});
    }
    j["values"] = values;
    j["distinct_values"] = counts.size();
  } else if (!label_note.empty()) {
    j["values_note"] = label_note;
  }
  return j;
}

std::string fmt(double v) {
  std::ostringstream s;
  s << std::setprecision(6) << v;
  return s.str();
}

void print_human(const nlohmann::json& j, std::ostream& out) {
  out << j["path"].get<std::string>() << "\n";
  if (j.contains("error")) {
    out << "  error        " << j["error"].get<std::string>() << "\n";
    return;
  }
  const auto dims = j["dims"].get<std::vector<int64_t>>();
  out << "  format       " << j["format"].get<std::string>() << ", "
      << j["byte_order"].get<std::string>() << (j["gzip"].get<bool>() ? ", gzip" : "") << "\n";
  out << "  dims         ";
  for (std::size_t a = 0; a < dims.size(); ++a) out << (a ? " x " : "") << dims[a];
  out << "   (i x j x k; tensor [D, H, W] = [" << j["shape_dhw"][0] << ", " << j["shape_dhw"][1]
      << ", " << j["shape_dhw"][2] << "])\n";
  out << "  datatype     " << j["datatype"].get<std::string>() << " (code "
      << j["datatype_code"] << ")\n";
  out << "  spacing      " << fmt(j["spacing"][0]) << " x " << fmt(j["spacing"][1]) << " x "
      << fmt(j["spacing"][2]) << " mm (i x j x k)\n";
  out << "  orientation  " << j["orientation"].get<std::string>() << "\n";
  out << "  transforms   qform_code " << j["qform_code"] << ", sform_code " << j["sform_code"]
      << "; affine from " << j["affine_source"].get<std::string>() << "\n";
  out << "  affine       (voxel i, j, k -> world x, y, z in mm, RAS+)\n";
  for (const auto& row : j["affine"]) {
    out << "              ";
    for (const auto& v : row) out << std::setw(12) << fmt(v.get<double>());
    out << "\n";
  }
  out << "  scaling      scl_slope " << fmt(j["scl_slope"]) << ", scl_inter " << fmt(j["scl_inter"])
      << "\n";
  out << "  intensity    min " << fmt(j["min"]) << ", max " << fmt(j["max"]) << ", mean "
      << fmt(j["mean"]) << " (after scaling";
  if (j.contains("statistics_of_volume")) out << "; volume 0 of a 4D file";
  out << ")\n";
  if (j.contains("values")) {
    const std::size_t distinct = j["distinct_values"].get<std::size_t>();
    out << "  values       " << distinct << " distinct (value: voxels)";
    if (distinct > j["values"].size()) out << ", the first " << j["values"].size() << " listed";
    out << "\n";
    std::size_t k = 0;
    for (const auto& entry : j["values"]) {
      if (k % 5 == 0) out << (k ? "\n" : "") << "              ";
      out << std::setw(7) << entry["value"].get<int64_t>() << ": " << std::left << std::setw(9)
          << entry["voxels"].get<int64_t>() << std::right;
      ++k;
    }
    out << "\n";
  } else if (j.contains("values_note")) {
    out << "  values       " << j["values_note"].get<std::string>() << "\n";
  }
}

}  // namespace

void register_info(CLI::App& app) {
  auto* command = app.add_subcommand(
      "info", "Print the header, geometry (dims, spacing, orientation, affine), intensity range "
              "and label values of NIfTI files");
  struct Options {
    std::vector<std::string> files;
    bool json = false;
  };
  auto options = std::make_shared<Options>();
  command->add_option("files", options->files, "NIfTI files (.nii, .nii.gz)")
      ->required()
      ->check(CLI::ExistingFile);
  command->add_flag("--json", options->json,
                    "print one JSON array with an object per file instead of text");
  command->footer(
      "Dims and spacing are in NIfTI order (i, j, k); med3d tensors are [D, H, W] = [k, j, i].\n"
      "Integer files without scaling list their values with voxel counts (at most 64 values).\n"
      "4D files: statistics of the first volume.");
  command->callback([options]() {
    const Context context;
    nlohmann::json all = nlohmann::json::array();
    int failed = 0;
    for (const std::string& path : options->files) {
      nlohmann::json j;
      try {
        j = describe(context, path);
      } catch (const Error& e) {
        j = {{"path", path}, {"error", e.what()}};
        ++failed;
      }
      if (options->json) {
        all.push_back(j);
      } else {
        print_human(j, std::cout);
      }
    }
    if (options->json) std::cout << all.dump(2) << "\n";
    MED3D_CHECK(failed == 0, "info: ", failed, " of ", options->files.size(),
                " files could not be read (see above)");
  });
}

}  // namespace med3d::cli
