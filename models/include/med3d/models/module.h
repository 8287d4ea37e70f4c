// Module: the base of every network. Holds named parameters (leaf tensors that require grad),
// buffers (running statistics) and child modules, in registration order; names are dotted
// paths as in PyTorch (`layer1.0.conv1.weight`), so state dicts match MedicalNet's.
// load_state_dict copies values INTO the existing tensors, so optimisers holding them stay valid.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "med3d/context.h"
#include "med3d/optim.h"
#include "med3d/serialize.h"
#include "med3d/tensor.h"

namespace med3d {

// What load_state_dict did with each key.
struct LoadReport {
  std::vector<std::string> loaded;
  std::vector<std::string> missing;           // in the module, not in the file
  std::vector<std::string> unexpected;        // in the file, not in the module
  std::vector<std::string> shape_mismatched;  // in both, with different shapes (not loaded)
  bool complete() const { return missing.empty() && unexpected.empty() && shape_mismatched.empty(); }
  std::string summary() const;  // "loaded 102, missing 0, unexpected 2 (fc.weight, fc.bias), ..."
};

class Module {
 public:
  explicit Module(Context context) : context_(std::move(context)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  // Per module: its parameters, then its buffers, then each child's: PyTorch's order.
  NamedTensors state_dict() const;
  // Strict: throws listing every missing, unexpected or mismatched key and loads nothing.
  // Non-strict: loads the keys that match and reports the rest. A leading "module." (from
  // nn.DataParallel checkpoints) is stripped from file keys. Values are converted to the
  // module's dtype.
  LoadReport load_state_dict(const NamedTensors& state, bool strict = true);

  void train(bool training = true);
  void eval() { train(false); }

  // Converts every floating parameter and buffer, in place, to `dtype` (PyTorch's
  // module.double()): integer buffers such as num_batches_tracked keep theirs. f64 runs are
  // for numerical checks on CPU. Gradients are dropped; optimisers built before must be rebuilt.
  void to(DType dtype);
  // Moves every floating parameter and buffer, in place, to `device`; integer buffers (counters
  // such as num_batches_tracked) stay on the host. Gradients are dropped as above.
  void to(Device device);
  bool is_training() const { return training_; }

  // Parameters whose name starts with `prefix` stop requiring grad (and back with `unfreeze`).
  void freeze(const std::string& prefix = "");
  void unfreeze(const std::string& prefix = "");
  // Splits the trainable parameters into optimiser groups: the first rule whose prefix
  // matches a name assigns its lr; the rest go to a group with `default_lr`. Empty groups
  // are dropped. (Med3D fine-tuning: {{"conv_seg", 100 * lr}} with default lr.)
  struct LrRule {
    std::string prefix;
    double lr;
  };
  std::vector<ParamGroup> param_groups(const std::vector<LrRule>& rules, double default_lr,
                                       double weight_decay = 0) const;

  // Element counts: trainable parameters; the whole floating state (parameters + running stats).
  int64_t count_parameters() const;
  int64_t count_state() const;

  Context& context() { return context_; }

 protected:
  Tensor register_parameter(const std::string& name, Tensor tensor);
  Tensor register_buffer(const std::string& name, Tensor tensor);
  // An empty name inlines the child's keys into this module's (a MedicalNet ResNet and its
  // conv_seg head share one flat state dict).
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  void collect(const std::string& prefix, bool parameters, bool buffers, NamedTensors& out) const;

  Context context_;
  bool training_ = true;
  NamedTensors parameters_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

}  // namespace med3d
