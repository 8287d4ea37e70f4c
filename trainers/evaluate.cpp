#include "med3d/trainers/evaluate.h"

#include "med3d/error.h"
#include "med3d/trainers/inference.h"

namespace med3d::trainers {

Tensor predict_probabilities(const Context& context, SegModel& model, int64_t domain,
                             const Tensor& image, const PredictOptions& options) {
  MED3D_CHECK(image.rank() == 3, "predict: expected a prepared [D, H, W] image, got ", image.str());
  NoGrad no_grad(context);
  model.module->eval();
  SlidingWindowOptions window;
  window.patch = options.patch;
  window.overlap = options.overlap;
  window.flip_tta = options.flip_tta;
  const Shape s = image.shape();
  const Tensor batch = image.reshape({1, 1, s[0], s[1], s[2]});
  return sliding_window_predict([&](const Tensor& x) { return model.logits(x, domain); }, batch, window);
}

std::map<int32_t, double> label_dice(const Tensor& labels, const Tensor& reference, int64_t classes) {
  MED3D_CHECK(labels.shape() == reference.shape(), "label_dice: prediction ", labels.str(),
              " and reference ", reference.str(), " differ in shape");
  const auto k = static_cast<std::size_t>(classes);
  std::vector<int64_t> both(k, 0), pred(k, 0), ref(k, 0);
  const int32_t* p = labels.data<int32_t>();
  const int32_t* r = reference.data<int32_t>();
  for (int64_t i = 0; i < labels.numel(); ++i) {
    const bool p_in = p[i] > 0 && p[i] < classes, r_in = r[i] > 0 && r[i] < classes;
    if (p_in) ++pred[static_cast<std::size_t>(p[i])];
    if (r_in) ++ref[static_cast<std::size_t>(r[i])];
    if (p_in && p[i] == r[i]) ++both[static_cast<std::size_t>(p[i])];
  }
  std::map<int32_t, double> dice;
  for (std::size_t c = 1; c < k; ++c) {
    const int64_t total = pred[c] + ref[c];
    dice[static_cast<int32_t>(c)] = total == 0 ? 1.0 : 2.0 * static_cast<double>(both[c]) / static_cast<double>(total);
  }
  return dice;
}

std::map<int32_t, double> validation_dice(const Context& context, SegModel& model, int64_t domain,
                                          const std::vector<DatasetCase>& cases,
                                          const PreprocessOptions& preprocess,
                                          const std::array<int64_t, 3>& patch) {
  std::map<int32_t, double> mean;
  if (cases.empty()) return mean;
  const int64_t classes = model.spec.classes.at(static_cast<std::size_t>(domain));
  PredictOptions options;
  options.patch = patch;
  for (const DatasetCase& c : cases) {
    const PreparedCase prepared = prepare_case(context, c, preprocess);
    const Tensor labels = argmax_labels(predict_probabilities(context, model, domain, prepared.image.data, options));
    for (const auto& [label, value] : label_dice(labels, prepared.label.data, classes)) mean[label] += value;
  }
  for (auto& kv : mean) kv.second /= static_cast<double>(cases.size());
  return mean;
}

}  // namespace med3d::trainers
