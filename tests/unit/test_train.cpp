// The training loop end to end on tiny synthetic datasets: resume equivalence, Med3D
// co-training and transfer, input checks before the first step, and the NaN stop.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "med3d/data/synth.h"
#include "med3d/models/weights.h"
#include "med3d/trainers/run_files.h"
#include "med3d/trainers/train.h"
#include "test_util.h"

using namespace med3d;
using med3d::test::ScratchDir;
using med3d::test::require_identical_files;
namespace fs = std::filesystem;

namespace {

Dataset tiny_dataset(const Context& context, const std::string& folder, SynthModality modality, int cases,
                     uint64_t seed) {
  SynthOptions o;
  o.num_cases = cases;
  o.shape = {20, 20, 20};
  o.modality = modality;
  o.seed = seed;
  o.anisotropic = false;
  o.random_orientation = false;
  return write_synthetic_dataset(context, folder, o);
}

trainers::SegTrainOptions tiny_options(const std::string& data, const std::string& out) {
  trainers::SegTrainOptions o;
  o.model.arch = "resnet10";
  o.model.head = "medicalnet";
  o.data = {data};
  o.out = out;
  o.patch = {16, 16, 16};
  o.batch_size = 2;
  o.epochs = 2;
  o.steps_per_epoch = 3;
  o.validation_fraction = 0.34;
  o.checkpoint_every = 2;
  o.spacing = "none";
  o.lr = 0.01;
  o.workers = 2;
  o.seed = 5;
  o.overlays = 1;
  return o;
}


}  // namespace

TEST_CASE("train: a run stopped after 4 steps and resumed ends bit-identical to an uninterrupted run",
          "[train]") {
  Context context(Device::cpu(), 1);
  ScratchDir dir;
  tiny_dataset(context, dir.path("ct"), SynthModality::ct, 3, 11);

  Context ca(Device::cpu(), 5);
  const trainers::TrainSummary a = trainers::train_segmentation(ca, tiny_options(dir.path("ct"), dir.path("a")));
  REQUIRE(a.steps == 6);
  REQUIRE_FALSE(a.stopped_early);

  trainers::SegTrainOptions ob = tiny_options(dir.path("ct"), dir.path("b"));
  ob.stop_after_steps = 3;  // not a checkpoint_every multiple: the stop saves its own checkpoint
  Context cb(Device::cpu(), 5);
  const trainers::TrainSummary b1 = trainers::train_segmentation(cb, ob);
  REQUIRE(b1.stopped_early);
  REQUIRE(b1.steps == 3);
  ob.stop_after_steps = 0;
  ob.resume = true;
  Context cb2(Device::cpu(), 5);
  const trainers::TrainSummary b2 = trainers::train_segmentation(cb2, ob);
  REQUIRE(b2.steps == 6);

  require_identical_files(context, dir.path("a/checkpoint.safetensors"), dir.path("b/checkpoint.safetensors"));
  require_identical_files(context, dir.path("a/best.safetensors"), dir.path("b/best.safetensors"));
  CHECK(a.best_score == b2.best_score);
  CHECK(a.best_epoch == b2.best_epoch);
  // The run folder holds what the header promises.
  for (const char* name : {"split.json", "checkpoint.safetensors", "best.safetensors", "encoder.safetensors",
                           "metrics.csv", "metrics.jsonl", "curves.png"})
    CHECK(fs::exists(dir.path(std::string("b/") + name)));
  CHECK(!fs::is_empty(dir.path("b/overlays")));
  // metrics.jsonl has one line per epoch even across the resume.
  std::ifstream jsonl(dir.path("b/metrics.jsonl"));
  int lines = 0;
  for (std::string line; std::getline(jsonl, line);) ++lines;
  CHECK(lines == 2);
}

TEST_CASE("pretrain: Med3D co-training on two domains, then its encoder transfers to a new head",
          "[train]") {
  Context context(Device::cpu(), 1);
  ScratchDir dir;
  tiny_dataset(context, dir.path("ct"), SynthModality::ct, 2, 21);
  tiny_dataset(context, dir.path("mri"), SynthModality::mri, 2, 22);
  trainers::SegTrainOptions o = tiny_options(dir.path("ct"), dir.path("pre"));
  o.data = {dir.path("ct"), dir.path("mri")};
  o.model.head = "med3d";
  o.validation_fraction = 0;
  o.epochs = 1;
  o.steps_per_epoch = 2;
  o.overlays = 0;
  const trainers::TrainSummary s = trainers::train_segmentation(context, o);
  REQUIRE(s.steps == 2);

  const Checkpoint encoder = load_safetensors(context, dir.path("pre/encoder.safetensors"));
  for (const auto& [name, tensor] : encoder.tensors) CHECK(is_encoder_key(name));
  const trainers::LoadedModel pre = trainers::load_model(context, dir.path("pre/best.safetensors"));
  CHECK(pre.meta.spec.classes == std::vector<int64_t>{3, 3});  // background, liver, kidney / MRI labels
  CHECK(pre.meta.domain_names.size() == 2);

  trainers::SegTrainOptions t = tiny_options(dir.path("ct"), dir.path("transfer"));
  t.init = dir.path("pre/encoder.safetensors");
  t.new_layer_lr_scale = 10;
  t.epochs = 1;
  t.steps_per_epoch = 1;
  t.overlays = 0;
  t.schedule = "constant";
  t.validation_fraction = 0;
  Context ct(Device::cpu(), 2);
  trainers::train_segmentation(ct, t);
  // Two optimiser groups: the loaded encoder at lr, the new head at lr x new_layer_lr_scale.
  const Checkpoint ckpt = load_safetensors(context, dir.path("transfer/checkpoint.safetensors"));
  CHECK(ckpt.at("optimizer.group.pretrained.lr").item<double>() == 0.01);
  CHECK(ckpt.at("optimizer.group.new.lr").item<double>() == Approx(0.1).epsilon(1e-12));
  const auto pretrained = nlohmann::json::parse(ckpt.metadata.at("optimizer.group.pretrained.params"));
  const auto fresh = nlohmann::json::parse(ckpt.metadata.at("optimizer.group.new.params"));
  REQUIRE(pretrained.size() > 10);
  for (const auto& name : pretrained) CHECK(is_encoder_key(name.get<std::string>()));
  REQUIRE(fresh.size() > 0);
  for (const auto& name : fresh) CHECK_FALSE(is_encoder_key(name.get<std::string>()));
  const trainers::LoadedModel transferred = trainers::load_model(context, dir.path("transfer/best.safetensors"));
  CHECK(transferred.meta.spec.head == "medicalnet");
}

TEST_CASE("train: bad input fails before the first step and names the file", "[train]") {
  Context context(Device::cpu(), 1);
  ScratchDir dir;
  const Dataset d = tiny_dataset(context, dir.path("ct"), SynthModality::ct, 3, 31);

  SECTION("a label value outside dataset.json's label set") {
    nlohmann::json j;
    std::ifstream(dir.path("ct/dataset.json")) >> j;
    j["labels"].erase("2");
    std::ofstream(dir.path("ct/dataset.json")) << j.dump();
    REQUIRE_THROWS_WITH(trainers::train_segmentation(context, tiny_options(dir.path("ct"), dir.path("run"))),
                        Catch::Contains("labelsTr") && Catch::Contains("2"));
    CHECK_FALSE(fs::exists(dir.path("run/checkpoint.safetensors")));
  }
  SECTION("a missing label file") {
    fs::remove(d.cases[1].label_path);
    REQUIRE_THROWS_WITH(trainers::train_segmentation(context, tiny_options(dir.path("ct"), dir.path("run"))),
                        Catch::Contains(d.cases[1].label_path) && Catch::Contains("not found"));
  }
  SECTION("an unknown architecture") {
    trainers::SegTrainOptions o = tiny_options(dir.path("ct"), dir.path("run"));
    o.model.arch = "resnet11";
    REQUIRE_THROWS_WITH(trainers::train_segmentation(context, o), Catch::Contains("resnet11"));
  }
  SECTION("a patch that is not a multiple of 8") {
    trainers::SegTrainOptions o = tiny_options(dir.path("ct"), dir.path("run"));
    o.patch = {16, 12, 16};
    REQUIRE_THROWS_WITH(trainers::train_segmentation(context, o), Catch::Contains("multiples of 8"));
  }
}

TEST_CASE("train: a diverging loss stops the run and keeps the last good checkpoint", "[train]") {
  Context context(Device::cpu(), 1);
  ScratchDir dir;
  tiny_dataset(context, dir.path("ct"), SynthModality::ct, 3, 41);
  trainers::SegTrainOptions o = tiny_options(dir.path("ct"), dir.path("run"));
  o.lr = 1e30;
  o.momentum = 0;
  o.schedule = "constant";
  o.checkpoint_every = 1;
  o.epochs = 5;
  // Either the loss or the weights turn non-finite first; both stop the run the same way.
  REQUIRE_THROWS_WITH(trainers::train_segmentation(context, o),
                      (Catch::Contains("the loss is") || Catch::Contains("diverged")) &&
                          Catch::Contains("checkpoint.safetensors"));
  // The checkpoint on disk is a complete earlier state that resumes.
  const Checkpoint ckpt = load_safetensors(context, dir.path("run/checkpoint.safetensors"));
  const int64_t step = std::stoll(ckpt.metadata.at("train.step"));
  CHECK(step >= 1);
  for (const auto& [name, tensor] : ckpt.tensors) {
    if (tensor.dtype() != DType::f32) continue;
    for (float v : tensor.to_vector<float>()) REQUIRE(std::isfinite(v));
  }
}
