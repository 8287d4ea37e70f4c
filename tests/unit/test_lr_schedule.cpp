// Learning-rate schedules: golden comparison with torch.optim.lr_scheduler, save/restore, and
// the errors for bad settings and mismatched state.
#include <cmath>
#include <memory>

#include "test_util.h"

using namespace med3d;

namespace {

constexpr int kEpochs = 12;

// Two groups as in tests/golden/gen_optim.py: "base" at lr 0.01 and "new" at 1.0.
struct TwoGroups {
  Context context;
  Tensor a = test::random_leaf(context, {1}, DType::f32);
  Tensor b = test::random_leaf(context, {1}, DType::f32);
  Sgd optimizer{{ParamGroup{"base", {{"a", a}}, 0.01, {}}, ParamGroup{"new", {{"b", b}}, 1.0, {}}}};
};

// The schedules of gen_optim.py, by name.
std::unique_ptr<LrSchedule> make_schedule(const std::string& name, Optimizer& optimizer) {
  if (name == "step") return std::make_unique<StepLr>(optimizer, 3, 0.5);
  if (name == "exponential") return std::make_unique<ExponentialLr>(optimizer, 0.9);
  if (name == "poly") return std::make_unique<PolyLr>(optimizer, 10, 0.9);
  if (name == "cosine") return std::make_unique<CosineLr>(optimizer, 8, 1e-4);
  if (name == "plateau_min")
    return std::make_unique<ReduceLrOnPlateau>(
        optimizer, PlateauOptions{.factor = 0.5, .patience = 1, .threshold = 1e-2, .cooldown = 1,
                                  .min_lr = 0.004});
  if (name == "plateau_max")
    return std::make_unique<ReduceLrOnPlateau>(
        optimizer, PlateauOptions{.mode = PlateauOptions::Mode::max,
                                  .factor = 0.1,
                                  .patience = 2,
                                  .threshold = 0.02,
                                  .threshold_mode = PlateauOptions::Threshold::absolute});
  FAIL("unknown schedule " << name);
  return nullptr;
}

const std::vector<std::string> kSchedules = {"step",   "exponential", "poly",
                                             "cosine", "plateau_min", "plateau_max"};

// The plateau schedules' metric of `epoch` from the fixture; epoch schedules get none.
std::optional<double> metric_of(const Checkpoint& g, const std::string& name, int epoch) {
  if (!name.starts_with("plateau")) return std::nullopt;
  return g.at(name + ".metrics").to_vector<double>()[static_cast<std::size_t>(epoch)];
}

void step(LrSchedule& schedule, std::optional<double> metric) {
  if (metric) schedule.step(*metric);
  else schedule.step();
}

}  // namespace

TEST_CASE("lr_schedule: golden comparison with torch.optim.lr_scheduler over 12 epochs",
          "[lr_schedule][golden]") {
  Context context;
  const Checkpoint g = test::load_golden(context, "lr_schedule");
  for (const std::string& name : kSchedules) {
    INFO(name);
    TwoGroups setup;
    auto schedule = make_schedule(name, setup.optimizer);
    const Tensor& expected = g.at(name + ".lrs");  // [13, 2]: before any step, then after each
    REQUIRE(expected.shape() == Shape{kEpochs + 1, 2});
    for (int epoch = 0; epoch <= kEpochs; ++epoch) {
      if (epoch > 0) step(*schedule, metric_of(g, name, epoch - 1));
      REQUIRE(schedule->epoch() == epoch);
      for (int group = 0; group < 2; ++group) {
        INFO("epoch " << epoch << ", group " << group);
        const double want = expected.at<double>({epoch, group});
        // PyTorch updates most schedules recursively; the closed forms agree to rounding.
        REQUIRE(std::abs(schedule->lr(group) - want) <= 1e-12 * schedule->base_lr(group));
        REQUIRE(setup.optimizer.groups()[static_cast<std::size_t>(group)].lr == schedule->lr(group));
      }
    }
    REQUIRE(schedule->base_lr(0) == 0.01);
    REQUIRE(schedule->base_lr(1) == 1.0);
  }
}

TEST_CASE("lr_schedule: the plateau schedule needs a metric, the others ignore one",
          "[lr_schedule]") {
  TwoGroups setup;
  ReduceLrOnPlateau plateau(setup.optimizer, {.patience = 0});
  REQUIRE_THROWS_WITH(plateau.step(), Catch::Contains("needs the monitored metric"));
  REQUIRE(plateau.epoch() == 0);
  plateau.step(1.0);
  REQUIRE(plateau.best() == 1.0);
  plateau.step(2.0);  // worse, patience 0: the lr drops at once
  REQUIRE(plateau.lr(0) == 0.01 * 0.1);
  REQUIRE(plateau.bad_epochs() == 0);

  // Reductions smaller than eps (1e-8) are skipped, group by group, as in PyTorch.
  TwoGroups tiny;
  tiny.optimizer.groups()[0].lr = 1.5e-8;
  ReduceLrOnPlateau small_steps(tiny.optimizer, {.factor = 0.5, .patience = 0});
  small_steps.step(1.0);
  small_steps.step(1.0);
  REQUIRE(small_steps.lr(0) == 1.5e-8);
  REQUIRE(small_steps.lr(1) == 0.5);

  TwoGroups other;
  StepLr step_lr(other.optimizer, 1, 0.5);
  step_lr.step(123.0);
  REQUIRE(step_lr.lr(1) == 0.5);
  REQUIRE(step_lr.kind() == "StepLr");
  REQUIRE_THROWS_WITH(step_lr.lr(2), Catch::Contains("group 2 out of range [0, 2)"));
}

TEST_CASE("lr_schedule: save and restore resume the same lr sequence exactly", "[lr_schedule]") {
  Context context;
  const Checkpoint g = test::load_golden(context, "lr_schedule");
  for (const std::string& name : kSchedules) {
    INFO(name);
    TwoGroups straight;
    auto reference = make_schedule(name, straight.optimizer);
    std::vector<std::vector<double>> expected;
    for (int epoch = 0; epoch < kEpochs; ++epoch) {
      step(*reference, metric_of(g, name, epoch));
      expected.push_back({reference->lr(0), reference->lr(1)});
    }

    TwoGroups first;
    auto schedule = make_schedule(name, first.optimizer);
    for (int epoch = 0; epoch < 5; ++epoch) step(*schedule, metric_of(g, name, epoch));
    NamedTensors tensors;
    std::map<std::string, std::string> metadata;
    first.optimizer.save_state(tensors, metadata);
    schedule->save_state(tensors, metadata);
    REQUIRE(metadata.at("schedule.kind") == schedule->kind());

    // A schedule of the same kind built with other settings takes over the saved ones.
    TwoGroups second;
    std::unique_ptr<LrSchedule> resumed;
    if (name == "step") resumed = std::make_unique<StepLr>(second.optimizer, 7, 0.9);
    else if (name == "exponential") resumed = std::make_unique<ExponentialLr>(second.optimizer, 0.1);
    else if (name == "poly") resumed = std::make_unique<PolyLr>(second.optimizer, 100);
    else if (name == "cosine") resumed = std::make_unique<CosineLr>(second.optimizer, 2);
    else resumed = std::make_unique<ReduceLrOnPlateau>(second.optimizer);
    second.optimizer.load_state({tensors, metadata});
    resumed->load_state({tensors, metadata});
    REQUIRE(resumed->epoch() == 5);
    for (int epoch = 5; epoch < kEpochs; ++epoch) {
      step(*resumed, metric_of(g, name, epoch));
      INFO("epoch " << epoch + 1);
      REQUIRE(resumed->lr(0) == expected[static_cast<std::size_t>(epoch)][0]);
      REQUIRE(resumed->lr(1) == expected[static_cast<std::size_t>(epoch)][1]);
    }
  }
}

TEST_CASE("lr_schedule: bad settings and mismatched state give clear errors", "[lr_schedule]") {
  TwoGroups setup;
  Optimizer& opt = setup.optimizer;
  REQUIRE_THROWS_WITH(StepLr(opt, 0), Catch::Contains("StepLr: step_size must be a whole number >= 1, got 0"));
  REQUIRE_THROWS_WITH(StepLr(opt, 2, -0.5), Catch::Contains("gamma must be a finite number >= 0"));
  REQUIRE_THROWS_WITH(ExponentialLr(opt, std::nan("")), Catch::Contains("ExponentialLr: gamma"));
  REQUIRE_THROWS_WITH(PolyLr(opt, 0), Catch::Contains("PolyLr: total_steps must be a whole number >= 1"));
  REQUIRE_THROWS_WITH(CosineLr(opt, 0), Catch::Contains("CosineLr: t_max must be a whole number >= 1"));
  REQUIRE_THROWS_WITH(CosineLr(opt, 5, -1.0), Catch::Contains("eta_min must be a finite number >= 0"));
  REQUIRE_THROWS_WITH(ReduceLrOnPlateau(opt, {.factor = 1.0}), Catch::Contains("factor must be in [0, 1)"));
  REQUIRE_THROWS_WITH(ReduceLrOnPlateau(opt, {.patience = -1}), Catch::Contains("patience must be a whole number >= 0"));
  REQUIRE_THROWS_WITH(ReduceLrOnPlateau(opt, {.cooldown = -2}), Catch::Contains("cooldown"));
  REQUIRE_THROWS_WITH(ReduceLrOnPlateau(opt, {.min_lr = -1}), Catch::Contains("min_lr"));

  StepLr step_lr(opt, 2);
  step_lr.step();
  NamedTensors tensors;
  std::map<std::string, std::string> metadata;
  step_lr.save_state(tensors, metadata);
  const Checkpoint saved{tensors, metadata};

  SECTION("another kind") {
    CosineLr cosine(opt, 4);
    REQUIRE_THROWS_WITH(cosine.load_state(saved), Catch::Contains("holds a StepLr schedule") &&
                                                       Catch::Contains("this schedule is a CosineLr"));
  }
  SECTION("another number of groups") {
    Context context;
    Tensor c = test::random_leaf(context, {1}, DType::f32);
    Sgd single({ParamGroup{"only", {{"c", c}}, 0.1, {}}});
    StepLr other(single, 2);
    REQUIRE_THROWS_WITH(other.load_state(saved),
                        Catch::Contains("'schedule.base_lrs' is Tensor(f64, cpu, [2]), expected f64 [1]"));
    REQUIRE(other.epoch() == 0);
  }
  SECTION("missing and unexpected entries") {
    Checkpoint partial = saved;
    std::erase_if(partial.tensors, [](const auto& e) { return e.first == "schedule.gamma"; });
    StepLr other(opt, 2);
    REQUIRE_THROWS_WITH(other.load_state(partial), Catch::Contains("no tensor 'schedule.gamma'"));
    Checkpoint extra = saved;
    extra.tensors.emplace_back("schedule.warmup", tensors.front().second);
    REQUIRE_THROWS_WITH(other.load_state(extra),
                        Catch::Contains("holds StepLr schedule state this one lacks: ['schedule.warmup']"));
    REQUIRE_THROWS_WITH(other.load_state(saved, "sched."), Catch::Contains("no metadata 'sched.kind'"));
  }
  SECTION("invalid saved values") {
    Checkpoint bad = saved;
    for (auto& [name, tensor] : bad.tensors)
      if (name == "schedule.step_size") tensor = setup.context.full({}, 2.5, DType::f64);
    StepLr other(opt, 3);
    REQUIRE_THROWS_WITH(other.load_state(bad), Catch::Contains("step_size must be a whole number >= 1, got 2.5"));
    REQUIRE(other.epoch() == 0);
  }
  SECTION("groups added to the optimiser after the schedule was built") {
    opt.groups().push_back(ParamGroup{"late", {}, 0.1, 0.0});
    REQUIRE_THROWS_WITH(step_lr.step(), Catch::Contains("had 2 parameter groups when the schedule was built"));
    opt.groups().pop_back();
  }
}
