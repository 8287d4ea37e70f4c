// med3d-bench ops: the memory-bound ops of a Med3D training step through the public ops and
// the tape (forward, then backward from a seed gradient), in GB/s of minimal traffic
// (flops.h) against the measured copy bandwidth.
#include <chrono>
#include <cstdio>
#include <functional>

#include "commands.h"
#include "flops.h"
#include "med3d/context.h"
#include "med3d/ops/elementwise.h"
#include "med3d/ops/loss.h"
#include "med3d/ops/norm.h"
#include "med3d/ops/pool.h"
#include "med3d/ops/upsample.h"
#include "med3d/tape.h"

namespace med3d::bench {

namespace {

using Clock = std::chrono::steady_clock;

struct OpRun {
  std::function<Tensor()> forward;
  std::vector<Tensor> leaves;  // gradients dropped before every backward
  bool scalar_output = false;
};

OpRun make_op(Context& context, const OpCase& c) {
  const Shape shape(c.shape);
  Tensor x = context.randn(shape);
  x.set_requires_grad(true);
  OpRun run;
  run.leaves = {x};
  if (c.name == "batch_norm") {
    const int64_t channels = c.shape[1];
    Tensor weight = context.ones({channels}), bias = context.zeros({channels});
    weight.set_requires_grad(true);
    bias.set_requires_grad(true);
    Tensor mean = context.zeros({channels}), var = context.ones({channels});
    run.leaves.push_back(weight);
    run.leaves.push_back(bias);
    run.forward = [=] { return batch_norm3d(x, weight, bias, mean, var, true); };
  } else if (c.name == "relu") {
    run.forward = [=] { return relu(x); };
  } else if (c.name == "max_pool_k3s2") {
    run.forward = [=] { return max_pool3d(x, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}); };
  } else if (c.name == "upsample_trilinear_x2") {
    run.forward = [=] { return upsample_trilinear3d_scale(x, {2.0, 2.0, 2.0}, false); };
  } else if (c.name == "cross_entropy") {
    std::vector<int64_t> label_shape = c.shape;
    label_shape.erase(label_shape.begin() + 1);
    Tensor labels = context.empty(Shape(label_shape), DType::i32);
    int32_t* l = labels.data<int32_t>();
    for (int64_t i = 0; i < labels.numel(); ++i) l[i] = static_cast<int32_t>((i * 7919) % c.shape[1]);
    run.forward = [=] { return cross_entropy(x, labels); };
    run.scalar_output = true;
  } else {
    detail::throw_error("ops bench: unknown op '", c.name, "'");
  }
  return run;
}

}  // namespace

int run_ops(const CommonOptions& options) {
  check_only(options, med3d_op_cases(options.scale, options.quick), "op");
  const Machine machine = measure_machine(options.threads, options.quick);
  print_machine(machine);
  std::printf("scale %s, %d timed runs after %d warm-up; forward and backward through the tape; GB/s of "
              "minimal traffic (each tensor read or written once), frac = of copy bandwidth\n\n",
              options.scale.c_str(), options.runs, options.warmup);
  Report report({{"op"}, {"shape"}, {"pass"}, {"ours_ms", 3}, {"ours_min_ms", 3}, {"gbs", 2}, {"frac_of_copy", 2},
                 {"handoff_ratio", 1}});
  nlohmann::json geometry = nlohmann::json::array();
  Context context(Device::cpu(), 1);
  for (const OpCase& c : med3d_op_cases(options.scale, options.quick)) {
    if (!selected(options, c.name)) continue;
    OpRun run = make_op(context, c);
    // The host's regime at this row (bench/common.h; both passes are timed in the same loop).
    const double handoff = measure_host_regime(options.threads, options.quick).ratio();
    std::vector<double> forward_s, backward_s;
    for (int i = 0; i < options.warmup + options.runs; ++i) {
      for (Tensor& leaf : run.leaves) leaf.zero_grad();
      const auto t0 = Clock::now();
      Tensor y = run.forward();
      const auto t1 = Clock::now();
      Tensor seed = run.scalar_output ? Tensor{} : context.ones(y.shape());
      const auto t2 = Clock::now();
      if (run.scalar_output)
        backward(y);
      else
        backward(y, seed);
      const auto t3 = Clock::now();
      if (i < options.warmup) continue;
      forward_s.push_back(std::chrono::duration<double>(t1 - t0).count());
      backward_s.push_back(std::chrono::duration<double>(t3 - t2).count());
    }
    const std::string shape = join_shape(c.shape);
    for (int pass = 0; pass < 2; ++pass) {
      const Timing t = summarize(pass == 0 ? forward_s : backward_s);
      const double bytes = pass == 0 ? c.bytes_forward : c.bytes_backward;
      const double gbs = bytes / t.median_s / 1e9;
      report.add({c.name, shape, std::string(pass == 0 ? "fwd" : "bwd"), 1e3 * t.median_s, 1e3 * t.min_s, gbs,
                  gbs / machine.copy_gbs, handoff});
      geometry.push_back({{"op", c.name}, {"shape", c.shape}, {"pass", pass == 0 ? "fwd" : "bwd"}, {"bytes", bytes}});
    }
    std::fflush(stdout);
  }
  const HostRegime regime_after = measure_host_regime(options.threads, options.quick);
  print_host_regime(" after", regime_after);
  nlohmann::json document = {{"bench", "ops"},   {"scale", options.scale},     {"quick", options.quick},
                             {"runs", options.runs}, {"warmup", options.warmup}, {"machine", to_json(machine)},
                             {"host_regime_after", to_json(regime_after)},
                             {"geometry", geometry}};
  emit(report, options, document, "med3d ops: fraction of copy bandwidth", "frac_of_copy", {"op", "pass"});
  return 0;
}

}  // namespace med3d::bench
