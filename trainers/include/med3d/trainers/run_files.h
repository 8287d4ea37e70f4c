// The files of a training run folder and how they are written and read back.
//
// checkpoint.safetensors: "model.*" (state dict), "optimizer.*", "schedule.*" tensors plus
//   metadata (train.step, best score, RNG counter, run metadata): everything --resume needs.
// best.safetensors / encoder.safetensors: a model's state dict (encoder keys only for the
//   encoder) with RunMetadata, so `med3d predict` rebuilds network and preprocessing from the
//   file alone. All writes are atomic (serialize.h), so a killed run never leaves a torn file.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "med3d/data/dataset.h"
#include "med3d/data/preprocess.h"
#include "med3d/lr_schedule.h"
#include "med3d/optim.h"
#include "med3d/trainers/model_factory.h"

namespace med3d::trainers {

struct RunPaths {
  explicit RunPaths(const std::string& dir);
  std::string dir, split, checkpoint, best, encoder, metrics_csv, metrics_jsonl, curves, overlays, config;
};

struct TrainState {
  int64_t step = 0;
  double best_score = -1;
  int64_t best_epoch = -1;
  std::vector<std::map<int32_t, double>> best_dice;
  double best_accuracy = std::numeric_limits<double>::quiet_NaN();  // classification runs
  double best_auc = std::numeric_limits<double>::quiet_NaN();
  double epoch_loss_sum = 0;
  uint64_t random_offset = 0;
};

// What inference needs besides the weights: the network, each domain's preprocessing and
// label names, and the training patch size (the sliding window's).
struct RunMetadata {
  ModelSpec spec;
  std::vector<PreprocessOptions> preprocess;  // per domain
  std::array<int64_t, 3> patch{};
  std::vector<std::string> domain_names;
  std::vector<std::map<int32_t, std::string>> labels;  // per domain
  std::string crop = "patch";               // see SegTrainOptions
  std::vector<int32_t> foreground_labels;
  int64_t roi_margin = 0;

  RunMetadata() = default;
  RunMetadata(const ModelSpec& spec, const std::vector<PreprocessOptions>& preprocess,
              const std::array<int64_t, 3>& patch, const std::vector<Dataset>& domains);
  std::map<std::string, std::string> to_metadata() const;
  static RunMetadata from_metadata(const std::map<std::string, std::string>& metadata,
                                   const std::string& path);
};

void save_checkpoint(const std::string& path, const Module& model, const Optimizer& optimizer,
                     const LrSchedule* schedule, const TrainState& state, const RunMetadata& meta);
// Restores model, optimiser and schedule in place (strictly: names, shapes and dtypes must
// match the run's options) and returns the loop state.
TrainState load_checkpoint(const Context& context, const std::string& path, Module& model,
                           Optimizer& optimizer, LrSchedule* schedule);

void save_model(const std::string& path, const Module& model, const RunMetadata& meta,
                const std::string& note);
void save_encoder(const std::string& path, const Module& model, const RunMetadata& meta);

struct LoadedModel {
  SegModel model;
  RunMetadata meta;
};
// Rebuilds the network named in the file's metadata and loads its weights strictly.
LoadedModel load_model(Context context, const std::string& path);

}  // namespace med3d::trainers
