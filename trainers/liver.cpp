#include "med3d/trainers/liver.h"

#include "med3d/error.h"
#include "med3d/trainers/evaluate.h"
#include "med3d/trainers/inference.h"
#include "med3d/trainers/roi.h"

namespace med3d::trainers {
namespace {

void check_same_preprocessing(const LoadedModel& stage1, const LoadedModel& stage2) {
  const PreprocessOptions& a = stage1.meta.preprocess.at(0);
  const PreprocessOptions& b = stage2.meta.preprocess.at(0);
  MED3D_CHECK(a.orientation == b.orientation && a.target_spacing == b.target_spacing &&
                  a.intensity.mode == b.intensity.mode,
              "liver cascade: stage 1 and stage 2 were trained with different preprocessing (orientation, "
              "--spacing or --intensity); train both with the same values");
  MED3D_CHECK(stage1.meta.crop == "resize", "liver cascade: stage 1 must be a whole-volume model ",
              "(trained with --crop resize), got crop '", stage1.meta.crop, "'");
  MED3D_CHECK(stage2.meta.roi_margin > 0, "liver cascade: stage 2 must be a region-of-interest model ",
              "(trained with --roi-margin > 0)");
}

}  // namespace

Tensor liver_fine_stage(const Context& context, LoadedModel& stage2, const PreparedCase& prepared,
                        const Tensor& coarse_mask, const LiverOptions& options, std::optional<data::Box3>* box_out) {
  const Tensor& image = prepared.image.data;
  MED3D_CHECK(coarse_mask.shape() == image.shape(), "liver cascade: the coarse mask ", coarse_mask.str(),
              " does not match the prepared image ", image.str());
  const int64_t margin = options.margin >= 0 ? options.margin : stage2.meta.roi_margin;
  const std::optional<data::Box3> box = roi_box(coarse_mask, margin);
  if (box_out) *box_out = box;
  const Shape s = image.shape();
  if (!box) return context.zeros(s, DType::i32);
  PredictOptions predict;
  predict.patch = stage2.meta.patch;
  predict.overlap = options.overlap;
  const Tensor fine = argmax_labels(predict_probabilities(context, stage2.model, 0, crop_box(image, *box), predict));
  return paste_box(fine, *box, {s[0], s[1], s[2]}, 0);
}

LiverResult liver_cascade(const Context& context, LoadedModel& stage1, LoadedModel& stage2,
                          const std::string& image_path, const Volume& reference, const LiverOptions& options) {
  check_same_preprocessing(stage1, stage2);
  const PreparedCase prepared = prepare_image(context, image_path, stage1.meta.preprocess.at(0));
  PredictOptions coarse;
  coarse.patch = stage1.meta.patch;
  coarse.resize_whole = true;
  LiverResult result;
  result.coarse = argmax_labels(predict_probabilities(context, stage1.model, 0, prepared.image.data, coarse));
  const Tensor fine = liver_fine_stage(context, stage2, prepared, result.coarse, options, &result.box);
  result.labels = labels_to_reference_grid(fine, prepared, reference);
  return result;
}

}  // namespace med3d::trainers
