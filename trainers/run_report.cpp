#include "med3d/trainers/run_report.h"

#include <filesystem>

#include "med3d/trainers/curves.h"
#include "med3d/trainers/evaluate.h"
#include "med3d/trainers/inference.h"
#include "med3d/trainers/metrics_log.h"
#include "med3d/trainers/overlay.h"

namespace med3d::trainers {
namespace fs = std::filesystem;

MetricsWriter::MetricsWriter(const RunPaths& paths, bool resume, bool classification)
    : classification_(classification) {
  // A fresh run starts fresh logs; a resumed one appends (MetricsLog never truncates).
  if (!resume) {
    fs::remove(paths.metrics_csv);
    fs::remove(paths.metrics_jsonl);
  }
  log_ = std::make_unique<MetricsLog>(paths.dir);
}

MetricsWriter::~MetricsWriter() = default;

void MetricsWriter::append(const EpochReport& report, double lr, int64_t step) {
  MetricsRow row;
  row.values.emplace_back("epoch", report.epoch + 1);
  row.values.emplace_back("step", step);
  row.values.emplace_back("train_loss", report.train_loss);
  row.values.emplace_back("lr", lr);
  // Epochs without validation keep the column (NaN) so every row has the same columns.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (classification_) {
    row.values.emplace_back("val_accuracy", report.validated ? report.val_accuracy : nan);
    row.values.emplace_back("val_auc", report.validated ? report.val_auc : nan);
  } else {
    row.values.emplace_back("val_dice", report.val_dice.empty() ? nan : report.score);
  }
  log_->append(row);
}

void write_run_curves(const RunPaths& paths, bool classification) {
  if (!fs::exists(paths.metrics_jsonl)) return;
  const std::vector<MetricsRow> rows = read_metrics_jsonl(paths.metrics_jsonl);
  if (rows.empty()) return;
  CurvePanel loss{"training loss", "epoch", {metrics_series(rows, "epoch", "train_loss", "loss")}};
  CurvePanel validation{"validation Dice (mean over labels and domains)", "epoch",
                        {metrics_series(rows, "epoch", "val_dice", "Dice")}};
  if (classification)
    validation = CurvePanel{"validation accuracy and ROC AUC", "epoch",
                            {metrics_series(rows, "epoch", "val_accuracy", "accuracy"),
                             metrics_series(rows, "epoch", "val_auc", "AUC")}};
  validation.y_min = 0;
  validation.y_max = 1;
  CurvesOptions options;
  options.title = "med3d run " + fs::path(paths.dir).filename().string();
  write_curves_png(paths.curves, {loss, validation}, options);
}

void finish_pictures(const Context& context, const RunPaths& paths, SegModel& model,
                     const std::vector<std::vector<DatasetCase>>& validation,
                     const std::vector<PreprocessOptions>& preprocess, const RunCaseOptions& case_options,
                     const PredictOptions& predict, int64_t overlays) {
  write_run_curves(paths, false);
  int64_t drawn = 0;
  for (std::size_t d = 0; d < validation.size() && drawn < overlays; ++d) {
    for (const DatasetCase& c : validation[d]) {
      if (drawn >= overlays) break;
      const PreparedCase prepared = prepare_for_run(context, c, preprocess[d], case_options);
      const Tensor labels = argmax_labels(
          predict_probabilities(context, model, static_cast<int64_t>(d), prepared.image.data, predict));
      write_overlays(paths.overlays, c.id, prepared.image.data, prepared.image.spacing, prepared.label.data,
                     labels);
      ++drawn;
    }
  }
}

}  // namespace med3d::trainers
