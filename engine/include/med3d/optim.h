// Optimisers with exactly torch.optim's update rules (PyTorch 1.13, single-tensor path):
// Sgd (momentum, dampening, Nesterov, L2 weight decay), Adam (L2 weight decay added to the
// gradient) and AdamW (decoupled decay). Learning-rate schedules are in lr_schedule.h.
//
// An optimiser holds handles to named parameters arranged in groups, each with its own lr and
// weight decay (Med3D fine-tuning trains new layers at 100x the base lr). Parameters must be
// CPU f32/f64 or CUDA f32 leaf tensors that require grad, each named once and in one group.
// step() updates every parameter that has a gradient, in place, from its .grad (same dtype,
// device and shape); CUDA parameters by one fused kernel each, queued on their Context's
// stream. Parameters without a gradient and their state are left untouched, as in PyTorch.
// Updates are not recorded on the tape. Change a group's lr or weight_decay freely between steps; to
// add or remove parameters build a new optimiser.
//
// save_state/load_state store the whole state as named tensors and string metadata for a
// checkpoint beside the model (see serialize.h): per-parameter step counts (i64) and buffers
// (the parameter's dtype and shape), each group's lr and weight decay and the hyper-parameters
// (f64 scalars, flags as 0/1); the optimiser type and the group and parameter names go to
// metadata, all under `prefix` (non-empty; keep the optimiser's and the schedule's prefixes
// apart, neither a prefix of the other). State buffers live on their parameter's device; CPU
// buffers are aliased, not copied (write them out before the next step()), CUDA ones are
// copied to the host.
// load_state restores exactly what was saved (bit for bit, hyper-parameters included, as
// PyTorch does) or throws, changing nothing, when the type, the group or parameter names, or a
// buffer's shape or dtype differ, or when the checkpoint holds state this optimiser lacks.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "med3d/lr_schedule.h"
#include "med3d/serialize.h"
#include "med3d/tensor.h"

namespace med3d {

struct ParamGroup {
  std::string name;
  NamedTensors params;
  double lr = 0;
  // Unset: the optimiser's default (its options' weight_decay); set when the optimiser is built.
  std::optional<double> weight_decay;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  virtual void step() = 0;
  void zero_grad();  // drops every parameter's gradient

  std::vector<ParamGroup>& groups() { return groups_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  const std::string& type() const { return type_; }  // "SGD", "Adam", "AdamW"

  // Updates applied to the named parameter so far (0 before its first gradient).
  int64_t step_count(const std::string& param) const;
  // The named state buffer of a parameter ("momentum_buffer", "exp_avg", "exp_avg_sq"),
  // undefined until the parameter's first update.
  Tensor buffer(const std::string& param, const std::string& name) const;

  void save_state(NamedTensors& tensors, std::map<std::string, std::string>& metadata,
                  const std::string& prefix = "optimizer.") const;
  void load_state(const Checkpoint& checkpoint, const std::string& prefix = "optimizer.");

 protected:
  struct ParamState {
    int64_t step = 0;
    std::map<std::string, Tensor> buffers;
  };

  // `buffer_names` lists every buffer the optimiser may keep per parameter.
  Optimizer(std::string type, std::vector<ParamGroup> groups, double default_weight_decay,
            std::vector<std::string> buffer_names);
  // Hyper-parameters besides each group's lr and weight decay, as numbers (flags as 0/1).
  virtual std::vector<std::pair<std::string, double>> hyperparameters() const = 0;
  // Validates and applies values read by load_state (the names hyperparameters() returns).
  virtual void set_hyperparameters(const std::map<std::string, double>& values) = 0;
  // Throws on state read by load_state that step() could not use (called per parameter).
  virtual void check_state(const std::string& /*param*/, const ParamState& /*state*/) const {}
  // Throws unless every group's lr and weight decay (possibly changed by the caller) are usable.
  void check_step_groups() const;
  // The gradient of a parameter to update, or an undefined tensor to skip it.
  Tensor gradient_of(const std::string& name, const Tensor& param) const;
  ParamState& state(const std::string& param) { return state_[param]; }

 private:
  std::string type_;
  std::vector<ParamGroup> groups_;
  std::vector<std::string> buffer_names_;
  std::map<std::string, ParamState> state_;  // by parameter name; absent before the first update
};

struct SgdOptions {
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;  // default for groups that set none
  bool nesterov = false;    // needs momentum > 0 and dampening == 0
};

// torch.optim.SGD. State: "momentum_buffer" (when momentum != 0).
class Sgd : public Optimizer {
 public:
  Sgd(std::vector<ParamGroup> groups, SgdOptions options = {});
  void step() override;
  const SgdOptions& options() const { return options_; }

 protected:
  std::vector<std::pair<std::string, double>> hyperparameters() const override;
  void set_hyperparameters(const std::map<std::string, double>& values) override;

 private:
  SgdOptions options_;
};

struct AdamOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;  // default for groups that set none; Adam adds it to the gradient
};

// torch.optim.Adam (amsgrad=False). State: "exp_avg", "exp_avg_sq" and the step count.
class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, AdamOptions options = {});
  void step() override;
  const AdamOptions& options() const { return options_; }

 protected:
  Adam(std::string type, std::vector<ParamGroup> groups, AdamOptions options, bool decoupled);
  std::vector<std::pair<std::string, double>> hyperparameters() const override;
  void set_hyperparameters(const std::map<std::string, double>& values) override;
  void check_state(const std::string& param, const ParamState& state) const override;

 private:
  AdamOptions options_;
  bool decoupled_;  // AdamW
};

// torch.optim.AdamW: decoupled weight decay (p -= lr * weight_decay * p before the Adam update),
// PyTorch's default weight decay 1e-2.
class AdamW : public Adam {
 public:
  static AdamOptions default_options() {
    AdamOptions options;
    options.weight_decay = 1e-2;
    return options;
  }
  AdamW(std::vector<ParamGroup> groups, AdamOptions options = default_options());
};

}  // namespace med3d
