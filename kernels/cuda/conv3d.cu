// Conv launchers: the tiled implicit-GEMM kernels where their launch geometry fits, else the
// direct kernels (one thread per output element, 64-bit indices, any size); dgrad with fewer
// than 8 channels per group also runs direct. Split-K dgrad and wgrad write one partial result
// per split into the caller's workspace, then sum them in split order.
#include "cuda_common.cuh"

#include "conv3d_direct.cuh"
#include "conv3d_tiled.cuh"
#include "med3d/kernels/cuda/conv3d.h"

namespace med3d::kernels::cuda {

namespace {

__global__ void add_channel_bias_kernel(int64_t channels, int64_t spatial, const float* bias,
                                        float* y, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_stride()) y[i] += bias[i / spatial % channels];
}

}  // namespace

void conv3d_fprop(Stream stream, const Conv3dParams& p, const float* x, const float* w,
                  const float* bias, float* y) {
  const int64_t total = p.N * p.K * p.output_spatial();
  if (total == 0) return;
  if (conv3d_fprop_tiled_fits(p)) {
    const ConvLaunch l = conv3d_fprop_launch(p);
    const auto kernel = l.tile == 32 ? &conv3d_fprop_tiled<32> : &conv3d_fprop_tiled<64>;
    MED3D_LAUNCH(kernel, l.grid, l.block, l.shared_bytes, stream, p, x, w, bias, y);
    return;
  }
  MED3D_LAUNCH(conv3d_fprop_direct, element_grid(total), dim3(kElementThreads), 0, stream, p, x,
               w, bias, y);
}

namespace {
// Which dgrad kernel runs: below 8 channels per group a GEMM tile of channels is mostly empty,
// so the direct kernel walks only the taps that reach each voxel; strided convs go by phase.
enum class DgradPath { direct, tiled, phase };
DgradPath dgrad_path(const Conv3dParams& p) {
  if (p.channels_per_group() < 8) return DgradPath::direct;
  if (conv3d_dgrad_by_phase(p) && conv3d_dgrad_phase_tiled_fits(p)) return DgradPath::phase;
  return conv3d_dgrad_tiled_fits(p) ? DgradPath::tiled : DgradPath::direct;
}
}  // namespace

int64_t conv3d_dgrad_workspace_elements(const Conv3dParams& p) {
  if (p.N * p.C * p.input_spatial() == 0) return 0;
  switch (dgrad_path(p)) {
    case DgradPath::phase: return conv3d_dgrad_phase_launch(p).workspace_elements;
    case DgradPath::tiled: return conv3d_dgrad_launch(p).workspace_elements;
    default: return 0;
  }
}

void conv3d_dgrad(Stream stream, const Conv3dParams& p, const float* dy, const float* w, float* dx,
                  float* workspace) {
  const int64_t total = p.N * p.C * p.input_spatial();
  if (total == 0) return;
  const DgradPath path = dgrad_path(p);
  if (path == DgradPath::direct) {
    MED3D_LAUNCH(conv3d_dgrad_direct, element_grid(total), dim3(kElementThreads), 0, stream, p, dy,
                 w, dx);
    return;
  }
  const ConvLaunch l = path == DgradPath::phase ? conv3d_dgrad_phase_launch(p) : conv3d_dgrad_launch(p);
  MED3D_CHECK(l.splits == 1 || workspace != nullptr, "conv3d_dgrad: split-K over ", l.splits,
              " chunks needs a workspace of ", l.workspace_elements,
              " floats, got none; allocate conv3d_dgrad_workspace_elements(p)");
  float* out = l.splits > 1 ? workspace : dx;
  const auto kernel = path == DgradPath::phase
                          ? (l.tile == 32 ? &conv3d_dgrad_phase_tiled<32> : &conv3d_dgrad_phase_tiled<64>)
                          : (l.tile == 32 ? &conv3d_dgrad_tiled<32> : &conv3d_dgrad_tiled<64>);
  MED3D_LAUNCH(kernel, l.grid, l.block, l.shared_bytes, stream, p, dy, w, out, l.splits, l.split_depth);
  if (l.splits > 1)
    MED3D_LAUNCH(conv3d_sum_splits, element_grid(total), dim3(kElementThreads), 0, stream,
                 workspace, l.splits, total, dx);
}

int64_t conv3d_wgrad_workspace_elements(const Conv3dParams& p) {
  return conv3d_wgrad_tiled_fits(p) ? conv3d_wgrad_launch(p).workspace_elements : 0;
}

void conv3d_wgrad(Stream stream, const Conv3dParams& p, const float* x, const float* dy,
                  float* dw, float* workspace) {
  const int64_t total = p.K * p.channels_per_group() * p.taps();
  if (total == 0) return;
  if (!conv3d_wgrad_tiled_fits(p)) {
    MED3D_LAUNCH(conv3d_wgrad_direct, element_grid(total), dim3(kElementThreads), 0, stream, p, x,
                 dy, dw);
    return;
  }
  const ConvLaunch l = conv3d_wgrad_launch(p);
  MED3D_CHECK(l.splits == 1 || workspace != nullptr, "conv3d_wgrad: split-K over ", l.splits,
              " chunks needs a workspace of ", l.workspace_elements,
              " floats, got none; allocate conv3d_wgrad_workspace_elements(p)");
  float* out = l.splits > 1 ? workspace : dw;
  MED3D_LAUNCH(conv3d_wgrad_tiled, l.grid, l.block, l.shared_bytes, stream, p, x, dy, out,
               l.splits, l.split_depth);
  if (l.splits > 1)
    MED3D_LAUNCH(conv3d_sum_splits, element_grid(total), dim3(kElementThreads), 0, stream,
                 workspace, l.splits, total, dw);
}

void conv3d_bias_grad(Stream stream, int64_t N, int64_t channels, int64_t spatial,
                      const float* dy, float* db) {
  if (channels == 0) return;
  Conv3dParams p;
  p.K = channels;
  const ConvLaunch l = conv3d_bias_grad_launch(p);
  // The launcher overloads the kernel's name: pick the kernel by its signature.
  auto kernel = static_cast<void (*)(int64_t, int64_t, int64_t, const float*, float*)>(
      &cuda::conv3d_bias_grad);
  MED3D_LAUNCH(kernel, l.grid, l.block, l.shared_bytes, stream, N, channels, spatial, dy, db);
}

void add_channel_bias(Stream stream, int64_t N, int64_t channels, int64_t spatial,
                      const float* bias, float* y) {
  const int64_t total = N * channels * spatial;
  if (total == 0) return;
  MED3D_LAUNCH(add_channel_bias_kernel, element_grid(total), dim3(kElementThreads), 0, stream,
               channels, spatial, bias, y, total);
}

}  // namespace med3d::kernels::cuda
