// What a training run leaves for people to read: metrics.csv / metrics.jsonl (one row per
// epoch, flushed as written, appended to on --resume) and, at the end, curves.png (training
// loss and validation Dice per epoch; classification: validation accuracy and ROC AUC) and,
// for segmentation, overlays/<case>_{axial,coronal,sagittal}.png (validation cases with
// reference and predicted label contours).
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "med3d/data/dataset.h"
#include "med3d/data/preprocess.h"
#include "med3d/trainers/evaluate.h"
#include "med3d/trainers/model_factory.h"
#include "med3d/trainers/run_files.h"
#include "med3d/trainers/train.h"

namespace med3d::trainers {

class MetricsLog;

class MetricsWriter {
 public:
  // Columns epoch, step, train_loss, lr, then val_dice, or val_accuracy and val_auc when
  // `classification`.
  MetricsWriter(const RunPaths& paths, bool resume, bool classification = false);
  ~MetricsWriter();
  void append(const EpochReport& report, double lr, int64_t step);

 private:
  std::unique_ptr<MetricsLog> log_;
  bool classification_ = false;
};

// curves.png from metrics.jsonl (nothing when it has no rows): training loss, and validation
// Dice or (classification) validation accuracy and ROC AUC.
void write_run_curves(const RunPaths& paths, bool classification);

// write_run_curves (segmentation) and overlays of the first `overlays` validation cases
// (all domains) predicted by `model`.
void finish_pictures(const Context& context, const RunPaths& paths, SegModel& model,
                     const std::vector<std::vector<DatasetCase>>& validation,
                     const std::vector<PreprocessOptions>& preprocess, const RunCaseOptions& case_options,
                     const PredictOptions& predict, int64_t overlays);

}  // namespace med3d::trainers
