#include "med3d/trainers/evaluate.h"

#include <algorithm>

#include "med3d/error.h"
#include "med3d/ops/loss.h"
#include "med3d/ops/upsample.h"
#include "med3d/trainers/inference.h"
#include "med3d/trainers/roi.h"

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
  if (options.resize_whole) {
    const Tensor logits = model.logits(upsample_trilinear3d(batch, options.patch, false), domain);
    return upsample_trilinear3d(softmax(logits), {s[0], s[1], s[2]}, false);
  }
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

Tensor binarize_labels(const Tensor& labels, const std::vector<int32_t>& foreground) {
  MED3D_CHECK(labels.dtype() == DType::i32, "binarize_labels: expected i32 labels, got ", labels.str());
  Tensor out = labels.clone();
  int32_t* p = out.data<int32_t>();
  for (int64_t i = 0; i < out.numel(); ++i)
    p[i] = std::find(foreground.begin(), foreground.end(), p[i]) != foreground.end() ? 1 : 0;
  return out;
}

std::optional<data::Box3> roi_box(const Tensor& labels, int64_t margin) {
  const std::optional<data::Box3> box = bounding_box(largest_component(labels));
  if (!box) return std::nullopt;
  const Shape s = labels.shape();
  return expand_box(*box, {margin, margin, margin}, {s[0], s[1], s[2]});
}

Volume crop_volume(const Volume& volume, const data::Box3& box) {
  Volume out = volume;
  out.data = crop_box(volume.data, box);
  // World position of the crop's first voxel: affine * (lo, 1).
  for (int r = 0; r < 3; ++r) {
    double shift = 0;
    for (int c = 0; c < 3; ++c) shift += volume.affine[static_cast<std::size_t>(r * 4 + c)] * static_cast<double>(box.lo[static_cast<std::size_t>(c)]);
    out.affine[static_cast<std::size_t>(r * 4 + 3)] += shift;
  }
  return out;
}

PreparedCase prepare_for_run(const Context& context, const DatasetCase& c, const PreprocessOptions& preprocess,
                             const RunCaseOptions& options) {
  PreparedCase p = prepare_case(context, c, preprocess);
  if (!options.foreground_labels.empty()) p.label.data = binarize_labels(p.label.data, options.foreground_labels);
  if (options.roi_margin <= 0) return p;
  const Tensor& label = p.label.data;
  std::optional<data::Box3> box = bounding_box(largest_component(label));
  if (!box) return p;
  const Shape s = label.shape();
  const data::Index3 shape{s[0], s[1], s[2]};
  const int64_t m = options.roi_margin;
  if (options.random_margin) {
    uint64_t key = 1469598103934665603ull;  // FNV-1a of the case id: the same on every platform
    for (unsigned char ch : c.id) key = (key ^ ch) * 1099511628211ull;
    data::SampleRng rng(options.seed ^ key);
    box = random_expand_box(*box, {m, m, m}, {2 * m, 2 * m, 2 * m}, shape, rng);
  } else {
    box = expand_box(*box, {m, m, m}, shape);
  }
  p.image = crop_volume(p.image, *box);
  p.label = crop_volume(p.label, *box);
  return p;
}

std::map<int32_t, double> validation_dice(const Context& context, SegModel& model, int64_t domain,
                                          const std::vector<DatasetCase>& cases,
                                          const PreprocessOptions& preprocess,
                                          const RunCaseOptions& case_options,
                                          const PredictOptions& predict) {
  std::map<int32_t, double> mean;
  if (cases.empty()) return mean;
  const int64_t classes = model.spec.classes.at(static_cast<std::size_t>(domain));
  for (const DatasetCase& c : cases) {
    const PreparedCase prepared = prepare_for_run(context, c, preprocess, case_options);
    const Tensor labels = argmax_labels(predict_probabilities(context, model, domain, prepared.image.data, predict));
    for (const auto& [label, value] : label_dice(labels, prepared.label.data, classes)) mean[label] += value;
  }
  for (auto& kv : mean) kv.second /= static_cast<double>(cases.size());
  return mean;
}

}  // namespace med3d::trainers
