// conv3d, conv_transpose3d and linear on CUDA (the tiled implicit-GEMM kernels, the direct
// fallback and split-K wgrad) against the CPU ops: forward, and the gradients of x, w and b.
// Shapes stay small: the emulated device runs every GPU thread as a fiber.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gpu_compare.h"
#include "med3d/kernels/conv_params.h"
#include "med3d/kernels/cuda/conv3d.h"

using namespace med3d;

namespace {

// Every element of `t` is finite. gpu_test::relative_error skips NaN (std::max drops it), and
// the emulated device fills fresh memory with NaN, so an element no kernel wrote would pass.
void check_finite(const Tensor& t) {
  const std::vector<double> v = t.to_vector<double>();
  CHECK(std::all_of(v.begin(), v.end(), [](double e) { return std::isfinite(e); }));
}

// gpu_test::compare_with_cpu, then the CUDA output and gradients must be finite too.
void compare_with_cpu(const std::string& name, const std::vector<Tensor>& cpu_inputs,
                      const gpu_test::OpFn& op) {
  gpu_test::compare_with_cpu(name, cpu_inputs, op);
  INFO("op: " << name << " on CUDA is finite");
  std::vector<Tensor> device;
  for (const Tensor& t : cpu_inputs) {
    device.push_back(t.detach().to(Device::cuda(0)));
    device.back().set_requires_grad(true);
  }
  const Tensor y = op(device);
  check_finite(y);
  backward(sum(y));
  for (const Tensor& t : device) check_finite(t.grad());
}

// x [N, C, D, H, W] against w [K, C/groups, T, R, S], with and (unless `without_bias_only`)
// without a bias.
void check_conv(const std::string& name, const Shape& x_shape, const Shape& w_shape,
                const Conv3dOptions& options, bool without_bias_only = false) {
  Context cpu(Device::cpu(), 11);
  const Tensor x = cpu.randn(x_shape), w = cpu.randn(w_shape), b = cpu.randn({w_shape[0]});
  if (!without_bias_only)
    compare_with_cpu(name + " with bias", {x, w, b}, [options](const auto& in) {
      return conv3d(in[0], in[1], in[2], options);
    });
  compare_with_cpu(name + " without bias", {x, w}, [options](const auto& in) {
    return conv3d(in[0], in[1], Tensor(), options);
  });
}

// x [N, C, D, H, W] against w [C, K/groups, T, R, S], with and without a bias.
void check_conv_transpose(const std::string& name, const Shape& x_shape, const Shape& w_shape,
                          const ConvTranspose3dOptions& options) {
  Context cpu(Device::cpu(), 12);
  const Tensor x = cpu.randn(x_shape), w = cpu.randn(w_shape);
  const Tensor b = cpu.randn({w_shape[1] * options.groups});
  compare_with_cpu(name + " with bias", {x, w, b}, [options](const auto& in) {
    return conv_transpose3d(in[0], in[1], in[2], options);
  });
  compare_with_cpu(name + " without bias", {x, w}, [options](const auto& in) {
    return conv_transpose3d(in[0], in[1], Tensor(), options);
  });
}

Conv3dOptions options(std::array<int64_t, 3> stride, std::array<int64_t, 3> padding,
                      std::array<int64_t, 3> dilation, int64_t groups = 1) {
  return {stride, padding, dilation, groups};
}

}  // namespace

TEST_CASE("gpu: conv3d strides padding and dilation match the CPU", "[gpu][conv]") {
  check_conv("3x3x3 pad 1", {1, 3, 5, 6, 7}, {5, 3, 3, 3, 3}, Conv3dOptions::uniform(1, 1));
  check_conv("stride 2", {2, 3, 7, 6, 5}, {4, 3, 3, 3, 3}, Conv3dOptions::uniform(2, 1));
  check_conv("per-axis stride 1 2 3", {1, 2, 6, 7, 9}, {3, 2, 3, 2, 3},
             options({1, 2, 3}, {0, 1, 2}, {1, 1, 1}));
  check_conv("dilation 2", {1, 2, 9, 8, 7}, {3, 2, 3, 3, 3}, Conv3dOptions::uniform(1, 2, 2));
  // Padding 12 and dilation 12 on a 5x6x7 input: most taps fall outside it.
  check_conv("dilation 12", {1, 2, 5, 6, 7}, {3, 2, 3, 3, 3}, Conv3dOptions::uniform(1, 12, 12));
  check_conv("batch 3 mixed stride and dilation", {3, 3, 5, 4, 6}, {4, 3, 3, 3, 3},
             options({1, 2, 1}, {1, 1, 2}, {1, 1, 2}));
}

TEST_CASE("gpu: conv3d groups and pointwise match the CPU", "[gpu][conv]") {
  check_conv("groups 2", {1, 4, 5, 5, 5}, {6, 2, 3, 3, 3}, Conv3dOptions::uniform(1, 1, 1, 2));
  check_conv("1x1x1", {2, 5, 4, 5, 6}, {7, 5, 1, 1, 1}, Conv3dOptions::uniform(1));
  check_conv("1x1x1 stride 2", {1, 3, 5, 4, 5}, {2, 3, 1, 1, 1}, Conv3dOptions::uniform(2));
}

TEST_CASE("gpu: conv3d stem and wide layers match the CPU", "[gpu][conv]") {
  check_conv("7x7x7 stride 2 pad 3 stem", {1, 2, 9, 10, 11}, {3, 2, 7, 7, 7},
             Conv3dOptions::uniform(2, 3));
  // More than one 64-wide tile along the filters: K = 70.
  check_conv("K 70", {1, 3, 4, 4, 5}, {70, 3, 3, 3, 3}, Conv3dOptions::uniform(1, 1));
}

TEST_CASE("gpu: conv3d split-K wgrad matches the CPU", "[gpu][conv]") {
  // One tile of dw: wgrad cuts its N * Z * P * Q = 17600 reduction indices into 63 split-K
  // partials of 280 and sums them.
  const kernels::Conv3dParams p =
      kernels::conv3d_params("t", {2, 1, 20, 20, 22}, {2, 1, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1);
  CHECK(kernels::cuda::conv3d_wgrad_workspace_elements(p) == 63 * 2);
  check_conv("split-K wgrad", {2, 1, 20, 20, 22}, {2, 1, 1, 1, 1}, Conv3dOptions::uniform(1));
}

TEST_CASE("gpu: conv3d split-K dgrad matches the CPU", "[gpu][conv]") {
  // 16 channels of 4^3 voxels are two 32-tiles: dgrad cuts its 64 * 27 = 1728 reduction indices
  // into 7 split-K partials (the strided case by stride phase).
  const kernels::Conv3dParams p = kernels::conv3d_params("t", {1, 16, 4, 4, 4}, {64, 16, 3, 3, 3},
                                                         {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1);
  CHECK(kernels::cuda::conv3d_dgrad_workspace_elements(p) == 7 * 16 * 64);
  check_conv("split-K dgrad", {1, 16, 4, 4, 4}, {64, 16, 3, 3, 3}, Conv3dOptions::uniform(1, 1));
  check_conv("split-K dgrad, stride 2", {1, 16, 6, 5, 4}, {64, 16, 3, 3, 3}, Conv3dOptions::uniform(2, 1));
}

TEST_CASE("gpu: conv launchers refuse a missing split-K workspace", "[gpu][conv]") {
  const kernels::Conv3dParams p = kernels::conv3d_params("t", {1, 16, 4, 4, 4}, {64, 16, 3, 3, 3},
                                                         {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1);
  // The launchers check before they launch: no device memory is touched.
  CHECK_THROWS_WITH(kernels::cuda::conv3d_dgrad(nullptr, p, nullptr, nullptr, nullptr, nullptr),
                    Catch::Contains("allocate conv3d_dgrad_workspace_elements(p)"));
  const kernels::Conv3dParams q =
      kernels::conv3d_params("t", {2, 1, 20, 20, 22}, {2, 1, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1);
  CHECK_THROWS_WITH(kernels::cuda::conv3d_wgrad(nullptr, q, nullptr, nullptr, nullptr, nullptr),
                    Catch::Contains("allocate conv3d_wgrad_workspace_elements(p)"));
}

TEST_CASE("gpu: conv3d direct fallback matches the CPU", "[gpu][conv]") {  // 65536 groups exceed the tiled kernels' grid (z <= 65535): the direct kernels run. No bias:
  // its gradient would be 65536 blocks of 256 threads, minutes on the emulated device.
  check_conv("65536 groups direct", {1, 65536, 1, 1, 2}, {65536, 1, 1, 1, 2},
             Conv3dOptions::uniform(1, 0, 1, 65536), true);
}

TEST_CASE("gpu: conv_transpose3d matches the CPU", "[gpu][conv]") {
  check_conv_transpose("k2 s2", {2, 4, 3, 4, 5}, {4, 3, 2, 2, 2},
                       ConvTranspose3dOptions::uniform(2));
  check_conv_transpose("k2 s2 output_padding 1", {1, 3, 3, 2, 4}, {3, 2, 2, 2, 2},
                       ConvTranspose3dOptions::uniform(2, 0, 1));
  check_conv_transpose("k2 s2 groups 2", {2, 4, 3, 4, 3}, {4, 3, 2, 2, 2},
                       ConvTranspose3dOptions::uniform(2, 0, 0, 1, 2));
  ConvTranspose3dOptions mixed = ConvTranspose3dOptions::uniform(2, 1, 0, 1, 2);
  mixed.output_padding = {1, 0, 1};
  check_conv_transpose("k3 s2 pad 1 output_padding 1 0 1 groups 2", {2, 4, 3, 4, 5},
                       {4, 3, 3, 3, 3}, mixed);
}

TEST_CASE("gpu: linear matches the CPU", "[gpu][conv][linear]") {
  Context cpu(Device::cpu(), 13);
  const Tensor x = cpu.randn({5, 37}), w = cpu.randn({70, 37}), b = cpu.randn({70});
  compare_with_cpu("linear with bias", {x, w, b},
                   [](const auto& in) { return linear(in[0], in[1], in[2]); });
  compare_with_cpu("linear without bias", {x, w},
                   [](const auto& in) { return linear(in[0], in[1]); });
  const Tensor one = cpu.randn({1, 3}), w1 = cpu.randn({2, 3});
  compare_with_cpu("linear 1 sample", {one, w1}, [](const auto& in) { return linear(in[0], in[1]); });
}

// The cuBLAS GEMMs' transposes and leading dimensions: sizes that are multiples of nothing,
// one sample and several, a single input feature and a single output (x, w and b all get
// gradients, so fprop, dgrad, wgrad and the bias gradient all run).
TEST_CASE("gpu: linear on odd sizes matches the CPU", "[gpu][conv][linear]") {
  Context cpu(Device::cpu(), 17);
  struct Size {
    int64_t in, out;
  };
  for (const int64_t n : {int64_t(1), int64_t(3)}) {
    for (const Size s : {Size{7, 5}, Size{1, 3}, Size{33, 1}, Size{5, 7}}) {
      const std::string name = "linear " + std::to_string(n) + "x" + std::to_string(s.in) +
                               " -> " + std::to_string(s.out);
      const Tensor x = cpu.randn({n, s.in}), w = cpu.randn({s.out, s.in}),
                   b = cpu.randn({s.out});
      compare_with_cpu(name + " with bias", {x, w, b},
                       [](const auto& in) { return linear(in[0], in[1], in[2]); });
      compare_with_cpu(name + " without bias", {x, w},
                       [](const auto& in) { return linear(in[0], in[1]); });
    }
  }
}

// No input features: y is the bias (the empty sum is zero; cuBLAS is not called with lda 0).
TEST_CASE("gpu: linear with no input features matches the CPU", "[gpu][conv][linear]") {
  Context cpu(Device::cpu(), 19);
  const Tensor x = cpu.randn({3, 0}), w = cpu.randn({4, 0}), b = cpu.randn({4});
  compare_with_cpu("linear 3x0 -> 4 with bias", {x, w, b},
                   [](const auto& in) { return linear(in[0], in[1], in[2]); });
  compare_with_cpu("linear 3x0 -> 4 without bias", {x, w},
                   [](const auto& in) { return linear(in[0], in[1]); });
}
