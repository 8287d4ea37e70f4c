// Upsampling, pooling and the copying shape ops on CUDA against their CPU twins: every option,
// odd shapes, scale factors above and below 1, sizes up and down.
#include <cmath>
#include <limits>

#include "gpu_compare.h"

using namespace med3d;
using gpu_test::compare_with_cpu;
using Axes = std::array<int64_t, 3>;
using Scales = std::array<double, 3>;

TEST_CASE("gpu: trilinear upsampling matches the CPU", "[gpu]") {
  Context cpu(Device::cpu(), 11);
  const Tensor x = cpu.randn({2, 3, 5, 7, 6});
  for (const bool align : {false, true}) {
    INFO("align_corners " << align);
    for (const Axes size : {Axes{10, 14, 12}, Axes{3, 4, 2}, Axes{8, 7, 1}, Axes{1, 9, 6}}) {
      INFO("size " << size[0] << " " << size[1] << " " << size[2]);
      compare_with_cpu("upsample_trilinear3d", {x}, [size, align](const auto& in) {
        return upsample_trilinear3d(in[0], size, align);
      });
    }
    for (const Scales scale : {Scales{2, 2, 2}, Scales{1.5, 1.5, 1.5}, Scales{0.7, 0.7, 0.7},
                               Scales{2, 0.7, 1.5}, Scales{1.1, 1, 3}}) {
      INFO("scale " << scale[0] << " " << scale[1] << " " << scale[2]);
      compare_with_cpu("upsample_trilinear3d_scale", {x}, [scale, align](const auto& in) {
        return upsample_trilinear3d_scale(in[0], scale, align);
      });
    }
  }
}

TEST_CASE("gpu: nearest upsampling matches the CPU", "[gpu]") {
  Context cpu(Device::cpu(), 12);
  const Tensor x = cpu.randn({2, 3, 5, 7, 6});
  for (const Axes size : {Axes{10, 14, 12}, Axes{3, 4, 2}, Axes{8, 7, 1}, Axes{5, 9, 4}}) {
    INFO("size " << size[0] << " " << size[1] << " " << size[2]);
    compare_with_cpu("upsample_nearest3d", {x}, [size](const auto& in) {
      return upsample_nearest3d(in[0], size);
    });
  }
  for (const Scales scale : {Scales{2, 2, 2}, Scales{1.5, 1.5, 1.5}, Scales{0.7, 0.7, 0.7},
                             Scales{1.1, 0.5, 3}}) {
    INFO("scale " << scale[0] << " " << scale[1] << " " << scale[2]);
    compare_with_cpu("upsample_nearest3d_scale", {x}, [scale](const auto& in) {
      return upsample_nearest3d_scale(in[0], scale);
    });
  }
}

TEST_CASE("gpu: max pooling matches the CPU with ties and NaN", "[gpu]") {
  Context cpu(Device::cpu(), 13);
  const Tensor x = cpu.randn({2, 3, 5, 7, 6});
  // Few distinct values: most windows hold ties, and the first maximum must win on both sides.
  std::vector<float> few = x.to_vector<float>();
  for (float& v : few) v = v > 0.5f ? 1.0f : (v < -0.5f ? -1.0f : 0.0f);
  const Tensor ties = cpu.from_vector(x.shape(), few);
  struct Case {
    Axes kernel, stride, padding;
  };
  for (const Case& c : {Case{{3, 3, 3}, {2, 2, 2}, {1, 1, 1}}, Case{{2, 2, 2}, {2, 2, 2}, {0, 0, 0}},
                        Case{{3, 2, 3}, {1, 2, 3}, {1, 0, 1}}, Case{{1, 3, 2}, {1, 1, 1}, {0, 1, 1}}}) {
    INFO("kernel " << c.kernel[0] << c.kernel[1] << c.kernel[2] << " stride " << c.stride[0]
                   << c.stride[1] << c.stride[2] << " padding " << c.padding[0] << c.padding[1]
                   << c.padding[2]);
    const auto op = [c](const auto& in) { return max_pool3d(in[0], c.kernel, c.stride, c.padding); };
    compare_with_cpu("max_pool3d", {x}, op);
    compare_with_cpu("max_pool3d (ties)", {ties}, op);
  }
  // NaN wins its windows: the outputs agree NaN for NaN, and the gradient goes to the NaN.
  std::vector<float> values = x.to_vector<float>();
  values[17] = values[400] = std::numeric_limits<float>::quiet_NaN();
  const Tensor with_nan = cpu.from_vector(x.shape(), values);
  Tensor host = with_nan.clone(), device = with_nan.to(Device::cuda(0));
  host.set_requires_grad(true);
  device.set_requires_grad(true);
  const Tensor y_host = max_pool3d(host, {3, 3, 3}, {2, 2, 2}, {1, 1, 1});
  backward(sum(y_host));
  const Tensor y_device = max_pool3d(device, {3, 3, 3}, {2, 2, 2}, {1, 1, 1});
  backward(sum(y_device));
  const std::vector<float> a = y_device.to_vector<float>(), b = y_host.to_vector<float>();
  REQUIRE(a.size() == b.size());
  int nan_outputs = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(std::isnan(a[i]) == std::isnan(b[i]));
    if (std::isnan(b[i])) ++nan_outputs;
    else CHECK(a[i] == b[i]);
  }
  CHECK(nan_outputs > 0);
  CHECK(device.grad().to_vector<float>() == host.grad().to_vector<float>());
}

TEST_CASE("gpu: average pooling matches the CPU", "[gpu]") {
  Context cpu(Device::cpu(), 14);
  const Tensor x = cpu.randn({2, 3, 5, 7, 6});
  struct Case {
    Axes kernel, stride, padding;
  };
  for (const bool include_pad : {true, false}) {
    for (const Case& c : {Case{{3, 3, 3}, {2, 2, 2}, {1, 1, 1}}, Case{{2, 2, 2}, {2, 2, 2}, {0, 0, 0}},
                          Case{{3, 2, 3}, {1, 2, 3}, {1, 1, 0}}, Case{{4, 5, 2}, {3, 1, 2}, {2, 2, 1}}}) {
      INFO("count_include_pad " << include_pad << " kernel " << c.kernel[0] << c.kernel[1]
                                << c.kernel[2] << " stride " << c.stride[0] << c.stride[1]
                                << c.stride[2] << " padding " << c.padding[0] << c.padding[1]
                                << c.padding[2]);
      compare_with_cpu("avg_pool3d", {x}, [c, include_pad](const auto& in) {
        return avg_pool3d(in[0], c.kernel, c.stride, c.padding, include_pad);
      });
    }
  }
  for (const Axes size : {Axes{1, 1, 1}, Axes{2, 3, 4}, Axes{5, 7, 6}, Axes{3, 5, 4}, Axes{7, 9, 11}}) {
    INFO("output_size " << size[0] << " " << size[1] << " " << size[2]);
    compare_with_cpu("adaptive_avg_pool3d", {x}, [size](const auto& in) {
      return adaptive_avg_pool3d(in[0], size);
    });
  }
}

TEST_CASE("gpu: resampling gradients are deterministic", "[gpu]") {
  Context cpu(Device::cpu(), 15);
  const Tensor x = cpu.randn({2, 3, 9, 8, 7});
  const Tensor weights = cpu.randn({2, 3, 13, 12, 10}).to(Device::cuda(0));
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    Tensor d = x.to(Device::cuda(0));
    d.set_requires_grad(true);
    backward(sum(mul(upsample_trilinear3d_scale(d, {1.5, 1.5, 1.5}, false), weights)));
    const std::vector<float> grad = d.grad().to_vector<float>();
    if (run == 0) first = grad;
    else CHECK(grad == first);
  }
}

TEST_CASE("gpu: concat and shortcut A match the CPU", "[gpu]") {
  Context cpu(Device::cpu(), 16);
  const Tensor a = cpu.randn({2, 3, 5, 7, 6}), b = cpu.randn({2, 1, 5, 7, 6}),
               c = cpu.randn({2, 4, 5, 7, 6});
  for (const int axis : {1, -4}) {
    compare_with_cpu("concat channels", {a, b, c}, [axis](const auto& in) {
      return concat({in[0], in[1], in[2]}, axis);
    });
  }
  const Tensor p = cpu.randn({2, 3, 5, 2, 6}), q = cpu.randn({2, 3, 5, 7, 6});
  compare_with_cpu("concat H", {p, q}, [](const auto& in) { return concat({in[0], in[1]}, 3); });
  compare_with_cpu("concat N", {a, a}, [](const auto& in) { return concat({in[0], in[1]}, 0); });
  compare_with_cpu("concat W", {q, a}, [](const auto& in) { return concat({in[0], in[1]}, -1); });
  compare_with_cpu("concat one", {a}, [](const auto& in) { return concat({in[0]}, 2); });
  compare_with_cpu("flatten", {a}, [](const auto& in) { return flatten(in[0]); });
  // Shortcut A is detached (MedicalNet's option A), so only its forward is compared.
  for (const int64_t stride : {1, 2, 3}) {
    INFO("stride " << stride);
    compare_with_cpu("zero_pad_channels_subsample", {a}, [stride](const auto& in) {
      return zero_pad_channels_subsample(in[0], stride, 7);
    }, 1e-4, false);
  }
  // An exact copy: the result is bit for bit the CPU's.
  CHECK(zero_pad_channels_subsample(a.to(Device::cuda(0)), 2, 5).to_vector<float>() ==
        zero_pad_channels_subsample(a, 2, 5).to_vector<float>());
}

TEST_CASE("gpu: resampling more elements than one grid holds", "[gpu]") {
  // Over 4096 blocks x 256 threads of outputs: the grid-stride loops take a second lap.
  Context cpu(Device::cpu(), 17);
  const Tensor x = cpu.randn({1, 3, 40, 48, 30});  // 1.38M elements after doubling
  compare_with_cpu("upsample_trilinear3d (large)", {x}, [](const auto& in) {
    return upsample_trilinear3d_scale(in[0], {2, 2, 2}, false);
  });
  compare_with_cpu("max_pool3d (large input)", {x}, [](const auto& in) {
    return max_pool3d(upsample_nearest3d(in[0], {80, 96, 60}), {3, 3, 3}, {2, 2, 2}, {1, 1, 1});
  });
}

TEST_CASE("gpu: resampling ops refuse f64 on CUDA with a clear error", "[gpu]") {
  Context cpu(Device::cpu(), 18);
  const Tensor x = cpu.randn({1, 2, 3, 4, 5}).to(DType::f64).to(Device::cuda(0));
  const auto f32 = Catch::Contains("the CUDA kernels take f32");
  CHECK_THROWS_WITH(upsample_trilinear3d(x, {6, 8, 10}, false), f32);
  CHECK_THROWS_WITH(upsample_nearest3d_scale(x, {2, 2, 2}), f32);
  CHECK_THROWS_WITH(max_pool3d(x, {2, 2, 2}, {2, 2, 2}, {0, 0, 0}), f32);
  CHECK_THROWS_WITH(adaptive_avg_pool3d(x, {1, 1, 1}), f32);
  CHECK_THROWS_WITH(concat({x, x}, 1), f32);
  CHECK_THROWS_WITH(zero_pad_channels_subsample(x, 2, 4), f32);
}
