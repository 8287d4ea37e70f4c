#include "med3d/trainers/classify.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <utility>

#include "med3d/data/nifti.h"
#include "med3d/error.h"
#include "med3d/ops/loss.h"
#include "med3d/ops/upsample.h"
#include "med3d/tape.h"
#include "med3d/trainers/inference.h"
#include "med3d/trainers/metrics.h"
#include "train_loop.h"

namespace med3d::trainers {
namespace fs = std::filesystem;

namespace {

// Lexicographic selection key: the score, then the other metric (-1 when undefined).
std::pair<double, double> selection_key(double accuracy, double auc, std::size_t classes) {
  if (classes == 2 && std::isfinite(auc)) return {auc, accuracy};
  return {accuracy, std::isfinite(auc) ? auc : -1.0};
}

}  // namespace

TrainSummary train_classification(Context context, const SegTrainOptions& options, const TrainHooks& hooks) {
  MED3D_CHECK(options.data.size() == 1, "classification trains on one dataset folder; ", options.data.size(),
              " were given");
  MED3D_CHECK(options.model.head == "classifier", "classification needs head classifier (global average ",
              "pooling + fc), got '", options.model.head, "'; drop --head or use --task seg");
  MED3D_CHECK(options.foreground_labels.empty(), "--foreground-labels applies to segmentation only; ",
              "drop it for --task cls");
  MED3D_CHECK(options.roi_margin == 0, "--roi-margin applies to segmentation only; drop it for --task cls");
  return internal::train_task(std::move(context), options, hooks, true);
}

std::vector<double> classify_probabilities(const Context& context, SegModel& model, const Tensor& image,
                                           const std::array<int64_t, 3>& patch) {
  MED3D_CHECK(image.rank() == 3, "classify: expected a prepared [D, H, W] image, got ", image.str());
  NoGrad no_grad(context);
  model.module->eval();
  const Shape s = image.shape();
  const Tensor x = upsample_trilinear3d(image.reshape({1, 1, s[0], s[1], s[2]}), patch, false);
  const Tensor p = softmax(model.logits(x, 0));
  MED3D_CHECK(p.rank() == 2 && p.dim(0) == 1, "classify: expected logits [1, K] from head '", model.spec.head,
              "', got ", p.str());
  return p.to_vector<double>();  // from any device
}

ClassificationScores score_classification(std::vector<std::vector<double>> probabilities, std::vector<int> truth) {
  MED3D_CHECK(!probabilities.empty() && probabilities.size() == truth.size(), "score_classification: ",
              probabilities.size(), " predictions for ", truth.size(), " cases");
  ClassificationScores s;
  const std::size_t k = probabilities.front().size();
  std::vector<int> predicted;
  for (const auto& p : probabilities)
    predicted.push_back(static_cast<int>(std::max_element(p.begin(), p.end()) - p.begin()));
  s.accuracy = accuracy(predicted, truth);
  s.auc = std::numeric_limits<double>::quiet_NaN();
  const bool both = std::any_of(truth.begin(), truth.end(), [&](int t) { return t != truth.front(); });
  if (k == 2 && both) {
    std::vector<double> p1;
    for (const auto& p : probabilities) p1.push_back(p[1]);
    s.auc = roc_auc(p1, truth);
  } else if (k > 2 && both) {
    s.auc = roc_auc_one_vs_rest(probabilities, truth).macro;
  }
  s.score = selection_key(s.accuracy, s.auc, k).first;
  s.probabilities = std::move(probabilities);
  s.truth = std::move(truth);
  return s;
}

bool is_better(const ClassificationScores& s, int64_t best_epoch, double best_accuracy, double best_auc) {
  if (best_epoch < 0) return true;
  const std::size_t k = s.probabilities.front().size();
  return selection_key(s.accuracy, s.auc, k) > selection_key(best_accuracy, best_auc, k);
}

ClassificationScores validate_classification(const Context& context, SegModel& model,
                                             const std::vector<DatasetCase>& cases,
                                             const PreprocessOptions& preprocess,
                                             const std::array<int64_t, 3>& patch) {
  std::vector<std::vector<double>> probabilities;
  std::vector<int> truth;
  for (const DatasetCase& c : cases) {
    const PreparedCase prepared = prepare_image(context, c.image_path, preprocess);
    probabilities.push_back(classify_probabilities(context, model, prepared.image.data, patch));
    truth.push_back(c.class_label);
  }
  return score_classification(std::move(probabilities), std::move(truth));
}

void check_classification_cases(const std::vector<DatasetCase>& cases, int64_t classes) {
  for (const DatasetCase& c : cases) {
    MED3D_CHECK(fs::exists(c.image_path), "image '", c.image_path, "' of case '", c.id,
                "' does not exist; fix dataset.json or the folder");
    MED3D_CHECK(c.class_label >= 0 && c.class_label < classes, "case '", c.id, "' (image '", c.image_path,
                "') has class ", c.class_label, "; the dataset declares classes 0..", classes - 1,
                (c.class_label < 0 ? " (a segmentation case: use --task seg)" : ""));
    const NiftiHeaderInfo header = read_nifti_header(c.image_path);
    bool volume = header.dim[0] >= 3;
    for (int64_t a = 4; a <= header.dim[0] && a < 8; ++a) volume = volume && header.dim[static_cast<std::size_t>(a)] == 1;
    MED3D_CHECK(volume, "image '", c.image_path, "' of case '", c.id, "' has ", header.dim[0],
                " dimensions; classification takes one 3D volume per case");
  }
}

}  // namespace med3d::trainers
