// med3d-bench step: whole SGD training steps of a Med3D network on random data: forward, loss,
// backward, update, timed per phase, with the process's peak RSS.
#include <charconv>
#include <chrono>
#include <cstdio>
#include <memory>
#include <sstream>

#include "commands.h"
#include "med3d/context.h"
#include "med3d/models/heads.h"
#include "med3d/models/med3d_net.h"
#include "med3d/ops/loss.h"
#include "med3d/optim.h"
#include "med3d/tape.h"

namespace med3d::bench {

namespace {

using Clock = std::chrono::steady_clock;

// Whole decimal number, or -1 (std::stoll took "2a" as 2 and threw a bare "stoll" on "a").
int64_t parse_count(const std::string& text) {
  int64_t value = -1;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size() ? value : -1;
}

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  std::istringstream in(text);
  std::string part;
  while (std::getline(in, part, 'x')) shape.push_back(parse_count(part));
  MED3D_CHECK(shape.size() == 5 && shape[0] > 0 && shape[1] > 0 && shape[2] > 0 && shape[3] > 0 && shape[4] > 0,
              "--input must be NxCxDxHxW with positive extents (e.g. 2x1x32x64x64), got '", text, "'");
  return shape;
}

// The ResNet-3D depths MedicalNet defines.
int depth_of(const std::string& arch) {
  const int64_t depth = arch.rfind("resnet", 0) == 0 ? parse_count(arch.substr(6)) : -1;
  for (const int64_t known : {10, 18, 34, 50, 101, 152, 200})
    if (depth == known) return static_cast<int>(depth);
  detail::throw_error("--arch must be resnet10, resnet18, resnet34, resnet50, resnet101, resnet152 or resnet200, got '",
                      arch, "'");
}

// The network: the ResNet-3D encoder (MedicalNet's default shortcut for its depth) with the
// MedicalNet segmentation head (output at 1/4 resolution) or a 1x1x1 classifier upsampled to
// the input (CoarseLiverNet), 2 classes.
struct Network {
  std::unique_ptr<Module> module;
  std::function<Tensor(const Tensor&)> forward;
};

Network make_network(Context& context, int depth, const std::string& head, int64_t in_channels) {
  Network net;
  if (head == "medicalnet") {
    auto m = std::make_unique<MedicalNetSegmentation>(context, depth, 2, std::nullopt, in_channels);
    MedicalNetSegmentation* raw = m.get();
    net.forward = [raw](const Tensor& x) { return raw->forward(x); };
    net.module = std::move(m);
  } else {
    MED3D_CHECK(head == "pointwise", "--head must be medicalnet or pointwise, got '", head, "'");
    auto m = std::make_unique<CoarseLiverNet>(context, depth, std::nullopt, in_channels);
    CoarseLiverNet* raw = m.get();
    net.forward = [raw](const Tensor& x) { return raw->forward(x); };
    net.module = std::move(m);
  }
  return net;
}

}  // namespace

int run_step(const CommonOptions& options, const StepOptions& step) {
  std::vector<int64_t> input = parse_shape(step.input);
  if (options.quick) input = {1, input[1], 16, 32, 32};
  const int depth = depth_of(step.arch);
  std::printf("load average before: %s (cores shared with other jobs)\n", load_average().c_str());
  const HostRegime regime_before = measure_host_regime(options.threads, options.quick);
  print_host_regime(" before", regime_before);
  const Device device = step.device == "cuda" ? Device::cuda(0) : Device::cpu();
  if (device.is_cuda()) std::printf("device: %s\n", cuda_device_description(0).c_str());
  Context context(device, 1);
  Network net = make_network(context, depth, step.head, input[1]);
  net.module->train();
  // MedicalNet's recipe: SGD, momentum 0.9, weight decay 1e-3.
  Sgd sgd({ParamGroup{"all", net.module->named_parameters(), 0.001, std::nullopt}}, SgdOptions{0.9, 0, 1e-3, false});
  Tensor x = context.randn(Shape(input));
  Tensor labels;
  {
    NoGrad no_grad(context);
    const Shape y = net.forward(x).shape();
    std::vector<int64_t> out(y.begin(), y.end());
    out.erase(out.begin() + 1);
    labels = context.empty(Shape(out), DType::i32, Device::cpu());
    int32_t* l = labels.data<int32_t>();
    for (int64_t i = 0; i < labels.numel(); ++i) l[i] = static_cast<int32_t>((i / 97) % 2);
    labels = labels.to(device);
  }
  std::vector<double> total, forward_s, backward_s, update_s;
  double loss_value = 0;
  for (int i = 0; i < options.warmup + options.runs; ++i) {
    const auto t0 = Clock::now();
    Tensor loss = cross_entropy(net.forward(x), labels);
    loss_value = static_cast<double>(loss.item<float>());
    const auto t1 = Clock::now();
    backward(loss);
    const auto t2 = Clock::now();
    sgd.step();
    sgd.zero_grad();
    context.synchronize();  // GPU: the update's kernels are queued, not done
    const auto t3 = Clock::now();
    if (i < options.warmup) continue;
    auto s = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
    total.push_back(s(t0, t3));
    forward_s.push_back(s(t0, t1));
    backward_s.push_back(s(t1, t2));
    update_s.push_back(s(t2, t3));
  }
  const HostRegime regime_after = measure_host_regime(options.threads, options.quick);
  print_host_regime(" after", regime_after);
  const Timing t = summarize(total);
  const double peak_tensors = static_cast<double>(context.memory_stats().peak_bytes_in_use) / (1 << 20);
  std::printf("%s + %s head, input %s, SGD momentum 0.9, f32, on %s, %d threads, %d timed steps after %d "
              "warm-up (peak_tensor_mib: the device's high-water mark of tensor memory)\n\n",
              step.arch.c_str(), step.head.c_str(), join_shape(input).c_str(), device.str().c_str(), options.threads,
              options.runs, options.warmup);
  Report report({{"arch"}, {"head"}, {"input"}, {"step_ms", 1}, {"step_min_ms", 1}, {"forward_ms", 1},
                 {"backward_ms", 1}, {"update_ms", 1}, {"peak_rss_mib", 0}, {"peak_tensor_mib", 0}, {"loss", 4}});
  report.add({step.arch, step.head, join_shape(input), 1e3 * t.median_s, 1e3 * t.min_s, 1e3 * summarize(forward_s).median_s,
              1e3 * summarize(backward_s).median_s, 1e3 * summarize(update_s).median_s, peak_rss_mib(), peak_tensors,
              loss_value});
  nlohmann::json document = {{"bench", "step"}, {"device", device.str()}, {"threads", options.threads}, {"runs", options.runs},
                             {"warmup", options.warmup}, {"quick", options.quick},
                             {"host_regime", {{"before", to_json(regime_before)}, {"after", to_json(regime_after)}}}};
  emit(report, options, document, "", "", {});
  return 0;
}

}  // namespace med3d::bench
