// Learning-rate schedules with torch.optim.lr_scheduler semantics (PyTorch 1.13). A schedule
// drives the `lr` of every group of one Optimizer, which must outlive it.
//
// Epoch schedules (StepLr, ExponentialLr, PolyLr, CosineLr) set each group's lr in closed form
// from the group's base lr (its lr when the schedule was built), so the ratios between groups
// (Med3D's 100x for new layers) are kept. Building one leaves the lrs at epoch 0 (= base lrs);
// call step() once per epoch, after that epoch's optimiser steps. ReduceLrOnPlateau instead
// lowers each group's current lr when a monitored metric stops improving: call step(metric).
// Epoch schedules ignore a metric passed to step(metric), so a trainer can call step(metric)
// on any schedule.
//
// save_state/load_state store and restore the epoch, the base lrs, the hyper-parameters and any
// counters as named tensors (f64/i64 scalars, flags as 0/1) plus the schedule's kind in
// metadata, beside the optimiser's state. load_state restores exactly what was saved, the
// hyper-parameters included (as PyTorch does); it throws without changing anything when the
// kind, the group count or a name differs. The optimiser's lrs are restored by its own
// load_state.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "med3d/serialize.h"

namespace med3d {

class Optimizer;

class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  LrSchedule(const LrSchedule&) = delete;
  LrSchedule& operator=(const LrSchedule&) = delete;

  // Advances one epoch and updates every group's lr.
  void step() { advance(std::nullopt); }
  // Same, for schedules driven by a monitored metric (validation loss or Dice).
  void step(double metric) { advance(metric); }

  const std::string& kind() const { return kind_; }  // "StepLr", ...
  int64_t epoch() const { return epoch_; }            // steps taken so far
  double lr(int group) const;                         // the group's current lr
  double base_lr(int group) const;

  void save_state(NamedTensors& tensors, std::map<std::string, std::string>& metadata,
                  const std::string& prefix = "schedule.") const;
  void load_state(const Checkpoint& checkpoint, const std::string& prefix = "schedule.");

 protected:
  LrSchedule(Optimizer& optimizer, std::string kind);
  virtual void advance(std::optional<double> metric) = 0;
  // Hyper-parameters and counters (besides epoch and base lrs) for save_state, as numbers.
  virtual std::vector<std::pair<std::string, double>> values() const = 0;
  // Validates and applies values read by load_state (the names values() returns).
  virtual void set_values(const std::map<std::string, double>& values) = 0;
  // Sets every group's lr to lr_of_base(its base lr).
  template <class Fn>
  void set_lrs(Fn&& lr_of_base);
  void set_lr(int group, double lr);
  int group_count() const;

  Optimizer& optimizer_;
  int64_t epoch_ = 0;

 private:
  std::string kind_;
  std::vector<double> base_lrs_;
};

template <class Fn>
void LrSchedule::set_lrs(Fn&& lr_of_base) {
  for (int g = 0; g < group_count(); ++g) set_lr(g, lr_of_base(base_lrs_[static_cast<std::size_t>(g)]));
}

// torch StepLR: lr = base_lr * gamma^floor(epoch / step_size).
class StepLr : public LrSchedule {
 public:
  StepLr(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);

 protected:
  void advance(std::optional<double> metric) override;
  std::vector<std::pair<std::string, double>> values() const override;
  void set_values(const std::map<std::string, double>& values) override;

 private:
  int64_t step_size_;
  double gamma_;
};

// torch ExponentialLR: lr = base_lr * gamma^epoch.
class ExponentialLr : public LrSchedule {
 public:
  ExponentialLr(Optimizer& optimizer, double gamma);

 protected:
  void advance(std::optional<double> metric) override;
  std::vector<std::pair<std::string, double>> values() const override;
  void set_values(const std::map<std::string, double>& values) override;

 private:
  double gamma_;
};

// torch PolynomialLR: lr = base_lr * (1 - min(epoch, total_steps) / total_steps)^power.
// Med3D trains with power 0.9 (the "poly" policy), PyTorch's default is 1.
class PolyLr : public LrSchedule {
 public:
  PolyLr(Optimizer& optimizer, int64_t total_steps, double power = 0.9);

 protected:
  void advance(std::optional<double> metric) override;
  std::vector<std::pair<std::string, double>> values() const override;
  void set_values(const std::map<std::string, double>& values) override;

 private:
  int64_t total_steps_;
  double power_;
};

// torch CosineAnnealingLR in its closed form:
// lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / t_max)) / 2
// (past t_max the cosine rises again, as in PyTorch).
class CosineLr : public LrSchedule {
 public:
  CosineLr(Optimizer& optimizer, int64_t t_max, double eta_min = 0);

 protected:
  void advance(std::optional<double> metric) override;
  std::vector<std::pair<std::string, double>> values() const override;
  void set_values(const std::map<std::string, double>& values) override;

 private:
  int64_t t_max_;
  double eta_min_;
};

struct PlateauOptions {
  enum class Mode { min, max };                   // min: a loss; max: Dice or accuracy
  enum class Threshold { relative, absolute };    // how far past the best counts as better
  Mode mode = Mode::min;
  double factor = 0.1;      // new lr = max(lr * factor, min_lr)
  int64_t patience = 10;    // bad epochs tolerated before lowering the lr
  double threshold = 1e-4;
  Threshold threshold_mode = Threshold::relative;
  int64_t cooldown = 0;     // epochs after a reduction during which bad epochs are not counted
  double min_lr = 0;
  double eps = 1e-8;        // reductions smaller than this are skipped
};

// torch ReduceLROnPlateau. step(metric) only; step() without a metric throws.
class ReduceLrOnPlateau : public LrSchedule {
 public:
  explicit ReduceLrOnPlateau(Optimizer& optimizer, PlateauOptions options = {});

  double best() const { return best_; }
  int64_t bad_epochs() const { return bad_epochs_; }

 protected:
  void advance(std::optional<double> metric) override;
  std::vector<std::pair<std::string, double>> values() const override;
  void set_values(const std::map<std::string, double>& values) override;

 private:
  bool is_better(double metric) const;
  PlateauOptions options_;
  double best_ = 0;
  int64_t bad_epochs_ = 0;
  int64_t cooldown_counter_ = 0;
};

}  // namespace med3d
