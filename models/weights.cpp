#include "med3d/models/weights.h"

#include <set>
#include <sstream>

namespace med3d {

namespace {

std::string list(const std::vector<std::string>& names, std::size_t limit = 6) {
  std::ostringstream out;
  for (std::size_t i = 0; i < names.size() && i < limit; ++i) out << (i ? ", " : "") << names[i];
  if (names.size() > limit) out << ", ... (" << names.size() - limit << " more)";
  return out.str();
}

std::string strip_module(const std::string& key) { return key.rfind("module.", 0) == 0 ? key.substr(7) : key; }

Checkpoint read(Module& module, const std::string& path, const char* op) {
  try {
    return load_safetensors(module.context(), path);
  } catch (const Error& error) {
    detail::throw_error(op, ": cannot read checkpoint '", path, "': ", error.what(),
                        "; pass a safetensors file (convert MedicalNet .pth files with tools/convert_medicalnet.py)");
  }
}

}  // namespace

std::string TransferReport::summary() const {
  std::ostringstream out;
  out << "taken " << taken.size() << ", skipped " << skipped.size();
  if (!skipped.empty()) out << " (" << list(skipped) << ")";
  out << ", left new " << left_new.size();
  if (!left_new.empty()) out << " (" << list(left_new) << ")";
  return out.str();
}

void save_state_dict(const std::string& path, const Module& module,
                     const std::map<std::string, std::string>& metadata) {
  NamedTensors state;
  // Detached so that the writer sees plain storage, never autograd history.
  for (const auto& [name, tensor] : module.state_dict()) state.emplace_back(name, tensor.detach());
  save_safetensors(path, state, metadata);
}

LoadReport load_state_dict(Module& module, const std::string& path, bool strict) {
  Checkpoint checkpoint = read(module, path, "load_state_dict");
  try {
    return module.load_state_dict(checkpoint.tensors, strict);
  } catch (const Error& error) {
    detail::throw_error("load_state_dict: '", path, "': ", error.what());
  }
}

bool is_encoder_key(const std::string& name) {
  for (const char* prefix : {"conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4."})
    if (name.rfind(prefix, 0) == 0) return true;
  return false;
}

TransferReport load_encoder(Module& model, const NamedTensors& state) {
  std::map<std::string, Tensor> own;
  for (const auto& [name, tensor] : model.state_dict()) own.emplace(name, tensor);
  TransferReport report;
  NamedTensors selected;
  std::set<std::string> taken;
  for (const auto& [key, tensor] : state) {
    const std::string name = strip_module(key);
    auto it = own.find(name);
    if (!is_encoder_key(name)) {
      report.skipped.push_back(name + " (not an encoder key)");
    } else if (it == own.end()) {
      report.skipped.push_back(name + " (not in the model)");
    } else if (it->second.shape() != tensor.shape()) {
      report.skipped.push_back(name + " (shape " + tensor.shape().str() + " vs model " + it->second.shape().str() + ")");
    } else if (!taken.insert(name).second) {
      report.skipped.push_back(name + " (duplicate after stripping 'module.')");
    } else {
      report.taken.push_back(name);
      selected.emplace_back(name, tensor);
    }
  }
  for (const auto& [name, tensor] : model.state_dict())
    if (!taken.count(name)) report.left_new.push_back(name);
  model.load_state_dict(selected, /*strict=*/false);
  return report;
}

TransferReport load_encoder(Module& model, const std::string& path) {
  Checkpoint checkpoint = read(model, path, "load_encoder");
  return load_encoder(model, checkpoint.tensors);
}

}  // namespace med3d
