// Batch normalisation, dropout and the optimiser updates on CUDA against their CPU twins:
// batch_norm3d forward and backward in training and eval (odd shapes, with and without the
// affine transform and running statistics), running statistics over several steps, dropout
// masks bit for bit, and SGD/Adam/AdamW steps on CUDA parameters, state save/load included.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gpu_compare.h"

using namespace med3d;
using gpu_test::compare_with_cpu;
using gpu_test::relative_error;

namespace {

const Device kCuda = Device::cuda(0);

// A channel mean far from 0 exercises the shifted moments of the statistics.
Tensor volume(Context& context, const Shape& shape) {
  return add_scalar(mul_scalar(context.randn(shape), 1.7), 3.0);
}

}  // namespace

TEST_CASE("gpu: batch_norm3d training and eval match the CPU on odd shapes", "[gpu]") {
  Context cpu(Device::cpu(), 21);
  const Tensor w = cpu.randn({5}), b = cpu.randn({5});
  const Tensor rm = cpu.randn({5}), rv = add_scalar(cpu.rand({5}), 0.5);
  for (int64_t n : {1, 3}) {
    INFO("N = " << n);
    const Tensor x = volume(cpu, {n, 5, 3, 5, 7});
    compare_with_cpu("batch_norm3d train", {x, w, b}, [](const auto& in) {
      return batch_norm3d(in[0], in[1], in[2], Tensor(), Tensor(), true);
    });
    compare_with_cpu("batch_norm3d train with running stats", {x, w, b}, [&](const auto& in) {
      // Fresh copies: the op updates them in place.
      return batch_norm3d(in[0], in[1], in[2], rm.clone().to(in[0].device()),
                          rv.clone().to(in[0].device()), true, 0.2, 1e-3);
    });
    compare_with_cpu("batch_norm3d train without affine", {x}, [](const auto& in) {
      return batch_norm3d(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true);
    });
    compare_with_cpu("batch_norm3d eval", {x, w, b}, [&](const auto& in) {
      return batch_norm3d(in[0], in[1], in[2], rm.to(in[0].device()), rv.to(in[0].device()),
                          false);
    });
    compare_with_cpu("batch_norm_relu3d train with running stats", {x, w, b}, [&](const auto& in) {
      return batch_norm_relu3d(in[0], in[1], in[2], rm.clone().to(in[0].device()),
                               rv.clone().to(in[0].device()), true, 0.2, 1e-3);
    });
    compare_with_cpu("batch_norm_relu3d eval", {x, w, b}, [&](const auto& in) {
      return batch_norm_relu3d(in[0], in[1], in[2], rm.to(in[0].device()),
                               rv.to(in[0].device()), false);
    });
    compare_with_cpu("batch_norm3d eval without affine", {x}, [&](const auto& in) {
      return batch_norm3d(in[0], Tensor(), Tensor(), rm.to(in[0].device()),
                          rv.to(in[0].device()), false, 0.1, 0.25);
    });
  }
  compare_with_cpu("batch_norm3d train [N C]", {cpu.randn({3, 5}), w, b}, [](const auto& in) {
    return batch_norm3d(in[0], in[1], in[2], Tensor(), Tensor(), true);
  });
  // 33210 values per channel: several level-1 chunks per channel, the last one short.
  const Tensor big = volume(cpu, {2, 3, 9, 45, 41});
  compare_with_cpu("batch_norm3d train (several chunks)", {big, cpu.randn({3}), cpu.randn({3})},
                   [](const auto& in) {
                     return batch_norm3d(in[0], in[1], in[2], Tensor(), Tensor(), true);
                   });
}

TEST_CASE("gpu: batch_norm3d running statistics after two steps equal the CPU's", "[gpu]") {
  Context cpu(Device::cpu(), 4);
  const Tensor w = cpu.randn({5}), b = cpu.randn({5});
  for (int64_t n : {1, 3}) {
    INFO("N = " << n);
    Tensor mean_cpu = cpu.randn({5}), var_cpu = add_scalar(cpu.rand({5}), 0.5);
    Tensor mean_gpu = mean_cpu.to(kCuda), var_gpu = var_cpu.to(kCuda);
    const std::vector<float> initial_mean = mean_cpu.to_vector<float>();
    for (int step = 0; step < 2; ++step) {
      const Tensor x = volume(cpu, {n, 5, 3, 5, 7});
      batch_norm3d(x, w, b, mean_cpu, var_cpu, true, 0.3);
      batch_norm3d(x.to(kCuda), w.to(kCuda), b.to(kCuda), mean_gpu, var_gpu, true, 0.3);
    }
    REQUIRE(mean_gpu.device() == kCuda);
    REQUIRE(var_gpu.device() == kCuda);
    const std::vector<float> mg = mean_gpu.to_vector<float>(), mc = mean_cpu.to_vector<float>();
    const std::vector<float> vg = var_gpu.to_vector<float>(), vc = var_cpu.to_vector<float>();
    for (std::size_t c = 0; c < 5; ++c) {
      INFO("channel " << c);
      // Both computed in double from sums in another order, then rounded once to f32.
      CHECK(mg[c] == Approx(mc[c]).epsilon(1e-6));
      CHECK(vg[c] == Approx(vc[c]).epsilon(1e-6));
    }
    // They moved: two steps at momentum 0.3 towards batch means near 3.
    for (std::size_t c = 0; c < 5; ++c) CHECK(std::abs(mc[c] - initial_mean[c]) > 0.1);
  }
}

TEST_CASE("gpu: dropout masks are bit-identical to the CPU's", "[gpu]") {
  for (double p : {0.1, 0.5}) {
    INFO("p = " << p);
    Context cpu(Device::cpu(), 1234), gpu(kCuda, 1234);
    cpu.set_random_offset(77);
    gpu.set_random_offset(77);
    const Shape shape{3, 5, 7, 9, 11};
    Tensor xc = cpu.randn(shape), xg = gpu.randn(shape);
    REQUIRE(xg.device() == kCuda);
    REQUIRE(xg.to_vector<float>() == xc.to_vector<float>());
    xc.set_requires_grad(true);
    xg.set_requires_grad(true);
    // Two calls: the second draws from later offsets of the stream, on both devices alike.
    const Tensor yc1 = dropout(xc, p, true), yg1 = dropout(xg, p, true);
    const Tensor yc2 = dropout(xc, p, true), yg2 = dropout(xg, p, true);
    REQUIRE(yg1.device() == kCuda);
    CHECK(yg1.to_vector<float>() == yc1.to_vector<float>());
    CHECK(yg2.to_vector<float>() == yc2.to_vector<float>());
    CHECK(yc1.to_vector<float>() != yc2.to_vector<float>());
    const std::vector<float> y = yc1.to_vector<float>();
    const double zeros = static_cast<double>(std::count(y.begin(), y.end(), 0.0f));
    CHECK(zeros / static_cast<double>(y.size()) == Approx(p).margin(0.03));
    // Same weights on both devices, so dy is identical and so must dx be.
    const Tensor wc = cpu.rand(shape), wg = gpu.rand(shape);
    backward(add(sum(mul(yc1, wc)), sum(yc2)));
    backward(add(sum(mul(yg1, wg)), sum(yg2)));
    REQUIRE(xg.grad().device() == kCuda);
    CHECK(xg.grad().to_vector<float>() == xc.grad().to_vector<float>());
  }
}

namespace {

using MakeOptimizer = std::function<std::unique_ptr<Optimizer>(std::vector<ParamGroup>)>;

struct Params {
  Tensor a, b;
};

// The same values on either device: Contexts with one seed draw the same stream.
Params make_params(Context& context) {
  Params p{context.randn({7, 13}), context.randn({5})};
  p.a.set_requires_grad(true);
  p.b.set_requires_grad(true);
  return p;
}

std::vector<ParamGroup> groups_of(const Params& p) {
  return {{"body", {{"a", p.a}}, 0.05, std::nullopt}, {"head", {{"b", p.b}}, 0.2, 0.0}};
}

// A loss whose gradient changes with the parameters: sum(sigmoid(a) * w) + sum(b * b2).
void run_steps(Optimizer& optimizer, const Params& p, const Tensor& wa, const Tensor& wb,
               int steps) {
  for (int s = 0; s < steps; ++s) {
    optimizer.zero_grad();
    backward(add(sum(mul(sigmoid(p.a), wa)), sum(mul(sigmoid(p.b), wb))));
    optimizer.step();
  }
}

void check_close(const Tensor& gpu, const Tensor& cpu) {
  REQUIRE(gpu.defined());
  REQUIRE(cpu.defined());
  CHECK(gpu.device() == kCuda);
  CHECK(relative_error(gpu, cpu) < 1e-5);
}

}  // namespace

TEST_CASE("gpu: SGD Adam and AdamW steps on CUDA parameters match the CPU", "[gpu]") {
  const std::vector<std::pair<std::string, MakeOptimizer>> configs = {
      {"sgd", [](auto g) { return std::make_unique<Sgd>(g, SgdOptions{.weight_decay = 0.01}); }},
      {"sgd momentum",
       [](auto g) {
         return std::make_unique<Sgd>(g, SgdOptions{.momentum = 0.9, .dampening = 0.1,
                                                    .weight_decay = 0.01});
       }},
      {"sgd nesterov",
       [](auto g) {
         return std::make_unique<Sgd>(g, SgdOptions{.momentum = 0.8, .weight_decay = 0.02,
                                                    .nesterov = true});
       }},
      {"adam", [](auto g) { return std::make_unique<Adam>(g, AdamOptions{.weight_decay = 0.01}); }},
      {"adamw", [](auto g) { return std::make_unique<AdamW>(g, AdamW::default_options()); }},
  };
  for (const auto& config : configs) {
    INFO("optimiser: " << config.first);
    Context cpu(Device::cpu(), 8), gpu(kCuda, 8);
    const Params pc = make_params(cpu), pg = make_params(gpu);
    REQUIRE(pg.a.device() == kCuda);
    const Tensor wac = cpu.rand({7, 13}), wbc = cpu.randn({5});
    const Tensor wag = gpu.rand({7, 13}), wbg = gpu.randn({5});
    auto oc = config.second(groups_of(pc));
    auto og = config.second(groups_of(pg));
    run_steps(*oc, pc, wac, wbc, 4);
    run_steps(*og, pg, wag, wbg, 4);
    check_close(pg.a, pc.a);
    check_close(pg.b, pc.b);
    CHECK(og->step_count("a") == 4);
    for (const char* name : {"momentum_buffer", "exp_avg", "exp_avg_sq"}) {
      INFO("buffer " << name);
      REQUIRE(og->buffer("a", name).defined() == oc->buffer("a", name).defined());
      if (oc->buffer("a", name).defined())
        check_close(og->buffer("a", name), oc->buffer("a", name));
    }

    // Save through a file (CUDA state goes to the host), resume into a new optimiser on the
    // same CUDA parameters, and keep stepping: still the CPU's trajectory.
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("med3d_gpu_optim_" + std::to_string(::getpid()) + ".safetensors"))
                                 .string();
    NamedTensors tensors;
    std::map<std::string, std::string> metadata;
    og->save_state(tensors, metadata);
    for (const auto& entry : tensors) CHECK(entry.second.device() == Device::cpu());
    save_safetensors(path, tensors, metadata);
    const Checkpoint file = load_safetensors(cpu, path);
    std::filesystem::remove(path);
    auto resumed = config.second(groups_of(pg));
    resumed->load_state(file);
    for (const char* name : {"momentum_buffer", "exp_avg", "exp_avg_sq"})
      if (resumed->buffer("a", name).defined()) CHECK(resumed->buffer("a", name).device() == kCuda);
    run_steps(*oc, pc, wac, wbc, 3);
    run_steps(*resumed, pg, wag, wbg, 3);
    check_close(pg.a, pc.a);
    check_close(pg.b, pc.b);
    CHECK(resumed->step_count("a") == 7);
  }
}
