#include "med3d/trainers/progress.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "med3d/error.h"

namespace med3d::trainers {

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  const double rounded = std::round(seconds);
  if (rounded > 1e12) return "--";  // beyond any training run; avoids int overflow below
  const int64_t total = static_cast<int64_t>(rounded);
  char text[48];
  if (total < 60) {
    std::snprintf(text, sizeof text, "%llds", static_cast<long long>(total));
  } else if (total < 3600) {
    std::snprintf(text, sizeof text, "%lldm%02llds", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  } else if (total < 86400) {
    std::snprintf(text, sizeof text, "%lldh%02lldm", static_cast<long long>(total / 3600),
                  static_cast<long long>(total % 3600 / 60));
  } else {
    std::snprintf(text, sizeof text, "%lldd%02lldh", static_cast<long long>(total / 86400),
                  static_cast<long long>(total % 86400 / 3600));
  }
  return text;
}

namespace {
std::string non_finite(double value) {
  return std::isnan(value) ? "nan" : value > 0 ? "inf" : "-inf";
}
}  // namespace

std::string format_fixed(double value, int decimals) {
  if (!std::isfinite(value)) return non_finite(value);
  char text[400];
  std::snprintf(text, sizeof text, "%.*f", std::clamp(decimals, 0, 20), value);
  return text;
}

std::string format_scientific(double value, int decimals) {
  if (!std::isfinite(value)) return non_finite(value);
  char text[64];
  std::snprintf(text, sizeof text, "%.*e", std::clamp(decimals, 0, 20), value);
  return text;
}

ProgressMeter::ProgressMeter(int64_t epochs, int64_t steps_per_epoch, Clock clock,
                             double smoothing)
    : epochs_(epochs), steps_per_epoch_(steps_per_epoch), clock_(std::move(clock)),
      smoothing_(smoothing) {
  MED3D_CHECK(epochs >= 1 && steps_per_epoch >= 1,
              "ProgressMeter: expected epochs >= 1 and steps_per_epoch >= 1, got ", epochs,
              " and ", steps_per_epoch);
  MED3D_CHECK(smoothing > 0 && smoothing <= 1, "ProgressMeter: smoothing must lie in (0, 1], got ",
              smoothing);
  MED3D_CHECK(static_cast<bool>(clock_), "ProgressMeter: the clock is empty");
  last_time_ = clock_();
}

void ProgressMeter::start_epoch(int64_t epoch) {
  MED3D_CHECK(epoch >= 1 && epoch <= epochs_, "ProgressMeter::start_epoch: epoch must lie in [1, ",
              epochs_, "], got ", epoch);
  epoch_ = epoch;
  step_ = 0;
  last_time_ = clock_();
}

void ProgressMeter::update(int64_t step) {
  MED3D_CHECK(step >= step_ && step <= steps_per_epoch_, "ProgressMeter::update: step must lie in [",
              step_, ", ", steps_per_epoch_, "] (steps done so far in this epoch, 1-based), got ",
              step);
  const double now = clock_();
  const int64_t done = step - step_;
  if (done > 0) {
    const double elapsed = std::max(0.0, now - last_time_);
    const double per_step = elapsed / static_cast<double>(done);
    if (seconds_per_step_ < 0) {
      seconds_per_step_ = per_step;
    } else {
      const double weight = 1.0 - std::pow(1.0 - smoothing_, static_cast<double>(done));
      seconds_per_step_ += weight * (per_step - seconds_per_step_);
    }
    last_time_ = now;
    step_ = step;
  }
}

double ProgressMeter::steps_per_second() const {
  if (seconds_per_step_ < 0) return 0;
  return seconds_per_step_ > 0 ? 1.0 / seconds_per_step_ : INFINITY;
}

double ProgressMeter::eta_seconds() const {
  if (seconds_per_step_ < 0) return -1;
  const int64_t remaining = (epochs_ - epoch_) * steps_per_epoch_ + (steps_per_epoch_ - step_);
  return static_cast<double>(remaining) * seconds_per_step_;
}

std::string ProgressMeter::line(const std::vector<std::pair<std::string, std::string>>& extra) const {
  std::string text = "epoch " + std::to_string(epoch_) + "/" + std::to_string(epochs_) +
                     "  step " + std::to_string(step_) + "/" + std::to_string(steps_per_epoch_) +
                     "  ";
  if (seconds_per_step_ < 0) {
    text += "-- step/s";
  } else if (seconds_per_step_ > 1.0) {
    text += format_fixed(seconds_per_step_, 2) + " s/step";
  } else {
    const double rate = steps_per_second();
    text += (std::isfinite(rate) ? format_fixed(rate, rate >= 100 ? 0 : 1) : std::string(">1e9")) +
            " step/s";
  }
  text += "  ETA " + format_duration(eta_seconds());
  for (const auto& field : extra) text += "  " + field.first + " " + field.second;
  return text;
}

}  // namespace med3d::trainers
