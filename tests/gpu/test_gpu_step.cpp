// A whole training step on the GPU: ResNet-18 (shortcut A) + the MedicalNet segmentation head,
// cross-entropy, backward and an SGD update, against the same steps on the CPU.
//
// Train-mode batch norm over few voxels per channel makes this step ill-conditioned in f32: two
// correct f32 implementations differ by up to ~1% in early-layer gradients (measured: the CPU
// built with and without -march=native against the emulated GPU). So the reference is the CPU
// step in f64, and the GPU must be as accurate as the CPU's own f32 step: per tensor, its
// error against f64 at most 10x the CPU f32 error, or 1e-4.
#include "gpu_compare.h"
#include "med3d/models/heads.h"

using namespace med3d;

namespace {

// Error of `actual` against the f64 reference, measured against 1% of the network's largest
// reference value: gradients that are 0 up to rounding (conv_seg.0.bias, a bias before batch
// norm) are noise on every device.
double error_vs_f64(const Tensor& actual, const Tensor& reference, double largest) {
  return gpu_test::relative_error(actual, reference, 1e-2 * largest);
}

}  // namespace

TEST_CASE("gpu: a ResNet-18 training step matches the CPU step", "[gpu][step]") {
  // Three identical networks (same seed): CPU f32, CPU f64 (the reference) and GPU f32.
  Context cpu(Device::cpu(), 11);
  MedicalNetSegmentation host(cpu, 18, 2);
  cpu.manual_seed(11);
  MedicalNetSegmentation exact(cpu, 18, 2);
  exact.to(DType::f64);
  cpu.manual_seed(11);
  MedicalNetSegmentation device(cpu, 18, 2);
  device.to(Device::cuda(0));
  for (Module* m : std::initializer_list<Module*>{&host, &exact, &device}) m->train();
  const auto host_params = host.named_parameters(), exact_params = exact.named_parameters(),
             device_params = device.named_parameters();
  REQUIRE(host_params.size() == device_params.size());
  for (std::size_t i = 0; i < host_params.size(); ++i)
    REQUIRE(device_params[i].second.to_vector<float>() == host_params[i].second.to_vector<float>());

  const Tensor x = cpu.randn({2, 1, 16, 16, 16});
  Tensor labels = cpu.empty({2, 4, 4, 4}, DType::i64);
  for (int64_t i = 0; i < labels.numel(); ++i) labels.data<int64_t>()[i] = (i * 7 / 5) % 2;
  const SgdOptions options{0.9, 0, 1e-3, false};
  Sgd host_sgd({ParamGroup{"all", host.named_parameters(), 0.01, std::nullopt}}, options);
  Sgd exact_sgd({ParamGroup{"all", exact.named_parameters(), 0.01, std::nullopt}}, options);
  Sgd device_sgd({ParamGroup{"all", device.named_parameters(), 0.01, std::nullopt}}, options);

  for (int step = 0; step < 2; ++step) {
    INFO("step " << step);
    const Tensor host_loss = cross_entropy(host.forward(x), labels);
    backward(host_loss);
    const Tensor exact_loss = cross_entropy(exact.forward(x.to(DType::f64)), labels);
    backward(exact_loss);
    const Tensor device_loss = cross_entropy(device.forward(x.to(Device::cuda(0))), labels.to(Device::cuda(0)));
    REQUIRE(device_loss.device() == Device::cuda(0));
    backward(device_loss);
    const double reference = exact_loss.item<double>();
    const double cpu_loss_error = std::abs(host_loss.item<double>() - reference);
    CHECK(std::abs(device_loss.item<double>() - reference) <= std::max(1e-5 * reference, 10 * cpu_loss_error));

    double largest = 0.0;
    for (const auto& [name, p] : exact_params) largest = std::max(largest, gpu_test::max_abs(p.grad()));
    for (std::size_t i = 0; i < host_params.size(); ++i) {
      INFO("gradient of " << host_params[i].first);
      const Tensor& truth = exact_params[i].second.grad();
      const double cpu_error = error_vs_f64(host_params[i].second.grad(), truth, largest);
      const double gpu_error = error_vs_f64(device_params[i].second.grad(), truth, largest);
      INFO("CPU f32 error " << cpu_error << ", GPU f32 error " << gpu_error);
      CHECK(gpu_error <= std::max(1e-4, 10 * cpu_error));
    }
    for (Sgd* sgd : {&host_sgd, &exact_sgd, &device_sgd}) {
      sgd->step();
      sgd->zero_grad();
    }
  }
  // After the updates, the same rule for every weight and running statistic, each measured
  // against 1% of the largest value of its kind.
  const auto host_state = host.state_dict(), exact_state = exact.state_dict(), device_state = device.state_dict();
  REQUIRE(host_state.size() == device_state.size());
  double largest = 0.0;
  for (const auto& [name, t] : exact_state)
    if (is_floating(t.dtype())) largest = std::max(largest, gpu_test::max_abs(t));
  for (std::size_t i = 0; i < host_state.size(); ++i) {
    if (!is_floating(host_state[i].second.dtype())) continue;
    INFO(host_state[i].first << " after two updates");
    const Tensor truth = exact_state[i].second;
    const double cpu_error = error_vs_f64(host_state[i].second, truth, largest);
    const double gpu_error = error_vs_f64(device_state[i].second, truth, largest);
    INFO("CPU f32 error " << cpu_error << ", GPU f32 error " << gpu_error);
    CHECK(gpu_error <= std::max(1e-4, 10 * cpu_error));
  }
}
