// Learning-rate schedules: the torch.optim.lr_scheduler formulas and the state save/restore.
#include "med3d/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "engine/src/state_io.h"
#include "med3d/optim.h"

namespace med3d {

namespace {

// Integer settings travel as f64 in the saved state; only whole numbers are accepted back.
int64_t whole_number(const std::string& who, const std::string& name, double value, int64_t min) {
  MED3D_CHECK(std::isfinite(value) && value == std::floor(value) && value >= static_cast<double>(min) &&
                  value < 9.0e15,
              who, ": ", name, " must be a whole number >= ", min, ", got ", value);
  return static_cast<int64_t>(value);
}

void check_finite(const std::string& who, const std::string& name, double value, double min) {
  MED3D_CHECK(std::isfinite(value) && value >= min, who, ": ", name, " must be a finite number >= ",
              min, ", got ", value);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// LrSchedule

LrSchedule::LrSchedule(Optimizer& optimizer, std::string kind)
    : optimizer_(optimizer), kind_(std::move(kind)) {
  for (const ParamGroup& group : optimizer_.groups()) base_lrs_.push_back(group.lr);
}

int LrSchedule::group_count() const {
  const std::size_t count = optimizer_.groups().size();
  MED3D_CHECK(count == base_lrs_.size(), kind_, ": the optimiser had ", base_lrs_.size(),
              " parameter groups when the schedule was built and has ", count,
              " now; build the schedule after the optimiser's groups are final");
  return static_cast<int>(count);
}

double LrSchedule::lr(int group) const {
  MED3D_CHECK(group >= 0 && group < group_count(), kind_, "::lr: group ", group,
              " out of range [0, ", group_count(), ")");
  return optimizer_.groups()[static_cast<std::size_t>(group)].lr;
}

double LrSchedule::base_lr(int group) const {
  MED3D_CHECK(group >= 0 && group < group_count(), kind_, "::base_lr: group ", group,
              " out of range [0, ", group_count(), ")");
  return base_lrs_[static_cast<std::size_t>(group)];
}

void LrSchedule::set_lr(int group, double lr) {
  optimizer_.groups()[static_cast<std::size_t>(group)].lr = lr;
}

void LrSchedule::save_state(NamedTensors& tensors, std::map<std::string, std::string>& metadata,
                            const std::string& prefix) const {
  detail::check_prefix(kind_ + "::save_state", prefix);
  const Context context = detail::state_context(optimizer_.groups());
  metadata[prefix + "kind"] = kind_;
  tensors.emplace_back(prefix + "epoch", detail::scalar_i64(context, epoch_));
  tensors.emplace_back(prefix + "base_lrs",
                       context.from_vector<double>({static_cast<int64_t>(base_lrs_.size())}, base_lrs_));
  for (const auto& [name, value] : values())
    tensors.emplace_back(prefix + name, detail::scalar_f64(context, value));
}

void LrSchedule::load_state(const Checkpoint& checkpoint, const std::string& prefix) {
  const std::string who = kind_ + "::load_state";
  detail::StateReader in(checkpoint, prefix, who);
  const std::string& kind = in.meta("kind");
  MED3D_CHECK(kind == kind_, who, ": the checkpoint holds a ", kind, " schedule under '", prefix,
              "', this schedule is a ", kind_, "; build a ", kind, " to resume it");
  const int64_t epoch = in.i64("epoch");
  MED3D_CHECK(epoch >= 0, who, ": '", prefix, "epoch' is negative (", epoch, ")");
  const Tensor& base_lrs = in.tensor("base_lrs");
  MED3D_CHECK(base_lrs.dtype() == DType::f64 && base_lrs.rank() == 1 &&
                  base_lrs.numel() == group_count(),
              who, ": '", prefix, "base_lrs' is ", base_lrs.str(), ", expected f64 [",
              group_count(), "] (one per parameter group of the optimiser)");
  std::map<std::string, double> saved;
  for (const auto& entry : values()) saved[entry.first] = in.f64(entry.first);
  in.check_all_used(kind_ + " schedule");
  set_values(saved);  // validates before it changes anything
  epoch_ = epoch;
  base_lrs_ = base_lrs.to_vector<double>();
}

// ---------------------------------------------------------------------------------------------
// Epoch schedules

StepLr::StepLr(Optimizer& optimizer, int64_t step_size, double gamma)
    : LrSchedule(optimizer, "StepLr"), step_size_(step_size), gamma_(gamma) {
  set_values({{"step_size", static_cast<double>(step_size)}, {"gamma", gamma}});
}

void StepLr::advance(std::optional<double>) {
  ++epoch_;
  const double factor = std::pow(gamma_, static_cast<double>(epoch_ / step_size_));
  set_lrs([&](double base) { return base * factor; });
}

std::vector<std::pair<std::string, double>> StepLr::values() const {
  return {{"step_size", static_cast<double>(step_size_)}, {"gamma", gamma_}};
}

void StepLr::set_values(const std::map<std::string, double>& values) {
  const int64_t step_size = whole_number("StepLr", "step_size", values.at("step_size"), 1);
  check_finite("StepLr", "gamma", values.at("gamma"), 0);
  step_size_ = step_size;
  gamma_ = values.at("gamma");
}

ExponentialLr::ExponentialLr(Optimizer& optimizer, double gamma)
    : LrSchedule(optimizer, "ExponentialLr"), gamma_(gamma) {
  set_values({{"gamma", gamma}});
}

void ExponentialLr::advance(std::optional<double>) {
  ++epoch_;
  const double factor = std::pow(gamma_, static_cast<double>(epoch_));
  set_lrs([&](double base) { return base * factor; });
}

std::vector<std::pair<std::string, double>> ExponentialLr::values() const {
  return {{"gamma", gamma_}};
}

void ExponentialLr::set_values(const std::map<std::string, double>& values) {
  check_finite("ExponentialLr", "gamma", values.at("gamma"), 0);
  gamma_ = values.at("gamma");
}

PolyLr::PolyLr(Optimizer& optimizer, int64_t total_steps, double power)
    : LrSchedule(optimizer, "PolyLr"), total_steps_(total_steps), power_(power) {
  set_values({{"total_steps", static_cast<double>(total_steps)}, {"power", power}});
}

void PolyLr::advance(std::optional<double>) {
  ++epoch_;
  const double done = static_cast<double>(std::min(total_steps_, epoch_)) /
                      static_cast<double>(total_steps_);
  const double factor = std::pow(1.0 - done, power_);
  set_lrs([&](double base) { return base * factor; });
}

std::vector<std::pair<std::string, double>> PolyLr::values() const {
  return {{"total_steps", static_cast<double>(total_steps_)}, {"power", power_}};
}

void PolyLr::set_values(const std::map<std::string, double>& values) {
  const int64_t total_steps = whole_number("PolyLr", "total_steps", values.at("total_steps"), 1);
  check_finite("PolyLr", "power", values.at("power"), 0);
  total_steps_ = total_steps;
  power_ = values.at("power");
}

CosineLr::CosineLr(Optimizer& optimizer, int64_t t_max, double eta_min)
    : LrSchedule(optimizer, "CosineLr"), t_max_(t_max), eta_min_(eta_min) {
  set_values({{"t_max", static_cast<double>(t_max)}, {"eta_min", eta_min}});
}

void CosineLr::advance(std::optional<double>) {
  ++epoch_;
  // Evaluated in PyTorch's order so the values agree to the last bit or two.
  const double cosine =
      1 + std::cos(std::numbers::pi * static_cast<double>(epoch_) / static_cast<double>(t_max_));
  set_lrs([&](double base) { return eta_min_ + (base - eta_min_) * cosine / 2; });
}

std::vector<std::pair<std::string, double>> CosineLr::values() const {
  return {{"t_max", static_cast<double>(t_max_)}, {"eta_min", eta_min_}};
}

void CosineLr::set_values(const std::map<std::string, double>& values) {
  const int64_t t_max = whole_number("CosineLr", "t_max", values.at("t_max"), 1);
  check_finite("CosineLr", "eta_min", values.at("eta_min"), 0);
  t_max_ = t_max;
  eta_min_ = values.at("eta_min");
}

// ---------------------------------------------------------------------------------------------
// ReduceLrOnPlateau

ReduceLrOnPlateau::ReduceLrOnPlateau(Optimizer& optimizer, PlateauOptions options)
    : LrSchedule(optimizer, "ReduceLrOnPlateau") {
  const double worst = options.mode == PlateauOptions::Mode::min
                           ? std::numeric_limits<double>::infinity()
                           : -std::numeric_limits<double>::infinity();
  options_ = options;
  std::vector<std::pair<std::string, double>> initial = values();
  std::map<std::string, double> checked(initial.begin(), initial.end());
  checked["best"] = worst;
  checked["bad_epochs"] = 0;
  checked["cooldown_counter"] = 0;
  set_values(checked);
}

bool ReduceLrOnPlateau::is_better(double metric) const {
  const bool min = options_.mode == PlateauOptions::Mode::min;
  if (options_.threshold_mode == PlateauOptions::Threshold::relative)
    return min ? metric < best_ * (1. - options_.threshold) : metric > best_ * (options_.threshold + 1.);
  return min ? metric < best_ - options_.threshold : metric > best_ + options_.threshold;
}

void ReduceLrOnPlateau::advance(std::optional<double> metric) {
  MED3D_CHECK(metric.has_value(),
              "ReduceLrOnPlateau::step: needs the monitored metric; call step(metric) with the "
              "validation loss (mode min) or score (mode max)");
  ++epoch_;
  if (is_better(*metric)) {
    best_ = *metric;
    bad_epochs_ = 0;
  } else {
    ++bad_epochs_;
  }
  if (cooldown_counter_ > 0) {
    --cooldown_counter_;
    bad_epochs_ = 0;  // bad epochs during cooldown do not count
  }
  if (bad_epochs_ > options_.patience) {
    for (int g = 0; g < group_count(); ++g) {
      const double old_lr = lr(g);
      const double new_lr = std::max(old_lr * options_.factor, options_.min_lr);
      if (old_lr - new_lr > options_.eps) set_lr(g, new_lr);
    }
    cooldown_counter_ = options_.cooldown;
    bad_epochs_ = 0;
  }
}

std::vector<std::pair<std::string, double>> ReduceLrOnPlateau::values() const {
  return {{"mode_max", options_.mode == PlateauOptions::Mode::max ? 1.0 : 0.0},
          {"factor", options_.factor},
          {"patience", static_cast<double>(options_.patience)},
          {"threshold", options_.threshold},
          {"threshold_absolute",
           options_.threshold_mode == PlateauOptions::Threshold::absolute ? 1.0 : 0.0},
          {"cooldown", static_cast<double>(options_.cooldown)},
          {"min_lr", options_.min_lr},
          {"eps", options_.eps},
          {"best", best_},
          {"bad_epochs", static_cast<double>(bad_epochs_)},
          {"cooldown_counter", static_cast<double>(cooldown_counter_)}};
}

void ReduceLrOnPlateau::set_values(const std::map<std::string, double>& values) {
  const std::string who = "ReduceLrOnPlateau";
  PlateauOptions o;
  o.mode = values.at("mode_max") != 0 ? PlateauOptions::Mode::max : PlateauOptions::Mode::min;
  o.factor = values.at("factor");
  MED3D_CHECK(std::isfinite(o.factor) && o.factor >= 0 && o.factor < 1, who,
              ": factor must be in [0, 1), got ", o.factor);
  o.patience = whole_number(who, "patience", values.at("patience"), 0);
  o.threshold = values.at("threshold");
  check_finite(who, "threshold", o.threshold, 0);
  o.threshold_mode = values.at("threshold_absolute") != 0 ? PlateauOptions::Threshold::absolute
                                                           : PlateauOptions::Threshold::relative;
  o.cooldown = whole_number(who, "cooldown", values.at("cooldown"), 0);
  o.min_lr = values.at("min_lr");
  check_finite(who, "min_lr", o.min_lr, 0);
  o.eps = values.at("eps");
  check_finite(who, "eps", o.eps, 0);
  const int64_t bad_epochs = whole_number(who, "bad_epochs", values.at("bad_epochs"), 0);
  const int64_t cooldown_counter = whole_number(who, "cooldown_counter", values.at("cooldown_counter"), 0);
  options_ = o;
  best_ = values.at("best");
  bad_epochs_ = bad_epochs;
  cooldown_counter_ = cooldown_counter;
}

}  // namespace med3d
