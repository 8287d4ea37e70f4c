#include "common.h"

#include <omp.h>

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
    if (name == "config" || name == "help") continue;
    if (opt->get_type_size() != 0) {
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

void add_common_options(CLI::App& command, CommonOptions& options) {
  command.config_formatter(std::make_shared<JsonConfig>());
  command.set_config("--config", "", "JSON file of option values (long names without dashes)");
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
  MED3D_CHECK(d.rfind("cuda", 0) != 0,
              "--device ", d, ": this med3d was built without CUDA; rebuild with nvcc installed "
              "(cmake -DMED3D_CUDA=ON) or use --device cpu");
  return Context(Device::cpu(), options.seed);
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
