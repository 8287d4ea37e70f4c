// Segmentation training: Med3D multi-domain co-training (`med3d pretrain`) and single-task
// training or transfer (`med3d train`) share this one loop; classification (`med3d train
// --task cls`, classify.h) runs through it too, with its own data, loss and validation.
//
// Contract. train_segmentation reads the MSD folders in options.data (one domain each), checks
// every case before the first step (files exist, image/label shapes match, label values lie in
// the dataset.json label set), writes into options.out (created if needed):
//   split.json              the seeded train/validation split (read back on resume)
//   checkpoint.safetensors  model, optimiser, schedule, RNG counter and loader position, written
//                           atomically every checkpoint_every steps, at the end and on stop
//   best.safetensors        the model with the best validation Dice (mean over domains and
//                           foreground labels) and everything predict needs in its metadata
//   encoder.safetensors     the encoder alone (for transfer), at the end
//   metrics.csv/.jsonl      one row per epoch, curves.png and overlays/*.png at the end
// and nothing outside it. With options.resume it continues from checkpoint.safetensors and
// reaches bit-identical weights to an uninterrupted CPU run with the same options.
// A NaN/Inf loss stops the run with med3d::Error before the optimiser step, so the last
// checkpoint stays the last good state. hooks.stop_requested (Ctrl-C) saves a checkpoint and
// returns with interrupted = true.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "med3d/context.h"
#include "med3d/data/preprocess.h"
#include "med3d/trainers/model_factory.h"

namespace med3d::trainers {

struct SegTrainOptions {
  ModelSpec model;                  // classes are taken from the datasets' label sets
  std::vector<std::string> data;    // MSD folders, one domain each
  std::string out;                  // run folder
  Device device = Device::cpu();    // where the network trains (data is prepared on the CPU)
  std::string init;                 // "": from scratch; else a safetensors file whose encoder is loaded
  std::string optimizer = "sgd";    // sgd | adam | adamw
  double lr = 0.1;                  // Med3D: SGD 0.1, momentum 0.9, weight decay 1e-3
  double momentum = 0.9;
  double weight_decay = 1e-3;
  double new_layer_lr_scale = 1;    // lr factor of layers not loaded by init (MedicalNet: 100 with lr/100)
  std::string schedule = "poly";    // poly | cosine | step | constant (stepped once per step)
  int64_t epochs = 10;
  int64_t steps_per_epoch = 0;      // 0: one pass over the (balanced) training cases
  int64_t batch_size = 2;
  std::array<int64_t, 3> patch{32, 32, 32};
  double foreground_fraction = 0.5; // share of patches centred on a label voxel
  bool augment = true;              // Med3D: rotation, scaling, translation, noise, gamma
  bool flip = false;                // random flips (off: they swap anatomical sides)
  std::string spacing = "median";   // median (per domain, Med3D Eq. 1) | none | "d,h,w" in mm
  IntensityOptions intensity;
  std::string loss = "ce+dice";     // ce | dice | ce+dice
  // Liver cascade. crop "resize": the Med3D random crop of the whole volume resized to `patch`
  // (stage 1, predicted by resizing the whole volume); "patch": patches at the prepared
  // resolution, sliding-window prediction. foreground_labels: a binary task (these labels 1,
  // the rest 0). roi_margin > 0: every case cropped to its foreground region (stage 2; see
  // evaluate.h prepare_for_run).
  std::string crop = "patch";
  std::vector<int32_t> foreground_labels;
  int64_t roi_margin = 0;
  double validation_fraction = 0.2;
  int64_t val_every = 1;            // epochs
  int64_t checkpoint_every = 100;   // steps
  int64_t stop_after_steps = 0;     // > 0: stop (as if killed) after this global step, checkpointed
  int workers = 2;
  std::size_t cache_bytes = std::size_t{1} << 30;
  uint64_t seed = 0;
  bool resume = false;
  int64_t overlays = 3;             // validation cases drawn at the end
};

struct StepReport {
  int64_t epoch = 0, epochs = 0;    // 0-based epoch
  int64_t step = 0, total_steps = 0;  // global step just finished (1-based)
  double loss = 0, lr = 0;
};

struct EpochReport {
  int64_t epoch = 0, epochs = 0;
  double train_loss = 0;            // mean over the epoch's steps
  std::vector<double> val_dice;     // per domain, mean over foreground labels and cases; empty: no validation
  double score = 0;                 // mean of val_dice (classification: see classify.h)
  // Classification only; NaN otherwise and in epochs without validation.
  double val_accuracy = std::numeric_limits<double>::quiet_NaN();
  double val_auc = std::numeric_limits<double>::quiet_NaN();
  bool validated = false;           // this epoch ran validation
  bool best = false;
};

struct TrainHooks {
  std::function<void(const StepReport&)> on_step;
  std::function<void(const EpochReport&)> on_epoch;
  std::function<void(const std::string&)> on_message;
  std::function<bool()> stop_requested;
};

struct TrainSummary {
  int64_t steps = 0;
  bool interrupted = false;
  bool stopped_early = false;       // stop_after_steps reached
  double best_score = -1;
  int64_t best_epoch = -1;
  std::vector<std::map<int32_t, double>> best_dice;  // per domain: label -> validation Dice
  double best_accuracy = std::numeric_limits<double>::quiet_NaN();  // classification, at best_epoch
  double best_auc = std::numeric_limits<double>::quiet_NaN();
  double seconds = 0;
};

TrainSummary train_segmentation(Context context, const SegTrainOptions& options,
                                const TrainHooks& hooks = {});

// Per-domain target spacing of `options.spacing` ("median", "none" or "d,h,w").
std::optional<std::array<double, 3>> target_spacing(const std::string& spacing, const Dataset& dataset);

}  // namespace med3d::trainers
