#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>

#include "med3d/kernels/conv_params.h"
#include "med3d/kernels/cpu/conv3d.h"
#include "med3d/kernels/cpu/conv3d_direct.h"
#include "med3d/kernels/cpu/conv3d_padded.h"
#include "med3d/kernels/cpu/conv3d_winograd.h"
#include "test_util.h"

using namespace med3d;
using kernels::Conv3dParams;
using kernels::Dims3;
using test::gradcheck;
using test::random_leaf;

namespace {

// Gradient check of conv3d in x, w and (if `bias`) b.
void gradcheck_conv3d(Context& context, const Shape& x, const Shape& w, bool bias,
                      const Conv3dOptions& options) {
  std::vector<Tensor> inputs{random_leaf(context, x), random_leaf(context, w)};
  if (bias) inputs.push_back(random_leaf(context, {w[0]}));
  gradcheck(
      context,
      [options](const std::vector<Tensor>& in) {
        return conv3d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), options);
      },
      inputs);
}

// Gradient check of conv_transpose3d in x, w and (if `bias`) b; w is [C, K/groups, T, R, S].
void gradcheck_conv_transpose3d(Context& context, const Shape& x, const Shape& w, bool bias,
                                const ConvTranspose3dOptions& options) {
  std::vector<Tensor> inputs{random_leaf(context, x), random_leaf(context, w)};
  if (bias) inputs.push_back(random_leaf(context, {w[1] * options.groups}));
  gradcheck(
      context,
      [options](const std::vector<Tensor>& in) {
        return conv_transpose3d(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), options);
      },
      inputs);
}

Dims3 dims3(const Checkpoint& g, const char* name) {
  const std::vector<int64_t> v = g.at(name).to_vector<int64_t>();
  REQUIRE(v.size() == 3);
  return {v[0], v[1], v[2]};
}

// Runs the fixture's op forward and backward (seeded with its dy) and compares y, dx, dw, db.
void check_golden(const std::string& name, bool transposed) {
  INFO("fixture " << name);
  Context context;
  const Checkpoint g = test::load_golden(context, name);
  Tensor x = g.at("x").clone().set_requires_grad(true);
  Tensor w = g.at("w").clone().set_requires_grad(true);
  Tensor b = g.contains("b") ? g.at("b").clone().set_requires_grad(true) : Tensor();
  const int64_t groups = g.at("groups").to_vector<int64_t>().at(0);
  Tensor y;
  if (transposed) {
    y = conv_transpose3d(x, w, b,
                         {.stride = dims3(g, "stride"),
                          .padding = dims3(g, "padding"),
                          .output_padding = dims3(g, "output_padding"),
                          .dilation = dims3(g, "dilation"),
                          .groups = groups});
  } else {
    REQUIRE(dims3(g, "output_padding") == Dims3{0, 0, 0});
    y = conv3d(x, w, b,
               {.stride = dims3(g, "stride"),
                .padding = dims3(g, "padding"),
                .dilation = dims3(g, "dilation"),
                .groups = groups});
  }
  test::require_close(y, g.at("y"), test::kGoldenTolerance, name + " y");
  backward(y, g.at("dy"));
  test::require_close(x.grad(), g.at("dx"), test::kGoldenTolerance, name + " dx");
  test::require_close(w.grad(), g.at("dw"), test::kGoldenTolerance, name + " dw");
  if (b.defined()) test::require_close(b.grad(), g.at("db"), test::kGoldenTolerance, name + " db");
}

}  // namespace

TEST_CASE("conv3d: gradient check of x, w and b", "[conv][gradcheck]") {
  Context context(Device::cpu(), 1);
  SECTION("stride 2") {
    gradcheck_conv3d(context, {2, 3, 5, 7, 6}, {4, 3, 3, 3, 3}, true, Conv3dOptions::uniform(2, 1));
  }
  SECTION("dilation 2") {
    gradcheck_conv3d(context, {2, 3, 5, 7, 6}, {4, 3, 3, 3, 3}, true,
                     Conv3dOptions::uniform(1, 2, 2));
  }
  SECTION("dilation 12 with padding 12") {
    gradcheck_conv3d(context, {2, 3, 5, 7, 6}, {2, 3, 3, 3, 3}, true,
                     Conv3dOptions::uniform(1, 12, 12));
    // A depth of 13 lets the off-centre taps along depth land inside the volume.
    gradcheck_conv3d(context, {1, 2, 13, 5, 4}, {2, 2, 3, 3, 3}, true,
                     Conv3dOptions::uniform(1, 12, 12));
  }
  SECTION("different stride, padding and dilation per axis, non-cubic kernel") {
    gradcheck_conv3d(context, {2, 3, 5, 7, 6}, {4, 3, 3, 2, 3}, true,
                     {.stride = {1, 2, 1}, .padding = {0, 1, 2}, .dilation = {1, 1, 2}});
  }
  SECTION("groups 2") {
    gradcheck_conv3d(context, {2, 4, 5, 7, 6}, {6, 2, 3, 3, 3}, true,
                     Conv3dOptions::uniform(1, 1, 1, 2));
  }
  SECTION("1x1x1 fast path") {
    gradcheck_conv3d(context, {2, 3, 5, 7, 6}, {4, 3, 1, 1, 1}, true, {});
    gradcheck_conv3d(context, {2, 4, 5, 7, 6}, {6, 2, 1, 1, 1}, true, {.groups = 2});
  }
  SECTION("1x1x1 kernel with stride 2 takes the general path") {
    gradcheck_conv3d(context, {2, 3, 5, 7, 6}, {4, 3, 1, 1, 1}, true, Conv3dOptions::uniform(2));
  }
  SECTION("taps that read only padding") {
    // Stride 4 and padding 2 along depth: output plane 0 reads padding only.
    gradcheck_conv3d(context, {2, 3, 5, 7, 6}, {4, 3, 1, 3, 3}, true,
                     {.stride = {4, 1, 1}, .padding = {2, 1, 1}});
    // No tap reads the input at all: y is the bias, dx and dw are zero.
    gradcheck_conv3d(context, {2, 3, 2, 3, 3}, {4, 3, 1, 1, 1}, true,
                     {.stride = {4, 1, 1}, .padding = {2, 0, 0}});
  }
  SECTION("no bias") {
    gradcheck_conv3d(context, {2, 3, 5, 7, 6}, {4, 3, 3, 3, 3}, false,
                     Conv3dOptions::uniform(1, 1));
  }
}

TEST_CASE("conv_transpose3d: gradient check of x, w and b", "[conv][gradcheck]") {
  Context context(Device::cpu(), 2);
  SECTION("stride 2 with output_padding 1") {
    gradcheck_conv_transpose3d(context, {2, 3, 5, 7, 6}, {3, 2, 3, 3, 3}, true,
                               ConvTranspose3dOptions::uniform(2, 1, 1));
  }
  SECTION("groups 2") {
    gradcheck_conv_transpose3d(context, {2, 4, 5, 7, 6}, {4, 3, 3, 3, 3}, true,
                               {.stride = {2, 1, 2}, .padding = {1, 1, 1}, .groups = 2});
  }
  SECTION("dilation 2, padding per axis, output_padding below the dilation") {
    gradcheck_conv_transpose3d(
        context, {2, 3, 5, 7, 6}, {3, 2, 3, 3, 3}, true,
        {.padding = {1, 2, 0}, .output_padding = {1, 0, 1}, .dilation = {2, 2, 2}});
  }
  SECTION("dilation 12 with padding 12: off-centre taps read padding along height and width") {
    gradcheck_conv_transpose3d(context, {1, 2, 13, 5, 4}, {2, 3, 3, 3, 3}, true,
                               ConvTranspose3dOptions::uniform(1, 12, 0, 12));
  }
  SECTION("kernel 2 stride 2, no bias") {
    gradcheck_conv_transpose3d(context, {2, 3, 5, 7, 6}, {3, 2, 2, 2, 2}, false,
                               ConvTranspose3dOptions::uniform(2));
  }
  SECTION("kernel 3 stride 3: each output voxel gets one tap's product, three taps interleaved per row") {
    gradcheck_conv_transpose3d(context, {1, 2, 2, 3, 2}, {2, 3, 3, 3, 3}, true, ConvTranspose3dOptions::uniform(3));
  }
  SECTION("1x1x1 fast path") {
    gradcheck_conv_transpose3d(context, {2, 3, 5, 7, 6}, {3, 4, 1, 1, 1}, true, {});
  }
}

TEST_CASE("conv3d: golden comparison with PyTorch", "[conv][golden]") {
  for (const char* name :
       {"stride2", "dilation2", "dilation12", "padding_per_axis", "groups2", "pointwise", "no_bias",
        "stem_k7_s2_p3", "k3_d12_p12", "stride4_pad2_padding_plane"})
    check_golden(std::string("conv3d_") + name, false);
}

TEST_CASE("conv_transpose3d: golden comparison with PyTorch", "[conv][golden]") {
  for (const char* name : {"basic", "stride2_output_padding1", "k2_s2", "groups2", "dilation2",
                           "output_padding_below_dilation", "no_bias"})
    check_golden(std::string("conv_transpose3d_") + name, true);
}

TEST_CASE("conv3d: gradients only for inputs that require them", "[conv]") {
  Context context;
  Tensor x = context.randn({1, 2, 4, 4, 4});  // no grad: a network input
  Tensor w = random_leaf(context, {3, 2, 3, 3, 3}, DType::f32);
  Tensor b = context.randn({3});  // frozen
  backward(sum(conv3d(x, w, b, Conv3dOptions::uniform(1, 1))));
  REQUIRE(w.grad().defined());
  REQUIRE_FALSE(x.grad().defined());
  REQUIRE_FALSE(b.grad().defined());
  // Frozen weights before a trained layer: only dx flows.
  Tensor x2 = random_leaf(context, {1, 2, 4, 4, 4}, DType::f32);
  backward(sum(conv3d(x2, context.randn({3, 2, 3, 3, 3}))));
  backward(sum(conv_transpose3d(x2, context.randn({2, 3, 2, 2, 2}), context.randn({3}),
                                ConvTranspose3dOptions::uniform(2))));
  REQUIRE(x2.grad().shape() == x2.shape());
  Tensor w2 = random_leaf(context, {2, 3, 2, 2, 2}, DType::f32);
  backward(sum(conv_transpose3d(x, w2, {}, ConvTranspose3dOptions::uniform(2))));
  REQUIRE(w2.grad().shape() == w2.shape());
  // Under NoGrad nothing is recorded.
  NoGrad no_grad(context);
  REQUIRE_FALSE(conv3d(x, w).requires_grad());
}

namespace {

// Runs the three kernels with `scratch_elements` of scratch; returns y, dx, dw.
std::vector<Tensor> run_kernels(Context& context, const Conv3dParams& p, const Tensor& x,
                                const Tensor& w, const Tensor& b, const Tensor& dy,
                                int64_t scratch_elements) {
  std::vector<double> scratch(static_cast<std::size_t>(scratch_elements));
  Tensor y = context.empty(dy.shape(), DType::f64), dx = context.empty(x.shape(), DType::f64);
  Tensor dw = context.empty(w.shape(), DType::f64);
  kernels::cpu::conv3d_fprop<double>(p, x.data<double>(), w.data<double>(), b.data<double>(),
                                     y.data<double>(), scratch.data(), scratch_elements);
  kernels::cpu::conv3d_dgrad<double>(p, dy.data<double>(), w.data<double>(), dx.data<double>(),
                                     scratch.data(), scratch_elements);
  kernels::cpu::conv3d_wgrad<double>(p, x.data<double>(), dy.data<double>(), dw.data<double>(),
                                     scratch.data(), scratch_elements);
  return {y, dx, dw};
}

}  // namespace

TEST_CASE("conv3d: blocked column matrices match one block", "[conv]") {
  // A scratch buffer of a few output lines forces several vol2col / col2vol blocks, including
  // a partial last one; the default budget never does on test-sized volumes.
  Context context(Device::cpu(), 3);
  struct Case {
    Conv3dParams p;
    int64_t live_taps;
  };
  const Case cases[] = {
      {kernels::conv3d_params("test", {2, 3, 5, 7, 6}, {4, 3, 3, 3, 3}, {1, 2, 1}, {1, 1, 2},
                              {2, 1, 1}, 1),
       27},
      // Dilation 12: along height and width only the centre tap reads the input.
      {kernels::conv3d_params("test", {2, 4, 13, 5, 4}, {6, 2, 3, 3, 3}, {1, 1, 1}, {12, 12, 12},
                              {12, 12, 12}, 2),
       3},
      // Kernel 2 stride 2: the taps tile x, so dgrad writes each block's voxels once.
      {kernels::conv3d_params("test", {2, 3, 6, 8, 10}, {4, 3, 2, 2, 2}, {2, 2, 2}, {0, 0, 0}, {1, 1, 1}, 1), 8},
  };
  for (const Case& c : cases) {
    const Conv3dParams& p = c.p;
    const int64_t gathered =
        c.live_taps < p.taps() ? p.K * p.channels_per_group() * c.live_taps : 0;
    const int64_t line = p.channels_per_group() * c.live_taps * p.Q;
    REQUIRE(kernels::cpu::conv3d_scratch_elements(p, gathered + 3 * line) == gathered + 3 * line);
    REQUIRE(kernels::cpu::conv3d_scratch_elements(p, 1) == gathered + line);  // at least one line
    REQUIRE(kernels::cpu::conv3d_scratch_elements(p) == gathered + line * p.Z * p.P);
    Tensor x = context.randn({p.N, p.C, p.D, p.H, p.W}, DType::f64);
    Tensor w = context.randn({p.K, p.channels_per_group(), p.T, p.R, p.S}, DType::f64);
    Tensor dy = context.randn({p.N, p.K, p.Z, p.P, p.Q}, DType::f64);
    Tensor b = context.randn({p.K}, DType::f64);
    const std::vector<Tensor> whole =
        run_kernels(context, p, x, w, b, dy, kernels::cpu::conv3d_scratch_elements(p));
    const std::vector<Tensor> blocked = run_kernels(context, p, x, w, b, dy, gathered + 3 * line);
    for (int i = 0; i < 3; ++i) test::require_close(blocked[i], whole[i], 1e-13, "blocked");
    // The op agrees with the kernels.
    const Tensor y =
        conv3d(x, w, b,
               {.stride = p.stride, .padding = p.pad, .dilation = p.dilation, .groups = p.groups});
    test::require_close(y, whole[0], 1e-13, "op");
    REQUIRE_THROWS_WITH(run_kernels(context, p, x, w, b, dy, gathered + line - 1),
                        Catch::Contains("scratch buffer holds"));
  }
}

TEST_CASE("conv3d: per-tap GEMMs on padded dilated taps match vol2col", "[conv]") {
  // Dilated convs on small maps with many channels take the per-tap path (each live tap one
  // GEMM over the outputs whose input lies inside); a scratch too small for it forces vol2col.
  Context context(Device::cpu(), 6);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {1, 16, 6, 6, 6}, {16, 16, 3, 3, 3}, {1, 1, 1}, {3, 3, 3},
                             {3, 3, 3}, 1),
      kernels::conv3d_params("test", {2, 16, 7, 6, 5}, {20, 16, 3, 3, 3}, {1, 2, 1}, {2, 3, 2},
                             {2, 3, 2}, 1),
  };
  for (const Conv3dParams& p : cases) {
    REQUIRE(kernels::conv3d_flops_effective(p) < 0.8 * kernels::conv3d_flops_nominal(p));
    const int64_t vol2col_line = p.C * p.taps() * p.Q;  // every tap is live in both cases
    const int64_t per_tap = kernels::cpu::conv3d_scratch_elements(p);
    const int64_t weights = p.K * p.C * p.taps();
    REQUIRE(per_tap >= weights + 2 * std::max(p.C, p.K));
    // (f32 fprop may run on the line tiles instead; the size covers their packed weights too.)
    const int64_t direct =
        kernels::cpu::conv3d_direct_fprop_applies(p) ? kernels::cpu::conv3d_direct_scratch_elements(p) : 0;
    REQUIRE(per_tap <= std::max(direct, weights + 2 * std::max(p.C, p.K) * p.output_spatial()));
    // All planes, 6x6 per plane (or the line tiles' packed weights where they need more).
    if (p.N == 1) REQUIRE(per_tap == std::max(direct, weights + 2 * 16 * 6 * 36));
    Tensor x = context.randn({p.N, p.C, p.D, p.H, p.W}, DType::f64);
    Tensor w = context.randn({p.K, p.C, p.T, p.R, p.S}, DType::f64);
    Tensor dy = context.randn({p.N, p.K, p.Z, p.P, p.Q}, DType::f64);
    Tensor b = context.randn({p.K}, DType::f64);
    const std::vector<Tensor> taps = run_kernels(context, p, x, w, b, dy, per_tap);
    const std::vector<Tensor> cols = run_kernels(context, p, x, w, b, dy, vol2col_line);
    for (int i = 0; i < 3; ++i) test::require_close(taps[i], cols[i], 1e-12, "per-tap vs vol2col");
  }
}

TEST_CASE("conv3d: f32 kernels (gemm_f32) match the f64 kernels (Eigen) on every GEMM path", "[conv]") {
  // In f32 fprop and wgrad are implicit GEMMs (the column matrix gathered into the packed
  // panels), and so is dgrad with unit strides (a forward conv of dy with the kernel flipped);
  // f64 keeps vol2col / col2vol. Cases: edge tiles, pointwise, grouped with a stride (f32 dgrad
  // falls back to col2vol), the per-tap path of dilated convs, dead taps with groups through
  // the flipped dgrad, a width stride, padding wider than the kernel (no flipped dgrad), a
  // depth of 16 * 27 rows (two GEMM depth blocks, several panels, both threads), and lines
  // longer than 16 voxels that blocks of 64 start in the middle of, pointwise convs over 2 and
  // 3 samples (a sample per thread, or in turn with the GEMM split), grouped or not, over 2 x 780
  // voxels (items wider than 64 voxels, a short last one per sample, halves), y and dx of 4 MiB
  // (streamed past the caches), stride
  // 2 on output lines of 11 (the AVX2 gather's chunks of 8 and their tails), and kernel 2 stride 2
  // with groups (dgrad's taps tile dx: written, interleaved in registers, on lines of 8 + 3).
  Context context(Device::cpu(), 7);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {2, 5, 6, 7, 9}, {13, 5, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 33, 4, 5, 6}, {15, 33, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 8, 5, 6, 4}, {6, 4, 3, 3, 3}, {2, 1, 1}, {1, 1, 1}, {1, 1, 1}, 2),
      kernels::conv3d_params("test", {2, 16, 7, 6, 5}, {20, 16, 3, 3, 3}, {1, 2, 1}, {2, 3, 2}, {2, 3, 2}, 1),
      kernels::conv3d_params("test", {1, 6, 13, 5, 4}, {8, 3, 3, 3, 3}, {1, 1, 1}, {12, 12, 12}, {12, 12, 12}, 2),
      kernels::conv3d_params("test", {2, 3, 9, 8, 11}, {5, 3, 3, 3, 3}, {1, 1, 2}, {1, 2, 1}, {1, 2, 1}, 1),
      kernels::conv3d_params("test", {1, 4, 5, 5, 5}, {3, 4, 3, 3, 3}, {1, 1, 1}, {0, 2, 3}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 16, 10, 12, 12}, {20, 16, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 2, 3, 4, 37}, {3, 2, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 40, 3, 9, 11}, {24, 40, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {3, 24, 3, 9, 11}, {30, 12, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 2),
      kernels::conv3d_params("test", {2, 16, 5, 12, 13}, {24, 16, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 64, 16, 32, 32}, {64, 64, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 6, 4, 6, 21}, {8, 6, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 6, 4, 6, 22}, {8, 3, 2, 2, 2}, {2, 2, 2}, {0, 0, 0}, {1, 1, 1}, 2),
  };
  for (const Conv3dParams& p : cases) {
    Tensor x = context.randn({p.N, p.C, p.D, p.H, p.W}, DType::f64);
    Tensor w = context.randn({p.K, p.channels_per_group(), p.T, p.R, p.S}, DType::f64);
    Tensor dy = context.randn({p.N, p.K, p.Z, p.P, p.Q}, DType::f64);
    Tensor b = context.randn({p.K}, DType::f64);
    const int64_t n_scratch = kernels::cpu::conv3d_scratch_elements(p);
    const std::vector<Tensor> ref = run_kernels(context, p, x, w, b, dy, n_scratch);
    const Tensor xf = x.to(DType::f32), wf = w.to(DType::f32), dyf = dy.to(DType::f32), bf = b.to(DType::f32);
    std::vector<float> scratch(static_cast<std::size_t>(std::max<int64_t>(n_scratch, 1)));
    Tensor y = context.empty(dy.shape(), DType::f32), dx = context.empty(x.shape(), DType::f32);
    Tensor dw = context.empty(w.shape(), DType::f32);
    kernels::cpu::conv3d_fprop<float>(p, xf.data<float>(), wf.data<float>(), bf.data<float>(), y.data<float>(),
                                      scratch.data(), n_scratch);
    kernels::cpu::conv3d_dgrad<float>(p, dyf.data<float>(), wf.data<float>(), dx.data<float>(), scratch.data(),
                                      n_scratch);
    kernels::cpu::conv3d_wgrad<float>(p, xf.data<float>(), dyf.data<float>(), dw.data<float>(), scratch.data(),
                                      n_scratch);
    test::require_close(y.to(DType::f64), ref[0], 1e-5, "f32 y");
    test::require_close(dx.to(DType::f64), ref[1], 1e-5, "f32 dx");
    test::require_close(dw.to(DType::f64), ref[2], 1e-5, "f32 dw");
  }
}

// Random f64 inputs of a single-group conv without bias, its f64 kernels' results (y, dx, dw)
// and the inputs in f32: what a specialised f32 kernel is checked against.
struct ConvCase {
  Tensor x, w, dy;
  std::vector<Tensor> ref;
  Tensor xf, wf, dyf;
};
ConvCase conv_case(Context& context, const Conv3dParams& p) {
  ConvCase c;
  c.x = context.randn({p.N, p.C, p.D, p.H, p.W}, DType::f64);
  c.w = context.randn({p.K, p.C, p.T, p.R, p.S}, DType::f64);
  c.dy = context.randn({p.N, p.K, p.Z, p.P, p.Q}, DType::f64);
  c.ref = run_kernels(context, p, c.x, c.w, context.full({p.K}, 0.0, DType::f64), c.dy,
                      kernels::cpu::conv3d_scratch_elements(p));
  c.xf = c.x.to(DType::f32);
  c.wf = c.w.to(DType::f32);
  c.dyf = c.dy.to(DType::f32);
  return c;
}

TEST_CASE("conv3d: the direct kernels of same convs match the f64 kernels", "[conv]") {
  // Cases: both register tiles (planes over and up to 64 voxels), output channels not a
  // multiple of either tile (partial panels, in fprop and in dgrad's swapped roles; partial
  // filter and channel blocks in wgrad), sample volumes that end inside a tile, taps dead for whole tiles (dilation 4 along depth of 3),
  // an anisotropic kernel, an even kernel with dilation 2, a dilation whose only live tap is
  // the centre, live taps that are not consecutive (weights packed tap by tap, not in runs),
  // more channels than one register sum block over planes of 1024 voxels (several channel
  // blocks per tap; input channels copied apart from their 4 KiB strides), and filter counts
  // that leave AVX2's line tiles tail panels of 16 (32 = 16 + 16 in fprop, 40 = 24 + 16 in dgrad),
  // and weights of over 2^20 elements, which the line tiles pack per thread and panel (fprop: 6
  // panels of 24 + one of 16; dgrad: 10 + 1; AVX-512 dgrad: 8 panels on 8 threads, per thread as
  // its input is smaller than its weights), and a dw of over 4 MiB, which wgrad writes with
  // streaming stores, 2 channel blocks per item on 8 threads (the last ending past C). Then
  // width dilations 1-7 on 16-voxel lines: every range of an 8-voxel line that a tap cuts on one
  // side ([d, 8) in its first tile, [0, 8 - d) in its second), each unrolled on its own.
  Context context(Device::cpu(), 8);
  std::vector<Conv3dParams> cases = {
      kernels::conv3d_params("test", {1, 5, 4, 6, 7}, {13, 5, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 12, 3, 8, 8}, {20, 12, 3, 3, 3}, {1, 1, 1}, {4, 4, 4}, {4, 4, 4}, 1),
      kernels::conv3d_params("test", {1, 3, 5, 6, 9}, {4, 3, 1, 3, 5}, {1, 1, 1}, {0, 1, 2}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 4, 3, 4, 5}, {6, 4, 2, 2, 2}, {1, 1, 1}, {1, 1, 1}, {2, 2, 2}, 1),
      kernels::conv3d_params("test", {1, 2, 3, 2, 2}, {3, 2, 3, 3, 3}, {1, 1, 1}, {24, 24, 24}, {24, 24, 24}, 1),
      kernels::conv3d_params("test", {1, 17, 2, 9, 10}, {9, 17, 3, 3, 3}, {1, 1, 1}, {1, 2, 1}, {1, 2, 1}, 1),
      kernels::conv3d_params("test", {1, 3, 5, 2, 6}, {18, 3, 3, 3, 3}, {1, 1, 1}, {1, 4, 1}, {1, 4, 1}, 1),
      kernels::conv3d_params("test", {1, 260, 1, 32, 32}, {3, 260, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 40, 3, 5, 6}, {32, 40, 3, 3, 3}, {1, 1, 1}, {1, 2, 1}, {1, 2, 1}, 1),
      kernels::conv3d_params("test", {1, 256, 2, 4, 6}, {160, 256, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 250, 2, 3, 4}, {512, 250, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
  };
  for (int64_t d = 1; d <= 7; ++d)
    cases.push_back(kernels::conv3d_params("test", {1, 9, 1, 2, 16}, {5, 9, 1, 1, 3}, {1, 1, 1}, {0, 0, d}, {1, 1, d}, 1));
  for (const Conv3dParams& p : cases) {
    INFO("C " << p.C << " K " << p.K << " input " << p.D << "x" << p.H << "x" << p.W);
    REQUIRE(kernels::cpu::conv3d_direct_applies(p));
    const ConvCase c = conv_case(context, p);
    const Tensor &x = c.x, &w = c.w, &dy = c.dy, &xf = c.xf, &wf = c.wf, &dyf = c.dyf;
    const std::vector<Tensor>& ref = c.ref;
    const int64_t n_scratch = kernels::cpu::conv3d_direct_scratch_elements(p);
    std::vector<float> scratch(static_cast<std::size_t>(std::max<int64_t>(n_scratch, 1)), -1.0f);
    Tensor y = context.full(dy.shape(), 7.0, DType::f32), dx = context.full(x.shape(), 7.0, DType::f32);
    kernels::cpu::conv3d_direct_fprop(p, xf.data<float>(), wf.data<float>(), y.data<float>(), scratch.data(), n_scratch);
    kernels::cpu::conv3d_direct_dgrad(p, dyf.data<float>(), wf.data<float>(), dx.data<float>(), scratch.data(), n_scratch);
    Tensor dw = context.full(w.shape(), 7.0, DType::f32);
    kernels::cpu::conv3d_direct_wgrad(p, xf.data<float>(), dyf.data<float>(), dw.data<float>());
    test::require_close(y.to(DType::f64), ref[0], 1e-5, "direct y");
    test::require_close(dx.to(DType::f64), ref[1], 1e-5, "direct dx");
    test::require_close(dw.to(DType::f64), ref[2], 1e-5, "direct dw");
    if (n_scratch > 0)
      REQUIRE_THROWS_WITH(kernels::cpu::conv3d_direct_fprop(p, xf.data<float>(), wf.data<float>(), y.data<float>(),
                                                            scratch.data(), n_scratch - 1),
                          Catch::Contains("conv3d_direct_scratch_elements"));
  }
  const Conv3dParams strided =
      kernels::conv3d_params("test", {1, 2, 4, 4, 4}, {3, 2, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1);
  REQUIRE_FALSE(kernels::cpu::conv3d_direct_applies(strided));
  REQUIRE_FALSE(kernels::cpu::conv3d_direct_applies(
      kernels::conv3d_params("test", {1, 2, 4, 4, 4}, {3, 2, 3, 3, 3}, {1, 1, 1}, {0, 1, 1}, {1, 1, 1}, 1)));
}

TEST_CASE("conv3d: the Winograd kernels of 3x3x3 same convs match the f64 kernels", "[conv]") {
  // Cases: odd extents (tiles that end past the volume on every axis), channel and filter counts
  // that are not whole vectors (1, 2, 3 and 4 filter vectors per panel, several panels), one
  // sample and several, tiles spread over several blocks with the last one partial, and a
  // 1-voxel axis (every tile's patch mostly padding).
  Context context(Device::cpu(), 8);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {1, 5, 3, 4, 5}, {7, 5, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 16, 4, 6, 8}, {24, 16, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 33, 5, 7, 9}, {40, 33, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 20, 6, 6, 6}, {64, 20, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 48, 8, 8, 10}, {150, 48, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {3, 9, 1, 5, 3}, {12, 9, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
  };
  for (const Conv3dParams& p : cases) {
    INFO("N " << p.N << " C " << p.C << " K " << p.K << " input " << p.D << "x" << p.H << "x" << p.W);
    REQUIRE(kernels::cpu::conv3d_winograd_applies(p));
    const ConvCase c = conv_case(context, p);
    Tensor y = context.full(c.dy.shape(), 7.0, DType::f32), dx = context.full(c.x.shape(), 7.0, DType::f32);
    const int64_t n_scratch = kernels::cpu::conv3d_winograd_scratch_elements(p);
    std::vector<float> scratch(static_cast<std::size_t>(n_scratch), -1.0f);
    kernels::cpu::conv3d_winograd_fprop(p, c.xf.data<float>(), c.wf.data<float>(), y.data<float>(), scratch.data(),
                                        n_scratch);
    kernels::cpu::conv3d_winograd_dgrad(p, c.dyf.data<float>(), c.wf.data<float>(), dx.data<float>(), scratch.data(),
                                        n_scratch);
    Tensor dw = context.full(c.w.shape(), 7.0, DType::f32);
    kernels::cpu::conv3d_winograd_wgrad(p, c.xf.data<float>(), c.dyf.data<float>(), dw.data<float>(), scratch.data(),
                                        n_scratch);
    test::require_close(y.to(DType::f64), c.ref[0], 1e-5, "Winograd y");
    test::require_close(dx.to(DType::f64), c.ref[1], 1e-5, "Winograd dx");
    test::require_close(dw.to(DType::f64), c.ref[2], 1e-5, "Winograd dw");
  }
  {
    // wgrad's threads each own a share of the 16 position groups: teams that split them unevenly
    // (3), or leave threads without a share (20), sum each du element on one thread in the same
    // order, so every team gives the same bits.
    const Conv3dParams& p = cases[4];
    const ConvCase c = conv_case(context, p);
    const int64_t n_scratch = kernels::cpu::conv3d_winograd_scratch_elements(p);
    std::vector<float> scratch(static_cast<std::size_t>(n_scratch));
    std::vector<std::vector<float>> runs;
    for (const int threads : {1, 3, 20}) {
      INFO(threads << " threads");
      Tensor dw = context.full(c.w.shape(), 7.0, DType::f32);
      test::with_threads(threads, [&] {
        kernels::cpu::conv3d_winograd_wgrad(p, c.xf.data<float>(), c.dyf.data<float>(), dw.data<float>(),
                                            scratch.data(), n_scratch);
      });
      test::require_close(dw.to(DType::f64), c.ref[2], 1e-5, "Winograd dw");
      runs.push_back(dw.to_vector<float>());
    }
    CHECK(runs[0] == runs[1]);
    CHECK(runs[0] == runs[2]);
  }
  const Conv3dParams dilated =
      kernels::conv3d_params("test", {1, 4, 4, 4, 4}, {4, 4, 3, 3, 3}, {1, 1, 1}, {2, 2, 2}, {2, 2, 2}, 1);
  REQUIRE_FALSE(kernels::cpu::conv3d_winograd_applies(dilated));
  REQUIRE_FALSE(kernels::cpu::conv3d_winograd_applies(
      kernels::conv3d_params("test", {1, 4, 4, 4, 4}, {4, 4, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1)));
  std::vector<float> buffer(4096);
  REQUIRE(kernels::cpu::conv3d_winograd_scratch_elements(dilated) == 0);
  REQUIRE_THROWS_WITH(kernels::cpu::conv3d_winograd_fprop(dilated, buffer.data(), buffer.data(), buffer.data(),
                                                          buffer.data(), 4096),
                      Catch::Contains("conv3d_winograd_fprop") && Catch::Contains("dilations"));
  const Conv3dParams p = cases[0];
  REQUIRE_THROWS_WITH(kernels::cpu::conv3d_winograd_dgrad(p, buffer.data(), buffer.data(), buffer.data(),
                                                          buffer.data(), kernels::cpu::conv3d_winograd_scratch_elements(p) - 1),
                      Catch::Contains("conv3d_winograd_scratch_elements"));
}

namespace {
// Runs the direct fprop of p, whose dilations leave only the centre tap inside, on random x and w
// into y (y[k, v] = sum over c of w[k, c, centre] x[c, v], cheap to check exactly) and returns
// the worst relative error over every `step`-th voxel.
double centre_tap_fprop_error(const Conv3dParams& p, float* y, int64_t step, unsigned seed) {
  REQUIRE(kernels::cpu::conv3d_direct_applies(p));
  const int64_t V = p.input_spatial(), taps = p.taps(), centre = taps / 2;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(p.C * V)), w(static_cast<std::size_t>(p.K * p.C * taps));
  for (float& v : x) v = uniform(rng);
  for (float& v : w) v = uniform(rng);
  const int64_t n_scratch = kernels::cpu::conv3d_direct_scratch_elements(p);
  std::vector<float> scratch(static_cast<std::size_t>(n_scratch), -1.0f);
  kernels::cpu::conv3d_direct_fprop(p, x.data(), w.data(), y, scratch.data(), n_scratch);
  double worst = 0.0;
  for (int64_t k = 0; k < p.K; ++k)
    for (int64_t v = 0; v < V; v += step) {
      double want = 0.0, scale = 0.0;
      for (int64_t c = 0; c < p.C; ++c) {
        const double term =
            double(w[static_cast<std::size_t>((k * p.C + c) * taps + centre)]) * x[static_cast<std::size_t>(c * V + v)];
        want += term;
        scale += std::abs(term);
      }
      worst = std::max(worst, std::abs(y[k * V + v] - want) / (scale + 1e-30));
    }
  return worst;
}
}  // namespace

TEST_CASE("conv3d: the direct kernels put a 32 MiB grouped input into the caller's scratch", "[conv]") {
  // From 32 MiB the line tiles' channel-grouped copy of the input goes into the scratch after the
  // packed weights (conv3d_direct_scratch_elements counts it). 512 channels of 256 x 8 x 8 (8x8
  // planes: every build runs the line tiles there), only the centre tap inside.
  const Conv3dParams p =
      kernels::conv3d_params("test", {1, 512, 256, 8, 8}, {2, 512, 3, 3, 3}, {1, 1, 1}, {256, 8, 8}, {256, 8, 8}, 1);
  REQUIRE(kernels::cpu::conv3d_direct_scratch_elements(p) >= p.C * p.input_spatial());  // the grouped input counted
  std::vector<float> y(static_cast<std::size_t>(p.K * p.input_spatial()), 7.0f);
  CHECK(centre_tap_fprop_error(p, y.data(), 37, 5) < 1e-5);
}

TEST_CASE("conv3d: the line tiles stream an output of 4 MiB whole and exact", "[conv]") {
  // From 4 MiB the line tiles write y's whole, aligned cache lines with non-temporal stores
  // (AVX-512), the rest with ordinary ones: here every other 40-voxel row starts off a cache line,
  // and each row's last 8 voxels are a part of one. 64 filters over 16 x 32 x 40 voxels (5 MiB of
  // y), only the centre tap inside, checked at every voxel, in a pool tensor (64-byte aligned, as
  // the engine's are).
  Context context(Device::cpu(), 2);
  const Conv3dParams p =
      kernels::conv3d_params("test", {1, 16, 16, 32, 40}, {64, 16, 3, 3, 3}, {1, 1, 1}, {16, 32, 40}, {16, 32, 40}, 1);
  REQUIRE(p.K * p.input_spatial() * int64_t(sizeof(float)) >= int64_t(4) << 20);
  Tensor y = context.full({1, p.K, p.D, p.H, p.W}, 7.0, DType::f32);
  CHECK(centre_tap_fprop_error(p, y.data<float>(), 1, 11) < 1e-5);
}

TEST_CASE("conv3d: the line tiles' strided fprop matches the f64 kernels", "[conv]") {
  // Cases (output planes of at most 64 voxels, where every build runs the line tiles): layer 2's
  // stride-2 3x3x3 conv with filters in main and tail panels, width stride 1 under depth and
  // height strides, output lines that end inside a tile, no padding and a larger one with
  // dilation, an even kernel with stride 2 in depth and height only (its width taps overlap), and
  // stride 2 with taps that leave the input on the right only.
  Context context(Device::cpu(), 10);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {2, 16, 4, 8, 8}, {40, 16, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 17, 6, 7, 5}, {9, 17, 3, 3, 3}, {2, 3, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 20, 5, 9, 13}, {33, 20, 3, 3, 3}, {1, 2, 2}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 16, 4, 9, 11}, {24, 16, 3, 3, 3}, {2, 2, 2}, {2, 2, 2}, {2, 2, 2}, 1),
      kernels::conv3d_params("test", {2, 18, 4, 6, 10}, {16, 18, 2, 2, 2}, {2, 2, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 16, 3, 6, 9}, {8, 16, 1, 3, 3}, {1, 2, 2}, {0, 0, 1}, {1, 1, 1}, 1),
  };
  for (const Conv3dParams& p : cases) {
    INFO("C " << p.C << " K " << p.K << " input " << p.D << "x" << p.H << "x" << p.W << " output " << p.Z << "x" << p.P
              << "x" << p.Q);
    REQUIRE(p.P * p.Q <= 64);
    REQUIRE(kernels::cpu::conv3d_direct_fprop_applies(p));
    REQUIRE_FALSE(kernels::cpu::conv3d_direct_applies(p));
    const ConvCase c = conv_case(context, p);
    const Tensor &ref = c.ref[0], &xf = c.xf, &wf = c.wf;
    const int64_t n_scratch = kernels::cpu::conv3d_direct_scratch_elements(p);
    std::vector<float> scratch(static_cast<std::size_t>(n_scratch), -1.0f);
    Tensor y = context.full(ref.shape(), 7.0, DType::f32);
    kernels::cpu::conv3d_direct_fprop(p, xf.data<float>(), wf.data<float>(), y.data<float>(), scratch.data(), n_scratch);
    test::require_close(y.to(DType::f64), ref, 1e-5, "strided direct y");
    // Through the dispatcher too, which must pick it and size its scratch.
    const int64_t n_conv = kernels::cpu::conv3d_scratch_elements(p);
    REQUIRE(n_conv >= n_scratch);
    std::vector<float> conv_scratch(static_cast<std::size_t>(n_conv), -1.0f);
    Tensor y2 = context.full(ref.shape(), 7.0, DType::f32);
    kernels::cpu::conv3d_fprop(p, xf.data<float>(), wf.data<float>(), static_cast<const float*>(nullptr), y2.data<float>(),
                               conv_scratch.data(), n_conv);
    test::require_close(y2.to(DType::f64), ref, 1e-5, "strided conv3d_fprop y");
  }
  // Not taken: few input channels (the stem), width stride 3, groups, taps that do not overlap.
  REQUIRE_FALSE(kernels::cpu::conv3d_direct_fprop_applies(
      kernels::conv3d_params("test", {1, 32, 8, 8, 8}, {64, 32, 2, 2, 2}, {2, 2, 2}, {0, 0, 0}, {1, 1, 1}, 1)));
  REQUIRE_FALSE(kernels::cpu::conv3d_direct_fprop_applies(
      kernels::conv3d_params("test", {1, 1, 8, 8, 8}, {4, 1, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1)));
  REQUIRE_FALSE(kernels::cpu::conv3d_direct_fprop_applies(
      kernels::conv3d_params("test", {1, 16, 8, 8, 9}, {4, 16, 3, 3, 3}, {1, 1, 3}, {1, 1, 1}, {1, 1, 1}, 1)));
  REQUIRE_FALSE(kernels::cpu::conv3d_direct_fprop_applies(
      kernels::conv3d_params("test", {1, 32, 8, 8, 8}, {32, 16, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 2)));
}

TEST_CASE("conv3d: the direct kernels' strided dgrad and wgrad match the f64 kernels", "[conv]") {
  // Cases (dx planes of at most 64 voxels, where every build runs the line tiles): layer 2's
  // stride-2 3x3x3 conv with a tail panel of dx channels (40 = 32 + 8), odd extents (width classes
  // of 5 and 4 voxels, dy lines that end inside a tile), strides 2 in height and width only, a
  // dilation of 2 with stride 2 (each class gets a tap pattern of its own), a k3 s2 transposed
  // conv with an output padding, and a width stride of 3.
  Context context(Device::cpu(), 6);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {2, 40, 8, 8, 8}, {16, 40, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 17, 7, 5, 9}, {18, 17, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 16, 3, 8, 8}, {24, 16, 3, 3, 3}, {1, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 16, 6, 7, 8}, {16, 16, 3, 3, 3}, {2, 2, 2}, {2, 2, 2}, {2, 2, 2}, 1),
      kernels::conv_transpose3d_params("test", {2, 20, 2, 3, 3}, {20, 16, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1},
                                       {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 16, 3, 4, 12}, {16, 16, 3, 3, 3}, {1, 1, 3}, {1, 1, 1}, {1, 1, 1}, 1),
  };
  for (const Conv3dParams& p : cases) {
    INFO("C " << p.C << " K " << p.K << " input " << p.D << "x" << p.H << "x" << p.W << " output " << p.Z << "x" << p.P
              << "x" << p.Q);
    REQUIRE(p.H * p.W <= 64);
    REQUIRE(kernels::cpu::conv3d_direct_dgrad_applies(p));
    REQUIRE_FALSE(kernels::cpu::conv3d_direct_applies(p));
    const ConvCase c = conv_case(context, p);
    const Tensor &ref = c.ref[1], &dyf = c.dyf, &wf = c.wf;
    const int64_t n_scratch = kernels::cpu::conv3d_direct_scratch_elements(p);
    std::vector<float> scratch(static_cast<std::size_t>(n_scratch), -1.0f);
    Tensor dx = context.full(ref.shape(), 7.0, DType::f32);
    kernels::cpu::conv3d_direct_dgrad(p, dyf.data<float>(), wf.data<float>(), dx.data<float>(), scratch.data(), n_scratch);
    test::require_close(dx.to(DType::f64), ref, 1e-5, "strided direct dx");
    // Through the dispatcher too, which must pick it and size its scratch.
    const int64_t n_conv = kernels::cpu::conv3d_scratch_elements(p);
    REQUIRE(n_conv >= n_scratch);
    std::vector<float> conv_scratch(static_cast<std::size_t>(n_conv), -1.0f);
    Tensor dx2 = context.full(ref.shape(), 7.0, DType::f32);
    kernels::cpu::conv3d_dgrad(p, dyf.data<float>(), wf.data<float>(), dx2.data<float>(), conv_scratch.data(), n_conv);
    test::require_close(dx2.to(DType::f64), ref, 1e-5, "strided conv3d_dgrad dx");
    // wgrad: every case up to a width stride of 2, through the dispatcher too.
    REQUIRE(kernels::cpu::conv3d_direct_wgrad_applies(p) == (p.stride[2] <= 2));
    if (p.stride[2] > 2) continue;
    Tensor dw = context.full(c.ref[2].shape(), 7.0, DType::f32), dw2 = dw.clone();
    kernels::cpu::conv3d_direct_wgrad(p, c.xf.data<float>(), dyf.data<float>(), dw.data<float>());
    test::require_close(dw.to(DType::f64), c.ref[2], 1e-5, "strided direct dw");
    kernels::cpu::conv3d_wgrad(p, c.xf.data<float>(), dyf.data<float>(), dw2.data<float>(), conv_scratch.data(), n_conv);
    test::require_close(dw2.to(DType::f64), c.ref[2], 1e-5, "strided conv3d_wgrad dw");
  }
  // Not taken (by either): few channels (the stem's one) or filters, groups, unit strides that are
  // not "same", taps that do not overlap (the head's k2 s2 transposed conv).
  const auto applies = [](const Conv3dParams& p) {
    return kernels::cpu::conv3d_direct_dgrad_applies(p) || kernels::cpu::conv3d_direct_wgrad_applies(p);
  };
  REQUIRE_FALSE(applies(kernels::conv_transpose3d_params(
      "test", {2, 512, 4, 8, 8}, {512, 32, 2, 2, 2}, {2, 2, 2}, {0, 0, 0}, {0, 0, 0}, {1, 1, 1}, 1)));
  REQUIRE_FALSE(applies(
      kernels::conv3d_params("test", {1, 1, 8, 8, 8}, {64, 1, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1)));
  REQUIRE_FALSE(applies(
      kernels::conv3d_params("test", {1, 32, 8, 8, 8}, {8, 32, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1)));
  REQUIRE_FALSE(applies(
      kernels::conv3d_params("test", {1, 32, 8, 8, 8}, {32, 16, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 2)));
  REQUIRE_FALSE(applies(
      kernels::conv3d_params("test", {1, 32, 8, 8, 8}, {32, 32, 3, 3, 3}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1)));
}

TEST_CASE("conv3d: the padded kernels of few-channel convs match the f64 kernels", "[conv]") {
  // Cases: the stem's shape (1 channel, 7x7x7, stride 2, padding 3) on a small volume with
  // filters in two panels and a tail, several channels with an output line that ends inside a
  // tile, and per-axis strides, paddings and dilations (two width taps left over after a block).
  // fprop's panels of 32 filters: 30 (one panel, a partial block of rows), 8 (one vector, tiles
  // of 8 voxels spanning 2-3 lines of 4 with different live height taps), 50 (a panel of 3 vectors
  // after a full one), 48 (2 vectors after a full one, planes of 110 voxels: a part block of
  // kLanes at each plane's end, over a million products: the threads share the planes). dgrad's
  // phases: 4 and 3 taps per axis on the stem, rows and voxels past a tile's end.
  Context context(Device::cpu(), 9);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {2, 1, 9, 12, 14}, {30, 1, 7, 7, 7}, {2, 2, 2}, {3, 3, 3}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 1, 16, 20, 22}, {48, 1, 7, 7, 7}, {2, 2, 2}, {3, 3, 3}, {1, 1, 1}, 1),
      // 3 samples of 5 phase planes: dgrad's two threads split the 15 (sample, plane) units inside
      // sample 1, each padding a slab of dy that starts or ends inside a sample; the odd phase has
      // 4 planes and reads one plane further.
      kernels::conv3d_params("test", {3, 1, 9, 12, 14}, {30, 1, 7, 7, 7}, {2, 2, 2}, {3, 3, 3}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 3, 5, 6, 7}, {8, 3, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 4, 6, 7, 11}, {50, 4, 3, 3, 6}, {1, 2, 3}, {2, 1, 0}, {2, 1, 1}, 1),
      // Stride 2, dilation 2: dgrad's odd phases get no tap on any axis (their dx is 0).
      kernels::conv3d_params("test", {1, 2, 6, 7, 9}, {5, 2, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {2, 2, 2}, 1),
      // Height dilation 2 at stride 1: dgrad's height taps read every other row (the tile's
      // general loop, not the consecutive rows').
      kernels::conv3d_params("test", {1, 2, 5, 9, 10}, {3, 2, 3, 3, 3}, {1, 1, 1}, {2, 2, 1}, {1, 2, 1}, 1),
      // wgrad's width tap blocks (AVX-512: up to 7 taps; AVX2: 4): 9 = 7 + 2 (4 + 4 + 1), 5 (4 + 1).
      kernels::conv3d_params("test", {1, 2, 5, 6, 20}, {20, 2, 3, 3, 9}, {1, 1, 1}, {1, 1, 4}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 3, 5, 6, 12}, {16, 3, 3, 3, 5}, {1, 1, 2}, {1, 1, 2}, {1, 1, 1}, 1),
  };
  for (const Conv3dParams& p : cases) {
    INFO("C " << p.C << " K " << p.K << " input " << p.D << "x" << p.H << "x" << p.W);
    REQUIRE(kernels::cpu::conv3d_padded_applies(p));
    const ConvCase c = conv_case(context, p);
    Tensor y = context.full(c.dy.shape(), 7.0, DType::f32), dw = context.full(c.w.shape(), 7.0, DType::f32);
    Tensor dx = context.full(c.x.shape(), 7.0, DType::f32);
    kernels::cpu::conv3d_padded_fprop(p, c.xf.data<float>(), c.wf.data<float>(), y.data<float>());
    kernels::cpu::conv3d_padded_dgrad(p, c.dyf.data<float>(), c.wf.data<float>(), dx.data<float>());
    kernels::cpu::conv3d_padded_wgrad(p, c.xf.data<float>(), c.dyf.data<float>(), dw.data<float>());
    const std::vector<Tensor>& ref = c.ref;
    test::require_close(y.to(DType::f64), ref[0], 1e-5, "padded y");
    test::require_close(dx.to(DType::f64), ref[1], 1e-5, "padded dx");
    test::require_close(dw.to(DType::f64), ref[2], 1e-5, "padded dw");
    // dgrad with dy padded into the caller's scratch: from too small (its own buffer) through
    // slabs of one or a few phase planes per chunk (the share padded and summed chunk by chunk)
    // to room for whole shares.
    for (const int64_t elements : {int64_t(1) << 10, int64_t(1) << 13, int64_t(1) << 15, int64_t(1) << 16,
                                   int64_t(1) << 17, int64_t(1) << 18, int64_t(1) << 20}) {
      INFO("scratch elements " << elements);
      std::vector<float> scratch(static_cast<std::size_t>(elements), 7.0f);
      Tensor dx_scratch = context.full(c.x.shape(), 7.0, DType::f32);
      kernels::cpu::conv3d_padded_dgrad(p, c.dyf.data<float>(), c.wf.data<float>(), dx_scratch.data<float>(),
                                        scratch.data(), elements);
      test::require_close(dx_scratch.to(DType::f64), ref[1], 1e-5, "padded dx, dy padded in the scratch");
    }
  }
  const Conv3dParams many_channels =
      kernels::conv3d_params("test", {1, 5, 4, 4, 4}, {3, 5, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1);
  REQUIRE_FALSE(kernels::cpu::conv3d_padded_applies(many_channels));
  std::vector<float> buffer(static_cast<std::size_t>(5 * 64 * 27), 0.0f);
  REQUIRE_THROWS_WITH(kernels::cpu::conv3d_padded_fprop(many_channels, buffer.data(), buffer.data(), buffer.data()),
                      Catch::Contains("at most 4 input channels"));
}

TEST_CASE("conv3d: pointwise convs with few filters match the f64 kernels, on any thread count", "[conv]") {
  // The classifier's shape class: 1 to 4 filters, where fprop and dgrad take the GEMM's few-rows
  // path (registers over a few rows or a shallow depth) and wgrad its own dot products over
  // blocks of 1024 voxels. Volumes that end inside a vector and inside a second block, samples
  // that accumulate, and a channel count the threads split unevenly; 1 and 2 threads give the
  // same bits (each channel's sums are owned by one thread).
  Context context(Device::cpu(), 11);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {2, 32, 3, 7, 53}, {2, 32, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 5, 2, 3, 5}, {1, 5, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {3, 7, 4, 16, 17}, {3, 7, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 9, 2, 20, 40}, {4, 9, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
  };
  for (const Conv3dParams& p : cases) {
    INFO("C " << p.C << " K " << p.K << " input " << p.D << "x" << p.H << "x" << p.W);
    REQUIRE(kernels::cpu::conv3d_scratch_elements(p) == 0);
    const ConvCase c = conv_case(context, p);
    std::vector<std::vector<float>> runs;
    for (const int threads : {1, 2}) {
      Tensor y = context.full(c.dy.shape(), 7.0, DType::f32), dx = context.full(c.x.shape(), 7.0, DType::f32);
      Tensor dw = context.full(c.w.shape(), 7.0, DType::f32);
      test::with_threads(threads, [&] {
        kernels::cpu::conv3d_fprop(p, c.xf.data<float>(), c.wf.data<float>(), static_cast<const float*>(nullptr),
                                   y.data<float>(), static_cast<float*>(nullptr), 0);
        kernels::cpu::conv3d_dgrad(p, c.dyf.data<float>(), c.wf.data<float>(), dx.data<float>(),
                                   static_cast<float*>(nullptr), 0);
        kernels::cpu::conv3d_wgrad(p, c.xf.data<float>(), c.dyf.data<float>(), dw.data<float>(),
                                   static_cast<float*>(nullptr), 0);
      });
      test::require_close(y.to(DType::f64), c.ref[0], 1e-5, "pointwise y");
      test::require_close(dx.to(DType::f64), c.ref[1], 1e-5, "pointwise dx");
      test::require_close(dw.to(DType::f64), c.ref[2], 1e-5, "pointwise dw");
      std::vector<float> all = y.to_vector<float>();
      for (const Tensor& t : {dx, dw}) {
        const std::vector<float> v = t.to_vector<float>();
        all.insert(all.end(), v.begin(), v.end());
      }
      runs.push_back(all);
    }
    CHECK(runs[0] == runs[1]);
  }
}

TEST_CASE("conv3d: pointwise convs with more weights than inputs run in bands of rows, on any thread count",
          "[conv]") {
  // Where A (the weights: dgrad's C x K, fprop's K x C) is larger than every sample's B, each
  // thread packs a band of A's rows (multiples of 48, the last short) and runs it over all
  // samples. fprop's 300 filters and dgrad's 200 channels over 2 x 24 voxels; 1, 2 and 3 threads
  // (1: A packed whole, column blocks) give the same bits and match the f64 kernels.
  Context context(Device::cpu(), 3);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {2, 200, 2, 3, 4}, {40, 200, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 40, 2, 3, 4}, {300, 40, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
  };
  for (const Conv3dParams& p : cases) {
    INFO("C " << p.C << " K " << p.K);
    const ConvCase c = conv_case(context, p);
    const int64_t n_scratch = kernels::cpu::conv3d_scratch_elements(p);
    std::vector<float> scratch(static_cast<std::size_t>(std::max<int64_t>(n_scratch, 1)));
    std::vector<std::vector<float>> runs;
    for (const int threads : {1, 2, 3}) {
      Tensor y = context.full(c.dy.shape(), 7.0, DType::f32), dx = context.full(c.x.shape(), 7.0, DType::f32);
      test::with_threads(threads, [&] {
        kernels::cpu::conv3d_fprop(p, c.xf.data<float>(), c.wf.data<float>(), static_cast<const float*>(nullptr),
                                   y.data<float>(), scratch.data(), n_scratch);
        kernels::cpu::conv3d_dgrad(p, c.dyf.data<float>(), c.wf.data<float>(), dx.data<float>(), scratch.data(),
                                   n_scratch);
      });
      test::require_close(y.to(DType::f64), c.ref[0], 1e-5, "banded y");
      test::require_close(dx.to(DType::f64), c.ref[1], 1e-5, "banded dx");
      std::vector<float> all = y.to_vector<float>(), more = dx.to_vector<float>();
      all.insert(all.end(), more.begin(), more.end());
      runs.push_back(all);
    }
    CHECK(runs[0] == runs[1]);
    CHECK(runs[0] == runs[2]);
  }
}

TEST_CASE("conv3d: weights packed in advance give the bits of weights packed per call", "[conv]") {
  // conv3d_direct_pack_weights makes once the layout fprop and dgrad otherwise make at every call;
  // given it they must give the same bits. Cases: the line tiles' same conv with a tail panel
  // (dgrad: 9 dx channels), weights that each thread would pack per panel (2^17 of them and more:
  // fprop 6 panels of 32 over 256 channels; dgrad, the roles swapped), some taps dead (dilation 2
  // on a depth of 2), the strided fprop and the strided dgrad's classes, and a transposed conv
  // with an output padding (its fprop is this dgrad), and planes of 90 voxels (the portable
  // loops' voxel-lane tiles). Through the dispatcher too, on a batch of another size, and on 1
  // and 3 threads.
  Context context(Device::cpu(), 3);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {2, 6, 2, 9, 10}, {7, 6, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 9, 3, 4, 10}, {40, 9, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 256, 2, 4, 6}, {192, 256, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 24, 2, 6, 6}, {20, 24, 3, 3, 3}, {1, 1, 1}, {2, 2, 2}, {2, 2, 2}, 1),
      kernels::conv3d_params("test", {2, 40, 8, 8, 8}, {48, 40, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv_transpose3d_params("test", {2, 20, 2, 3, 3}, {20, 16, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1},
                                       {1, 1, 1}, 1),
  };
  namespace k = kernels::cpu;
  for (const Conv3dParams& p : cases) {
    INFO("C " << p.C << " K " << p.K << " input " << p.D << "x" << p.H << "x" << p.W);
    const ConvCase c = conv_case(context, p);
    const int64_t n_scratch = k::conv3d_direct_scratch_elements(p);
    std::vector<float> scratch(static_cast<std::size_t>(n_scratch), -1.0f);
    for (const kernels::PackFor pass : {kernels::PackFor::fprop, kernels::PackFor::dgrad}) {
      const bool fprop = pass == kernels::PackFor::fprop;
      INFO((fprop ? "fprop" : "dgrad"));
      if (!(fprop ? k::conv3d_direct_fprop_applies(p) : k::conv3d_direct_dgrad_applies(p))) {
        REQUIRE((fprop && p.output_padding != Dims3{0, 0, 0}));  // the transposed conv's dgrad (its fprop) only
        continue;
      }
      std::vector<float> packed(static_cast<std::size_t>(k::conv3d_direct_packed_elements(p, pass)), -1.0f);
      k::conv3d_direct_pack_weights(p, pass, c.wf.data<float>(), packed.data());
      // The weights are not read when packed ones are given: NaNs there would show.
      const Tensor nan_w = context.full(c.w.shape(), std::nan(""), DType::f32);
      const Tensor& in = fprop ? c.xf : c.dyf;
      auto run = [&](const Tensor& w, const float* with, int threads) {
        Tensor out = context.full((fprop ? c.dy : c.x).shape(), 7.0, DType::f32);
        test::with_threads(threads, [&] {
          if (fprop)
            k::conv3d_direct_fprop(p, in.data<float>(), w.data<float>(), out.data<float>(), scratch.data(), n_scratch,
                                   with);
          else
            k::conv3d_direct_dgrad(p, in.data<float>(), w.data<float>(), out.data<float>(), scratch.data(), n_scratch,
                                   with);
        });
        return out;
      };
      const Tensor per_call = run(c.wf, nullptr, 3);
      test::require_close(per_call.to(DType::f64), c.ref[fprop ? 0 : 1], 1e-5, "per call");
      for (const int threads : {1, 3})
        CHECK(run(nan_w, packed.data(), threads).to_vector<float>() == per_call.to_vector<float>());
      // The dispatcher takes them where it runs the direct kernels (not where the Winograd ones
      // take a 3x3x3 same conv, in AVX-512 builds).
      const int64_t n_conv = k::conv3d_scratch_elements(p);
      std::vector<float> conv_scratch(static_cast<std::size_t>(n_conv));
      const int64_t n_packed = k::conv3d_packed_weights_elements(p, pass, n_conv);
      if (n_packed == 0)
        REQUIRE(k::conv3d_winograd_applies(p));
      else
        REQUIRE(n_packed == static_cast<int64_t>(packed.size()));
      Tensor out = context.full(per_call.shape(), 7.0, DType::f32);
      if (n_packed > 0) {
        if (fprop)
          k::conv3d_fprop(p, in.data<float>(), nan_w.data<float>(), static_cast<const float*>(nullptr),
                          out.data<float>(), conv_scratch.data(), n_conv, static_cast<const float*>(packed.data()));
        else
          k::conv3d_dgrad(p, in.data<float>(), nan_w.data<float>(), out.data<float>(), conv_scratch.data(), n_conv,
                          static_cast<const float*>(packed.data()));
        CHECK(out.to_vector<float>() == per_call.to_vector<float>());
      }
      // A batch of another size reads the same packed weights.
      Conv3dParams one = p;
      one.N = 1;
      const std::vector<float> all = per_call.to_vector<float>();
      const std::vector<float> first(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(all.size()) / p.N);
      std::vector<float> out1(first.size(), 7.0f);
      if (fprop)
        k::conv3d_direct_fprop(one, in.data<float>(), nan_w.data<float>(), out1.data(), scratch.data(), n_scratch,
                               packed.data());
      else
        k::conv3d_direct_dgrad(one, in.data<float>(), nan_w.data<float>(), out1.data(), scratch.data(), n_scratch,
                               packed.data());
      CHECK(out1 == first);
    }
  }
  // Misuse is refused: packed for the other pass, for another shape, no header, or where the
  // dispatcher runs another kernel (a pointwise conv's GEMM).
  const Conv3dParams p = cases[1];
  const ConvCase c = conv_case(context, p);
  const int64_t n_scratch = k::conv3d_direct_scratch_elements(p);
  std::vector<float> scratch(static_cast<std::size_t>(n_scratch));
  std::vector<float> for_dgrad(static_cast<std::size_t>(k::conv3d_direct_packed_elements(p, kernels::PackFor::dgrad)));
  k::conv3d_direct_pack_weights(p, kernels::PackFor::dgrad, c.wf.data<float>(), for_dgrad.data());
  Tensor y = context.full(c.dy.shape(), 7.0, DType::f32);
  auto fprop_with = [&](const Conv3dParams& q, const float* packed) {
    k::conv3d_direct_fprop(q, c.xf.data<float>(), c.wf.data<float>(), y.data<float>(), scratch.data(), n_scratch,
                           packed);
  };
  REQUIRE_THROWS_WITH(fprop_with(p, for_dgrad.data()), Catch::Contains("made for dgrad, not for this conv's fprop"));
  Conv3dParams other = kernels::conv3d_params("test", {2, 9, 3, 4, 10}, {40, 9, 3, 3, 3}, {1, 1, 1}, {2, 2, 2},
                                              {2, 2, 2}, 1);
  const int64_t n_other = k::conv3d_direct_packed_elements(other, kernels::PackFor::fprop);
  std::vector<float> for_other(static_cast<std::size_t>(n_other));
  k::conv3d_direct_pack_weights(other, kernels::PackFor::fprop, c.wf.data<float>(), for_other.data());
  REQUIRE_THROWS_WITH(fprop_with(p, for_other.data()), Catch::Contains("a conv of another shape"));
  REQUIRE_THROWS_WITH(fprop_with(p, c.wf.data<float>()), Catch::Contains("no packed-weights header"));
  REQUIRE(y.to_vector<float>() == context.full(c.dy.shape(), 7.0, DType::f32).to_vector<float>());
  const Conv3dParams pointwise =
      kernels::conv3d_params("test", {1, 8, 2, 2, 2}, {4, 8, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1);
  const int64_t n_pointwise = k::conv3d_scratch_elements(pointwise);
  REQUIRE(k::conv3d_packed_weights_elements(pointwise, kernels::PackFor::fprop, n_pointwise) == 0);
  std::vector<float> pointwise_scratch(static_cast<std::size_t>(std::max<int64_t>(n_pointwise, 1)));
  REQUIRE_THROWS_WITH(k::conv3d_fprop(pointwise, c.xf.data<float>(), c.wf.data<float>(),
                                      static_cast<const float*>(nullptr), y.data<float>(), pointwise_scratch.data(),
                                      n_pointwise, static_cast<const float*>(for_dgrad.data())),
                      Catch::Contains("reads no weights packed in advance"));
}

TEST_CASE("conv3d: the line tiles' 1x1x1 fprop and dgrad match the f64 kernels", "[conv]") {
  // A 1x1x1 conv runs on the line tiles when called directly (conv3d_direct_*, and in channel
  // groups: ResNet-50's bottlenecks without packing x), while the dispatcher keeps it on the GEMMs
  // (no direct packing, no direct scratch). Cases (planes of at most 64 voxels, where every build
  // runs the line tiles): channels and filters that leave partial groups and panels (20 -> 36, its
  // dgrad 36 -> 20), and 64 -> 16 over two samples. Not taken: fewer than 16 filters (the
  // classifier's 2) or channels, a stride, a padding.
  Context context(Device::cpu(), 11);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {1, 20, 3, 4, 10}, {36, 20, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 64, 2, 8, 8}, {16, 64, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
  };
  for (const Conv3dParams& p : cases) {
    INFO("C " << p.C << " K " << p.K);
    REQUIRE(p.P * p.Q <= 64);
    REQUIRE(kernels::cpu::conv3d_direct_fprop_applies(p));
    REQUIRE(kernels::cpu::conv3d_direct_dgrad_applies(p));
    const ConvCase c = conv_case(context, p);
    const int64_t n_scratch = kernels::cpu::conv3d_direct_scratch_elements(p);
    std::vector<float> scratch(static_cast<std::size_t>(n_scratch), -1.0f);
    Tensor y = context.full(c.ref[0].shape(), 7.0, DType::f32);
    kernels::cpu::conv3d_direct_fprop(p, c.xf.data<float>(), c.wf.data<float>(), y.data<float>(), scratch.data(),
                                      n_scratch);
    test::require_close(y.to(DType::f64), c.ref[0], 1e-5, "pointwise direct y");
    Tensor dx = context.full(c.ref[1].shape(), 7.0, DType::f32);
    kernels::cpu::conv3d_direct_dgrad(p, c.dyf.data<float>(), c.wf.data<float>(), dx.data<float>(), scratch.data(),
                                      n_scratch);
    test::require_close(dx.to(DType::f64), c.ref[1], 1e-5, "pointwise direct dx");
    // The dispatcher's weights packed in advance are the GEMM's (dgrad) or none (fprop), never the
    // direct kernels'.
    const int64_t n_conv = kernels::cpu::conv3d_scratch_elements(p);
    CHECK(kernels::cpu::conv3d_packed_weights_elements(p, kernels::PackFor::fprop, n_conv) == 0);
    CHECK(kernels::cpu::conv3d_packed_weights_elements(p, kernels::PackFor::dgrad, n_conv) !=
          kernels::cpu::conv3d_direct_packed_elements(p, kernels::PackFor::dgrad));
  }
  // The 1x1x1 convs the line tiles leave to the GEMM: 2 filters, 8 channels, a stride, a padding.
  struct Left {
    int64_t C, K, stride, pad;
  };
  for (const Left& l : {Left{32, 2, 1, 0}, Left{8, 32, 1, 0}, Left{32, 32, 2, 0}, Left{32, 32, 1, 1}}) {
    INFO("C " << l.C << " K " << l.K << " stride " << l.stride << " pad " << l.pad);
    const Conv3dParams p = kernels::conv3d_params("test", {1, l.C, 4, 8, 8}, {l.K, l.C, 1, 1, 1},
                                                  {l.stride, l.stride, l.stride}, {l.pad, l.pad, l.pad}, {1, 1, 1}, 1);
    CHECK_FALSE(kernels::cpu::conv3d_direct_fprop_applies(p));
    CHECK_FALSE(kernels::cpu::conv3d_direct_dgrad_applies(p));
  }
}

TEST_CASE("conv3d: the line tiles in channel groups give the bits of NCDHW", "[conv]") {
  // conv3d_direct_fprop_grouped / _dgrad_grouped read and write the activations in channel groups
  // (no copy in, no transpose out) and must give the bits of the NCDHW passes with the same packed
  // weights, on 1 and 3 threads. Cases (output planes of up to 64 voxels, which every build runs
  // on the line tiles): channels and filters that leave partial groups (6 -> 7; dgrad 40 -> 9), an
  // odd volume (105 voxels: groups 840 floats apart, 52.5 cache lines), some taps dead (dilation 2
  // on a depth of 2), the strided fprop and the strided dgrad's classes (dx voxels written every
  // other one: the two classes' tiles of a stretch stored together, on an odd width one voxel
  // shorter in the second), a transposed conv with an output padding, a 1x1x1 conv (partial groups
  // in and out); and in vector builds a same conv on 16 x 32 x 32 voxels and a strided dgrad into
  // 16 x 32 x 32, whose 4 MiB outputs are streamed. The groups' pitch tails are neither read (NaN
  // there changes nothing) nor written, and the output's channels past its last one are 0.
  Context context(Device::cpu(), 3);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {2, 6, 3, 4, 10}, {7, 6, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 9, 3, 4, 10}, {40, 9, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 16, 3, 5, 7}, {24, 16, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 24, 2, 6, 6}, {20, 24, 3, 3, 3}, {1, 1, 1}, {2, 2, 2}, {2, 2, 2}, 1),
      kernels::conv3d_params("test", {2, 40, 8, 8, 8}, {48, 40, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv_transpose3d_params("test", {2, 20, 2, 3, 3}, {20, 16, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1},
                                       {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 16, 16, 32, 32}, {64, 16, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 24, 5, 5, 7}, {16, 24, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 64, 16, 32, 32}, {16, 64, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 20, 3, 4, 10}, {36, 20, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
  };
  namespace k = kernels::cpu;
  constexpr int64_t G = k::kConv3dChannelGroup;
  const float nan = std::nanf("");
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  auto random_floats = [&](int64_t n) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& e : v) e = uniform(rng);
    return v;
  };
  int grouped_runs = 0;
  for (const Conv3dParams& p : cases) {
    INFO("C " << p.C << " K " << p.K << " input " << p.D << "x" << p.H << "x" << p.W << " stride " << p.stride[0]);
    const std::vector<float> w = random_floats(p.K * p.C * p.taps());
    const int64_t n_scratch = k::conv3d_direct_scratch_elements(p);
    std::vector<float> scratch(static_cast<std::size_t>(n_scratch));
    for (const kernels::PackFor pass : {kernels::PackFor::fprop, kernels::PackFor::dgrad}) {
      const bool fprop = pass == kernels::PackFor::fprop;
      INFO((fprop ? "fprop" : "dgrad"));
      if (!k::conv3d_direct_grouped_applies(p, pass)) {
        // Not on the line tiles: the transposed conv's dgrad (its fprop, which the GEMM runs), or
        // the portable loops' 32 x 32 planes.
        REQUIRE(((fprop && p.output_padding != Dims3{0, 0, 0}) || p.P * p.Q > 64));
        continue;
      }
      ++grouped_runs;
      const int64_t in_c = fprop ? p.C : p.K, out_c = fprop ? p.K : p.C;
      const int64_t in_v = fprop ? p.input_spatial() : p.output_spatial();
      const int64_t out_v = fprop ? p.output_spatial() : p.input_spatial();
      std::vector<float> packed(static_cast<std::size_t>(k::conv3d_direct_packed_elements(p, pass)));
      k::conv3d_direct_pack_weights(p, pass, w.data(), packed.data());
      const std::vector<float> in = random_floats(p.N * in_c * in_v);
      std::vector<float> expected(static_cast<std::size_t>(p.N * out_c * out_v), 7.0f);
      if (fprop)
        k::conv3d_direct_fprop(p, in.data(), w.data(), expected.data(), scratch.data(), n_scratch, packed.data());
      else
        k::conv3d_direct_dgrad(p, in.data(), w.data(), expected.data(), scratch.data(), n_scratch, packed.data());
      // The input in groups, then NaN in what must not be read: the pitch tails and the channels
      // past the last one.
      const int64_t in_pitch = k::conv3d_group_pitch(in_v), out_pitch = k::conv3d_group_pitch(out_v);
      REQUIRE(in_pitch >= in_v * G);
      REQUIRE(in_pitch % G == 0);
      REQUIRE((in_pitch + 15) / 16 % 2 == 1);  // an odd number of 64-byte lines
      std::vector<float> grouped_in(static_cast<std::size_t>(k::conv3d_grouped_elements(p.N, in_c, in_v)), 7.0f);
      k::to_channel_groups(p.N, in_c, in_v, in.data(), grouped_in.data());
      std::vector<float> round_trip(in.size(), 7.0f);
      k::from_channel_groups(p.N, in_c, in_v, grouped_in.data(), round_trip.data());
      const bool round_trip_exact = round_trip == in;  // (a bool: Catch would print every element)
      CHECK(round_trip_exact);
      const int64_t in_groups = (in_c + G - 1) / G, out_groups = (out_c + G - 1) / G;
      for (int64_t row = 0; row < p.N * in_groups; ++row) {
        float* group = grouped_in.data() + row * in_pitch;
        CHECK(std::all_of(group + in_v * G, group + in_pitch, [](float e) { return e == 0.0f; }));
        std::fill(group + in_v * G, group + in_pitch, nan);
        const int64_t channels = std::min(G, in_c - row % in_groups * G);
        for (int64_t v = 0; v < in_v; ++v) std::fill(group + v * G + channels, group + (v + 1) * G, nan);
      }
      // The output on a 64-byte boundary (as the engine's pool gives it: AVX-512 then stores each
      // line's two voxels at once) and 32 bytes past one.
      for (const auto& [threads, offset] : {std::pair{1, 0}, {3, 0}, {3, 8}}) {
        INFO(threads << " threads, output " << offset << " floats past a 64-byte boundary");
        const int64_t out_elements = k::conv3d_grouped_elements(p.N, out_c, out_v);
        std::vector<float> out_buffer(static_cast<std::size_t>(out_elements + 32), 7.0f);
        const auto to_boundary = (16 - reinterpret_cast<uintptr_t>(out_buffer.data()) % 64 / 4) % 16;
        float* grouped_out = out_buffer.data() + to_boundary + offset;
        test::with_threads(threads, [&] {
          if (fprop)
            k::conv3d_direct_fprop_grouped(p, grouped_in.data(), packed.data(), grouped_out);
          else
            k::conv3d_direct_dgrad_grouped(p, grouped_in.data(), packed.data(), grouped_out);
        });
        std::vector<float> out(expected.size(), 7.0f);
        k::from_channel_groups(p.N, out_c, out_v, grouped_out, out.data());
        const bool same_bits = out == expected;
        CHECK(same_bits);
        bool tails_untouched = true, past_last_zero = true;
        for (int64_t row = 0; row < p.N * out_groups; ++row) {
          const float* group = grouped_out + row * out_pitch;
          tails_untouched &= std::all_of(group + out_v * G, group + out_pitch, [](float e) { return e == 7.0f; });
          const int64_t channels = std::min(G, out_c - row % out_groups * G);
          for (int64_t v = 0; v < out_v; ++v)
            past_last_zero &=
                std::all_of(group + v * G + channels, group + (v + 1) * G, [](float e) { return e == 0.0f; });
        }
        CHECK(tails_untouched);
        CHECK(past_last_zero);
      }
    }
  }
  CHECK(grouped_runs >= 11);
  // Misuse is refused: no packed weights, weights packed for the other pass, a conv off the line
  // tiles (a pointwise one, the GEMM's).
  const Conv3dParams p = cases[0];
  std::vector<float> w = random_floats(p.K * p.C * p.taps());
  std::vector<float> for_dgrad(static_cast<std::size_t>(k::conv3d_direct_packed_elements(p, kernels::PackFor::dgrad)));
  k::conv3d_direct_pack_weights(p, kernels::PackFor::dgrad, w.data(), for_dgrad.data());
  std::vector<float> x(static_cast<std::size_t>(k::conv3d_grouped_elements(p.N, p.C, p.input_spatial())));
  std::vector<float> y(static_cast<std::size_t>(k::conv3d_grouped_elements(p.N, p.K, p.output_spatial())), 7.0f);
  REQUIRE_THROWS_WITH(k::conv3d_direct_fprop_grouped(p, x.data(), nullptr, y.data()),
                      Catch::Contains("needs the weights packed in advance"));
  REQUIRE_THROWS_WITH(k::conv3d_direct_fprop_grouped(p, x.data(), for_dgrad.data(), y.data()),
                      Catch::Contains("made for dgrad, not for this conv's fprop"));
  const Conv3dParams pointwise =
      kernels::conv3d_params("test", {1, 8, 2, 2, 2}, {4, 8, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1);
  REQUIRE_FALSE(k::conv3d_direct_grouped_applies(pointwise, kernels::PackFor::fprop));
  REQUIRE_THROWS_WITH(k::conv3d_direct_fprop_grouped(pointwise, x.data(), for_dgrad.data(), y.data()),
                      Catch::Contains("runs on the line tiles"));
  CHECK(std::all_of(y.begin(), y.end(), [](float e) { return e == 7.0f; }));
}

TEST_CASE("conv3d: channel groups of 32 MiB or more (non-temporal stores) hold every element in its place",
          "[conv]") {
  // From 32 MiB the copy into channel groups goes out with non-temporal stores where the groups
  // start on 32 bytes (DenseASPP's large-scale input); elsewhere with ordinary ones. Both must put
  // channel c's voxel v at group c / 8, element v * 8 + c % 8, with 0 past C and past the voxels.
  // 20 channels (a partial last group) and a voxel count with a tail past whole 8-voxel blocks.
  namespace k = kernels::cpu;
  const int64_t N = 1, C = 20, voxels = 350003, G = k::kConv3dChannelGroup;
  const int64_t pitch = k::conv3d_group_pitch(voxels), groups = (C + G - 1) / G;
  REQUIRE(k::conv3d_grouped_elements(N, C, voxels) * int64_t(sizeof(float)) >= (int64_t(32) << 20));
  std::vector<float> x(static_cast<std::size_t>(N * C * voxels));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 1000003) * 0.5f;
  std::vector<float> buffer(static_cast<std::size_t>(k::conv3d_grouped_elements(N, C, voxels) + 32));
  for (const int64_t offset : {0, 4}) {  // floats past a 64-byte boundary: streamed, then not
    INFO("groups " << offset << " floats past a 64-byte boundary");
    std::fill(buffer.begin(), buffer.end(), 7.0f);
    float* grouped = buffer.data() + (16 - reinterpret_cast<uintptr_t>(buffer.data()) % 64 / 4) % 16 + offset;
    k::to_channel_groups(N, C, voxels, x.data(), grouped);
    bool in_place = true;  // (a bool: Catch would print every element)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t e = 0; e < pitch; ++e) {
        const int64_t v = e / G, c = g * G + e % G;
        const float expected = v < voxels && c < C ? x[static_cast<std::size_t>(c * voxels + v)] : 0.0f;
        in_place = in_place && grouped[g * pitch + e] == expected;
      }
    CHECK(in_place);
    std::vector<float> round_trip(x.size(), 7.0f);
    k::from_channel_groups(N, C, voxels, grouped, round_trip.data());
    const bool round_trip_exact = round_trip == x;
    CHECK(round_trip_exact);
  }
}

TEST_CASE("conv3d: the padded kernels' fprop in channel groups gives the bits of NCDHW", "[conv]") {
  // conv3d_padded_fprop_grouped writes the stem's y in channel groups: the bits of
  // conv3d_padded_fprop regrouped, on 1 and 3 threads; the pitch tails untouched and the filters
  // past K in the last group 0. Cases: the stem's k7 s2 p3 on one channel with 20 filters (a
  // partial group) over 70 filters' 3 panels (the last of 6), and 3 channels k3 d2 with 8 filters.
  Context context(Device::cpu(), 3);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {2, 1, 9, 12, 14}, {20, 1, 7, 7, 7}, {2, 2, 2}, {3, 3, 3}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 1, 6, 8, 10}, {70, 1, 7, 7, 7}, {2, 2, 2}, {3, 3, 3}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 3, 5, 6, 7}, {8, 3, 3, 3, 3}, {1, 1, 1}, {2, 2, 2}, {2, 2, 2}, 1),
  };
  namespace k = kernels::cpu;
  constexpr int64_t G = k::kConv3dChannelGroup;
  for (const Conv3dParams& p : cases) {
    INFO("C " << p.C << " K " << p.K);
    REQUIRE(k::conv3d_padded_applies(p));
    const Tensor x = context.randn({p.N, p.C, p.D, p.H, p.W}, DType::f32);
    const Tensor w = context.randn({p.K, p.C, p.T, p.R, p.S}, DType::f32);
    const int64_t V = p.output_spatial(), pitch = k::conv3d_group_pitch(V), groups = (p.K + G - 1) / G;
    std::vector<float> expected(static_cast<std::size_t>(p.N * p.K * V), 7.0f);
    k::conv3d_padded_fprop(p, x.data<float>(), w.data<float>(), expected.data());
    for (const int threads : {1, 3}) {
      INFO(threads << " threads");
      std::vector<float> grouped(static_cast<std::size_t>(k::conv3d_grouped_elements(p.N, p.K, V)), 7.0f);
      test::with_threads(threads,
                         [&] { k::conv3d_padded_fprop_grouped(p, x.data<float>(), w.data<float>(), grouped.data()); });
      std::vector<float> out(expected.size(), 7.0f);
      k::from_channel_groups(p.N, p.K, V, grouped.data(), out.data());
      const bool same_bits = out == expected;
      CHECK(same_bits);
      bool tails_untouched = true, past_last_zero = true;
      for (int64_t row = 0; row < p.N * groups; ++row) {
        const float* group = grouped.data() + row * pitch;
        tails_untouched &= std::all_of(group + V * G, group + pitch, [](float e) { return e == 7.0f; });
        const int64_t filters = std::min(G, p.K - row % groups * G);
        for (int64_t v = 0; v < V; ++v)
          past_last_zero &=
              std::all_of(group + v * G + filters, group + (v + 1) * G, [](float e) { return e == 0.0f; });
      }
      CHECK(tails_untouched);
      CHECK(past_last_zero);
    }
  }
}

TEST_CASE("conv3d: a 1x1x1 conv's wgrad in channel groups matches the f64 kernels, on any thread count", "[conv]") {
  // conv3d_pointwise_wgrad_grouped reads x and dy in channel groups, NaN wherever it must not read for
  // what it stores (the pitch tails, the channels past C and K), and overwrites dw (filled with 7).
  // Cases: partial groups of both (20 filters: a partial tile of filters; 44 channels: two tiles of 3
  // groups, the last group half full) on two samples; 320 voxels, two depth blocks of 256 and 64; 64
  // channels (tiles of 3, 3 and 2 groups); and 9 filters from 3 channels (one group of channels, a
  // tile of one filter). The same bits on 1 and 3 threads.
  Context context(Device::cpu(), 13);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {2, 44, 3, 5, 7}, {20, 44, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {1, 64, 4, 8, 10}, {48, 64, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 3, 2, 3, 4}, {9, 3, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
  };
  namespace k = kernels::cpu;
  constexpr int64_t G = k::kConv3dChannelGroup;
  // Channels [0, C) of [N, C, V] into groups, NaN in the rest of each group.
  auto grouped_with_nan = [](int64_t N, int64_t C, int64_t V, const float* rows) {
    const int64_t pitch = k::conv3d_group_pitch(V), groups = (C + G - 1) / G;
    std::vector<float> grouped(static_cast<std::size_t>(k::conv3d_grouped_elements(N, C, V)), std::nanf(""));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t v = 0; v < V; ++v)
          grouped[static_cast<std::size_t>((n * groups + c / G) * pitch + v * G + c % G)] = rows[(n * C + c) * V + v];
    return grouped;
  };
  for (const Conv3dParams& p : cases) {
    INFO("C " << p.C << " K " << p.K << " voxels " << p.input_spatial());
    REQUIRE(k::conv3d_pointwise_wgrad_grouped_applies(p));
    const ConvCase c = conv_case(context, p);
    const int64_t V = p.input_spatial();
    const std::vector<float> x = grouped_with_nan(p.N, p.C, V, c.xf.data<float>());
    const std::vector<float> dy = grouped_with_nan(p.N, p.K, V, c.dyf.data<float>());
    std::vector<float> first;
    for (const int threads : {1, 3}) {
      INFO(threads << " threads");
      Tensor dw = context.full(c.ref[2].shape(), 7.0, DType::f32);
      test::with_threads(threads, [&] { k::conv3d_pointwise_wgrad_grouped(p, x.data(), dy.data(), dw.data<float>()); });
      test::require_close(dw.to(DType::f64), c.ref[2], 1e-5, "grouped pointwise dw");
      const std::vector<float> bits = dw.to_vector<float>();
      if (first.empty()) first = bits;
      const bool same_bits = bits == first;  // (a bool: Catch would print every element)
      CHECK(same_bits);
    }
  }
  // Not a 1x1x1 conv with unit stride, no padding and a group of filters: refused, dw untouched.
  for (const Conv3dParams& p :
       {kernels::conv3d_params("test", {1, 8, 4, 4, 4}, {8, 8, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1),
        kernels::conv3d_params("test", {1, 8, 4, 4, 4}, {8, 8, 1, 1, 1}, {2, 2, 2}, {0, 0, 0}, {1, 1, 1}, 1),
        kernels::conv3d_params("test", {1, 8, 4, 4, 4}, {2, 8, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1)}) {
    REQUIRE_FALSE(k::conv3d_pointwise_wgrad_grouped_applies(p));
    std::vector<float> x(static_cast<std::size_t>(k::conv3d_grouped_elements(1, 8, 64)), 1.0f), dw(8 * 8 * 27, 7.0f);
    REQUIRE_THROWS_WITH(k::conv3d_pointwise_wgrad_grouped(p, x.data(), x.data(), dw.data()),
                        Catch::Contains("expected a 1x1x1 conv") && Catch::Contains("from_channel_groups"));
    CHECK(std::all_of(dw.begin(), dw.end(), [](float e) { return e == 7.0f; }));
  }
}

TEST_CASE("conv3d: dgrad's GEMM weights packed in advance give the bits of weights packed per call", "[conv]") {
  // conv3d_pack_weights packs dgrad's A (the weights transposed) where it runs as GEMMs: pointwise
  // convs in bands of rows per thread (640 dx channels over 64 voxels) and in column items, one
  // whose other taps read only padding (dilation 24: the centre tap's weights gathered first), and
  // the col2vol path of a k2 s2 conv (the head's transposed conv) in blocks of lines. Same bits,
  // the weights unread (NaN), on 1 and 3 threads, and on a batch of another size.
  Context context(Device::cpu(), 5);
  const Conv3dParams cases[] = {
      kernels::conv3d_params("test", {1, 640, 4, 4, 4}, {48, 640, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 40, 3, 9, 11}, {24, 40, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 1),
      kernels::conv3d_params("test", {2, 24, 3, 4, 5}, {16, 24, 3, 3, 3}, {1, 1, 1}, {24, 24, 24}, {24, 24, 24}, 1),
      kernels::conv3d_params("test", {2, 20, 6, 8, 10}, {24, 20, 2, 2, 2}, {2, 2, 2}, {0, 0, 0}, {1, 1, 1}, 1),
  };
  namespace k = kernels::cpu;
  for (const Conv3dParams& p : cases) {
    INFO("C " << p.C << " K " << p.K << " kernel " << p.T << " stride " << p.stride[0]);
    const ConvCase c = conv_case(context, p);
    // The k2 s2 conv's col2vol path in blocks of 5 lines (a partial last one), the others whole.
    const int64_t n_scratch = p.T == 2 ? p.C * p.taps() * p.Q * 5 : k::conv3d_scratch_elements(p);
    std::vector<float> scratch(static_cast<std::size_t>(std::max<int64_t>(n_scratch, 1)), -1.0f);
    const int64_t n_packed = k::conv3d_packed_weights_elements(p, kernels::PackFor::dgrad, n_scratch);
    REQUIRE(n_packed > kernels::cpu::kPackedWeightsHeader);
    REQUIRE(k::conv3d_packed_weights_elements(p, kernels::PackFor::fprop, n_scratch) == 0);
    std::vector<float> packed(static_cast<std::size_t>(n_packed), -1.0f);
    k::conv3d_pack_weights(p, kernels::PackFor::dgrad, n_scratch, c.wf.data<float>(), packed.data());
    const Tensor nan_w = context.full(c.w.shape(), std::nan(""), DType::f32);
    auto run = [&](const Conv3dParams& q, const Tensor& w, const float* with, int threads) {
      Tensor dx = context.full({q.N, q.C, q.D, q.H, q.W}, 7.0, DType::f32);
      test::with_threads(threads, [&] {
        k::conv3d_dgrad(q, c.dyf.data<float>(), w.data<float>(), dx.data<float>(), scratch.data(), n_scratch, with);
      });
      return dx.to_vector<float>();
    };
    const std::vector<float> per_call = run(p, c.wf, nullptr, 3);
    test::require_close(context.from_vector(c.x.shape(), per_call).to(DType::f64), c.ref[1], 1e-5, "per call");
    for (const int threads : {1, 3}) CHECK(run(p, nan_w, packed.data(), threads) == per_call);
    Conv3dParams one = p;
    one.N = 1;
    const auto per_sample = static_cast<std::ptrdiff_t>(per_call.size()) / p.N;
    const std::vector<float> first(per_call.begin(), per_call.begin() + per_sample);
    CHECK(run(one, nan_w, packed.data(), 3) == first);
    // Packed for dgrad, the fprop refuses them.
    Tensor y = context.full(c.dy.shape(), 7.0, DType::f32);
    REQUIRE_THROWS_WITH(k::conv3d_fprop(p, c.xf.data<float>(), c.wf.data<float>(), static_cast<const float*>(nullptr),
                                        y.data<float>(), scratch.data(), n_scratch,
                                        static_cast<const float*>(packed.data())),
                        Catch::Contains("reads no weights packed in advance"));
  }
  // The kernel depends on the scratch: a k2 s2 conv padded by 2 (most products read padding) runs
  // per-tap GEMMs (which pack per tap) with room for them, and the col2vol path with a scratch of
  // one line, where weights packed for it are read; a copy packed for one is refused by the other.
  const Conv3dParams sparse =
      kernels::conv3d_params("test", {1, 16, 5, 5, 5}, {16, 16, 2, 2, 2}, {2, 2, 2}, {2, 2, 2}, {1, 1, 1}, 1);
  const int64_t n_full = k::conv3d_scratch_elements(sparse), n_line = k::conv3d_scratch_elements(sparse, 1);
  REQUIRE(k::conv3d_packed_weights_elements(sparse, kernels::PackFor::dgrad, n_full) == 0);
  const int64_t n_packed = k::conv3d_packed_weights_elements(sparse, kernels::PackFor::dgrad, n_line);
  REQUIRE(n_packed > 0);
  const ConvCase c = conv_case(context, sparse);
  std::vector<float> packed(static_cast<std::size_t>(n_packed));
  k::conv3d_pack_weights(sparse, kernels::PackFor::dgrad, n_line, c.wf.data<float>(), packed.data());
  std::vector<float> scratch(static_cast<std::size_t>(n_full));
  Tensor dx = context.full(c.x.shape(), 7.0, DType::f32);
  auto dgrad = [&](int64_t n_scratch, const float* with) {
    k::conv3d_dgrad(sparse, c.dyf.data<float>(), c.wf.data<float>(), dx.data<float>(), scratch.data(), n_scratch, with);
  };
  REQUIRE_THROWS_WITH(dgrad(n_full, packed.data()), Catch::Contains("reads no weights packed in advance"));
  REQUIRE_THROWS_WITH(
      k::conv3d_pack_weights(sparse, kernels::PackFor::dgrad, n_full, c.wf.data<float>(), packed.data()),
                      Catch::Contains("conv3d_pack_weights: this conv's dgrad reads no weights packed in advance"));
  dgrad(n_line, packed.data());
  test::require_close(dx.to(DType::f64), c.ref[1], 1e-5, "packed, one line of scratch");
}

TEST_CASE("conv3d: inside FrozenWeights each weight is packed once and that copy runs", "[conv]") {
  // A dilated conv (the direct line tiles' fprop) and a k3 s2 transposed conv (whose forward is
  // the direct kernels' strided dgrad). Inside the scope the outputs keep their bits; the packed
  // copy is what runs, so a change to w inside the scope shows only once the scope has ended.
  Context context(Device::cpu(), 12);
  struct Case {
    Tensor x, w, b;
    std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)> run;
  };
  const Case cases[] = {
      {random_leaf(context, {2, 24, 4, 8, 8}, DType::f32), random_leaf(context, {40, 24, 3, 3, 3}, DType::f32),
       random_leaf(context, {40}, DType::f32),
       [](const Tensor& x, const Tensor& w, const Tensor& b) {
         return conv3d(x, w, b, Conv3dOptions::uniform(1, 2, 2));
       }},
      {random_leaf(context, {1, 20, 3, 3, 3}, DType::f32), random_leaf(context, {20, 16, 3, 3, 3}, DType::f32),
       random_leaf(context, {16}, DType::f32),
       [](const Tensor& x, const Tensor& w, const Tensor& b) {
         return conv_transpose3d(x, w, b, ConvTranspose3dOptions::uniform(2, 1, 1));
       }},
  };
  for (const Case& c : cases) {
    NoGrad no_grad(context);
    const std::vector<float> before = c.run(c.x, c.w, c.b).to_vector<float>();
    Tensor w = c.w.clone();
    {
      FrozenWeights frozen(context);
      CHECK(c.run(c.x, w, c.b).to_vector<float>() == before);
      std::fill_n(w.data<float>(), w.numel(), 0.0f);
      {
        FrozenWeights nested(context);  // the outer scope's copies stay
        CHECK(c.run(c.x, w, c.b).to_vector<float>() == before);
      }
      CHECK(c.run(c.x, w, c.b).to_vector<float>() == before);
    }
    // Packed again now: zero weights leave the bias.
    const Tensor after = c.run(c.x, w, c.b);
    const std::vector<float> bias = c.b.to_vector<float>(), out = after.to_vector<float>();
    const int64_t spatial = after.numel() / (after.dim(0) * after.dim(1));
    for (int64_t i = 0; i < after.numel(); ++i)
      REQUIRE(out[static_cast<std::size_t>(i)] == bias[static_cast<std::size_t>(i / spatial % after.dim(1))]);
  }
}

TEST_CASE("conv3d: repeated runs are bitwise identical", "[conv]") {
  // Large enough that vol2col, col2vol and the GEMMs run on several threads.
  Context context(Device::cpu(), 5);
  Tensor x = random_leaf(context, {2, 8, 12, 11, 10}, DType::f32);
  Tensor w = random_leaf(context, {8, 8, 3, 3, 3}, DType::f32);
  Tensor b = random_leaf(context, {8}, DType::f32);
  auto run = [&]() {
    x.zero_grad(), w.zero_grad(), b.zero_grad();
    Tensor y = conv3d(x, w, b, Conv3dOptions::uniform(1, 2, 2));
    backward(sum(y * y));
    return std::vector<std::vector<float>>{y.to_vector<float>(), x.grad().to_vector<float>(),
                                           w.grad().to_vector<float>(),
                                           b.grad().to_vector<float>()};
  };
  REQUIRE(run() == run());
}

TEST_CASE("conv3d: an empty batch gives empty outputs and zero parameter gradients", "[conv]") {
  Context context;
  Tensor w = random_leaf(context, {4, 3, 3, 3, 3}, DType::f32);
  Tensor b = random_leaf(context, {4}, DType::f32);
  Tensor y = conv3d(context.ones({0, 3, 5, 7, 6}), w, b, Conv3dOptions::uniform(1, 1));
  REQUIRE(y.shape() == Shape{0, 4, 5, 7, 6});
  backward(sum(y));
  REQUIRE(w.grad().to_vector<float>() == std::vector<float>(w.numel(), 0.0f));
  REQUIRE(b.grad().to_vector<float>() == std::vector<float>(4, 0.0f));
  REQUIRE(conv_transpose3d(context.ones({0, 3, 5, 7, 6}), context.ones({3, 2, 2, 2, 2}), {},
                           ConvTranspose3dOptions::uniform(2))
              .shape() == Shape{0, 2, 10, 14, 12});
}

TEST_CASE("conv3d: a dilation-24 conv on a small map sees only the centre tap", "[conv]") {
  // DenseASPP's largest rates: with padding 24 on a 6x6x7 map every off-centre tap reads padding,
  // so the conv and its gradients equal a 1x1x1 conv's with the centre weights (zero weight
  // gradients off the centre). fprop and dgrad run as the 1x1x1 conv's GEMMs with the centre
  // weights gathered out of w, wgrad on its own kernel; 2 samples, groups 1 and 2, f64 and f32.
  Context context(Device::cpu(), 4);
  for (const DType dtype : {DType::f64, DType::f32})
    for (const int64_t groups : {1, 2}) {
      INFO((dtype == DType::f64 ? "f64" : "f32") << " groups " << groups);
      Tensor x = random_leaf(context, {2, 4, 6, 6, 7}, dtype);
      Tensor w = random_leaf(context, {6, 4 / groups, 3, 3, 3}, dtype);
      Tensor xc = x.detach(), centre = context.empty({6, 4 / groups, 1, 1, 1}, DType::f64);
      xc.set_requires_grad(true);
      const Tensor w64 = w.to(DType::f64);
      for (int64_t k = 0; k < 6; ++k)
        for (int64_t c = 0; c < 4 / groups; ++c) centre.set<double>({k, c, 0, 0, 0}, w64.at<double>({k, c, 1, 1, 1}));
      centre = centre.to(dtype);
      centre.set_requires_grad(true);
      // One graph per backward: the tape is freed by each.
      const Tensor y = conv3d(x, w, {}, {.stride = {1, 1, 1}, .padding = {24, 24, 24}, .dilation = {24, 24, 24}, .groups = groups});
      const Tensor dy = context.randn(y.shape(), dtype);
      backward(y, dy);
      const Tensor yc = conv3d(xc, centre, {}, {.groups = groups});
      backward(yc, dy);
      const double tolerance = dtype == DType::f64 ? 1e-12 : 1e-5;
      test::require_close(y.to(DType::f64), yc.to(DType::f64), tolerance, "y");
      test::require_close(x.grad().to(DType::f64), xc.grad().to(DType::f64), tolerance, "dx");
      Tensor expected = context.zeros(w.shape(), DType::f64);
      const Tensor dc = centre.grad().to(DType::f64);
      for (int64_t k = 0; k < 6; ++k)
        for (int64_t c = 0; c < 4 / groups; ++c) expected.set<double>({k, c, 1, 1, 1}, dc.at<double>({k, c, 0, 0, 0}));
      test::require_close(w.grad().to(DType::f64), expected, tolerance, "dw");
    }
}

TEST_CASE("conv3d: Conv3dParams sizes match PyTorch", "[conv]") {
  using kernels::conv3d_params;
  using kernels::conv_transpose3d_params;
  // Output sizes below were printed by torch.nn.functional.conv3d / conv_transpose3d.
  auto out = [](const Conv3dParams& p) { return Dims3{p.Z, p.P, p.Q}; };
  auto in = [](const Conv3dParams& p) { return Dims3{p.D, p.H, p.W}; };
  // ResNet stem on a 64x128x127 volume.
  REQUIRE(out(conv3d_params("t", {1, 1, 64, 128, 127}, {64, 1, 7, 7, 7}, {2, 2, 2}, {3, 3, 3},
                            {1, 1, 1}, 1)) == Dims3{32, 64, 64});
  REQUIRE(out(conv3d_params("t", {1, 1, 5, 7, 6}, {1, 1, 3, 3, 3}, {1, 1, 1}, {12, 12, 12},
                            {12, 12, 12}, 1)) == Dims3{5, 7, 6});
  REQUIRE(out(conv3d_params("t", {1, 1, 5, 7, 6}, {1, 1, 3, 2, 3}, {1, 2, 1}, {0, 1, 2}, {1, 1, 2},
                            1)) == Dims3{3, 4, 6});
  REQUIRE(out(conv3d_params("t", {1, 1, 16, 16, 16}, {1, 1, 3, 3, 3}, {1, 1, 1}, {24, 24, 24},
                            {24, 24, 24}, 1)) == Dims3{16, 16, 16});
  REQUIRE(out(conv3d_params("t", {1, 1, 9, 10, 11}, {1, 1, 3, 3, 3}, {3, 3, 3}, {0, 0, 0},
                            {1, 1, 1}, 1)) == Dims3{3, 3, 3});
  const Conv3dParams g =
      conv3d_params("t", {2, 4, 5, 7, 6}, {6, 2, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 2);
  REQUIRE(g.channels_per_group() == 2);
  REQUIRE(g.filters_per_group() == 3);

  // Transposed: the equivalent conv's input is the transposed output, its output is x.
  const Conv3dParams t = conv_transpose3d_params("t", {2, 3, 5, 7, 6}, {3, 4, 3, 3, 3}, {2, 2, 2},
                                                 {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1);
  REQUIRE(in(t) == Dims3{10, 14, 12});
  REQUIRE(out(t) == Dims3{5, 7, 6});
  REQUIRE((t.N == 2 && t.K == 3 && t.C == 4));
  REQUIRE(in(conv_transpose3d_params("t", {1, 1, 5, 7, 6}, {1, 1, 2, 2, 2}, {2, 2, 2}, {0, 0, 0},
                                     {0, 0, 0}, {1, 1, 1}, 1)) == Dims3{10, 14, 12});
  REQUIRE(in(conv_transpose3d_params("t", {1, 1, 5, 7, 6}, {1, 1, 3, 3, 3}, {1, 1, 1}, {0, 0, 0},
                                     {1, 0, 1}, {2, 2, 2}, 1)) == Dims3{10, 11, 11});
  REQUIRE(in(conv_transpose3d_params("t", {1, 1, 4, 4, 4}, {1, 1, 4, 4, 4}, {2, 2, 2}, {1, 1, 1},
                                     {0, 0, 0}, {1, 1, 1}, 1)) == Dims3{8, 8, 8});
  // Groups: x has C = w[0] channels; the output has w[1] * groups.
  const Conv3dParams tg = conv_transpose3d_params("t", {1, 4, 3, 3, 3}, {4, 3, 3, 3, 3}, {1, 1, 1},
                                                  {1, 1, 1}, {0, 0, 0}, {1, 1, 1}, 2);
  REQUIRE((tg.C == 6 && tg.K == 4 && tg.groups == 2));
}

TEST_CASE("conv3d: nominal and effective flop counts", "[conv]") {
  // 3^3 input, 3^3 kernel, padding 1: along each axis 7 of the 9 (output, tap) pairs are inside.
  const Conv3dParams p = kernels::conv3d_params("t", {1, 2, 3, 3, 3}, {4, 2, 3, 3, 3}, {1, 1, 1},
                                                {1, 1, 1}, {1, 1, 1}, 1);
  REQUIRE(kernels::conv3d_flops_nominal(p) == 2 * 4 * 2 * 27 * 27);
  REQUIRE(kernels::conv3d_flops_effective(p) == 2 * 4 * 2 * 7 * 7 * 7);
}

TEST_CASE("conv3d: bad arguments give clear errors", "[conv]") {
  Context context, other;
  const Tensor x = context.ones({2, 3, 5, 7, 6});
  const Tensor w = context.ones({4, 3, 3, 3, 3});
  // Rank.
  REQUIRE_THROWS_WITH(conv3d(context.ones({3, 5, 7, 6}), w),
                      Catch::Contains("x must be [N, C, D, H, W], got [3, 5, 7, 6]"));
  REQUIRE_THROWS_WITH(conv3d(x, context.ones({4, 3, 3, 3})),
                      Catch::Contains("w must be [K, C/groups"));
  REQUIRE_THROWS_WITH(conv_transpose3d(context.ones({3, 5, 7, 6}), w),
                      Catch::Contains("x must be [N, C, D, H, W]"));
  // Channels.
  REQUIRE_THROWS_WITH(
      conv3d(x, context.ones({4, 2, 3, 3, 3})),
      Catch::Contains("x has 3 channels but w [4, 2, ...] with groups=1 expects 2"));
  REQUIRE_THROWS_WITH(conv_transpose3d(x, context.ones({4, 2, 3, 3, 3})),
                      Catch::Contains("x has 3 channels but w [4, 2, ...] expects 4"));
  REQUIRE_THROWS_WITH(conv3d(x, w, context.ones({5})), Catch::Contains("b must be [4]"));
  REQUIRE_THROWS_WITH(conv_transpose3d(x, context.ones({3, 2, 3, 3, 3}), context.ones({3})),
                      Catch::Contains("b must be [2]"));
  // Groups.
  REQUIRE_THROWS_WITH(conv3d(x, context.ones({4, 1, 3, 3, 3}), {}, {.groups = 2}),
                      Catch::Contains("input channels (3) must be divisible by groups (2)"));
  REQUIRE_THROWS_WITH(
      conv3d(context.ones({2, 4, 5, 7, 6}), context.ones({3, 2, 3, 3, 3}), {}, {.groups = 2}),
      Catch::Contains("output channels (3) must be divisible by groups (2)"));
  REQUIRE_THROWS_WITH(conv_transpose3d(x, context.ones({3, 2, 3, 3, 3}), {}, {.groups = 2}),
                      Catch::Contains("input channels (3) must be divisible by groups (2)"));
  REQUIRE_THROWS_WITH(conv3d(x, w, {}, {.groups = 0}),
                      Catch::Contains("groups must be >= 1, got 0"));
  // Kernel larger than the padded input.
  REQUIRE_THROWS_WITH(
      conv3d(x, context.ones({4, 3, 7, 3, 3})),
      Catch::Contains("along depth spans 7 voxels but the padded input has only 5"));
  REQUIRE_THROWS_WITH(
      conv3d(x, w, {}, {.dilation = {1, 1, 3}}),
      Catch::Contains("along width spans 7 voxels but the padded input has only 6"));
  // Geometry.
  REQUIRE_THROWS_WITH(conv3d(x, w, {}, {.stride = {1, 0, 1}}),
                      Catch::Contains("stride along height must be >= 1, got 0"));
  REQUIRE_THROWS_WITH(conv3d(x, w, {}, {.dilation = {-1, 1, 1}}),
                      Catch::Contains("dilation along depth must be >= 1, got -1"));
  REQUIRE_THROWS_WITH(conv3d(x, w, {}, {.padding = {0, 0, -1}}),
                      Catch::Contains("padding along width must be >= 0, got -1"));
  // Dtypes, devices, Contexts.
  REQUIRE_THROWS_WITH(conv3d(x, context.ones({4, 3, 3, 3, 3}, DType::f64)),
                      Catch::Contains("x is f32 but w is f64"));
  REQUIRE_THROWS_WITH(conv3d(x, w, context.ones({4}, DType::f64)),
                      Catch::Contains("x is f32 but b is f64"));
  REQUIRE_THROWS_WITH(conv3d(context.ones({2, 3, 5, 7, 6}, DType::i32), w),
                      Catch::Contains("f32 or f64"));
  REQUIRE_THROWS_WITH(conv3d(x, other.ones({4, 3, 3, 3, 3})),
                      Catch::Contains("different Contexts"));
  REQUIRE_THROWS_WITH(conv3d(Tensor(), w), Catch::Contains("undefined"));
  // Transposed conv output padding and sizes.
  const Tensor wt = context.ones({3, 2, 3, 3, 3});
  REQUIRE_THROWS_WITH(conv_transpose3d(x, wt, {}, ConvTranspose3dOptions::uniform(2, 1, 2)),
                      Catch::Contains("output_padding along depth must be >= 0 and smaller than "
                                      "either stride (2) or dilation (1), got 2"));
  REQUIRE_THROWS_WITH(conv_transpose3d(x, wt, {}, {.output_padding = {0, 1, 0}}),
                      Catch::Contains("output_padding along height"));
  REQUIRE_THROWS_WITH(conv_transpose3d(context.ones({1, 3, 1, 1, 1}), wt, {},
                                       ConvTranspose3dOptions::uniform(1, 2)),
                      Catch::Contains("the output along depth would have -1 voxels"));
}
