#include "med3d/models/module.h"

#include <map>
#include <sstream>

namespace med3d {

namespace {
void check_name(const std::string& name) {
  MED3D_CHECK(!name.empty() && name.find('.') == std::string::npos, "Module: invalid name '", name,
              "': names are non-empty and dot-free (dots join the path)");
}

std::string list(const std::vector<std::string>& names, std::size_t limit = 6) {
  std::ostringstream out;
  for (std::size_t i = 0; i < names.size() && i < limit; ++i) out << (i ? ", " : "") << names[i];
  if (names.size() > limit) out << ", ... (" << names.size() - limit << " more)";
  return out.str();
}
}  // namespace

std::string LoadReport::summary() const {
  std::ostringstream out;
  out << "loaded " << loaded.size() << ", missing " << missing.size();
  if (!missing.empty()) out << " (" << list(missing) << ")";
  out << ", unexpected " << unexpected.size();
  if (!unexpected.empty()) out << " (" << list(unexpected) << ")";
  out << ", shape-mismatched " << shape_mismatched.size();
  if (!shape_mismatched.empty()) out << " (" << list(shape_mismatched) << ")";
  return out.str();
}

Tensor Module::register_parameter(const std::string& name, Tensor tensor) {
  check_name(name);
  MED3D_CHECK(tensor.defined() && is_floating(tensor.dtype()), "Module: parameter '", name,
              "' must be a defined f32/f64 tensor");
  tensor.set_requires_grad(true);
  parameters_.emplace_back(name, tensor);
  return tensor;
}

Tensor Module::register_buffer(const std::string& name, Tensor tensor) {
  check_name(name);
  MED3D_CHECK(tensor.defined(), "Module: buffer '", name, "' is undefined");
  buffers_.emplace_back(name, tensor);
  return tensor;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  if (!name.empty()) check_name(name);
  MED3D_CHECK(module != nullptr, "Module: child '", name, "' is null");
  children_.emplace_back(name, std::move(module));
}

void Module::collect(const std::string& prefix, bool parameters, bool buffers, NamedTensors& out) const {
  if (parameters)
    for (const auto& [name, tensor] : parameters_) out.emplace_back(prefix + name, tensor);
  if (buffers)
    for (const auto& [name, tensor] : buffers_) out.emplace_back(prefix + name, tensor);
  for (const auto& [name, child] : children_)
    child->collect(name.empty() ? prefix : prefix + name + ".", parameters, buffers, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, false, out);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, true, out);
  return out;
}

NamedTensors Module::state_dict() const {
  NamedTensors out;
  collect("", true, true, out);
  return out;
}

LoadReport Module::load_state_dict(const NamedTensors& state, bool strict) {
  std::map<std::string, const Tensor*> incoming;
  for (const auto& [key, tensor] : state) {
    const std::string name = key.rfind("module.", 0) == 0 ? key.substr(7) : key;
    incoming[name] = &tensor;
  }
  LoadReport report;
  std::vector<std::pair<Tensor, const Tensor*>> copies;
  NamedTensors own = state_dict();
  std::map<std::string, bool> known;
  for (const auto& [name, tensor] : own) {
    known[name] = true;
    auto it = incoming.find(name);
    if (it == incoming.end()) {
      report.missing.push_back(name);
    } else if (it->second->shape() != tensor.shape()) {
      report.shape_mismatched.push_back(name + " " + it->second->shape().str() + " vs " + tensor.shape().str());
    } else {
      report.loaded.push_back(name);
      copies.emplace_back(tensor, it->second);
    }
  }
  for (const auto& [name, tensor] : incoming)
    if (!known.count(name)) report.unexpected.push_back(name);
  MED3D_CHECK(!strict || report.complete(), "load_state_dict (strict): the state does not match the module: ",
              report.summary(), "; load non-strict to take the matching keys only");
  for (auto& [target, source] : copies) target.copy_from(*source);
  return report;
}

void Module::train(bool training) {
  training_ = training;
  for (auto& [name, child] : children_) child->train(training);
}

void Module::to(DType dtype) {
  MED3D_CHECK(is_floating(dtype), "Module::to: expected a floating dtype (f32 or f64), got ", dtype_name(dtype));
  for (auto& [name, tensor] : state_dict())
    if (is_floating(tensor.dtype())) tensor.set_data(tensor.detach().to(dtype));
}

// Integer buffers (batch norm's num_batches_tracked) are host-side counters: on a GPU, bumping
// them in place every forward would wait for the stream each time. They stay on the CPU.
void Module::to(Device device) {
  for (auto& [name, tensor] : state_dict())
    if (is_floating(tensor.dtype())) tensor.set_data(tensor.detach().to(device));
}

void Module::freeze(const std::string& prefix) {
  for (auto& [name, tensor] : named_parameters())
    if (name.rfind(prefix, 0) == 0) tensor.set_requires_grad(false);
}

void Module::unfreeze(const std::string& prefix) {
  for (auto& [name, tensor] : named_parameters())
    if (name.rfind(prefix, 0) == 0) tensor.set_requires_grad(true);
}

std::vector<ParamGroup> Module::param_groups(const std::vector<LrRule>& rules, double default_lr,
                                             double weight_decay) const {
  std::vector<ParamGroup> groups;
  for (const LrRule& rule : rules) groups.push_back(ParamGroup{rule.prefix, {}, rule.lr, weight_decay});
  groups.push_back(ParamGroup{"default", {}, default_lr, weight_decay});
  for (const auto& [name, tensor] : named_parameters()) {
    if (!tensor.requires_grad()) continue;
    std::size_t g = rules.size();
    for (std::size_t r = 0; r < rules.size() && g == rules.size(); ++r)
      if (name.rfind(rules[r].prefix, 0) == 0) g = r;
    groups[g].params.emplace_back(name, tensor);
  }
  std::erase_if(groups, [](const ParamGroup& group) { return group.params.empty(); });
  return groups;
}

int64_t Module::count_parameters() const {
  int64_t total = 0;
  for (const auto& [name, tensor] : named_parameters()) total += tensor.numel();
  return total;
}

int64_t Module::count_state() const {
  int64_t total = 0;
  for (const auto& [name, tensor] : state_dict())
    if (is_floating(tensor.dtype())) total += tensor.numel();
  return total;
}

}  // namespace med3d
