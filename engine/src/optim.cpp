// Optimisers: parameter bookkeeping, state save/restore, and the CPU loops (or, for CUDA
// parameters, one fused kernel per parameter) over the per-element updates of
// kernels/include/med3d/kernels/optim.h. State buffers live on their parameter's device.
#include "med3d/optim.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "engine/src/op_util.h"
#include "engine/src/state_io.h"
#include "med3d/kernels/cpu_loops.h"
#include "med3d/kernels/cuda/optim.h"
#include "med3d/kernels/optim.h"

namespace med3d {

using detail::dispatch_floating;

namespace {

void check_group_values(const std::string& who, const std::string& group, double lr,
                        double weight_decay) {
  MED3D_CHECK(std::isfinite(lr) && lr >= 0, who, ": group '", group,
              "' needs a finite learning rate >= 0, got ", lr);
  MED3D_CHECK(std::isfinite(weight_decay) && weight_decay >= 0, who, ": group '", group,
              "' needs a finite weight decay >= 0, got ", weight_decay);
}

void check_sgd_options(const SgdOptions& o) {
  MED3D_CHECK(std::isfinite(o.momentum) && o.momentum >= 0, "SGD: momentum must be >= 0, got ",
              o.momentum);
  MED3D_CHECK(std::isfinite(o.dampening), "SGD: dampening must be finite, got ", o.dampening);
  MED3D_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0,
              "SGD: weight_decay must be >= 0, got ", o.weight_decay);
  MED3D_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
              "SGD: Nesterov momentum needs momentum > 0 and dampening == 0, got momentum ",
              o.momentum, " and dampening ", o.dampening);
}

void check_adam_options(const std::string& type, const AdamOptions& o) {
  MED3D_CHECK(o.beta1 >= 0 && o.beta1 < 1, type, ": beta1 must be in [0, 1), got ", o.beta1);
  MED3D_CHECK(o.beta2 >= 0 && o.beta2 < 1, type, ": beta2 must be in [0, 1), got ", o.beta2);
  MED3D_CHECK(std::isfinite(o.eps) && o.eps >= 0, type, ": eps must be >= 0, got ", o.eps);
  MED3D_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0, type,
              ": weight_decay must be >= 0, got ", o.weight_decay);
}

// A new tensor with the parameter's shape, dtype, Context and device holding `source`'s values
// (a checkpoint's host tensor).
Tensor copy_of(const Tensor& like, const Tensor& source) {
  Tensor copy = detail::empty_like(like);
  if (copy.device().is_cuda()) {
    copy.copy_from(source);
  } else if (copy.nbytes() > 0) {
    std::memcpy(copy.raw_data(), source.raw_data(), copy.nbytes());
  }
  return copy;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Optimizer

Optimizer::Optimizer(std::string type, std::vector<ParamGroup> groups, double default_weight_decay,
                     std::vector<std::string> buffer_names)
    : type_(std::move(type)), groups_(std::move(groups)), buffer_names_(std::move(buffer_names)) {
  std::set<std::string> group_names, param_names;
  std::set<const detail::TensorImpl*> tensors;
  for (ParamGroup& group : groups_) {
    MED3D_CHECK(!group.name.empty(), type_, ": every parameter group needs a name");
    MED3D_CHECK(group_names.insert(group.name).second, type_, ": two parameter groups are called '",
                group.name, "'; group names key the saved state and must be unique");
    if (!group.weight_decay) group.weight_decay = default_weight_decay;
    check_group_values(type_, group.name, group.lr, *group.weight_decay);
    for (const auto& [name, param] : group.params) {
      MED3D_CHECK(!name.empty(), type_, ": a parameter of group '", group.name, "' has no name");
      MED3D_CHECK(param_names.insert(name).second, type_, ": two parameters are called '", name,
                  "'; parameter names key the saved state and must be unique");
      const std::string what = "parameter '" + name + "'";
      detail::check_floating(type_.c_str(), what.c_str(), param);
      MED3D_CHECK(param.is_leaf() && param.requires_grad(), type_, ": ", what,
                  " must be a leaf tensor that requires grad (call set_requires_grad(true))");
      MED3D_CHECK(tensors.insert(param.impl().get()).second, type_, ": ", what,
                  " is a tensor that is already in the optimiser under another name");
    }
  }
  MED3D_CHECK(!param_names.empty(), type_, ": got no parameters to optimise");
}

void Optimizer::zero_grad() {
  for (ParamGroup& group : groups_)
    for (auto& entry : group.params) entry.second.zero_grad();
}

int64_t Optimizer::step_count(const std::string& param) const {
  const auto it = state_.find(param);
  if (it != state_.end()) return it->second.step;
  for (const ParamGroup& group : groups_)
    for (const auto& entry : group.params)
      if (entry.first == param) return 0;
  detail::throw_error(type_, "::step_count: there is no parameter '", param, "'");
}

Tensor Optimizer::buffer(const std::string& param, const std::string& name) const {
  (void)step_count(param);  // rejects unknown parameter names
  const auto it = state_.find(param);
  if (it == state_.end()) return Tensor();
  const auto buffer = it->second.buffers.find(name);
  return buffer == it->second.buffers.end() ? Tensor() : buffer->second;
}

Tensor Optimizer::gradient_of(const std::string& name, const Tensor& param) const {
  Tensor grad = param.grad();
  if (!grad.defined()) return grad;
  MED3D_CHECK(grad.dtype() == param.dtype() && grad.device() == param.device() &&
                  grad.shape() == param.shape(),
              type_, "::step: the gradient of '", name, "' is ", grad.str(), " but the parameter is ",
              param.str());
  return grad;
}

void Optimizer::check_step_groups() const {
  for (const ParamGroup& group : groups_) {
    MED3D_CHECK(group.weight_decay.has_value(), type_, "::step: group '", group.name,
                "' has no weight decay; set it (0 for none)");
    check_group_values(type_ + "::step", group.name, group.lr, *group.weight_decay);
  }
}

void Optimizer::save_state(NamedTensors& tensors, std::map<std::string, std::string>& metadata,
                           const std::string& prefix) const {
  detail::check_prefix(type_ + "::save_state", prefix);
  const Context context = detail::state_context(groups_);
  metadata[prefix + "type"] = type_;
  std::vector<std::string> group_names;
  for (const ParamGroup& group : groups_) {
    group_names.push_back(group.name);
    std::vector<std::string> param_names;
    for (const auto& entry : group.params) param_names.push_back(entry.first);
    const std::string key = prefix + "group." + group.name;
    metadata[key + ".params"] = detail::json_list(param_names);
    tensors.emplace_back(key + ".lr", detail::scalar_f64(context, group.lr));
    tensors.emplace_back(key + ".weight_decay", detail::scalar_f64(context, *group.weight_decay));
  }
  metadata[prefix + "groups"] = detail::json_list(group_names);
  for (const auto& [name, value] : hyperparameters())
    tensors.emplace_back(prefix + name, detail::scalar_f64(context, value));
  for (const ParamGroup& group : groups_) {
    for (const auto& entry : group.params) {
      const auto it = state_.find(entry.first);
      if (it == state_.end()) continue;
      const std::string key = prefix + "state." + entry.first + ".";
      tensors.emplace_back(key + "step", detail::scalar_i64(context, it->second.step));
      // Checkpoints hold host tensors: CUDA state is copied to the host here.
      for (const auto& [name, buffer] : it->second.buffers)
        tensors.emplace_back(key + name, buffer.detach().to(Device::cpu()));
    }
  }
}

void Optimizer::load_state(const Checkpoint& checkpoint, const std::string& prefix) {
  const std::string who = type_ + "::load_state";
  detail::StateReader in(checkpoint, prefix, who);
  const std::string& type = in.meta("type");
  MED3D_CHECK(type == type_, who, ": the checkpoint holds ", type, " state under '", prefix,
              "', this optimiser is ", type_, "; build a ", type, " to resume it");

  std::vector<std::string> group_names;
  for (const ParamGroup& group : groups_) group_names.push_back(group.name);
  const std::vector<std::string> saved_groups = in.names("groups");
  MED3D_CHECK(saved_groups == group_names, who, ": the checkpoint's parameter groups ",
              detail::quoted_list(saved_groups), " differ from this optimiser's ",
              detail::quoted_list(group_names));

  // Read and validate everything first; the optimiser changes only once all of it is good.
  std::vector<std::pair<double, double>> lr_and_decay;
  std::map<std::string, ParamState> state;
  for (const ParamGroup& group : groups_) {
    const std::string key = "group." + group.name;
    std::vector<std::string> param_names;
    for (const auto& entry : group.params) param_names.push_back(entry.first);
    const std::vector<std::string> saved_params = in.names(key + ".params");
    MED3D_CHECK(saved_params == param_names, who, ": group '", group.name,
                "' holds parameters ", detail::quoted_list(param_names),
                " but the checkpoint's holds ", detail::quoted_list(saved_params));
    const double lr = in.f64(key + ".lr");
    const double weight_decay = in.f64(key + ".weight_decay");
    check_group_values(who, group.name, lr, weight_decay);
    lr_and_decay.emplace_back(lr, weight_decay);

    for (const auto& [name, param] : group.params) {
      const std::string state_key = "state." + name + ".";
      if (!in.has(state_key + "step")) continue;  // never updated when saved
      ParamState s;
      s.step = in.i64(state_key + "step");
      MED3D_CHECK(s.step >= 0, who, ": '", prefix, state_key, "step' is negative (", s.step, ")");
      for (const std::string& buffer : buffer_names_)
        if (in.has(state_key + buffer))
          s.buffers[buffer] = copy_of(param, in.tensor_like(state_key + buffer, param, name));
      check_state(name, s);
      state[name] = std::move(s);
    }
  }
  std::map<std::string, double> values;
  for (const auto& entry : hyperparameters()) values[entry.first] = in.f64(entry.first);
  in.check_all_used(type_);
  set_hyperparameters(values);  // validates before it changes anything

  for (std::size_t g = 0; g < groups_.size(); ++g) {
    groups_[g].lr = lr_and_decay[g].first;
    groups_[g].weight_decay = lr_and_decay[g].second;
  }
  state_ = std::move(state);
}

// ---------------------------------------------------------------------------------------------
// SGD

Sgd::Sgd(std::vector<ParamGroup> groups, SgdOptions options)
    : Optimizer("SGD", std::move(groups), options.weight_decay, {"momentum_buffer"}),
      options_(options) {
  check_sgd_options(options_);
}

namespace {

// The updates over count consecutive elements. The scalars by value and the arrays restrict:
// with them in memory that the parameters might alias, GCC reloaded the flags per element and
// left the loops scalar (SGD on ResNet-18: 28 ms a step, 13 vectorised).
constexpr int64_t kUpdateChunk = 1 << 14;
template <class T>
void sgd_chunk(const kernels::SgdScalars<T> s, T* __restrict p, const T* __restrict g, T* __restrict b, int64_t count) {
  if (b == nullptr) {
    for (int64_t i = 0; i < count; ++i) {
      T unused = 0;
      kernels::sgd_update(s, p[i], g[i], unused);
    }
    return;
  }
  for (int64_t i = 0; i < count; ++i) kernels::sgd_update(s, p[i], g[i], b[i]);
}

template <class T>
void adam_chunk(const kernels::AdamScalars<T> s, T* __restrict p, const T* __restrict g, T* __restrict m,
                T* __restrict v, int64_t count) {
  for (int64_t i = 0; i < count; ++i) kernels::adam_update(s, p[i], g[i], m[i], v[i]);
}

}  // namespace

void Sgd::step() {
  check_step_groups();
  for (ParamGroup& group : groups()) {
    for (auto& named : group.params) {
      // Named references, not a structured binding: clang 14 (the fuzz build) cannot
      // capture bindings in the lambdas below.
      const std::string& name = named.first;
      Tensor& param = named.second;
      const Tensor grad = gradient_of(name, param);
      if (!grad.defined()) continue;
      ParamState& s = state(name);
      // PyTorch keeps no buffer without momentum and starts a new one from the gradient.
      Tensor buffer;
      bool first_update = false;
      if (options_.momentum != 0) {
        Tensor& slot = s.buffers["momentum_buffer"];
        first_update = !slot.defined();
        if (first_update) slot = detail::empty_like(param);
        buffer = slot;
      }
      ++s.step;
      if (param.device().is_cuda()) {
        if constexpr (detail::kWithCuda)
          kernels::cuda::sgd_update(
              detail::cuda_stream(param),
              kernels::make_sgd_scalars<float>(group.lr, *group.weight_decay, options_.momentum,
                                               options_.dampening, options_.nesterov,
                                               first_update),
              detail::device_data<float>(param), detail::device_data<float>(grad),
              buffer.defined() ? detail::device_data<float>(buffer) : nullptr, param.numel());
        continue;
      }
      dispatch_floating(param.dtype(), "SGD::step", [&]<class T>() {
        const auto scalars = kernels::make_sgd_scalars<T>(
            group.lr, *group.weight_decay, options_.momentum, options_.dampening,
            options_.nesterov, first_update);
        T* p = param.template data<T>();
        const T* g = grad.template data<T>();
        T* b = buffer.defined() ? buffer.template data<T>() : nullptr;
        const int64_t n = param.numel(), chunks = (n + kUpdateChunk - 1) / kUpdateChunk;
#pragma omp parallel for schedule(static) if (n > kernels::kParallelGrain)
        for (int64_t chunk = 0; chunk < chunks; ++chunk) {
          const int64_t i0 = chunk * kUpdateChunk, count = std::min(kUpdateChunk, n - i0);
          sgd_chunk(scalars, p + i0, g + i0, b != nullptr ? b + i0 : nullptr, count);
        }
      });
    }
  }
}

std::vector<std::pair<std::string, double>> Sgd::hyperparameters() const {
  return {{"momentum", options_.momentum},
          {"dampening", options_.dampening},
          {"nesterov", options_.nesterov ? 1.0 : 0.0}};
}

void Sgd::set_hyperparameters(const std::map<std::string, double>& values) {
  SgdOptions options = options_;
  options.momentum = values.at("momentum");
  options.dampening = values.at("dampening");
  options.nesterov = values.at("nesterov") != 0;
  check_sgd_options(options);
  options_ = options;
}

// ---------------------------------------------------------------------------------------------
// Adam and AdamW

Adam::Adam(std::vector<ParamGroup> groups, AdamOptions options)
    : Adam("Adam", std::move(groups), options, false) {}

Adam::Adam(std::string type, std::vector<ParamGroup> groups, AdamOptions options, bool decoupled)
    : Optimizer(std::move(type), std::move(groups), options.weight_decay, {"exp_avg", "exp_avg_sq"}),
      options_(options),
      decoupled_(decoupled) {
  check_adam_options(this->type(), options_);
}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamOptions options)
    : Adam("AdamW", std::move(groups), options, true) {}

void Adam::step() {
  check_step_groups();
  const std::string op = type() + "::step";
  for (ParamGroup& group : groups()) {
    for (auto& named : group.params) {
      // Named references, not a structured binding: clang 14 (the fuzz build) cannot
      // capture bindings in the lambdas below.
      const std::string& name = named.first;
      Tensor& param = named.second;
      const Tensor grad = gradient_of(name, param);
      if (!grad.defined()) continue;
      ParamState& s = state(name);
      if (s.buffers.empty()) {
        s.buffers["exp_avg"] = detail::zeros_like(param);
        s.buffers["exp_avg_sq"] = detail::zeros_like(param);
      }
      Tensor exp_avg = s.buffers.at("exp_avg");
      Tensor exp_avg_sq = s.buffers.at("exp_avg_sq");
      const int64_t step = ++s.step;
      if (param.device().is_cuda()) {
        if constexpr (detail::kWithCuda)
          kernels::cuda::adam_update(
              detail::cuda_stream(param),
              kernels::make_adam_scalars<float>(group.lr, options_.beta1, options_.beta2,
                                                options_.eps, *group.weight_decay, decoupled_,
                                                step),
              detail::device_data<float>(param), detail::device_data<float>(grad),
              detail::device_data<float>(exp_avg), detail::device_data<float>(exp_avg_sq),
              param.numel());
        continue;
      }
      dispatch_floating(param.dtype(), op.c_str(), [&]<class T>() {
        const auto scalars = kernels::make_adam_scalars<T>(group.lr, options_.beta1, options_.beta2,
                                                           options_.eps, *group.weight_decay,
                                                           decoupled_, step);
        T* p = param.template data<T>();
        const T* g = grad.template data<T>();
        T* m = exp_avg.template data<T>();
        T* v = exp_avg_sq.template data<T>();
        const int64_t n = param.numel(), chunks = (n + kUpdateChunk - 1) / kUpdateChunk;
#pragma omp parallel for schedule(static) if (n > kernels::kParallelGrain)
        for (int64_t chunk = 0; chunk < chunks; ++chunk) {
          const int64_t i0 = chunk * kUpdateChunk;
          adam_chunk(scalars, p + i0, g + i0, m + i0, v + i0, std::min(kUpdateChunk, n - i0));
        }
      });
    }
  }
}

void Adam::check_state(const std::string& param, const ParamState& state) const {
  MED3D_CHECK(state.step >= 1 && state.buffers.size() == 2, type(),
              "::load_state: the state of '", param,
              "' needs a step count >= 1 with both exp_avg and exp_avg_sq; the checkpoint has step ",
              state.step, " and ", state.buffers.size(), " of the two buffers");
}

std::vector<std::pair<std::string, double>> Adam::hyperparameters() const {
  return {{"beta1", options_.beta1}, {"beta2", options_.beta2}, {"eps", options_.eps}};
}

void Adam::set_hyperparameters(const std::map<std::string, double>& values) {
  AdamOptions options = options_;
  options.beta1 = values.at("beta1");
  options.beta2 = values.at("beta2");
  options.eps = values.at("eps");
  check_adam_options(type(), options);
  options_ = options;
}

}  // namespace med3d
