// med3d pretrain (Med3D multi-domain co-training) and med3d train (single task, from scratch or
// transferred with --init): both drive trainers::train_segmentation with the same options;
// pretrain only changes the defaults (head med3d, several --domains). train --task cls runs
// trainers::train_classification (classify.h) with the same options and files.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "common.h"
#include "med3d/trainers/classify.h"
#include "med3d/trainers/progress.h"
#include "med3d/trainers/run_files.h"
#include "med3d/trainers/train.h"

namespace med3d::cli {
namespace {

// Set by SIGINT; the trainer polls it between steps, saves a checkpoint and returns.
std::atomic<bool> g_stop_requested{false};
extern "C" void on_sigint(int) { g_stop_requested.store(true); }

struct TrainArgs {
  CommonOptions common;
  trainers::SegTrainOptions o;
  std::string arch = "resnet10", shortcut, intensity = "percentile_zscore";
  std::vector<int64_t> patch{32, 32, 32};
  std::string resume;
  std::string task = "seg";
  std::string head;  // empty: the task's default (medicalnet for seg, classifier for cls)
};

void add_training_options(CLI::App& c, TrainArgs& a, bool pretrain) {
  auto& o = a.o;
  add_common_options(c, a.common);
  if (pretrain) {
    c.add_option("--domains", o.data, "MSD folders, one domain (decoder branch) each")->required()->delimiter(',');
  } else {
    c.add_option("--data", o.data, "MSD folder (dataset.json, imagesTr, labelsTr)")->delimiter(',');
    c.add_option("--task", a.task, "seg (segmentation) or cls (classification: dataset.json "
                                    "\"label\" entries are integer classes)")
        ->capture_default_str();
  }
  c.add_option("--out", o.out, "run folder (created)");
  c.add_option("--arch", a.arch, "resnet10, 18, 34, 50, 101, 152 or 200")->capture_default_str();
  c.add_option("--shortcut", a.shortcut, "A or B (default: MedicalNet's for the depth)");
  if (!pretrain)
    c.add_option("--head", a.head, "seg: medicalnet (default), lung, coarse, denseaspp or med3d; "
                                   "cls: classifier (default)");
  c.add_option("--init", o.init, "safetensors whose encoder initialises the model (transfer)");
  c.add_option("--optimizer", o.optimizer, "sgd, adam or adamw")->capture_default_str();
  c.add_option("--lr", o.lr, "learning rate of pretrained (or all) layers")->capture_default_str();
  c.add_option("--new-layer-lr-scale", o.new_layer_lr_scale, "lr factor for layers not loaded by --init")
      ->capture_default_str();
  c.add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str();
  c.add_option("--weight-decay", o.weight_decay, "weight decay")->capture_default_str();
  c.add_option("--schedule", o.schedule, "poly, cosine, step or constant")->capture_default_str();
  c.add_option("--epochs", o.epochs, "epochs")->capture_default_str();
  c.add_option("--steps-per-epoch", o.steps_per_epoch, "0: one pass over the balanced training cases")
      ->capture_default_str();
  c.add_option("--batch-size", o.batch_size, "patches per step")->capture_default_str();
  c.add_option("--patch", a.patch, "patch D H W (multiples of 8)")->expected(3)->capture_default_str();
  c.add_option("--foreground-fraction", o.foreground_fraction, "share of patches centred on labels")
      ->capture_default_str();
  c.add_flag("!--no-augment", o.augment, "turn augmentation off");
  c.add_flag("--flip", o.flip, "random flips (they swap anatomical sides)");
  c.add_option("--spacing", o.spacing, "median (Med3D), none, or d,h,w in mm")->capture_default_str();
  c.add_option("--intensity", a.intensity, "percentile_zscore, ct_window, nonzero_zscore or none")
      ->capture_default_str();
  c.add_option("--loss", o.loss, "ce, dice or ce+dice")->capture_default_str();
  c.add_option("--crop", o.crop, "patch, or resize (whole volume resized to --patch: liver stage 1)")
      ->capture_default_str();
  c.add_option("--foreground-labels", o.foreground_labels, "train a binary task: these labels vs the rest")
      ->delimiter(',');
  c.add_option("--roi-margin", o.roi_margin, "crop cases to the foreground region grown by this many voxels "
                                              "(liver stage 2; 0: off)")->capture_default_str();
  c.add_option("--val-fraction", o.validation_fraction, "share of cases held out for validation")
      ->capture_default_str();
  c.add_option("--val-every", o.val_every, "validate every K epochs")->capture_default_str();
  c.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints")->capture_default_str();
  c.add_option("--stop-after", o.stop_after_steps, "stop after this many steps, checkpointed (0: never)")
      ->capture_default_str();
  c.add_option("--workers", o.workers, "data loader threads")->capture_default_str();
  c.add_option("--overlays", o.overlays, "validation cases drawn as PNG overlays at the end")
      ->capture_default_str();
  c.add_option("--resume", a.resume, "continue the run in this folder from its checkpoint");
}

IntensityMode parse_intensity(const std::string& text) {
  if (text == "percentile_zscore") return IntensityMode::percentile_zscore;
  if (text == "ct_window") return IntensityMode::ct_window;
  if (text == "nonzero_zscore") return IntensityMode::nonzero_zscore;
  MED3D_CHECK(text == "none", "--intensity: expected percentile_zscore, ct_window, nonzero_zscore or none, got '",
              text, "'");
  return IntensityMode::none;
}

std::string dice_text(const std::map<int32_t, double>& dice, const std::map<int32_t, std::string>& names) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(4);
  for (const auto& [label, value] : dice) {
    auto it = names.find(label);
    out << "  " << (it != names.end() ? it->second : std::to_string(label)) << " " << value;
  }
  return out.str();
}

void run_training(const CLI::App& command, TrainArgs& a) {
  auto& o = a.o;
  if (!a.resume.empty()) {
    MED3D_CHECK(o.out.empty() || std::filesystem::weakly_canonical(o.out) == std::filesystem::weakly_canonical(a.resume),
                "--resume ", a.resume, " continues that run folder; drop --out ", o.out);
    o.out = a.resume;
    o.resume = true;
  }
  MED3D_CHECK(a.task == "seg" || a.task == "cls", "--task: expected seg or cls, got '", a.task, "'");
  const bool cls = a.task == "cls";
  if (!a.head.empty()) o.model.head = a.head;
  else if (cls) o.model.head = "classifier";
  MED3D_CHECK(!o.out.empty(), "give --out RUN (the run folder) or --resume RUN");
  MED3D_CHECK(!o.data.empty(), "give the training data: --data DIR (train) or --domains DIR1,DIR2 (pretrain)");
  o.model.arch = a.arch;
  if (!a.shortcut.empty()) o.model.shortcut = trainers::parse_shortcut(a.shortcut);
  o.intensity.mode = parse_intensity(a.intensity);
  o.patch = {a.patch.at(0), a.patch.at(1), a.patch.at(2)};
  o.seed = a.common.seed;
  Context context = make_context(a.common);
  o.device = compute_device(a.common);
  std::filesystem::create_directories(o.out);
  const trainers::RunPaths paths(o.out);
  if (!o.resume) save_resolved_config(command, paths.config);

  const bool live = isatty(STDERR_FILENO) != 0;
  std::unique_ptr<trainers::ProgressMeter> meter;
  int64_t meter_epoch = -1, last_printed = 0;
  trainers::TrainHooks hooks;
  hooks.on_message = [](const std::string& m) { std::cerr << m << "\n"; };
  hooks.stop_requested = [] { return g_stop_requested.load(); };
  hooks.on_step = [&](const trainers::StepReport& r) {
    const int64_t per_epoch = r.total_steps / r.epochs;
    if (!meter) meter = std::make_unique<trainers::ProgressMeter>(r.epochs, per_epoch);
    if (r.epoch != meter_epoch) {
      meter->start_epoch(r.epoch + 1);
      meter_epoch = r.epoch;
    }
    meter->update(r.step - r.epoch * per_epoch);
    const std::string line =
        meter->line({{"loss", trainers::format_fixed(r.loss)}, {"lr", trainers::format_scientific(r.lr)}});
    if (live) {
      std::cerr << "\r" << line << "\033[K" << std::flush;
    } else if (r.step - last_printed >= std::max<int64_t>(1, r.total_steps / 20) || r.step == r.total_steps) {
      std::cerr << line << "\n";
      last_printed = r.step;
    }
  };
  hooks.on_epoch = [&](const trainers::EpochReport& r) {
    if (live) std::cerr << "\n";
    std::ostringstream line;
    line << std::fixed << std::setprecision(4) << "epoch " << r.epoch + 1 << "/" << r.epochs << "  train loss "
         << r.train_loss;
    if (cls && r.validated) {
      line << "  val accuracy " << r.val_accuracy << "  AUC " << r.val_auc;
      if (r.best) line << "  (best)";
    } else if (!r.val_dice.empty()) {
      line << "  val Dice";
      for (double d : r.val_dice) line << " " << d;
      if (r.best) line << "  (best)";
    }
    std::cerr << line.str() << "\n";
  };
  std::signal(SIGINT, on_sigint);
  const trainers::TrainSummary s =
      cls ? trainers::train_classification(context, o, hooks) : trainers::train_segmentation(context, o, hooks);
  std::signal(SIGINT, SIG_DFL);
  if (s.interrupted || s.stopped_early) {
    std::cout << (s.interrupted ? "interrupted" : "stopped") << " at step " << s.steps << "; resume with: med3d " << command.get_name()
              << " --resume " << o.out << "\n";
    return;
  }
  const trainers::LoadedModel best = trainers::load_model(context, paths.best);
  std::cout << "run " << o.out << ": " << s.steps << " steps in " << std::fixed << std::setprecision(1)
            << s.seconds << " s\n";
  if (cls && s.best_epoch >= 0)
    std::cout << "best validation (epoch " << s.best_epoch + 1 << ") " << best.meta.domain_names.at(0) << ":  accuracy "
              << std::setprecision(4) << s.best_accuracy << "  ROC AUC " << s.best_auc << "\n";
  for (std::size_t d = 0; d < s.best_dice.size(); ++d)
    std::cout << "best validation Dice (epoch " << s.best_epoch + 1 << ") " << best.meta.domain_names.at(d) << ":"
              << dice_text(s.best_dice[d], best.meta.labels.at(d)) << "\n";
  std::cout << "model: " << paths.best << "  encoder: " << paths.encoder << "\npictures: " << paths.curves;
  if (!cls) std::cout << ", " << paths.overlays << "/";
  std::cout << "\n";
}

}  // namespace

void register_train(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  // Fine-tuning from scratch or transfer: 0.01 trains every head here stably (measured on
  // hippocampus and synthetic CT); the paper's 0.1 stays the pretraining default.
  a->o.lr = 0.01;
  CLI::App* c = app.add_subcommand("train", "Train or fine-tune a segmentation (or, --task cls, classification) "
                                            "network on one MSD dataset");
  add_training_options(*c, *a, false);
  c->callback([c, a] { run_training(*c, *a); });
}

void register_pretrain(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  a->o.model.head = "med3d";
  CLI::App* c = app.add_subcommand("pretrain", "Med3D co-training: shared encoder, one branch per dataset");
  add_training_options(*c, *a, true);
  c->callback([c, a] { run_training(*c, *a); });
}

}  // namespace med3d::cli
