#include "common.h"

#include <omp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "med3d/error.h"

namespace med3d::cli {
namespace {

// Option values are strings inside CLI11; numbers and booleans go back to JSON as such so that
// the saved config reads naturally.
nlohmann::json typed_value(const std::string& text) {
  if (text == "true") return true;
  if (text == "false") return false;
  if (!text.empty()) {
    std::size_t used = 0;
    try {
      if (text.find_first_of(".eE") == std::string::npos) {
        const long long v = std::stoll(text, &used);
        if (used == text.size()) return v;
      } else {
        const double v = std::stod(text, &used);
        if (used == text.size()) return v;
      }
    } catch (const std::exception&) {
    }
  }
  return text;
}

void collect_items(const nlohmann::json& j, const std::string& name,
                   std::vector<std::string> parents, std::vector<CLI::ConfigItem>& out) {
  if (j.is_object()) {
    if (!name.empty()) parents.push_back(name);
    for (auto it = j.begin(); it != j.end(); ++it) collect_items(*it, it.key(), parents, out);
    return;
  }
  CLI::ConfigItem item;
  item.name = name;
  item.parents = parents;
  auto text = [&](const nlohmann::json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return std::string(v.get<bool>() ? "true" : "false");
    if (v.is_number()) return v.dump();
    throw CLI::ConversionError("config key '" + name + "' must hold a string, number, boolean or a list of them");
  };
  if (j.is_array()) {
    for (const auto& v : j) item.inputs.push_back(text(v));
  } else {
    item.inputs.push_back(text(j));
  }
  out.push_back(std::move(item));
}

}  // namespace

std::string JsonConfig::to_config(const CLI::App* app, bool default_also, bool, std::string) const {
  nlohmann::json j = nlohmann::json::object();
  for (const CLI::Option* opt : app->get_options({})) {
    if (opt->get_lnames().empty() || !opt->get_configurable()) continue;
    const std::string name = opt->get_lnames()[0];
    // Not part of what a run is: where its options came from and one-off run control
    // (a resumed run must not stop again at the same --stop-after step).
    if (name == "config" || name == "help" || name == "resume" || name == "stop-after") continue;
    // A flag is saved as given (true) or not (false): CLI11 records a negated flag such as
    // !--no-augment as the value "false", which would read back as "flag absent".
    if (opt->get_expected_max() == 0) {
      if (opt->count() > 0 || default_also) j[name] = opt->count() > 0;
    } else if (opt->get_type_size() != 0) {
      if (opt->count() == 1) {
        j[name] = typed_value(opt->results().at(0));
      } else if (opt->count() > 1) {
        nlohmann::json list = nlohmann::json::array();
        for (const auto& r : opt->results()) list.push_back(typed_value(r));
        j[name] = list;
      } else if (default_also && !opt->get_default_str().empty()) {
        j[name] = typed_value(opt->get_default_str());
      }
    } else if (opt->count() > 0 || default_also) {
      j[name] = opt->count() > 0;
    }
  }
  return j.dump(2) + "\n";
}

std::vector<CLI::ConfigItem> JsonConfig::from_config(std::istream& input) const {
  nlohmann::json j;
  try {
    input >> j;
  } catch (const nlohmann::json::exception& e) {
    throw CLI::ConversionError(std::string("the --config file is not valid JSON: ") + e.what());
  }
  if (!j.is_object())
    throw CLI::ConversionError("the --config file must hold one JSON object of option: value");
  std::vector<CLI::ConfigItem> items;
  collect_items(j, "", {}, items);
  return items;
}

std::vector<std::string> config_arguments(const std::string& path) {
  std::ifstream in(path);
  MED3D_CHECK(static_cast<bool>(in), "--config '", path, "' cannot be opened; check the path");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    detail::throw_error("--config '", path, "' is not valid JSON: ", e.what());
  }
  MED3D_CHECK(j.is_object(), "--config '", path, "' must hold one JSON object of option: value");
  auto text = [&](const std::string& key, const nlohmann::json& v) {
    if (v.is_string()) return v.get<std::string>();
    MED3D_CHECK(v.is_number(), "--config '", path, "': key '", key,
                "' must hold a string, number, boolean or a list of them");
    return v.dump();
  };
  std::vector<std::string> args;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string option = "--" + it.key();
    const nlohmann::json& v = it.value();
    if (v.is_boolean()) {
      if (v.get<bool>()) args.push_back(option);  // a flag; false = absent
    } else if (v.is_array()) {
      args.push_back(option);
      for (const auto& item : v) args.push_back(text(it.key(), item));
    } else {
      args.push_back(option);
      args.push_back(text(it.key(), v));
    }
  }
  return args;
}

std::vector<std::string> expand_config(const std::vector<std::string>& args) {
  std::size_t command = 0;
  while (command < args.size() && args[command].rfind("-", 0) == 0) ++command;
  if (command == args.size()) return args;
  std::vector<std::string> rest;
  std::string config, resume;
  for (std::size_t i = command + 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--config" && i + 1 < args.size()) {
      config = args[++i];
      continue;
    }
    if (a.rfind("--config=", 0) == 0) {
      config = a.substr(9);
      continue;
    }
    if (a == "--resume" && i + 1 < args.size()) resume = args[i + 1];
    if (a.rfind("--resume=", 0) == 0) resume = a.substr(9);
    rest.push_back(a);
  }
  if (config.empty() && !resume.empty()) {
    config = (std::filesystem::path(resume) / "config.json").string();
    MED3D_CHECK(std::filesystem::exists(config), "--resume ", resume, ": '", config,
                "' is missing; is this a run folder written by med3d train or pretrain?");
  }
  std::vector<std::string> out(args.begin(), args.begin() + static_cast<std::ptrdiff_t>(command) + 1);
  if (!config.empty())
    for (std::string& a : config_arguments(config)) out.push_back(std::move(a));
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

std::vector<std::string> nifti_inputs(const std::string& in) {
  namespace fs = std::filesystem;
  MED3D_CHECK(fs::exists(in), "--in '", in, "' does not exist");
  if (!fs::is_directory(in)) return {in};
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(in)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name[0] != '.' && (name.ends_with(".nii") || name.ends_with(".nii.gz")))
      files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  MED3D_CHECK(!files.empty(), "--in '", in, "' holds no .nii or .nii.gz file");
  return files;
}

void add_common_options(CLI::App& command, CommonOptions& options) {
  command.config_formatter(std::make_shared<JsonConfig>());
  // CLI11 2.1 reads config files for the top-level app only, so main() expands --config into
  // arguments (config_arguments) before parsing; this option documents it in --help.
  command.add_option("--config", "JSON file of option values (long names without dashes); "
                                 "command-line options win");
  command.add_option("--device", options.device, "auto, cpu or cuda[:N] (auto: cuda when available)")
      ->capture_default_str();
  command.add_option("--threads", options.threads, "CPU threads (0: all cores)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  command.add_option("--seed", options.seed, "seed for every random draw; a CPU run is bit-reproducible")
      ->capture_default_str();
}

Context make_context(const CommonOptions& options) {
  if (options.threads > 0) omp_set_num_threads(options.threads);
  const std::string& d = options.device;
  MED3D_CHECK(d == "auto" || d == "cpu" || d.rfind("cuda", 0) == 0,
              "--device: expected auto, cpu or cuda[:N], got '", d, "'");
  return Context(Device::cpu(), options.seed);
}

Device compute_device(const CommonOptions& options) {
  const std::string& d = options.device;
  if (d == "cpu") return Device::cpu();
  if (d == "auto")
    return cuda_backend() == CudaBackend::native && cuda_device_count() > 0 ? Device::cuda(0) : Device::cpu();
  MED3D_CHECK(cuda_backend() != CudaBackend::none, "--device ", d,
              ": this med3d was built without CUDA; rebuild with nvcc installed "
              "(cmake -DMED3D_CUDA=ON) or use --device cpu");
  int index = 0;
  if (d.size() > 4) {
    MED3D_CHECK(d[4] == ':' && d.size() > 5 && d.find_first_not_of("0123456789", 5) == std::string::npos,
                "--device: expected cuda or cuda:N, got '", d, "'");
    index = std::stoi(d.substr(5));
  }
  MED3D_CHECK(index < cuda_device_count(), "--device ", d, ": ", cuda_device_count(),
              " CUDA device(s) usable on this machine; use --device cpu");
  return Device::cuda(index);
}

void save_resolved_config(const CLI::App& command, const std::string& path) {
  const std::string text = command.config_to_str(true, false);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    MED3D_CHECK(static_cast<bool>(out), "cannot write the resolved config to '", tmp,
                "'; check that the folder exists and is writable");
    out << text;
    MED3D_CHECK(static_cast<bool>(out), "writing '", tmp, "' failed (disk full?)");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace med3d::cli
