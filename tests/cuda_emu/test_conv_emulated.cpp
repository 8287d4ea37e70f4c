// The CUDA conv kernels (kernels/cuda/conv3d_tiled.cuh, conv3d_direct.cuh) run under the
// emulator and must match the CPU kernels (relative 1e-4) on small odd shapes, with threads
// scheduled in forward and in reverse order.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <sstream>
#include <tuple>
#include <string>
#include <vector>

#include "cuda_emu.h"
// The kernels, compiled by g++ exactly as nvcc sees them:
#include "cuda/conv3d_direct.cuh"
#include "cuda/conv3d_tiled.cuh"
#include "med3d/kernels/cpu/conv3d.h"

namespace {

namespace k = med3d::kernels;
namespace kc = med3d::kernels::cuda;
using k::Conv3dParams;
using Vec = std::vector<float>;

struct Case {
  std::string name;
  Conv3dParams p;
};

// x [N, C, D, H, W], w [K, C/groups, T, R, S].
Case conv(std::string name, k::Dims5 x, k::Dims5 w, k::Dims3 stride, k::Dims3 pad,
          k::Dims3 dilation, int64_t groups = 1) {
  return {std::move(name), k::conv3d_params("test", x, w, stride, pad, dilation, groups)};
}

std::vector<Case> cases() {
  std::vector<Case> c;
  c.push_back(conv("3x3x3 pad 1", {1, 3, 5, 6, 7}, {5, 3, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}));
  c.push_back(conv("stride 2", {2, 3, 7, 6, 5}, {4, 3, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}));
  c.push_back(conv("per-axis stride pad and kernel", {1, 2, 6, 7, 9}, {3, 2, 3, 2, 3}, {1, 2, 3},
                   {0, 1, 2}, {1, 1, 1}));
  c.push_back(conv("dilation 2", {1, 2, 9, 8, 7}, {3, 2, 3, 3, 3}, {1, 1, 1}, {2, 2, 2}, {2, 2, 2}));
  c.push_back(
      conv("dilation 12", {1, 2, 5, 6, 7}, {3, 2, 3, 3, 3}, {1, 1, 1}, {12, 12, 12}, {12, 12, 12}));
  c.push_back(conv("groups 2", {1, 4, 5, 5, 5}, {6, 2, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 2));
  c.push_back(conv("1x1x1", {2, 5, 4, 5, 6}, {7, 5, 1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {1, 1, 1}));
  c.push_back(conv("1x1x1 stride 2", {1, 3, 5, 4, 5}, {2, 3, 1, 1, 1}, {2, 2, 2}, {0, 0, 0}, {1, 1, 1}));
  c.push_back(conv("7x7x7 stride 2 pad 3", {1, 2, 9, 10, 11}, {3, 2, 7, 7, 7}, {2, 2, 2}, {3, 3, 3},
                   {1, 1, 1}));
  c.push_back(conv("batch 3 mixed stride and dilation", {3, 3, 5, 4, 6}, {4, 3, 3, 3, 3}, {1, 2, 1},
                   {1, 1, 2}, {1, 1, 2}));
  // More than one tile along every GEMM axis: 70 filters, 3 * 27 = 81 reduction indices.
  c.push_back(conv("70 filters", {1, 3, 4, 4, 5}, {70, 3, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}));
  // Transposed conv x [2, 4, 3, 4, 5], w [4, 6/2, 3, 3, 3], stride 2, output_padding (1, 0, 1):
  // its forward pass is the dgrad of this forward conv (see conv_params.h).
  c.push_back({"transposed with output_padding groups 2",
               k::conv_transpose3d_params("test", {2, 4, 3, 4, 5}, {4, 3, 3, 3, 3}, {2, 2, 2},
                                          {1, 1, 1}, {1, 0, 1}, {1, 1, 1}, 2)});
  return c;
}

// `count` random small shapes from a fixed seed: kernel 1..4, stride 1..3, dilation 1..3,
// padding 0..2 per axis, groups 1..3, batch 1..3; every other one a transposed conv with a
// random output_padding.
std::vector<Case> random_cases(int count) {
  std::mt19937 gen(2024);
  auto pick = [&gen](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(gen);
  };
  std::vector<Case> c;
  for (int i = 0; i < count; ++i) {
    const int64_t groups = pick(1, 3), cg = pick(1, 3), kg = pick(1, 4), n = pick(1, 3);
    k::Dims3 kernel{}, stride{}, dilation{}, pad{}, extent{}, output_padding{};
    for (int a = 0; a < 3; ++a) {
      kernel[a] = pick(1, 4), stride[a] = pick(1, 3), dilation[a] = pick(1, 3), pad[a] = pick(0, 2);
      const int64_t span = dilation[a] * (kernel[a] - 1) + 1;
      extent[a] = std::max<int64_t>(1, span - 2 * pad[a]) + pick(0, 4);
      output_padding[a] = pick(0, std::max(stride[a], dilation[a]) - 1);
    }
    std::ostringstream name;
    name << "random " << i;
    if (i % 2 == 0) {
      c.push_back({name.str(), k::conv3d_params("test", {n, cg * groups, extent[0], extent[1], extent[2]},
                                                {kg * groups, cg, kernel[0], kernel[1], kernel[2]},
                                                stride, pad, dilation, groups)});
    } else {
      // The transposed conv's input extent is the forward conv's output extent: keep it small.
      for (int64_t& e : extent) e = std::min<int64_t>(e, 4);
      for (int a = 0; a < 3; ++a) pad[a] = std::min(pad[a], dilation[a] * (kernel[a] - 1) / 2);
      c.push_back({name.str() + " transposed",
                   k::conv_transpose3d_params("test", {n, kg * groups, extent[0], extent[1], extent[2]},
                                              {kg * groups, cg, kernel[0], kernel[1], kernel[2]},
                                              stride, pad, output_padding, dilation, groups)});
    }
  }
  return c;
}

Vec random_vector(int64_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Vec v(static_cast<size_t>(n));
  for (float& e : v) e = u(gen);
  return v;
}

// |got - want| <= 1e-4 * max(|want|, rms(want)) elementwise: relative error, with the rms as a
// floor for values that cancel to near zero.
void check_close(const Vec& got, const Vec& want) {
  REQUIRE(got.size() == want.size());
  double sq = 0;
  for (float v : want) sq += double(v) * v;
  const double floor = std::sqrt(sq / static_cast<double>(want.size()));
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = 1e-4 * std::max<double>(std::fabs(want[i]), floor);
    if (!(std::fabs(double(got[i]) - want[i]) <= tol) && bad++ == 0) first = i;
  }
  INFO("first mismatch at " << first << ": got " << got[first] << " want " << want[first]);
  CHECK(bad == 0);
}

struct Tensors {
  Vec x, w, bias, dy;
};

Tensors tensors(const Conv3dParams& p) {
  return {random_vector(p.N * p.C * p.input_spatial(), 1),
          random_vector(p.K * p.channels_per_group() * p.taps(), 2), random_vector(p.K, 3),
          random_vector(p.N * p.K * p.output_spatial(), 4)};
}

Vec scratch(const Conv3dParams& p) { return Vec(static_cast<size_t>(k::cpu::conv3d_scratch_elements(p))); }

Vec cpu_fprop(const Conv3dParams& p, const Tensors& t) {
  Vec y(t.dy.size()), s = scratch(p);
  k::cpu::conv3d_fprop<float>(p, t.x.data(), t.w.data(), t.bias.data(), y.data(), s.data(),
                              static_cast<int64_t>(s.size()));
  return y;
}
Vec cpu_dgrad(const Conv3dParams& p, const Tensors& t) {
  Vec dx(t.x.size()), s = scratch(p);
  k::cpu::conv3d_dgrad<float>(p, t.dy.data(), t.w.data(), dx.data(), s.data(),
                              static_cast<int64_t>(s.size()));
  return dx;
}
Vec cpu_wgrad(const Conv3dParams& p, const Tensors& t) {
  Vec dw(t.w.size()), s = scratch(p);
  k::cpu::conv3d_wgrad<float>(p, t.x.data(), t.dy.data(), dw.data(), s.data(),
                              static_cast<int64_t>(s.size()));
  return dw;
}

// The launches a CUDA launcher would make, with the geometry from the .cuh helpers; `tile` 0 is
// the launcher's own choice, 32 and 64 force one kernel.
Vec tiled_fprop(const Conv3dParams& p, const Tensors& t, int tile = 0) {
  Vec y(t.dy.size(), NAN);
  const kc::ConvLaunch l = kc::conv3d_fprop_launch(p, tile);
  cuda_emu::launch(l.tile == 32 ? kc::conv3d_fprop_tiled<32> : kc::conv3d_fprop_tiled<64>, l.grid,
                   l.block, l.shared_bytes, p, t.x.data(), t.w.data(), t.bias.data(), y.data());
  return y;
}
// A dgrad launch with its split-K workspace and the sum of the splits (as conv3d.cu does).
template <class Kernel>
Vec run_dgrad(const Conv3dParams& p, const Tensors& t, const kc::ConvLaunch& l, Kernel kernel) {
  Vec dx(t.x.size(), NAN), workspace(static_cast<size_t>(l.workspace_elements), NAN);
  float* out = l.splits > 1 ? workspace.data() : dx.data();
  cuda_emu::launch(kernel, l.grid, l.block, l.shared_bytes, p, t.dy.data(), t.w.data(), out, l.splits,
                   l.split_depth);
  if (l.splits > 1)
    cuda_emu::launch(kc::conv3d_sum_splits, dim3(4), dim3(128), 0, workspace.data(), l.splits,
                     static_cast<int64_t>(dx.size()), dx.data());
  return dx;
}
// depth_per_split 0: the launcher's own split-K choice.
Vec tiled_dgrad(const Conv3dParams& p, const Tensors& t, int tile = 0, int64_t depth_per_split = 0) {
  const kc::ConvLaunch l = kc::conv3d_dgrad_launch(p, tile, depth_per_split);
  return run_dgrad(p, t, l, l.tile == 32 ? kc::conv3d_dgrad_tiled<32> : kc::conv3d_dgrad_tiled<64>);
}
Vec tiled_dgrad_phase(const Conv3dParams& p, const Tensors& t, int tile = 0, int64_t depth_per_split = 0) {
  const kc::ConvLaunch l = kc::conv3d_dgrad_phase_launch(p, tile, depth_per_split);
  return run_dgrad(p, t, l,
                   l.tile == 32 ? kc::conv3d_dgrad_phase_tiled<32> : kc::conv3d_dgrad_phase_tiled<64>);
}
Vec tiled_wgrad(const Conv3dParams& p, const Tensors& t, int64_t depth_per_split) {
  Vec dw(t.w.size(), NAN);
  const kc::ConvLaunch l = kc::conv3d_wgrad_launch(p, depth_per_split);
  Vec workspace(static_cast<size_t>(l.workspace_elements), NAN);
  float* out = l.splits > 1 ? workspace.data() : dw.data();
  cuda_emu::launch(kc::conv3d_wgrad_tiled, l.grid, l.block, l.shared_bytes, p, t.x.data(),
                   t.dy.data(), out, l.splits, l.split_depth);
  if (l.splits > 1)
    cuda_emu::launch(kc::conv3d_sum_splits, dim3(4), dim3(128), 0, workspace.data(),
                     l.splits, static_cast<int64_t>(dw.size()), dw.data());
  return dw;
}

// Direct kernels: a deliberately small grid so that the grid-stride loops wrap.
Vec direct_fprop(const Conv3dParams& p, const Tensors& t) {
  Vec y(t.dy.size(), NAN);
  cuda_emu::launch(kc::conv3d_fprop_direct, dim3(3), dim3(64), 0, p, t.x.data(), t.w.data(),
                   t.bias.data(), y.data());
  return y;
}
Vec direct_dgrad(const Conv3dParams& p, const Tensors& t) {
  Vec dx(t.x.size(), NAN);
  cuda_emu::launch(kc::conv3d_dgrad_direct, dim3(3), dim3(64), 0, p, t.dy.data(), t.w.data(),
                   dx.data());
  return dx;
}
Vec direct_wgrad(const Conv3dParams& p, const Tensors& t) {
  Vec dw(t.w.size(), NAN);
  cuda_emu::launch(kc::conv3d_wgrad_direct, dim3(3), dim3(64), 0, p, t.x.data(), t.dy.data(),
                   dw.data());
  return dw;
}

// check(case, tensors, tile) for `c` with both tiles, in both thread orders.
template <class Check>
void each_tile_and_order(const Case& c, Check check) {
  for (int tile : {32, 64})
    for (bool reverse : {false, true}) {
      INFO(c.name << ", tile " << tile << (reverse ? " (reverse order)" : ""));
      cuda_emu::ScopedReverseOrder order(reverse);
      check(tensors(c.p), tile);
    }
}

}  // namespace

TEST_CASE("emulated tiled conv3d_fprop matches the CPU kernel in both thread orders", "[emu]") {
  for (const Case& c : cases())
    each_tile_and_order(c, [&](const Tensors& t, int tile) {
      check_close(tiled_fprop(c.p, t, tile), cpu_fprop(c.p, t));
    });
}

TEST_CASE("emulated tiled conv3d_dgrad matches the CPU kernel in both thread orders", "[emu]") {
  for (const Case& c : cases())
    each_tile_and_order(c, [&](const Tensors& t, int tile) {
      check_close(tiled_dgrad(c.p, t, tile), cpu_dgrad(c.p, t));
    });
}

TEST_CASE("emulated tiled conv3d_dgrad with split-K matches the CPU kernel", "[emu]") {
  for (const Case& c : cases()) {
    INFO(c.name);
    const Tensors t = tensors(c.p);
    // About 3 splits, the last one shorter: the workspace and the sum kernel are used.
    const int64_t depth = c.p.filters_per_group() * c.p.taps();
    if (depth <= 2 * 8) continue;
    REQUIRE(kc::conv3d_dgrad_launch(c.p, 32, depth / 3 + 1).splits > 1);
    for (int tile : {32, 64}) check_close(tiled_dgrad(c.p, t, tile, depth / 3 + 1), cpu_dgrad(c.p, t));
    // By stride phase: phases with fewer taps than the longest leave later splits empty.
    if (kc::conv3d_dgrad_by_phase(c.p)) check_close(tiled_dgrad_phase(c.p, t, 32, 8), cpu_dgrad(c.p, t));
  }
}

TEST_CASE("emulated strided conv3d_dgrad by stride phase matches the CPU kernel", "[emu]") {
  int strided = 0;
  for (const Case& c : cases()) {
    if (!kc::conv3d_dgrad_by_phase(c.p)) continue;
    ++strided;
    each_tile_and_order(c, [&](const Tensors& t, int tile) {
      check_close(tiled_dgrad_phase(c.p, t, tile), cpu_dgrad(c.p, t));
    });
  }
  CHECK(strided >= 2);
  // Stride above the kernel (phases without taps: their voxels get zero), odd extents, stride 3.
  for (const auto& [x, w, stride, pad] :
       {std::tuple{k::Dims5{2, 3, 5, 7, 6}, k::Dims5{4, 3, 1, 1, 1}, k::Dims3{2, 2, 2}, k::Dims3{0, 0, 0}},
        std::tuple{k::Dims5{1, 2, 7, 5, 9}, k::Dims5{3, 2, 3, 2, 4}, k::Dims3{3, 2, 3}, k::Dims3{1, 0, 2}},
        std::tuple{k::Dims5{1, 4, 4, 4, 4}, k::Dims5{2, 4, 2, 2, 2}, k::Dims3{2, 2, 2}, k::Dims3{0, 0, 0}}}) {
    const Conv3dParams p = k::conv3d_params("phase", x, w, stride, pad, {1, 1, 1}, 1);
    INFO("x " << x[2] << "x" << x[3] << "x" << x[4] << " kernel " << w[2] << w[3] << w[4] << " stride "
              << stride[0] << stride[1] << stride[2]);
    REQUIRE(kc::conv3d_dgrad_by_phase(p));
    const Tensors t = tensors(p);
    check_close(tiled_dgrad_phase(p, t), cpu_dgrad(p, t));
  }
}

TEST_CASE("emulated tiled conv3d_wgrad matches the CPU kernel in both thread orders", "[emu]") {
  for (const Case& c : cases())
    for (bool reverse : {false, true}) {
      INFO(c.name << (reverse ? " (reverse order)" : ""));
      cuda_emu::ScopedReverseOrder order(reverse);
      const Tensors t = tensors(c.p);
      check_close(tiled_wgrad(c.p, t, 16384), cpu_wgrad(c.p, t));
    }
}

TEST_CASE("emulated tiled conv3d_wgrad with split-K matches the CPU kernel", "[emu]") {
  for (const Case& c : cases()) {
    INFO(c.name);
    const Tensors t = tensors(c.p);
    // About 3 splits, the last one shorter: the workspace and the reduce kernel are used.
    const int64_t depth = c.p.N * c.p.output_spatial();
    REQUIRE(kc::conv3d_wgrad_launch(c.p, depth / 3 + 1).splits > 1);
    check_close(tiled_wgrad(c.p, t, depth / 3 + 1), cpu_wgrad(c.p, t));
  }
}

TEST_CASE("emulated conv3d_bias_grad matches the CPU kernel", "[emu]") {
  for (const Case& c : cases()) {
    INFO(c.name);
    const Tensors t = tensors(c.p);
    Vec want(static_cast<size_t>(c.p.K)), got(want.size(), NAN);
    k::cpu::channel_bias_grad<float>(c.p.N, c.p.K, c.p.output_spatial(), t.dy.data(), want.data());
    const kc::ConvLaunch l = kc::conv3d_bias_grad_launch(c.p);
    cuda_emu::launch(kc::conv3d_bias_grad, l.grid, l.block, l.shared_bytes, c.p.N, c.p.K,
                     c.p.output_spatial(), t.dy.data(), got.data());
    check_close(got, want);
  }
}

TEST_CASE("emulated direct conv3d kernels match the CPU kernels", "[emu]") {
  for (const Case& c : cases()) {
    INFO(c.name);
    const Tensors t = tensors(c.p);
    check_close(direct_fprop(c.p, t), cpu_fprop(c.p, t));
    check_close(direct_dgrad(c.p, t), cpu_dgrad(c.p, t));
    check_close(direct_wgrad(c.p, t), cpu_wgrad(c.p, t));
  }
}

TEST_CASE("emulated tiled and direct conv3d match the CPU kernels on random shapes", "[emu]") {
  for (const Case& c : random_cases(24))
    for (bool reverse : {false, true}) {
      const Conv3dParams& p = c.p;
      INFO(c.name << ": N " << p.N << " C " << p.C << " K " << p.K << " groups " << p.groups
                  << " in " << p.D << "x" << p.H << "x" << p.W << " kernel " << p.T << "x" << p.R
                  << "x" << p.S << " out " << p.Z << "x" << p.P << "x" << p.Q << " stride "
                  << p.stride[0] << p.stride[1] << p.stride[2] << " pad " << p.pad[0] << p.pad[1]
                  << p.pad[2] << " dilation " << p.dilation[0] << p.dilation[1] << p.dilation[2]
                  << (reverse ? " (reverse order)" : ""));
      cuda_emu::ScopedReverseOrder order(reverse);
      const Tensors t = tensors(p);
      check_close(tiled_fprop(p, t), cpu_fprop(p, t));
      check_close(tiled_dgrad(p, t), cpu_dgrad(p, t));
      check_close(tiled_wgrad(p, t, 16384), cpu_wgrad(p, t));
      if (!reverse) check_close(direct_dgrad(p, t), cpu_dgrad(p, t));
      if (kc::conv3d_dgrad_by_phase(p)) check_close(tiled_dgrad_phase(p, t), cpu_dgrad(p, t));
    }
}

TEST_CASE("conv3d tiled launch geometry covers the GEMM", "[emu]") {
  const Conv3dParams p =
      k::conv3d_params("test", {2, 6, 9, 9, 9}, {130, 3, 3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}, 2);
  // A small grid: 2 * 5^3 = 250 columns, 65 filters per group, 2 groups take 32-tiles.
  const kc::ConvLaunch f = kc::conv3d_fprop_launch(p);
  CHECK(f.tile == 32);
  CHECK(f.grid.x == 8);
  CHECK(f.grid.y == 3);
  CHECK(f.grid.z == 2);
  CHECK(f.block.x == 256);
  const kc::ConvLaunch f64 = kc::conv3d_fprop_launch(p, 64);
  CHECK(f64.grid.x == 4);
  CHECK(f64.grid.y == 2);
  CHECK(f64.block.x == 256);
  const kc::ConvLaunch d = kc::conv3d_dgrad_launch(p);
  CHECK(d.grid.x == (2 * 729 + 31) / 32);
  CHECK(d.grid.y == 1);
  // 92 blocks want ceil(512 / 92) = 6 splits of the 65 * 27 = 1755 reduction indices (296 each).
  CHECK(d.splits == 6);
  CHECK(d.split_depth == 296);
  CHECK(d.grid.z == 12);
  CHECK(d.workspace_elements == 6 * 2 * 6 * 729);
  // A grid of 64-tiles that fills the GPU keeps them: 64 filters x 2 * 32^3 output voxels.
  const Conv3dParams big =
      k::conv3d_params("big", {2, 64, 32, 32, 32}, {64, 64, 3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, 1);
  CHECK(kc::conv3d_fprop_launch(big).tile == 64);
  const kc::ConvLaunch w = kc::conv3d_wgrad_launch(p, 64);
  CHECK(w.splits == 4);  // 250 reduction indices, 64 per split (whole slices of 8)
  CHECK(w.split_depth == 64);
  CHECK(w.grid.z == 8);
  CHECK(w.workspace_elements == 4 * 130 * 3 * 27);
  // The default split: 3 x 2 tiles x 2 groups = 12 blocks want 43 splits of >= 256 indices;
  // 250 indices give one.
  CHECK(kc::conv3d_wgrad_launch(p).splits == 1);
  // 64 filters x 27 taps x 64 channels: 27 tiles; 2 * 32^3 = 65536 indices in 19 splits of
  // 3456 (ceil(512 / 27) = 19 splits wanted, each rounded up to whole slices of 8).
  const kc::ConvLaunch wb = kc::conv3d_wgrad_launch(big);
  CHECK(wb.splits == 19);
  CHECK(wb.split_depth == 3456);
  CHECK(wb.grid.z == 19);
}
