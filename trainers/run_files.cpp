#include "med3d/trainers/run_files.h"

#include <charconv>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "med3d/error.h"
#include "med3d/models/weights.h"
#include "med3d/serialize.h"

namespace med3d::trainers {
namespace fs = std::filesystem;
namespace {

// Shortest text that reads back to the same double, so a resumed run compares scores exactly.
std::string exact(double value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

const std::string& need(const std::map<std::string, std::string>& m, const std::string& key,
                        const std::string& path) {
  auto it = m.find(key);
  MED3D_CHECK(it != m.end(), "'", path, "' lacks metadata '", key,
              "'; it was not written by this version of med3d train");
  return it->second;
}

const char* intensity_name(IntensityMode mode) {
  switch (mode) {
    case IntensityMode::none: return "none";
    case IntensityMode::percentile_zscore: return "percentile_zscore";
    case IntensityMode::ct_window: return "ct_window";
    case IntensityMode::nonzero_zscore: return "nonzero_zscore";
  }
  return "none";
}

IntensityMode intensity_mode(const std::string& name) {
  for (IntensityMode m : {IntensityMode::none, IntensityMode::percentile_zscore, IntensityMode::ct_window,
                          IntensityMode::nonzero_zscore})
    if (name == intensity_name(m)) return m;
  detail::throw_error("unknown intensity mode '", name,
                      "'; expected none, percentile_zscore, ct_window or nonzero_zscore");
}

nlohmann::json dice_json(const std::vector<std::map<int32_t, double>>& dice) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& domain : dice) {
    nlohmann::json d = nlohmann::json::object();
    for (const auto& [label, value] : domain) d[std::to_string(label)] = value;
    j.push_back(d);
  }
  return j;
}

}  // namespace

RunPaths::RunPaths(const std::string& d)
    : dir(d),
      split((fs::path(d) / "split.json").string()),
      checkpoint((fs::path(d) / "checkpoint.safetensors").string()),
      best((fs::path(d) / "best.safetensors").string()),
      encoder((fs::path(d) / "encoder.safetensors").string()),
      metrics_csv((fs::path(d) / "metrics.csv").string()),
      metrics_jsonl((fs::path(d) / "metrics.jsonl").string()),
      curves((fs::path(d) / "curves.png").string()),
      overlays((fs::path(d) / "overlays").string()),
      config((fs::path(d) / "config.json").string()) {}

RunMetadata::RunMetadata(const ModelSpec& s, const std::vector<PreprocessOptions>& p,
                         const std::array<int64_t, 3>& pa, const std::vector<Dataset>& domains)
    : spec(s), preprocess(p), patch(pa) {
  for (const Dataset& d : domains) {
    domain_names.push_back(d.name);
    labels.push_back(d.labels);
  }
}

std::map<std::string, std::string> RunMetadata::to_metadata() const {
  std::map<std::string, std::string> m = spec.to_metadata();
  nlohmann::json domains = nlohmann::json::array();
  for (std::size_t d = 0; d < preprocess.size(); ++d) {
    const PreprocessOptions& p = preprocess[d];
    nlohmann::json j;
    j["name"] = d < domain_names.size() ? domain_names[d] : "";
    j["orientation"] = p.orientation;
    j["spacing"] = p.target_spacing ? nlohmann::json(*p.target_spacing) : nlohmann::json(nullptr);
    j["intensity"] = {{"mode", intensity_name(p.intensity.mode)},
                      {"lower_percentile", p.intensity.lower_percentile},
                      {"upper_percentile", p.intensity.upper_percentile},
                      {"window_min", p.intensity.window_min},
                      {"window_max", p.intensity.window_max}};
    nlohmann::json names = nlohmann::json::object();
    if (d < labels.size())
      for (const auto& [value, name] : labels[d]) names[std::to_string(value)] = name;
    j["labels"] = names;
    domains.push_back(j);
  }
  m["run.domains"] = domains.dump();
  m["run.patch"] = nlohmann::json(patch).dump();
  m["run.task"] = nlohmann::json{{"crop", crop}, {"foreground_labels", foreground_labels}, {"roi_margin", roi_margin}}.dump();
  m["format"] = "med3d-run-1";
  return m;
}

RunMetadata RunMetadata::from_metadata(const std::map<std::string, std::string>& m, const std::string& path) {
  RunMetadata meta;
  meta.spec = ModelSpec::from_metadata(m, path);
  try {
    meta.patch = nlohmann::json::parse(need(m, "run.patch", path)).get<std::array<int64_t, 3>>();
    if (m.count("run.task") > 0) {
      const auto task = nlohmann::json::parse(m.at("run.task"));
      meta.crop = task.at("crop").get<std::string>();
      meta.foreground_labels = task.at("foreground_labels").get<std::vector<int32_t>>();
      meta.roi_margin = task.at("roi_margin").get<int64_t>();
    }
    for (const auto& j : nlohmann::json::parse(need(m, "run.domains", path))) {
      PreprocessOptions p;
      p.orientation = j.at("orientation").get<std::string>();
      if (!j.at("spacing").is_null()) p.target_spacing = j.at("spacing").get<std::array<double, 3>>();
      const auto& in = j.at("intensity");
      p.intensity.mode = intensity_mode(in.at("mode").get<std::string>());
      p.intensity.lower_percentile = in.at("lower_percentile").get<double>();
      p.intensity.upper_percentile = in.at("upper_percentile").get<double>();
      p.intensity.window_min = in.at("window_min").get<double>();
      p.intensity.window_max = in.at("window_max").get<double>();
      meta.preprocess.push_back(p);
      meta.domain_names.push_back(j.at("name").get<std::string>());
      std::map<int32_t, std::string> names;
      for (auto it = j.at("labels").begin(); it != j.at("labels").end(); ++it)
        names[std::stoi(it.key())] = it.value().get<std::string>();
      meta.labels.push_back(names);
    }
  } catch (const nlohmann::json::exception& e) {
    detail::throw_error("'", path, "': the run metadata is malformed (", e.what(), ")");
  }
  MED3D_CHECK(meta.preprocess.size() == meta.spec.classes.size(), "'", path, "': ",
              meta.preprocess.size(), " preprocessing entries for ", meta.spec.classes.size(), " label sets");
  return meta;
}

void save_checkpoint(const std::string& path, const Module& model, const Optimizer& optimizer,
                     const LrSchedule* schedule, const TrainState& state, const RunMetadata& meta) {
  NamedTensors tensors;
  for (const auto& named : model.state_dict()) tensors.emplace_back("model." + named.first, named.second);
  std::map<std::string, std::string> metadata = meta.to_metadata();
  optimizer.save_state(tensors, metadata, "optimizer.");
  if (schedule) schedule->save_state(tensors, metadata, "schedule.");
  metadata["train.step"] = std::to_string(state.step);
  metadata["train.best_score"] = exact(state.best_score);
  metadata["train.best_epoch"] = std::to_string(state.best_epoch);
  metadata["train.best_dice"] = dice_json(state.best_dice).dump();
  metadata["train.best_accuracy"] = exact(state.best_accuracy);
  metadata["train.best_auc"] = exact(state.best_auc);
  metadata["train.epoch_loss_sum"] = exact(state.epoch_loss_sum);
  metadata["train.random_offset"] = std::to_string(state.random_offset);
  save_safetensors(path, tensors, metadata);
}

TrainState load_checkpoint(const Context& context, const std::string& path, Module& model,
                           Optimizer& optimizer, LrSchedule* schedule) {
  MED3D_CHECK(fs::exists(path), "--resume: '", path, "' does not exist; the run saved no checkpoint yet");
  const Checkpoint checkpoint = load_safetensors(context, path);
  NamedTensors state_dict;
  for (const auto& named : checkpoint.tensors)
    if (named.first.rfind("model.", 0) == 0) state_dict.emplace_back(named.first.substr(6), named.second);
  model.load_state_dict(state_dict, true);
  optimizer.load_state(checkpoint, "optimizer.");
  if (schedule) schedule->load_state(checkpoint, "schedule.");
  const auto& m = checkpoint.metadata;
  TrainState state;
  try {
    state.step = std::stoll(need(m, "train.step", path));
    state.best_score = std::stod(need(m, "train.best_score", path));
    state.best_epoch = std::stoll(need(m, "train.best_epoch", path));
    state.epoch_loss_sum = std::stod(need(m, "train.epoch_loss_sum", path));
    // Absent in checkpoints written before classification runs existed.
    if (m.count("train.best_accuracy") > 0) state.best_accuracy = std::stod(m.at("train.best_accuracy"));
    if (m.count("train.best_auc") > 0) state.best_auc = std::stod(m.at("train.best_auc"));
    state.random_offset = std::stoull(need(m, "train.random_offset", path));
    for (const auto& domain : nlohmann::json::parse(need(m, "train.best_dice", path))) {
      std::map<int32_t, double> dice;
      for (auto it = domain.begin(); it != domain.end(); ++it) dice[std::stoi(it.key())] = it.value().get<double>();
      state.best_dice.push_back(dice);
    }
  } catch (const std::logic_error& e) {  // std::invalid_argument, out_of_range, json errors
    detail::throw_error("'", path, "': the training state in its metadata is malformed (", e.what(), ")");
  }
  return state;
}

void save_model(const std::string& path, const Module& model, const RunMetadata& meta, const std::string& note) {
  std::map<std::string, std::string> metadata = meta.to_metadata();
  metadata["note"] = note;
  save_state_dict(path, model, metadata);
}

void save_encoder(const std::string& path, const Module& model, const RunMetadata& meta) {
  NamedTensors encoder;
  for (const auto& named : model.state_dict())
    if (is_encoder_key(named.first)) encoder.push_back(named);
  std::map<std::string, std::string> metadata = meta.to_metadata();
  metadata["note"] = "encoder only (load with --init for transfer)";
  save_safetensors(path, encoder, metadata);
}

LoadedModel load_model(Context context, const std::string& path) {
  MED3D_CHECK(fs::exists(path), "--model '", path, "' does not exist");
  const Checkpoint file = load_safetensors(context, path);
  LoadedModel loaded;
  loaded.meta = RunMetadata::from_metadata(file.metadata, path);
  loaded.model = make_seg_model(context, loaded.meta.spec);
  const LoadReport report = loaded.model.module->load_state_dict(file.tensors, true);
  MED3D_CHECK(report.complete(), "'", path, "' does not match the network it names: ", report.summary());
  return loaded;
}

}  // namespace med3d::trainers
