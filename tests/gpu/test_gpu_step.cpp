// A whole training step on the GPU: ResNet-18 (shortcut A) + the MedicalNet segmentation head,
// cross-entropy, backward and an SGD update, against the same step on the CPU.
#include "gpu_compare.h"
#include "med3d/models/heads.h"

using namespace med3d;

TEST_CASE("gpu: a ResNet-18 training step matches the CPU step", "[gpu][step]") {
  // Two identical networks (same seed), one moved to the GPU.
  Context cpu(Device::cpu(), 11);
  MedicalNetSegmentation host(cpu, 18, 2);
  cpu.manual_seed(11);
  MedicalNetSegmentation device(cpu, 18, 2);
  device.to(Device::cuda(0));
  host.train();
  device.train();
  const auto host_params = host.named_parameters(), device_params = device.named_parameters();
  REQUIRE(host_params.size() == device_params.size());
  for (std::size_t i = 0; i < host_params.size(); ++i)
    REQUIRE(device_params[i].second.to_vector<float>() == host_params[i].second.to_vector<float>());

  // 2 x 16^3 keeps 16 values per channel in layer4's batch statistics: fewer would make the
  // f32 comparison measure rounding amplified by near-zero variances, not the kernels.
  const Tensor x = cpu.randn({2, 1, 16, 16, 16});
  Tensor labels = cpu.empty({2, 4, 4, 4}, DType::i64);
  for (int64_t i = 0; i < labels.numel(); ++i) labels.data<int64_t>()[i] = (i * 7 / 5) % 2;
  const SgdOptions options{0.9, 0, 1e-3, false};
  Sgd host_sgd({ParamGroup{"all", host.named_parameters(), 0.01, std::nullopt}}, options);
  Sgd device_sgd({ParamGroup{"all", device.named_parameters(), 0.01, std::nullopt}}, options);

  for (int step = 0; step < 2; ++step) {
    INFO("step " << step);
    const Tensor host_loss = cross_entropy(host.forward(x), labels);
    backward(host_loss);
    const Tensor device_loss = cross_entropy(device.forward(x.to(Device::cuda(0))), labels.to(Device::cuda(0)));
    REQUIRE(device_loss.device() == Device::cuda(0));
    backward(device_loss);
    CHECK(device_loss.item<double>() == Approx(host_loss.item<double>()).epsilon(1e-4));
    // Gradients whose true value is 0 (conv_seg.0.bias: a bias before batch norm) are rounding
    // noise on both devices; they are measured against 1% of the network's largest gradient.
    double largest = 0.0;
    for (const auto& [name, p] : host_params) largest = std::max(largest, gpu_test::max_abs(p.grad()));
    for (std::size_t i = 0; i < host_params.size(); ++i) {
      INFO("gradient of " << host_params[i].first);
      CHECK(gpu_test::relative_error(device_params[i].second.grad(), host_params[i].second.grad(), 1e-2 * largest) <
            1e-3);
    }
    host_sgd.step();
    device_sgd.step();
    host_sgd.zero_grad();
    device_sgd.zero_grad();
  }
  for (std::size_t i = 0; i < host_params.size(); ++i) {
    INFO("parameter " << host_params[i].first << " after two updates");
    CHECK(gpu_test::relative_error(device_params[i].second, host_params[i].second) < 1e-4);
  }
  const auto host_state = host.state_dict(), device_state = device.state_dict();
  for (std::size_t i = 0; i < host_state.size(); ++i)
    if (host_state[i].first.find("running_") != std::string::npos) {
      INFO("buffer " << host_state[i].first);
      CHECK(gpu_test::relative_error(device_state[i].second, host_state[i].second) < 1e-4);
    }
}
