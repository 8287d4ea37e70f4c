// The liver cascade: region-of-interest preparation for stage 2, the fine stage placed back
// into the volume, and the whole cascade from two briefly trained runs on synthetic CT.
#include <algorithm>
#include <set>

#include "med3d/data/synth.h"
#include "med3d/trainers/evaluate.h"
#include "med3d/trainers/inference.h"
#include "med3d/trainers/liver.h"
#include "med3d/trainers/roi.h"
#include "med3d/trainers/train.h"
#include "test_util.h"

using namespace med3d;
using med3d::test::ScratchDir;

namespace {

Dataset liver_dataset(const Context& context, const std::string& folder) {
  SynthOptions o;
  o.num_cases = 4;
  o.shape = {32, 32, 32};
  o.seed = 17;
  o.anisotropic = false;
  o.random_orientation = false;
  return write_synthetic_dataset(context, folder, o);
}

trainers::SegTrainOptions stage_options(const std::string& data, const std::string& out) {
  trainers::SegTrainOptions o;
  o.model.arch = "resnet10";
  o.data = {data};
  o.out = out;
  o.batch_size = 2;
  o.epochs = 1;
  o.steps_per_epoch = 2;
  o.validation_fraction = 0.25;
  o.spacing = "none";
  o.lr = 0.01;
  o.seed = 4;
  o.overlays = 0;
  o.foreground_labels = {kSynthLiver};
  return o;
}

}  // namespace

TEST_CASE("liver: binarize_labels and the stage-2 region of interest", "[liver]") {
  Context context(Device::cpu(), 1);
  Tensor labels = context.zeros({10, 12, 14}, DType::i32);
  // Liver block [2,6) x [3,8) x [4,9) with a "kidney" voxel and a far-away stray liver voxel.
  for (int64_t d = 2; d < 6; ++d)
    for (int64_t h = 3; h < 8; ++h)
      for (int64_t w = 4; w < 9; ++w) labels.set<int32_t>({d, h, w}, 1);
  labels.set<int32_t>({9, 0, 0}, 1);
  labels.set<int32_t>({5, 7, 9}, 2);
  const Tensor binary = trainers::binarize_labels(labels, {1});
  CHECK(binary.at<int32_t>({5, 7, 9}) == 0);
  CHECK(binary.at<int32_t>({2, 3, 4}) == 1);
  // The largest component's box grown by 3, clamped: [0,9) x [0,11) x [1,12).
  const auto box = trainers::roi_box(binary, 3);
  REQUIRE(box);
  CHECK(box->lo == data::Index3{0, 0, 1});
  CHECK(box->hi == data::Index3{9, 11, 12});
  CHECK_FALSE(trainers::roi_box(context.zeros({4, 4, 4}, DType::i32), 3));

  // crop_volume moves the affine's origin to the crop's first voxel.
  Volume v;
  v.data = labels;
  v.spacing = {2, 1, 0.5};
  v.affine = {2, 0, 0, 10, 0, 1, 0, 20, 0, 0, 0.5, 30, 0, 0, 0, 1};
  const Volume c = trainers::crop_volume(v, *box);
  CHECK(c.data.shape() == Shape{9, 11, 11});
  CHECK(c.affine[3] == 10);
  CHECK(c.affine[7] == 20);
  CHECK(c.affine[11] == 30.5);
  CHECK(c.data.at<int32_t>({2, 3, 3}) == 1);  // = labels[2, 3, 4]
}

TEST_CASE("liver: training cases are cropped with margins in [m, 2m], validation with m", "[liver]") {
  Context context(Device::cpu(), 1);
  ScratchDir dir;
  const Dataset d = liver_dataset(context, dir.path("ct"));
  PreprocessOptions prep;
  trainers::RunCaseOptions o;
  o.foreground_labels = {kSynthLiver};
  o.roi_margin = 2;
  for (const DatasetCase& c : d.cases) {
    const PreparedCase full = prepare_case(context, c, prep);
    const Tensor liver = trainers::largest_component(trainers::binarize_labels(full.label.data, {kSynthLiver}));
    const auto tight = trainers::bounding_box(liver);
    REQUIRE(tight);
    const Shape s = full.label.data.shape();
    o.random_margin = false;
    const PreparedCase fixed = trainers::prepare_for_run(context, c, prep, o);
    o.random_margin = true;
    o.seed = 9;
    const PreparedCase random = trainers::prepare_for_run(context, c, prep, o);
    const PreparedCase again = trainers::prepare_for_run(context, c, prep, o);
    for (int a = 0; a < 3; ++a) {
      const auto ua = static_cast<std::size_t>(a);
      const int64_t tight_extent = tight->hi[ua] - tight->lo[ua];
      CHECK(fixed.label.data.shape()[a] == tight_extent + std::min<int64_t>(tight->lo[ua], 2) +
                                                std::min<int64_t>(s[a] - tight->hi[ua], 2));
      const int64_t extent = random.label.data.shape()[a];
      CHECK(extent >= tight_extent + std::min<int64_t>(tight->lo[ua], 2) + std::min<int64_t>(s[a] - tight->hi[ua], 2));
      CHECK(extent <= tight_extent + std::min<int64_t>(tight->lo[ua], 4) + std::min<int64_t>(s[a] - tight->hi[ua], 4));
      CHECK(again.label.data.shape()[a] == extent);
    }
    // Every liver voxel of the case is inside the crop, and only labels 0/1 remain.
    int64_t inside = 0;
    for (int32_t v : fixed.label.data.to_vector<int32_t>()) inside += v;
    int64_t total = 0;
    for (int32_t v : liver.to_vector<int32_t>()) total += v;
    CHECK(inside == total);
  }
}

TEST_CASE("liver: the cascade writes stage 2 inside the coarse box and background elsewhere", "[liver]") {
  Context context(Device::cpu(), 1);
  ScratchDir dir;
  const Dataset d = liver_dataset(context, dir.path("ct"));

  trainers::SegTrainOptions s1 = stage_options(dir.path("ct"), dir.path("stage1"));
  s1.model.head = "coarse";
  s1.crop = "resize";
  s1.patch = {32, 32, 32};
  trainers::train_segmentation(context, s1);
  trainers::SegTrainOptions s2 = stage_options(dir.path("ct"), dir.path("stage2"));
  s2.model.head = "denseaspp";
  s2.roi_margin = 3;
  s2.patch = {16, 16, 16};
  trainers::train_segmentation(context, s2);

  trainers::LoadedModel stage1 = trainers::load_model(context, dir.path("stage1/best.safetensors"));
  trainers::LoadedModel stage2 = trainers::load_model(context, dir.path("stage2/best.safetensors"));
  CHECK(stage1.meta.crop == "resize");
  CHECK(stage2.meta.roi_margin == 3);
  CHECK(stage2.meta.foreground_labels == std::vector<int32_t>{kSynthLiver});

  // Oracle stage 1: the true liver; stage 2's output must sit exactly in the grown box.
  const DatasetCase& c = d.cases[0];
  const PreparedCase prepared = prepare_case(context, c, stage1.meta.preprocess[0]);
  const Tensor truth = trainers::binarize_labels(prepared.label.data, {kSynthLiver});
  std::optional<data::Box3> box;
  const Tensor fine = trainers::liver_fine_stage(context, stage2, prepared, truth, {}, &box);
  REQUIRE(box);
  const data::Box3 expected_box = *trainers::roi_box(truth, 3);
  CHECK(box->lo == expected_box.lo);
  CHECK(box->hi == expected_box.hi);
  trainers::PredictOptions predict;
  predict.patch = {16, 16, 16};
  const Tensor expected_inside = trainers::argmax_labels(
      trainers::predict_probabilities(context, stage2.model, 0, trainers::crop_box(prepared.image.data, *box), predict));
  CHECK(trainers::crop_box(fine, *box).to_vector<int32_t>() == expected_inside.to_vector<int32_t>());
  const std::vector<int32_t> all = fine.to_vector<int32_t>();
  int64_t inside_sum = 0, all_sum = 0;
  for (int32_t v : expected_inside.to_vector<int32_t>()) inside_sum += v;
  for (int32_t v : all) all_sum += v;
  CHECK(all_sum == inside_sum);  // nothing outside the box

  // The whole cascade on the file: the input's grid, labels 0/1 only.
  const Volume reference = read_nifti(context, c.image_path);
  const trainers::LiverResult r = trainers::liver_cascade(context, stage1, stage2, c.image_path, reference);
  CHECK(r.labels.shape() == reference.data.shape());
  const std::vector<int32_t> values = r.labels.to_vector<int32_t>();
  const std::set<int32_t> distinct(values.begin(), values.end());
  for (int32_t v : distinct) CHECK((v == 0 || v == 1));
  CHECK(r.coarse.shape() == prepared.image.data.shape());

  // A stage 2 given where stage 1 belongs is refused with a clear message.
  CHECK_THROWS_WITH(trainers::liver_cascade(context, stage2, stage2, c.image_path, reference),
                    Catch::Contains("--crop resize"));
}
