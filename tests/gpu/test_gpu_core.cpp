// The CUDA backend's foundations: device memory, copies, fills, conversions, errors, and the
// element-wise ops and reductions against their CPU twins.
#include "gpu_compare.h"

using namespace med3d;
using gpu_test::compare_with_cpu;

TEST_CASE("gpu: copies round-trip exactly and memory is accounted", "[gpu]") {
  Context cuda(Device::cuda(0), 3);
  CHECK(cuda.device() == Device::cuda(0));
  Context cpu(Device::cpu(), 3);
  const Tensor x = cpu.randn({3, 5, 7});
  const MemoryStats before = cuda.memory_stats();
  {
    const Tensor d = x.to(Device::cuda(0));
    CHECK(d.device() == Device::cuda(0));
    CHECK(d.str() == "Tensor(f32, cuda:0, [3, 5, 7])");
    CHECK(cuda.memory_stats().bytes_in_use == before.bytes_in_use);  // d belongs to cpu's Context
    CHECK(d.to(Device::cpu()).to_vector<float>() == x.to_vector<float>());
    CHECK(d.clone().to_vector<float>() == x.to_vector<float>());
    CHECK(d.to(DType::f64).to(DType::f32).to_vector<float>() == x.to_vector<float>());
    CHECK(d.to(DType::i32).to(Device::cpu()).to_vector<int32_t>() ==
          x.to(DType::i32).to_vector<int32_t>());
  }
  const Tensor z = cuda.zeros({1000});
  CHECK(cuda.memory_stats().bytes_in_use == before.bytes_in_use + 4000);
  CHECK(cuda.memory_stats().peak_bytes_in_use >= 4000);
  const std::vector<float> zeros = z.to_vector<float>();
  CHECK(std::all_of(zeros.begin(), zeros.end(), [](float v) { return v == 0.0f; }));
  CHECK(cuda.full({4}, 2.5).to_vector<float>() == std::vector<float>(4, 2.5f));
  // Random streams are counter-based: a CUDA Context draws what a CPU Context draws.
  Context cpu_same_seed(Device::cpu(), 9), cuda_same_seed(Device::cuda(0), 9);
  CHECK(cuda_same_seed.randn({100}).to_vector<float>() == cpu_same_seed.randn({100}).to_vector<float>());
  Tensor host = cpu.zeros({3, 5, 7});
  host.copy_from(x.to(Device::cuda(0)));
  CHECK(host.to_vector<float>() == x.to_vector<float>());
}

TEST_CASE("gpu: misuse gives clear errors", "[gpu]") {
  Context cpu(Device::cpu(), 1);
  const Tensor d = cpu.ones({4}).to(Device::cuda(0));
  CHECK_THROWS_WITH(d.data<float>(), Catch::Contains("copy it with .to(Device::cpu())"));
  CHECK_THROWS_WITH(add(d, cpu.ones({4})), Catch::Contains("move both to one device"));
  CHECK_THROWS_WITH(relu(d.to(DType::f64)), Catch::Contains("the CUDA kernels take f32"));
  CHECK_THROWS_WITH(Context(Device::cuda(cuda_device_count())), Catch::Contains("CUDA device(s) visible"));
}

TEST_CASE("gpu: element-wise ops and reductions match the CPU", "[gpu]") {
  Context cpu(Device::cpu(), 5);
  const Tensor a = cpu.randn({2, 3, 17, 19}), b = cpu.randn({2, 3, 17, 19});
  compare_with_cpu("add", {a, b}, [](const auto& in) { return add(in[0], in[1]); });
  compare_with_cpu("sub", {a, b}, [](const auto& in) { return sub(in[0], in[1]); });
  compare_with_cpu("mul", {a, b}, [](const auto& in) { return mul(in[0], in[1]); });
  compare_with_cpu("add_scalar", {a}, [](const auto& in) { return add_scalar(in[0], 0.75); });
  compare_with_cpu("mul_scalar", {a}, [](const auto& in) { return mul_scalar(in[0], -1.5); });
  compare_with_cpu("relu", {a}, [](const auto& in) { return relu(in[0]); });
  compare_with_cpu("sigmoid", {a}, [](const auto& in) { return sigmoid(mul_scalar(in[0], 8.0)); });
  compare_with_cpu("gradient_reversal", {a}, [](const auto& in) { return gradient_reversal(in[0], 0.3); });
  compare_with_cpu("sum", {a}, [](const auto& in) { return sum(in[0]); });
  compare_with_cpu("mean", {a}, [](const auto& in) { return mean(in[0]); });
  // A large sum: 2^20 + 3 elements, over the block partials of the two-pass reduction.
  const Tensor big = cpu.rand({(1 << 20) + 3});
  compare_with_cpu("sum (large)", {big}, [](const auto& in) { return sum(in[0]); }, 1e-6);
}
