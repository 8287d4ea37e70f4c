// Optimisers: golden comparison with torch.optim, save/restore through a real safetensors file,
// the parallel loop, and the errors for bad parameters, gradients and checkpoints.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>

#include "test_util.h"

using namespace med3d;

namespace {

constexpr int kSteps = 5;

// Row `i` of a stacked fixture tensor (steps along axis 0), converted to `dtype`.
Tensor row(const Tensor& stacked, int64_t i, DType dtype) {
  const std::vector<double> all = stacked.to_vector<double>();
  const int64_t size = stacked.numel() / stacked.dim(0);
  std::vector<int64_t> extents(stacked.shape().begin() + 1, stacked.shape().end());
  const std::vector<double> values(all.begin() + i * size, all.begin() + (i + 1) * size);
  return stacked.context().from_vector<double>(Shape(std::span<const int64_t>(extents)), values).to(dtype);
}

Tensor leaf(const Tensor& values, DType dtype) {
  Tensor t = values.to(dtype).clone();
  t.set_requires_grad(true);
  return t;
}

// The two groups of tests/golden/gen_optim.py: "base" at lr 0.01, "new" at 100x.
std::vector<ParamGroup> two_groups(const Tensor& p0, const Tensor& p1) {
  return {ParamGroup{"base", {{"p0", p0}}, 0.01, std::nullopt},
          ParamGroup{"new", {{"p1", p1}}, 1.0, std::nullopt}};
}

// The optimiser configurations of gen_optim.py, by name.
std::unique_ptr<Optimizer> make_optimizer(const std::string& config, std::vector<ParamGroup> groups) {
  if (config == "sgd") return std::make_unique<Sgd>(std::move(groups));
  if (config == "sgd_momentum")
    return std::make_unique<Sgd>(std::move(groups), SgdOptions{.momentum = 0.9, .weight_decay = 1e-3});
  if (config == "sgd_nesterov")
    return std::make_unique<Sgd>(std::move(groups),
                                 SgdOptions{.momentum = 0.9, .weight_decay = 1e-3, .nesterov = true});
  if (config == "sgd_dampening")
    return std::make_unique<Sgd>(std::move(groups), SgdOptions{.momentum = 0.8, .dampening = 0.3});
  if (config == "adam")
    return std::make_unique<Adam>(std::move(groups),
                                  AdamOptions{.beta1 = 0.8, .beta2 = 0.99, .weight_decay = 1e-2});
  if (config == "adamw") {
    groups[1].weight_decay = 0.1;
    AdamOptions options = AdamW::default_options();
    options.beta1 = 0.85;
    options.beta2 = 0.995;
    options.eps = 1e-6;
    return std::make_unique<AdamW>(std::move(groups), options);
  }
  FAIL("unknown configuration " << config);
  return nullptr;
}

const std::vector<std::string> kConfigs = {"sgd",  "sgd_momentum", "sgd_nesterov", "sgd_dampening",
                                           "adam", "adamw"};

// Sets the fixture's gradients of `step` (none where has_grad is 0).
void set_gradients(const Checkpoint& g, int step, Tensor& p0, Tensor& p1) {
  const Tensor& has_grad = g.at("has_grad");
  p0.set_grad(has_grad.at<int>({step, 0}) ? row(g.at("g0"), step, p0.dtype()) : Tensor());
  p1.set_grad(has_grad.at<int>({step, 1}) ? row(g.at("g1"), step, p1.dtype()) : Tensor());
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

std::string temp_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("med3d_optim_" + std::to_string(::getpid()) + "_" + name + ".safetensors"))
      .string();
}

}  // namespace

TEST_CASE("optim: golden comparison with torch.optim over five steps", "[optim][golden]") {
  Context context;
  const Checkpoint g = test::load_golden(context, "optim");
  for (const DType dtype : {DType::f64, DType::f32}) {
    // f64 follows PyTorch's f64 run to rounding; f32 to the golden tolerance.
    const double tolerance = dtype == DType::f64 ? 1e-12 : test::kGoldenTolerance;
    for (const std::string& config : kConfigs) {
      INFO(config << " in " << dtype_name(dtype));
      Tensor p0 = leaf(g.at("p0"), dtype);
      Tensor p1 = leaf(g.at("p1"), dtype);
      auto optimizer = make_optimizer(config, two_groups(p0, p1));
      for (int step = 0; step < kSteps; ++step) {
        INFO("step " << step + 1);
        const Tensor before = p1.detach().clone();
        set_gradients(g, step, p0, p1);
        optimizer->step();
        test::require_close(p0, row(g.at(config + ".p0"), step, dtype), tolerance, "p0");
        test::require_close(p1, row(g.at(config + ".p1"), step, dtype), tolerance, "p1");
        if (!p1.grad().defined()) REQUIRE(same_bits(p1, before));  // skipped, untouched
      }
      // p1 had no gradient at step 3: its step count lags, which Adam's bias correction sees.
      REQUIRE(optimizer->step_count("p0") == 5);
      REQUIRE(optimizer->step_count("p1") == 4);
      const bool momentum = config != "sgd";
      const bool adam = config.starts_with("adam");
      REQUIRE(optimizer->buffer("p0", "momentum_buffer").defined() == (momentum && !adam));
      REQUIRE(optimizer->buffer("p0", "exp_avg").defined() == adam);
      REQUIRE(optimizer->buffer("p1", "exp_avg_sq").defined() == adam);
    }
  }
}

TEST_CASE("optim: weight decay defaults and per-group overrides", "[optim]") {
  Context context;
  Tensor a = test::random_leaf(context, {3}, DType::f32);
  Tensor b = test::random_leaf(context, {3}, DType::f32);
  auto groups = [&] { return two_groups(a, b); };
  REQUIRE(AdamW(groups()).groups()[0].weight_decay == 1e-2);  // PyTorch's AdamW default
  REQUIRE(Adam(groups()).groups()[0].weight_decay == 0);
  REQUIRE(Sgd(groups(), {.weight_decay = 1e-3}).groups()[1].weight_decay == 1e-3);
  auto overridden = groups();
  overridden[1].weight_decay = 0;
  const Sgd sgd(overridden, {.momentum = 0.9, .weight_decay = 1e-3});
  REQUIRE(sgd.groups()[0].weight_decay == 1e-3);
  REQUIRE(sgd.groups()[1].weight_decay == 0);
  REQUIRE(sgd.type() == "SGD");
  REQUIRE(AdamW(groups()).type() == "AdamW");
}

TEST_CASE("optim: zero_grad drops every gradient and step skips parameters without one", "[optim]") {
  Context context;
  Tensor a = test::random_leaf(context, {4}, DType::f32);
  Tensor b = test::random_leaf(context, {2}, DType::f32);
  Adam adam(two_groups(a, b));
  backward(sum(mul(a, a)) + sum(b));
  REQUIRE(a.grad().defined());
  adam.zero_grad();
  REQUIRE_FALSE(a.grad().defined());
  REQUIRE_FALSE(b.grad().defined());
  const std::vector<float> before = a.to_vector<float>();
  adam.step();  // nothing to do
  REQUIRE(a.to_vector<float>() == before);
  REQUIRE(adam.step_count("p0") == 0);
  REQUIRE_FALSE(adam.buffer("p0", "exp_avg").defined());
  REQUIRE_THROWS_WITH(adam.step_count("p9"), Catch::Contains("no parameter 'p9'"));

  // The update is not recorded: the tape stays empty and the parameter stays a leaf.
  backward(sum(mul(a, a)));
  adam.step();
  REQUIRE(context.tape().size() == 0);
  REQUIRE(a.is_leaf());
  REQUIRE(a.to_vector<float>() != before);
}

TEST_CASE("optim: large parameters take the parallel loop with the same results", "[optim]") {
  // A 100k-element parameter that repeats a small one 10000 times must update exactly like it.
  Context context;
  const int64_t repeats = 10000;
  Tensor small = test::random_leaf(context, {10}, DType::f32);
  Tensor small_grad = context.randn({10});
  std::vector<float> big_values, big_grads;
  for (int64_t r = 0; r < repeats; ++r) {
    for (float v : small.to_vector<float>()) big_values.push_back(v);
    for (float v : small_grad.to_vector<float>()) big_grads.push_back(v);
  }
  Tensor big = context.from_vector<float>({repeats * 10}, big_values);
  big.set_requires_grad(true);
  for (const std::string& config : kConfigs) {
    INFO(config);
    Tensor s = small.detach().clone().set_requires_grad(true);
    Tensor l = big.detach().clone().set_requires_grad(true);
    auto optimizer = make_optimizer(config, two_groups(s, l));
    optimizer->groups()[1].lr = optimizer->groups()[0].lr;
    optimizer->groups()[1].weight_decay = optimizer->groups()[0].weight_decay;
    for (int step = 0; step < 3; ++step) {
      s.set_grad(small_grad);
      l.set_grad(context.from_vector<float>({repeats * 10}, big_grads));
      optimizer->step();
    }
    const std::vector<float> expected = s.to_vector<float>();
    const std::vector<float> actual = l.to_vector<float>();
    for (std::size_t i = 0; i < actual.size(); ++i) REQUIRE(actual[i] == expected[i % 10]);
  }
}

TEST_CASE("optim: save to a file, restore in a new Context and resume bit for bit", "[optim]") {
  const std::vector<std::pair<std::string, std::string>> runs = {
      {"sgd_momentum", "step"}, {"sgd_nesterov", "poly"}, {"sgd_dampening", "exponential"},
      {"adam", "cosine"},       {"adamw", "plateau"}};
  const std::vector<double> metrics = {1.0, 0.9, 0.95, 0.97, 0.99};
  auto make_schedule = [](const std::string& kind, Optimizer& opt) -> std::unique_ptr<LrSchedule> {
    if (kind == "step") return std::make_unique<StepLr>(opt, 2, 0.5);
    if (kind == "poly") return std::make_unique<PolyLr>(opt, 4);
    if (kind == "exponential") return std::make_unique<ExponentialLr>(opt, 0.8);
    if (kind == "cosine") return std::make_unique<CosineLr>(opt, 3, 1e-3);
    return std::make_unique<ReduceLrOnPlateau>(opt, PlateauOptions{.factor = 0.5, .patience = 1});
  };
  for (const DType dtype : {DType::f32, DType::f64}) {
    for (const auto& [config, kind] : runs) {
      INFO(config << " with " << kind << " in " << dtype_name(dtype));
      Context context;
      const Checkpoint g = test::load_golden(context, "optim");
      auto run_steps = [&](Optimizer& opt, LrSchedule& schedule, Tensor& p0, Tensor& p1, int from,
                           int to) {
        for (int step = from; step < to; ++step) {
          set_gradients(g, step, p0, p1);
          opt.step();
          schedule.step(metrics[static_cast<std::size_t>(step)]);
        }
      };

      // Uninterrupted.
      Tensor a0 = leaf(g.at("p0"), dtype), a1 = leaf(g.at("p1"), dtype);
      auto straight = make_optimizer(config, two_groups(a0, a1));
      auto straight_schedule = make_schedule(kind, *straight);
      run_steps(*straight, *straight_schedule, a0, a1, 0, kSteps);

      // Three steps, then everything goes to a file.
      const std::string path = temp_file(config + "_" + kind);
      {
        Tensor b0 = leaf(g.at("p0"), dtype), b1 = leaf(g.at("p1"), dtype);
        auto first = make_optimizer(config, two_groups(b0, b1));
        auto first_schedule = make_schedule(kind, *first);
        run_steps(*first, *first_schedule, b0, b1, 0, 3);
        NamedTensors tensors = {{"p0", b0}, {"p1", b1}};
        std::map<std::string, std::string> metadata;
        first->save_state(tensors, metadata);
        first_schedule->save_state(tensors, metadata);
        save_safetensors(path, tensors, metadata);
      }

      // A new Context, parameters from the file, an optimiser and schedule built with other
      // settings: load_state must bring back all of it.
      Context resumed;
      const Checkpoint file = load_safetensors(resumed, path);
      std::filesystem::remove(path);
      Tensor c0 = leaf(file.at("p0"), dtype), c1 = leaf(file.at("p1"), dtype);
      std::vector<ParamGroup> groups = two_groups(c0, c1);
      groups[0].lr = 0.5;
      std::unique_ptr<Optimizer> second;
      if (config.starts_with("sgd")) second = std::make_unique<Sgd>(groups);
      else if (config == "adam") second = std::make_unique<Adam>(groups, AdamOptions{.beta1 = 0.5});
      else second = std::make_unique<AdamW>(groups);
      auto second_schedule = make_schedule(kind, *second);
      second->load_state(file);
      second_schedule->load_state(file);
      REQUIRE(second_schedule->epoch() == 3);
      run_steps(*second, *second_schedule, c0, c1, 3, kSteps);

      REQUIRE(same_bits(c0, a0));
      REQUIRE(same_bits(c1, a1));
      for (int group = 0; group < 2; ++group) {
        REQUIRE(second->groups()[group].lr == straight->groups()[group].lr);
        REQUIRE(second->groups()[group].weight_decay == straight->groups()[group].weight_decay);
        REQUIRE(second_schedule->base_lr(group) == straight_schedule->base_lr(group));
      }
      for (const char* param : {"p0", "p1"}) {
        REQUIRE(second->step_count(param) == straight->step_count(param));
        for (const char* buffer : {"momentum_buffer", "exp_avg", "exp_avg_sq"}) {
          const Tensor x = second->buffer(param, buffer), y = straight->buffer(param, buffer);
          REQUIRE(x.defined() == y.defined());
          if (x.defined()) REQUIRE(same_bits(x, y));
        }
      }
    }
  }
}

TEST_CASE("optim: load_state rejects state of another optimiser or model", "[optim]") {
  Context context;
  Tensor p0 = test::random_leaf(context, {3, 4}, DType::f32);
  Tensor p1 = test::random_leaf(context, {5}, DType::f32);
  Sgd sgd(two_groups(p0, p1), {.momentum = 0.9});
  p0.set_grad(context.ones({3, 4}));
  p1.set_grad(context.ones({5}));
  sgd.step();
  NamedTensors tensors;
  std::map<std::string, std::string> metadata;
  sgd.save_state(tensors, metadata);
  const Checkpoint saved{tensors, metadata};

  SECTION("layout of the saved state") {
    REQUIRE(metadata.at("optimizer.type") == "SGD");
    REQUIRE(metadata.at("optimizer.groups") == R"(["base","new"])");
    REQUIRE(metadata.at("optimizer.group.new.params") == R"(["p1"])");
    REQUIRE(saved.at("optimizer.group.new.lr").item<double>() == 1.0);
    REQUIRE(saved.at("optimizer.momentum").item<double>() == 0.9);
    REQUIRE(saved.at("optimizer.nesterov").item<double>() == 0);
    REQUIRE(saved.at("optimizer.state.p0.step").dtype() == DType::i64);
    REQUIRE(saved.at("optimizer.state.p0.step").item<int64_t>() == 1);
    REQUIRE(saved.at("optimizer.state.p1.momentum_buffer").shape() == Shape{5});
  }
  SECTION("another optimiser type") {
    Adam adam(two_groups(p0, p1));
    REQUIRE_THROWS_WITH(adam.load_state(saved),
                        Catch::Contains("holds SGD state") && Catch::Contains("this optimiser is Adam"));
  }
  SECTION("other group names") {
    auto groups = two_groups(p0, p1);
    groups[1].name = "head";
    Sgd other(groups);
    REQUIRE_THROWS_WITH(other.load_state(saved),
                        Catch::Contains("parameter groups ['base', 'new'] differ from this optimiser's "
                                        "['base', 'head']"));
  }
  SECTION("renamed parameters") {
    Sgd other({ParamGroup{"base", {{"conv1.weight", p0}}, 0.01, {}}, ParamGroup{"new", {{"p1", p1}}, 1.0, {}}});
    REQUIRE_THROWS_WITH(other.load_state(saved),
                        Catch::Contains("group 'base' holds parameters ['conv1.weight'] but the "
                                        "checkpoint's holds ['p0']"));
  }
  SECTION("a parameter of another shape or dtype") {
    Tensor wide = test::random_leaf(context, {4, 3}, DType::f32);
    Sgd other(two_groups(wide, p1));
    REQUIRE_THROWS_WITH(other.load_state(saved),
                        Catch::Contains("'optimizer.state.p0.momentum_buffer' is f32 [3, 4] but "
                                        "parameter 'p0' is f32 [4, 3]"));
    REQUIRE(other.step_count("p0") == 0);  // nothing changed
    Tensor f64 = test::random_leaf(context, {3, 4}, DType::f64);
    Sgd doubles(two_groups(f64, p1));
    REQUIRE_THROWS_WITH(doubles.load_state(saved), Catch::Contains("is f32 [3, 4] but parameter 'p0' is f64"));
  }
  SECTION("a missing entry") {
    Checkpoint partial = saved;
    std::erase_if(partial.tensors, [](const auto& e) { return e.first == "optimizer.group.new.lr"; });
    Sgd other(two_groups(p0, p1));
    REQUIRE_THROWS_WITH(other.load_state(partial),
                        Catch::Contains("no tensor 'optimizer.group.new.lr'"));
  }
  SECTION("state for a parameter this optimiser lacks") {
    Checkpoint extra = saved;
    extra.tensors.emplace_back("optimizer.state.ghost.step", context.zeros({}, DType::i64));
    Sgd other(two_groups(p0, p1));
    REQUIRE_THROWS_WITH(other.load_state(extra),
                        Catch::Contains("holds SGD state this one lacks: ['optimizer.state.ghost.step']"));
  }
  SECTION("an empty prefix") {
    REQUIRE_THROWS_WITH(sgd.save_state(tensors, metadata, ""), Catch::Contains("prefix must not be empty"));
    REQUIRE_THROWS_WITH(sgd.load_state(saved, ""), Catch::Contains("prefix must not be empty"));
  }
  SECTION("a wrong prefix") {
    Sgd other(two_groups(p0, p1));
    REQUIRE_THROWS_WITH(other.load_state(saved, "opt."), Catch::Contains("no metadata 'opt.type'"));
  }
  SECTION("invalid saved values leave the optimiser unchanged") {
    Checkpoint bad = saved;
    for (auto& [name, tensor] : bad.tensors)
      if (name == "optimizer.momentum") tensor = context.full({}, -1.0, DType::f64);
    Sgd other(two_groups(p0, p1), {.momentum = 0.5});
    other.groups()[0].lr = 0.25;
    REQUIRE_THROWS_WITH(other.load_state(bad), Catch::Contains("SGD: momentum must be >= 0, got -1"));
    REQUIRE(other.options().momentum == 0.5);
    REQUIRE(other.groups()[0].lr == 0.25);
    REQUIRE(other.step_count("p0") == 0);
  }
  SECTION("Adam state without its moments") {
    Adam adam(two_groups(p0, p1));
    adam.step();
    NamedTensors adam_tensors;
    std::map<std::string, std::string> adam_metadata;
    adam.save_state(adam_tensors, adam_metadata);
    std::erase_if(adam_tensors, [](const auto& e) { return e.first == "optimizer.state.p1.exp_avg_sq"; });
    Adam other(two_groups(p0, p1));
    REQUIRE_THROWS_WITH(other.load_state({adam_tensors, adam_metadata}),
                        Catch::Contains("state of 'p1' needs a step count >= 1 with both exp_avg and "
                                        "exp_avg_sq"));
  }
}

TEST_CASE("optim: bad parameters, options and gradients give clear errors", "[optim]") {
  Context context;
  Tensor p = test::random_leaf(context, {3}, DType::f32);
  Tensor q = test::random_leaf(context, {2}, DType::f32);
  auto one = [&](std::string name, Tensor t) {
    return std::vector<ParamGroup>{ParamGroup{"g", {{std::move(name), std::move(t)}}, 0.1, {}}};
  };
  REQUIRE_THROWS_WITH(Sgd({}), Catch::Contains("got no parameters"));
  REQUIRE_THROWS_WITH(Sgd({ParamGroup{"g", {}, 0.1, {}}}), Catch::Contains("got no parameters"));
  REQUIRE_THROWS_WITH(Sgd({ParamGroup{"", {{"p", p}}, 0.1, {}}}), Catch::Contains("needs a name"));
  REQUIRE_THROWS_WITH(Sgd({ParamGroup{"g", {{"p", p}}, 0.1, {}}, ParamGroup{"g", {{"q", q}}, 0.1, {}}}),
                      Catch::Contains("two parameter groups are called 'g'"));
  REQUIRE_THROWS_WITH(Sgd({ParamGroup{"g", {{"p", p}, {"p", q}}, 0.1, {}}}),
                      Catch::Contains("two parameters are called 'p'"));
  REQUIRE_THROWS_WITH(Sgd({ParamGroup{"g", {{"p", p}, {"again", p}}, 0.1, {}}}),
                      Catch::Contains("parameter 'again' is a tensor that is already in the optimiser"));
  REQUIRE_THROWS_WITH(Sgd(one("", p)), Catch::Contains("has no name"));
  REQUIRE_THROWS_WITH(Sgd(one("p", Tensor())), Catch::Contains("parameter 'p' is an undefined tensor"));
  REQUIRE_THROWS_WITH(Sgd(one("p", context.ones({3}))), Catch::Contains("requires grad"));
  REQUIRE_THROWS_WITH(Sgd(one("p", mul_scalar(p, 2.0))), Catch::Contains("must be a leaf"));
  REQUIRE_THROWS_WITH(Sgd(one("p", context.ones({3}, DType::i32))), Catch::Contains("must be f32 or f64"));
  REQUIRE_THROWS_WITH(Sgd({ParamGroup{"g", {{"p", p}}, -0.1, {}}}),
                      Catch::Contains("group 'g' needs a finite learning rate >= 0, got -0.1"));
  REQUIRE_THROWS_WITH(Sgd({ParamGroup{"g", {{"p", p}}, 0.1, -1.0}}),
                      Catch::Contains("finite weight decay >= 0"));
  REQUIRE_THROWS_WITH(Sgd(one("p", p), {.nesterov = true}),
                      Catch::Contains("Nesterov momentum needs momentum > 0 and dampening == 0"));
  REQUIRE_THROWS_WITH(Sgd(one("p", p), {.momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                      Catch::Contains("Nesterov"));
  REQUIRE_THROWS_WITH(Sgd(one("p", p), {.momentum = -0.9}), Catch::Contains("momentum must be >= 0"));
  REQUIRE_THROWS_WITH(Adam(one("p", p), {.beta1 = 1.0}), Catch::Contains("beta1 must be in [0, 1)"));
  REQUIRE_THROWS_WITH(Adam(one("p", p), {.beta2 = -0.1}), Catch::Contains("beta2 must be in [0, 1)"));
  REQUIRE_THROWS_WITH(AdamW(one("p", p), {.eps = -1}), Catch::Contains("AdamW: eps must be >= 0"));

  Sgd sgd(one("p", p));
  p.set_grad(context.ones({3}, DType::f64));
  REQUIRE_THROWS_WITH(sgd.step(), Catch::Contains("the gradient of 'p' is Tensor(f64, cpu, [3]) but the "
                                                  "parameter is Tensor(f32, cpu, [3])"));
  p.set_grad(context.ones({3}));
  sgd.groups()[0].lr = std::nan("");
  REQUIRE_THROWS_WITH(sgd.step(), Catch::Contains("needs a finite learning rate"));
  sgd.groups()[0].lr = 0.1;
  sgd.groups()[0].weight_decay.reset();
  REQUIRE_THROWS_WITH(sgd.step(), Catch::Contains("group 'g' has no weight decay"));
}
