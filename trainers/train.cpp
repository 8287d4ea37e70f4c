#include "med3d/trainers/train.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <sstream>

#include "med3d/data/dataset.h"
#include "med3d/data/loader.h"
#include "med3d/error.h"
#include "med3d/lr_schedule.h"
#include "med3d/models/weights.h"
#include "med3d/ops/loss.h"
#include "med3d/ops/elementwise.h"
#include "med3d/optim.h"
#include "med3d/serialize.h"
#include "med3d/tape.h"
#include "med3d/trainers/classify.h"
#include "med3d/trainers/evaluate.h"
#include "med3d/trainers/inference.h"
#include "med3d/trainers/run_files.h"
#include "med3d/trainers/run_report.h"
#include "train_loop.h"

namespace med3d::trainers {
namespace fs = std::filesystem;
namespace {

std::string spacing_text(const std::optional<std::array<double, 3>>& s) {
  if (!s) return "none";
  std::ostringstream out;
  out << (*s)[0] << "," << (*s)[1] << "," << (*s)[2];
  return out.str();
}

// Everything wrong with the input is reported before the first step, naming the file.
void check_cases(const Context& context, const std::vector<DatasetCase>& cases) {
  for (const DatasetCase& c : cases) {
    MED3D_CHECK(fs::exists(c.image_path), "image '", c.image_path, "' of case '", c.id,
                "' does not exist; fix dataset.json or the folder");
    MED3D_CHECK(fs::exists(c.label_path), "label '", c.label_path, "' of case '", c.id,
                "' does not exist; fix dataset.json or the folder");
    const NiftiHeaderInfo image = read_nifti_header(c.image_path);
    const Volume label = read_label_nifti(context, c.label_path);
    const NiftiHeaderInfo& lh = label.header;
    for (int a = 1; a <= 3; ++a)
      MED3D_CHECK(image.dim[a] == lh.dim[a], "image '", c.image_path, "' and label '", c.label_path,
                  "' differ in size along axis ", a - 1, ": ", image.dim[a], " vs ", lh.dim[a],
                  "; every label must share its image's grid");
    check_label_values(label.data, c.label_values, c.label_path);
  }
}

// A batch may mix domains (balanced sampling); each domain's samples go through its own
// branch, so the loss is the sample-weighted mean over the domain groups.
Tensor gather_rows(const Context& context, const Tensor& t, const std::vector<int64_t>& rows) {
  std::vector<int64_t> extents(t.shape().begin(), t.shape().end());
  const int64_t per_row = t.numel() / extents[0];
  extents[0] = static_cast<int64_t>(rows.size());
  Tensor out = context.empty(Shape(std::span<const int64_t>(extents)), t.dtype());
  const std::size_t bytes = static_cast<std::size_t>(per_row) * dtype_size(t.dtype());
  const auto* src = static_cast<const unsigned char*>(t.raw_data());
  auto* dst = static_cast<unsigned char*>(out.raw_data());
  for (std::size_t i = 0; i < rows.size(); ++i)
    std::memcpy(dst + i * bytes, src + static_cast<std::size_t>(rows[i]) * bytes, bytes);
  return out;
}

// The classes of a batch's samples (one domain), from their cases: i32 [N].
Tensor class_targets(const Context& context, const std::vector<DatasetCase>& cases,
                     const std::vector<int64_t>& case_index) {
  std::vector<int32_t> targets;
  for (int64_t i : case_index) targets.push_back(cases.at(static_cast<std::size_t>(i)).class_label);
  return context.from_vector(Shape({static_cast<int64_t>(targets.size())}), targets);
}

Tensor segmentation_loss(const std::string& kind, const Tensor& logits, const Tensor& labels) {
  if (kind == "ce") return cross_entropy(logits, labels);
  SoftDiceOptions dice;
  dice.include_background = false;
  if (kind == "dice") return soft_dice_loss(logits, labels, dice);
  return add(cross_entropy(logits, labels), soft_dice_loss(logits, labels, dice));
}

std::unique_ptr<Optimizer> make_optimizer(const SegTrainOptions& o, std::vector<ParamGroup> groups) {
  if (o.optimizer == "sgd") {
    SgdOptions s;
    s.momentum = o.momentum;
    s.weight_decay = o.weight_decay;
    return std::make_unique<Sgd>(std::move(groups), s);
  }
  AdamOptions a;
  a.weight_decay = o.weight_decay;
  if (o.optimizer == "adam") return std::make_unique<Adam>(std::move(groups), a);
  MED3D_CHECK(o.optimizer == "adamw", "--optimizer: expected sgd, adam or adamw, got '", o.optimizer, "'");
  return std::make_unique<AdamW>(std::move(groups), a);
}

std::unique_ptr<LrSchedule> make_schedule(const std::string& kind, Optimizer& optimizer, int64_t total_steps) {
  if (kind == "poly") return std::make_unique<PolyLr>(optimizer, total_steps, 0.9);
  if (kind == "cosine") return std::make_unique<CosineLr>(optimizer, total_steps);
  if (kind == "step") return std::make_unique<StepLr>(optimizer, std::max<int64_t>(1, total_steps / 3), 0.1);
  MED3D_CHECK(kind == "constant", "--schedule: expected poly, cosine, step or constant, got '", kind, "'");
  return nullptr;
}

void check_options(const SegTrainOptions& o) {
  MED3D_CHECK(!o.data.empty(), "no --data folder given; name at least one MSD folder");
  MED3D_CHECK(!o.out.empty(), "no --out run folder given");
  MED3D_CHECK(o.epochs >= 1, "--epochs must be >= 1, got ", o.epochs);
  MED3D_CHECK(o.batch_size >= 1, "--batch-size must be >= 1, got ", o.batch_size);
  MED3D_CHECK(o.lr > 0 && std::isfinite(o.lr), "--lr must be positive, got ", o.lr);
  MED3D_CHECK(o.new_layer_lr_scale > 0, "--new-layer-lr-scale must be positive, got ", o.new_layer_lr_scale);
  MED3D_CHECK(o.val_every >= 1, "--val-every must be >= 1, got ", o.val_every);
  MED3D_CHECK(o.checkpoint_every >= 1, "--checkpoint-every must be >= 1, got ", o.checkpoint_every);
  MED3D_CHECK(o.crop == "patch" || o.crop == "resize", "--crop: expected patch or resize, got '", o.crop, "'");
  MED3D_CHECK(o.roi_margin >= 0, "--roi-margin must be >= 0 voxels, got ", o.roi_margin);
  MED3D_CHECK(o.loss == "ce" || o.loss == "dice" || o.loss == "ce+dice",
              "--loss: expected ce, dice or ce+dice, got '", o.loss, "'");
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(o.patch[a] >= 8 && o.patch[a] % 8 == 0, "--patch extents must be multiples of 8 ",
                "(the encoder's output stride), got ", o.patch[a], " on axis ", a);
  MED3D_CHECK(o.validation_fraction >= 0 && o.validation_fraction < 1,
              "--val-fraction must lie in [0, 1), got ", o.validation_fraction);
  if (!o.init.empty())
    MED3D_CHECK(fs::exists(o.init), "--init '", o.init, "' does not exist; give a .safetensors ",
                "file written by med3d pretrain/train (or converted from MedicalNet)");
}

std::string first_non_finite(const Module& module) {
  for (const auto& [name, t] : module.state_dict()) {
    if (t.dtype() != DType::f32) continue;
    const std::vector<float> values = t.to_vector<float>();  // from any device
    for (float v : values)
      if (!std::isfinite(v)) return name;
  }
  return "";
}

}  // namespace

std::optional<std::array<double, 3>> target_spacing(const std::string& spacing, const Dataset& dataset) {
  if (spacing == "none") return std::nullopt;
  if (spacing == "median") return median_spacing(dataset);
  std::array<double, 3> s{};
  char c1 = 0, c2 = 0;
  std::istringstream in(spacing);
  in >> s[0] >> c1 >> s[1] >> c2 >> s[2];
  MED3D_CHECK(in && c1 == ',' && c2 == ',' && s[0] > 0 && s[1] > 0 && s[2] > 0,
              "--spacing: expected median, none or three positive mm values 'd,h,w', got '", spacing, "'");
  return s;
}

TrainSummary train_segmentation(Context context, const SegTrainOptions& options, const TrainHooks& hooks) {
  MED3D_CHECK(options.model.head != "classifier", "head classifier is for classification (--task cls)");
  return internal::train_task(std::move(context), options, hooks, false);
}

namespace internal {

TrainSummary train_task(Context context, const SegTrainOptions& options, const TrainHooks& hooks,
                        bool classification) {
  const auto started = std::chrono::steady_clock::now();
  check_options(options);
  auto message = [&](const std::string& text) {
    if (hooks.on_message) hooks.on_message(text);
  };
  fs::create_directories(options.out);
  const RunPaths paths(options.out);

  // Data: domains, split, preprocessing per domain.
  std::vector<Dataset> domains = load_multi_domain_dataset(options.data);
  for (const Dataset& d : domains)
    MED3D_CHECK(d.classification == classification, "'", d.root, "/dataset.json' lists ",
                d.classification ? "integer classes: a classification dataset; train it with --task cls"
                                 : "label files: a segmentation dataset; train it with --task seg");
  Split split;
  if (options.resume) {
    MED3D_CHECK(fs::exists(paths.split), "--resume: '", paths.split, "' is missing; the run folder ",
                "holds no started run");
    split = read_split(paths.split);
  } else {
    split = make_split(domains, options.validation_fraction, options.seed);
    write_split(paths.split, split);
  }
  const int64_t domain_count = static_cast<int64_t>(domains.size());
  std::vector<std::vector<DatasetCase>> train_cases(domains.size()), val_cases(domains.size());
  for (const DatasetCase& c : split.train) train_cases.at(static_cast<std::size_t>(c.domain)).push_back(c);
  for (const DatasetCase& c : split.validation) val_cases.at(static_cast<std::size_t>(c.domain)).push_back(c);
  std::vector<PreprocessOptions> prep(domains.size());
  for (std::size_t d = 0; d < domains.size(); ++d) {
    MED3D_CHECK(!train_cases[d].empty(), "domain '", domains[d].name, "' (", domains[d].root,
                ") has no training case after the split; add cases or lower --val-fraction");
    prep[d].target_spacing = target_spacing(options.spacing, domains[d]);
    prep[d].intensity = options.intensity;
    message("domain " + std::to_string(d) + " '" + domains[d].name + "': " +
            std::to_string(train_cases[d].size()) + " training, " + std::to_string(val_cases[d].size()) +
            " validation cases, target spacing " + spacing_text(prep[d].target_spacing) + " mm");
    if (classification) {
      check_classification_cases(train_cases[d], domains[d].num_classes());
      check_classification_cases(val_cases[d], domains[d].num_classes());
    } else {
      check_cases(context, train_cases[d]);
      check_cases(context, val_cases[d]);
    }
  }

  // Model.
  ModelSpec spec = options.model;
  spec.classes.clear();
  for (const Dataset& d : domains)
    spec.classes.push_back(options.foreground_labels.empty() ? d.num_classes() : 2);
  MED3D_CHECK(spec.head == "med3d" || domain_count == 1, "head '", spec.head, "' trains on one ",
              "dataset; ", domain_count, " were given (use --head med3d for co-training)");
  SegModel model = make_seg_model(context, spec);
  Module& module = *model.module;
  std::vector<std::string> pretrained;
  if (!options.init.empty()) {
    const TransferReport report = load_encoder(module, options.init);
    pretrained = report.taken;
    message("init from '" + options.init + "': " + report.summary());
  }
  model.to(options.device);  // before the optimiser, whose state follows the parameters
  if (options.device.is_cuda()) message("training on " + cuda_device_description(options.device.index));
  std::vector<ParamGroup> groups;
  {
    ParamGroup old_layers{"pretrained", {}, options.lr, std::nullopt};
    ParamGroup new_layers{"new", {}, options.lr * options.new_layer_lr_scale, std::nullopt};
    for (auto& named : module.named_parameters()) {
      const bool taken = std::find(pretrained.begin(), pretrained.end(), named.first) != pretrained.end();
      (taken ? old_layers : new_layers).params.push_back(named);
    }
    if (!old_layers.params.empty()) groups.push_back(std::move(old_layers));
    groups.push_back(std::move(new_layers));
  }
  std::unique_ptr<Optimizer> optimizer = make_optimizer(options, std::move(groups));

  RunCaseOptions train_case;
  train_case.foreground_labels = options.foreground_labels;
  train_case.roi_margin = options.roi_margin;
  train_case.random_margin = true;
  train_case.seed = options.seed;
  RunCaseOptions val_case = train_case;
  val_case.random_margin = false;
  PredictOptions predict;
  predict.patch = options.patch;
  predict.resize_whole = options.crop == "resize";

  // Loader: each case is prepared (reoriented, resampled, normalised) on first use and cached.
  data::CaseSource source;
  source.domains = domain_count;
  source.cases = [&](int64_t d) { return static_cast<int64_t>(train_cases[static_cast<std::size_t>(d)].size()); };
  source.load = [&](int64_t d, int64_t i) {
    const auto du = static_cast<std::size_t>(d);
    const DatasetCase& c = train_cases[du][static_cast<std::size_t>(i)];
    if (classification) {
      // An empty label map: the loader then takes the whole volume (med3d_crop_box) and the
      // class comes from the case (batch.case_index).
      PreparedCase p = prepare_image(context, c.image_path, prep[du]);
      return std::make_pair(p.image.data, context.zeros(p.image.data.shape(), DType::i32));
    }
    PreparedCase p = prepare_for_run(context, c, prep[du], train_case);
    return std::make_pair(p.image.data, p.label.data);
  };
  data::LoaderOptions lo;
  lo.batch_size = options.batch_size;
  lo.patch = options.patch;
  lo.crop_mode = options.crop == "resize" || classification ? data::CropMode::med3d_resize : data::CropMode::patch;
  lo.foreground_fraction = options.foreground_fraction;
  lo.augment = options.augment;
  if (!options.flip) lo.augment_options.flip_probability = {0, 0, 0};
  lo.balance_domains = true;
  lo.workers = std::max(1, options.workers);
  lo.cache_bytes = options.cache_bytes;
  lo.seed = options.seed;

  int64_t step = 0;
  double best_score = -1;
  int64_t best_epoch = -1;
  std::vector<std::map<int32_t, double>> best_dice;
  double best_accuracy = std::numeric_limits<double>::quiet_NaN(), best_auc = best_accuracy;
  double epoch_loss_sum = 0;
  std::unique_ptr<LrSchedule> schedule;
  int64_t steps_per_epoch = options.steps_per_epoch;
  {
    // Batches per epoch depend only on the case counts; a throwaway loader would start
    // workers, so count the plan directly.
    std::vector<int64_t> counts;
    for (const auto& c : train_cases) counts.push_back(static_cast<int64_t>(c.size()));
    const auto plan = data::epoch_plan(counts, true, options.seed, 0);
    if (steps_per_epoch <= 0) steps_per_epoch = std::max<int64_t>(1, static_cast<int64_t>(plan.size()) / options.batch_size);
  }
  const int64_t total_steps = steps_per_epoch * options.epochs;
  schedule = make_schedule(options.schedule, *optimizer, total_steps);

  if (options.resume) {
    const TrainState state = load_checkpoint(context, paths.checkpoint, module, *optimizer, schedule.get());
    step = state.step;
    best_score = state.best_score;
    best_epoch = state.best_epoch;
    best_dice = state.best_dice;
    best_accuracy = state.best_accuracy;
    best_auc = state.best_auc;
    epoch_loss_sum = state.epoch_loss_sum;
    context.set_random_offset(state.random_offset);
    message("resumed from '" + paths.checkpoint + "' at step " + std::to_string(step) + " of " +
            std::to_string(total_steps));
  }
  lo.start_batch = step;
  MetricsWriter metrics(paths, options.resume, classification);

  RunMetadata run_meta{spec, prep, options.patch, domains};
  run_meta.crop = options.crop;
  run_meta.foreground_labels = options.foreground_labels;
  run_meta.roi_margin = options.roi_margin;
  auto save_state = [&]() {
    // A diverged update (inf weights or statistics) must not replace the last good checkpoint.
    const std::string bad = first_non_finite(module);
    MED3D_CHECK(bad.empty(), "training diverged: '", bad, "' holds NaN or Inf after step ", step,
                "; the last good state is '", paths.checkpoint, "' (resume with --resume after lowering --lr)");
    save_checkpoint(paths.checkpoint, module, *optimizer, schedule.get(),
                    TrainState{step, best_score, best_epoch, best_dice, best_accuracy, best_auc, epoch_loss_sum,
                               context.random_offset()},
                    run_meta);
  };

  TrainSummary summary;
  if (step < total_steps) {
    data::Loader loader(context, source, lo);
    while (step < total_steps) {
      if (hooks.stop_requested && hooks.stop_requested()) {
        save_state();
        summary.interrupted = true;
        message("stopped at step " + std::to_string(step) + "; checkpoint saved, continue with --resume");
        break;
      }
      const data::Batch batch = loader.next();
      module.train();
      Tensor loss;
      std::map<int64_t, std::vector<int64_t>> by_domain;
      for (std::size_t i = 0; i < batch.domain.size(); ++i) by_domain[batch.domain[i]].push_back(static_cast<int64_t>(i));
      for (const auto& [domain, rows] : by_domain) {
        const bool whole = rows.size() == batch.domain.size();
        const Tensor x = whole ? batch.image : gather_rows(context, batch.image, rows);
        const Tensor y = (whole ? batch.label : gather_rows(context, batch.label, rows)).to(model.device);
        Tensor part;
        if (classification) {
          std::vector<int64_t> cases;
          for (int64_t r : rows) cases.push_back(batch.case_index[static_cast<std::size_t>(r)]);
          part = cross_entropy(model.logits(x, domain),
                               class_targets(context, train_cases[static_cast<std::size_t>(domain)], cases)
                                   .to(model.device));
        } else {
          part = segmentation_loss(options.loss, model.logits(x, domain), y);
        }
        if (!whole) part = mul_scalar(part, static_cast<double>(rows.size()) / static_cast<double>(batch.domain.size()));
        loss = loss.defined() ? add(loss, part) : part;
      }
      const double loss_value = static_cast<double>(loss.item<float>());
      if (!std::isfinite(loss_value)) {
        detail::throw_error("the loss is ", loss_value, " at step ", step + 1,
                            "; training stopped before updating the weights. The last good state is '",
                            paths.checkpoint, "' (resume with --resume after lowering --lr)");
      }
      backward(loss);
      optimizer->step();
      optimizer->zero_grad();
      if (schedule) schedule->step();
      ++step;
      epoch_loss_sum += loss_value;
      const int64_t epoch = (step - 1) / steps_per_epoch;
      if (hooks.on_step)
        hooks.on_step(StepReport{epoch, options.epochs, step, total_steps, loss_value,
                                 optimizer->groups().back().lr});
      if (step % steps_per_epoch == 0) {
        EpochReport report;
        report.epoch = epoch;
        report.epochs = options.epochs;
        report.train_loss = epoch_loss_sum / static_cast<double>(steps_per_epoch);
        epoch_loss_sum = 0;
        const bool last = step == total_steps;
        const bool has_val = !split.validation.empty();
        report.validated = has_val && ((epoch + 1) % options.val_every == 0 || last);
        if (report.validated && classification) {
          const ClassificationScores scores =
              validate_classification(context, model, val_cases[0], prep[0], options.patch);
          report.val_accuracy = scores.accuracy;
          report.val_auc = scores.auc;
          report.score = scores.score;
          if (is_better(scores, best_epoch, best_accuracy, best_auc)) {
            best_score = report.score;
            best_epoch = epoch;
            best_accuracy = scores.accuracy;
            best_auc = scores.auc;
            report.best = true;
            std::ostringstream note;
            note << "best validation accuracy " << scores.accuracy << ", ROC AUC " << scores.auc;
            save_model(paths.best, module, run_meta, note.str());
          }
        } else if (report.validated) {
          std::vector<std::map<int32_t, double>> dice;
          for (int64_t d = 0; d < domain_count; ++d) {
            const auto du = static_cast<std::size_t>(d);
            const std::map<int32_t, double> per_label =
                validation_dice(context, model, d, val_cases[du], prep[du], val_case, predict);
            double mean = 0;
            for (const auto& kv : per_label) mean += kv.second;
            report.val_dice.push_back(per_label.empty() ? 0 : mean / static_cast<double>(per_label.size()));
            dice.push_back(per_label);
          }
          for (double v : report.val_dice) report.score += v;
          report.score /= static_cast<double>(report.val_dice.size());
          if (report.score > best_score) {
            best_score = report.score;
            best_epoch = epoch;
            best_dice = dice;
            report.best = true;
            save_model(paths.best, module, run_meta, "best validation Dice " + std::to_string(best_score));
          }
        }
        metrics.append(report, optimizer->groups().back().lr, step);
        if (hooks.on_epoch) hooks.on_epoch(report);
      }
      if (step % options.checkpoint_every == 0 || step == total_steps) save_state();
      if (options.stop_after_steps > 0 && step >= options.stop_after_steps && step < total_steps) {
        save_state();
        summary.stopped_early = true;
        message("stopped after step " + std::to_string(step) + " as asked (--stop-after)");
        break;
      }
    }
  }
  if (split.validation.empty() || best_epoch < 0)
    save_model(paths.best, module, run_meta, "last weights (no validation)");
  if (!summary.interrupted && !summary.stopped_early) {
    save_encoder(paths.encoder, module, run_meta);
    if (classification)
      write_run_curves(paths, true);
    else
      finish_pictures(context, paths, model, val_cases, prep, val_case, predict, options.overlays);
  }
  summary.steps = step;
  summary.best_score = best_score;
  summary.best_epoch = best_epoch;
  summary.best_dice = best_dice;
  summary.best_accuracy = best_accuracy;
  summary.best_auc = best_auc;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return summary;
}

}  // namespace internal
}  // namespace med3d::trainers
