// Classification training (train_classification) on tiny synthetic nodule datasets: the run
// files, transfer lr groups, resume equivalence, validation scores and input errors.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "med3d/data/synth.h"
#include "med3d/models/weights.h"
#include "med3d/trainers/classify.h"
#include "med3d/trainers/inference.h"
#include "med3d/trainers/run_files.h"
#include "test_util.h"

using namespace med3d;
using med3d::test::ScratchDir;
using med3d::test::require_identical_files;
namespace fs = std::filesystem;

namespace {

Dataset nodule_dataset(const Context& context, const std::string& folder, int cases, uint64_t seed) {
  SynthOptions o;
  o.num_cases = cases;
  o.shape = {20, 20, 20};
  o.seed = seed;
  o.anisotropic = false;
  o.random_orientation = false;
  return write_synthetic_nodule_dataset(context, folder, o);
}

trainers::SegTrainOptions cls_options(const std::string& data, const std::string& out) {
  trainers::SegTrainOptions o;
  o.model.arch = "resnet10";
  o.model.head = "classifier";
  o.data = {data};
  o.out = out;
  o.patch = {16, 16, 16};
  o.batch_size = 2;
  o.epochs = 2;
  o.steps_per_epoch = 3;
  o.validation_fraction = 0.4;
  o.checkpoint_every = 2;
  o.spacing = "none";
  o.lr = 0.01;
  o.workers = 2;
  o.seed = 5;
  return o;
}


nlohmann::json read_json(const std::string& path) {
  nlohmann::json j;
  std::ifstream(path) >> j;
  return j;
}

void write_json(const std::string& path, const nlohmann::json& j) { std::ofstream(path) << j.dump(1); }

}  // namespace

TEST_CASE("cls: synthetic nodule cases alternate classes and only class 1 holds the bright sphere", "[cls]") {
  Context context(Device::cpu(), 1);
  SynthOptions o;
  o.shape = {24, 28, 32};
  o.seed = 3;
  o.anisotropic = false;
  const SynthCase base0 = make_synthetic_case(context, o, 0), base1 = make_synthetic_case(context, o, 1);
  const SynthClassCase c0 = make_synthetic_nodule_case(context, o, 0), c1 = make_synthetic_nodule_case(context, o, 1);
  CHECK(c0.label == 0);
  CHECK(c1.label == 1);
  CHECK(std::memcmp(c0.image.data.raw_data(), base0.image.data.raw_data(), c0.image.data.nbytes()) == 0);
  // Case 1 differs from its phantom exactly inside the sphere, painted at 1000 HU plus noise (sd 15).
  const float* a = base1.image.data.data<float>();
  const float* b = c1.image.data.data<float>();
  int64_t changed = 0;
  double sum = 0;
  for (int64_t i = 0; i < c1.image.data.numel(); ++i)
    if (a[i] != b[i]) {
      ++changed;
      sum += b[i];
    }
  // Radius 20-30% of the smallest half field of view (12 mm at 1 mm voxels): 2.4-3.6 mm, a
  // sphere of 58-195 voxels.
  CHECK(changed >= 40);
  CHECK(changed <= 240);
  CHECK(sum / static_cast<double>(changed) == Approx(1000).margin(5));
}

TEST_CASE("cls: validation scores follow the documented rules", "[cls]") {
  // p1 = 0.1, 0.6, 0.7, 0.8 for truth 0, 1, 0, 1: argmax predicts 0, 1, 1, 1 (accuracy 3/4);
  // positive-negative pairs ranked right: (0.6, 0.1), (0.8, 0.1), (0.8, 0.7) of 4 -> AUC 3/4.
  const trainers::ClassificationScores s =
      trainers::score_classification({{0.9, 0.1}, {0.4, 0.6}, {0.3, 0.7}, {0.2, 0.8}}, {0, 1, 0, 1});
  CHECK(s.accuracy == 0.75);
  CHECK(s.auc == 0.75);
  CHECK(s.score == 0.75);
  // One class only: no AUC; the accuracy selects.
  const trainers::ClassificationScores one = trainers::score_classification({{0.9, 0.1}, {0.4, 0.6}}, {0, 0});
  CHECK(std::isnan(one.auc));
  CHECK(one.score == 0.5);
  // Three classes: one-vs-rest AUC reported, accuracy selects.
  const trainers::ClassificationScores three =
      trainers::score_classification({{0.8, 0.1, 0.1}, {0.1, 0.8, 0.1}, {0.5, 0.1, 0.4}}, {0, 1, 2});
  CHECK(three.accuracy == Approx(2.0 / 3.0));
  CHECK(three.score == three.accuracy);
  CHECK(std::isfinite(three.auc));
  // Selection: AUC first, equal AUC goes to the higher accuracy, full ties to the earlier epoch.
  CHECK(trainers::is_better(s, -1, 0, 0));
  CHECK(trainers::is_better(s, 2, 1.0, 0.7));
  CHECK_FALSE(trainers::is_better(s, 2, 0.5, 0.8));
  CHECK(trainers::is_better(s, 2, 0.5, 0.75));
  CHECK_FALSE(trainers::is_better(s, 2, 0.75, 0.75));
  CHECK(trainers::is_better(three, 2, 0.5, 0.9));
}

TEST_CASE("cls: a tiny ResNet-10 classifier trains, writes its run files and transfers with two lr groups",
          "[cls]") {
  Context context(Device::cpu(), 1);
  ScratchDir dir;
  nodule_dataset(context, dir.path("nod"), 6, 7);
  const trainers::TrainSummary s = trainers::train_classification(context, cls_options(dir.path("nod"), dir.path("run")));
  REQUIRE(s.steps == 6);
  CHECK(s.best_epoch >= 0);
  CHECK(std::isfinite(s.best_accuracy));
  for (const char* name : {"split.json", "checkpoint.safetensors", "best.safetensors", "encoder.safetensors",
                           "metrics.csv", "metrics.jsonl", "curves.png"})
    CHECK(fs::exists(dir.path(std::string("run/") + name)));
  CHECK_FALSE(fs::exists(dir.path("run/overlays")));
  std::ifstream csv(dir.path("run/metrics.csv"));
  std::string header;
  std::getline(csv, header);
  CHECK(header == "epoch,step,train_loss,lr,val_accuracy,val_auc");
  int rows = 0;
  for (std::string line; std::getline(csv, line);) ++rows;
  CHECK(rows == 2);
  const auto split = read_json(dir.path("run/split.json"));
  REQUIRE(split["validation"].size() == 2);
  for (const auto& c : split["validation"]) CHECK((c["class"] == 0 || c["class"] == 1));

  trainers::LoadedModel best = trainers::load_model(context, dir.path("run/best.safetensors"));
  CHECK(best.meta.spec.head == "classifier");
  CHECK(best.meta.spec.classes == std::vector<int64_t>{2});
  CHECK(best.meta.labels.at(0).at(1) == "nodule");
  const PreparedCase image =
      trainers::prepare_image(context, dir.path("nod/imagesTr/synthetic_001.nii"), best.meta.preprocess.at(0));
  const std::vector<double> p = trainers::classify_probabilities(context, best.model, image.image.data, best.meta.patch);
  REQUIRE(p.size() == 2);
  CHECK(p[0] + p[1] == Approx(1).margin(1e-6));
  const Checkpoint encoder = load_safetensors(context, dir.path("run/encoder.safetensors"));
  for (const auto& [name, tensor] : encoder.tensors) CHECK(is_encoder_key(name));

  // Transfer: the encoder at lr, the new fc at lr x new_layer_lr_scale.
  trainers::SegTrainOptions t = cls_options(dir.path("nod"), dir.path("transfer"));
  t.init = dir.path("run/encoder.safetensors");
  t.new_layer_lr_scale = 10;
  t.schedule = "constant";
  t.epochs = 1;
  t.steps_per_epoch = 1;
  t.validation_fraction = 0;
  Context ct(Device::cpu(), 2);
  trainers::train_classification(ct, t);
  const Checkpoint ckpt = load_safetensors(context, dir.path("transfer/checkpoint.safetensors"));
  CHECK(ckpt.at("optimizer.group.pretrained.lr").item<double>() == 0.01);
  CHECK(ckpt.at("optimizer.group.new.lr").item<double>() == Approx(0.1).epsilon(1e-12));
  const auto fresh = nlohmann::json::parse(ckpt.metadata.at("optimizer.group.new.params"));
  CHECK(fresh == nlohmann::json::array({"fc.weight", "fc.bias"}));
}

TEST_CASE("cls: a run stopped after 3 steps and resumed ends bit-identical to an uninterrupted run", "[cls]") {
  Context context(Device::cpu(), 1);
  ScratchDir dir;
  nodule_dataset(context, dir.path("nod"), 5, 13);
  Context ca(Device::cpu(), 5);
  const trainers::TrainSummary a = trainers::train_classification(ca, cls_options(dir.path("nod"), dir.path("a")));
  REQUIRE(a.steps == 6);

  trainers::SegTrainOptions ob = cls_options(dir.path("nod"), dir.path("b"));
  ob.stop_after_steps = 3;
  Context cb(Device::cpu(), 5);
  const trainers::TrainSummary b1 = trainers::train_classification(cb, ob);
  REQUIRE(b1.stopped_early);
  REQUIRE(b1.steps == 3);
  ob.stop_after_steps = 0;
  ob.resume = true;
  Context cb2(Device::cpu(), 5);
  const trainers::TrainSummary b2 = trainers::train_classification(cb2, ob);
  REQUIRE(b2.steps == 6);
  require_identical_files(context, dir.path("a/checkpoint.safetensors"), dir.path("b/checkpoint.safetensors"));
  require_identical_files(context, dir.path("a/best.safetensors"), dir.path("b/best.safetensors"));
  CHECK(a.best_score == b2.best_score);
  CHECK(a.best_epoch == b2.best_epoch);
  // NaN == NaN is false: compare the bits of what the resumed run restored from its checkpoint.
  CHECK(std::memcmp(&a.best_accuracy, &b2.best_accuracy, sizeof(double)) == 0);
  CHECK(std::memcmp(&a.best_auc, &b2.best_auc, sizeof(double)) == 0);
  std::ifstream jsonl(dir.path("b/metrics.jsonl"));
  int lines = 0;
  for (std::string line; std::getline(jsonl, line);) ++lines;
  CHECK(lines == 2);
}

TEST_CASE("cls: bad input fails before the first step and names the file", "[cls]") {
  Context context(Device::cpu(), 1);
  ScratchDir dir;
  const Dataset d = nodule_dataset(context, dir.path("nod"), 4, 31);
  const std::string json_path = dir.path("nod/dataset.json");
  nlohmann::json j = read_json(json_path);

  SECTION("a class id not declared in labels") {
    j["training"][2]["label"] = 2;
    write_json(json_path, j);
    REQUIRE_THROWS_WITH(trainers::train_classification(context, cls_options(dir.path("nod"), dir.path("run"))),
                        Catch::Contains("class 2") && Catch::Contains(d.cases[2].image_path) &&
                            Catch::Contains("\"labels\""));
    CHECK_FALSE(fs::exists(dir.path("run/checkpoint.safetensors")));
  }
  SECTION("a negative class id") {
    j["training"][1]["label"] = -1;
    write_json(json_path, j);
    REQUIRE_THROWS_WITH(load_msd_dataset(dir.path("nod")), Catch::Contains("class -1"));
  }
  SECTION("mixing class ids and label files") {
    j["training"][3]["label"] = "./labelsTr/x.nii";
    write_json(json_path, j);
    REQUIRE_THROWS_WITH(load_msd_dataset(dir.path("nod")),
                        Catch::Contains("[3]") && Catch::Contains(d.cases[3].image_path) &&
                            Catch::Contains("either segmentation"));
  }
  SECTION("classes with a gap") {
    j["labels"] = {{"0", "no nodule"}, {"2", "nodule"}};
    write_json(json_path, j);
    REQUIRE_THROWS_WITH(load_msd_dataset(dir.path("nod")), Catch::Contains("0..K-1") && Catch::Contains("class 1"));
  }
  SECTION("a missing image") {
    fs::remove(d.cases[1].image_path);
    REQUIRE_THROWS_WITH(trainers::train_classification(context, cls_options(dir.path("nod"), dir.path("run"))),
                        Catch::Contains(d.cases[1].image_path) && Catch::Contains("not found"));
  }
  SECTION("a classification dataset given to segmentation training, and the reverse") {
    trainers::SegTrainOptions o = cls_options(dir.path("nod"), dir.path("run"));
    o.model.head = "medicalnet";
    REQUIRE_THROWS_WITH(trainers::train_segmentation(context, o), Catch::Contains("--task cls"));
    SynthOptions so;
    so.num_cases = 2;
    so.shape = {16, 16, 16};
    write_synthetic_dataset(context, dir.path("seg"), so);
    REQUIRE_THROWS_WITH(trainers::train_classification(context, cls_options(dir.path("seg"), dir.path("run2"))),
                        Catch::Contains("--task seg") && Catch::Contains(dir.path("seg")));
  }
  SECTION("a segmentation head") {
    trainers::SegTrainOptions o = cls_options(dir.path("nod"), dir.path("run"));
    o.model.head = "lung";
    REQUIRE_THROWS_WITH(trainers::train_classification(context, o), Catch::Contains("head classifier"));
  }
}
