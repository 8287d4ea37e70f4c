// The live progress line of a training run, formatted (never printed) for the CLI to show:
//   "epoch 3/20  step 120/400  12.3 step/s  ETA 1m23s  loss 0.4123  lr 1.00e-02"
// Rate: seconds per step, smoothed by an exponential moving average with weight `smoothing`
// per step (an update covering n steps weighs 1 - (1 - smoothing)^n, so the rate does not
// depend on how often update() is called); the first update sets it directly. Below one step
// per second the rate reads "4.20 s/step". Time between start_epoch() and the next update
// (validation, checkpointing, data loading) is not counted as step time.
// ETA: the remaining training steps of the whole run (the rest of this epoch plus the later
// epochs) times the smoothed seconds per step; validation time is not included. Before the
// first timed step the rate and ETA read "--".
// The clock is injectable (seconds, monotonic) so tests are deterministic.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace med3d::trainers {

using Clock = std::function<double()>;

// Seconds on std::chrono::steady_clock.
double steady_seconds();

// 83 -> "1m23s", 3700 -> "1h01m", 45.2 -> "45s", 200000 -> "2d07h"; rounds to whole seconds
// first; negative or non-finite -> "--".
std::string format_duration(double seconds);

// Number formatting for the extra fields: fixed ("0.4123") and scientific ("1.00e-02");
// non-finite values read "nan", "inf", "-inf".
std::string format_fixed(double value, int decimals = 4);
std::string format_scientific(double value, int decimals = 2);

class ProgressMeter {
 public:
  // `epochs` and `steps_per_epoch` >= 1; smoothing in (0, 1].
  ProgressMeter(int64_t epochs, int64_t steps_per_epoch, Clock clock = steady_seconds,
                double smoothing = 0.1);

  // Epoch `epoch` (1-based) starts now; the clock reading becomes the reference for its
  // first step.
  void start_epoch(int64_t epoch);
  // `step` (1-based, in [1, steps_per_epoch]) steps of the current epoch are done now.
  void update(int64_t step);

  int64_t epoch() const { return epoch_; }
  int64_t step() const { return step_; }
  // Smoothed steps per second; 0 before the first timed update.
  double steps_per_second() const;
  // Seconds until the last step of the last epoch; negative when not yet known.
  double eta_seconds() const;

  // The line, followed by "  key value" for each extra field in the given order.
  std::string line(const std::vector<std::pair<std::string, std::string>>& extra = {}) const;

 private:
  int64_t epochs_, steps_per_epoch_;
  Clock clock_;
  double smoothing_;
  int64_t epoch_ = 1, step_ = 0;
  double last_time_ = 0;
  double seconds_per_step_ = -1;  // negative: unknown
};

}  // namespace med3d::trainers
