// Batch normalisation launchers: the reductions of batch_norm.cuh, one thread per channel for
// the per-channel scalars (in double, as the CPU op computes them), and grid-stride element
// kernels over the shared functors. Per-channel scalars reach the element kernels as doubles
// and are rounded to f32 there, exactly where the CPU loops round them.
#include "cuda_common.cuh"

#include "batch_norm.cuh"
#include "med3d/kernels/batch_norm.h"
#include "med3d/kernels/cuda/batch_norm.h"

namespace med3d::kernels::cuda {

namespace {

// Workspace layout (doubles): the level-1 partials of the two sums (C * chunks each), the two
// per-channel sums (C each), then four per-channel scalars for the element kernels (C each).
struct Workspace {
  double *partial_a, *partial_b, *sum_a, *sum_b, *params;
};

Workspace split(double* w, const BatchNormSize& s, const BatchNormLaunch& l) {
  Workspace ws;
  ws.partial_a = w;
  ws.partial_b = ws.partial_a + s.c * l.chunks;
  ws.sum_a = ws.partial_b + s.c * l.chunks;
  ws.sum_b = ws.sum_a + s.c;
  ws.params = ws.sum_b + s.c;
  return ws;
}

BatchNormDims dims(const BatchNormSize& s) { return {s.n, s.c, s.spatial}; }

// The running statistics of one call: read in eval, updated in place in training.
struct RunningStats {
  const float* mean;
  const float* var;
  float* update_mean;  // training: = mean, or nullptr without running statistics
  float* update_var;
};

// Per channel: picks the statistics (the batch's, or the running ones when batch_var is
// nullptr), updates the running ones in training, writes invstd into stats and the forward
// scalars (mean, scale, bias) into params.
__global__ void forward_channels_kernel(int64_t channels, int64_t count, const double* batch_var,
                                        const float* weight, const float* bias,
                                        RunningStats running, double momentum, double eps,
                                        double* stats, double* params) {
  for (int64_t c = grid_index(); c < channels; c += grid_stride()) {
    double mean, var;
    if (batch_var != nullptr) {
      mean = stats[c];
      var = batch_var[c];
      if (running.update_mean != nullptr) {
        running.update_mean[c] =
            static_cast<float>(running_stat_update(running.mean[c], mean, momentum));
        running.update_var[c] = static_cast<float>(
            running_stat_update(running.var[c], unbiased_variance(var, count), momentum));
      }
    } else {
      mean = running.mean[c];
      var = running.var[c];
      stats[c] = mean;
    }
    const double invstd = batch_norm_invstd(var, eps);
    stats[channels + c] = invstd;
    params[c] = mean;
    params[channels + c] = (weight != nullptr ? static_cast<double>(weight[c]) : 1.0) * invstd;
    params[2 * channels + c] = bias != nullptr ? static_cast<double>(bias[c]) : 0.0;
  }
}

__global__ void apply_kernel(BatchNormDims d, const float* x, const double* params, bool relu,
                             float* y) {
  const int64_t total = d.n * d.c * d.spatial;
  for (int64_t i = grid_index(); i < total; i += grid_stride()) {
    const int64_t c = i / d.spatial % d.c;
    y[i] = batch_norm_forward(x[i], static_cast<float>(params[c]),
                              static_cast<float>(params[d.c + c]),
                              static_cast<float>(params[2 * d.c + c]), relu);
  }
}

// Per channel: the backward scalars (mean, scale, mean_dy, proj) into params, and dweight and
// dbias from the sums (read only when have_sums).
__global__ void backward_channels_kernel(int64_t channels, double count, bool have_sums,
                                         const float* weight, const double* stats,
                                         const double* sum_dy, const double* sum_dy_xmu,
                                         double* params, float* dweight, float* dbias) {
  for (int64_t c = grid_index(); c < channels; c += grid_stride()) {
    const double invstd = stats[channels + c];
    params[c] = stats[c];
    params[channels + c] = (weight != nullptr ? static_cast<double>(weight[c]) : 1.0) * invstd;
    if (!have_sums) continue;
    const BatchNormGradScalars k = batch_norm_grad_scalars(sum_dy[c], sum_dy_xmu[c], invstd, count);
    params[2 * channels + c] = k.mean_dy;
    params[3 * channels + c] = k.proj;
    if (dweight != nullptr) dweight[c] = static_cast<float>(sum_dy_xmu[c] * invstd);
    if (dbias != nullptr) dbias[c] = static_cast<float>(sum_dy[c]);
  }
}

__global__ void backward_train_kernel(BatchNormDims d, const float* x, const float* dy,
                                      const double* params, float* dx) {
  const int64_t total = d.n * d.c * d.spatial;
  for (int64_t i = grid_index(); i < total; i += grid_stride()) {
    const int64_t c = i / d.spatial % d.c;
    dx[i] = batch_norm_backward_train(
        x[i], dy[i], static_cast<float>(params[c]), static_cast<float>(params[d.c + c]),
        static_cast<float>(params[2 * d.c + c]), static_cast<float>(params[3 * d.c + c]));
  }
}

__global__ void backward_eval_kernel(BatchNormDims d, const float* dy, const double* params,
                                     float* dx) {
  const int64_t total = d.n * d.c * d.spatial;
  for (int64_t i = grid_index(); i < total; i += grid_stride()) {
    const int64_t c = i / d.spatial % d.c;
    dx[i] = static_cast<float>(params[d.c + c]) * dy[i];
  }
}

void forward_common(Stream stream, const BatchNormSize& size, const float* x, const float* weight,
                    const float* bias, const RunningStats& running, const double* batch_var,
                    double momentum, double eps, bool relu, float* y, double* stats,
                    const Workspace& ws) {
  const int64_t total = size.n * size.c * size.spatial;
  MED3D_LAUNCH(forward_channels_kernel, element_grid(size.c), dim3(kElementThreads), 0, stream,
               size.c, size.n * size.spatial, batch_var, weight, bias, running, momentum, eps,
               stats, ws.params);
  MED3D_LAUNCH(apply_kernel, element_grid(total), dim3(kElementThreads), 0, stream, dims(size), x,
               static_cast<const double*>(ws.params), relu, y);
}

}  // namespace

int64_t batch_norm_workspace_elements(const BatchNormSize& size) {
  const BatchNormLaunch l = batch_norm_reduce_launch(dims(size));
  return 2 * size.c * l.chunks + 6 * size.c;
}

void batch_norm_forward_train(Stream stream, const BatchNormSize& size, const float* x,
                              const float* weight, const float* bias, float* running_mean,
                              float* running_var, double momentum, double eps, bool relu,
                              float* y, double* stats, double* workspace) {
  if (size.n * size.c * size.spatial == 0) return;
  const BatchNormDims d = dims(size);
  const BatchNormLaunch l = batch_norm_reduce_launch(d);
  const Workspace ws = split(workspace, size, l);
  MED3D_LAUNCH(batch_norm_stats_partial, l.partial_grid, l.block, l.shared_bytes, stream, d, x,
               l.chunk_len, ws.partial_a, ws.partial_b);
  // The batch mean goes straight into stats, the biased variance into sum_b.
  MED3D_LAUNCH(batch_norm_stats_finalize, l.finalize_grid, l.block, l.shared_bytes, stream, d, x,
               l.chunks, static_cast<const double*>(ws.partial_a),
               static_cast<const double*>(ws.partial_b), stats, ws.sum_b);
  const RunningStats running{running_mean, running_var, running_mean, running_var};
  forward_common(stream, size, x, weight, bias, running, ws.sum_b, momentum, eps, relu, y, stats,
                 ws);
}

void batch_norm_forward_eval(Stream stream, const BatchNormSize& size, const float* x,
                             const float* weight, const float* bias, const float* running_mean,
                             const float* running_var, double eps, bool relu, float* y,
                             double* stats, double* workspace) {
  if (size.n * size.c * size.spatial == 0) return;
  const Workspace ws = split(workspace, size, batch_norm_reduce_launch(dims(size)));
  const RunningStats running{running_mean, running_var, nullptr, nullptr};
  forward_common(stream, size, x, weight, bias, running, nullptr, 0.0, eps, relu, y, stats, ws);
}

void batch_norm_backward(Stream stream, const BatchNormSize& size, bool training, const float* x,
                         const float* dy, const float* weight, const double* stats, float* dx,
                         float* dweight, float* dbias, double* workspace) {
  const int64_t total = size.n * size.c * size.spatial;
  if (total == 0) return;
  const BatchNormDims d = dims(size);
  const BatchNormLaunch l = batch_norm_reduce_launch(d);
  const Workspace ws = split(workspace, size, l);
  // Eval mode needs the per-channel sums only for dweight and dbias.
  const bool have_sums = training || dweight != nullptr || dbias != nullptr;
  if (have_sums) {
    MED3D_LAUNCH(batch_norm_reduce_grad_partial, l.partial_grid, l.block, l.shared_bytes, stream,
                 d, x, dy, stats, l.chunk_len, ws.partial_a, ws.partial_b);
    MED3D_LAUNCH(batch_norm_reduce_grad_finalize, l.finalize_grid, l.block, l.shared_bytes, stream,
                 l.chunks, static_cast<const double*>(ws.partial_a),
                 static_cast<const double*>(ws.partial_b), ws.sum_a, ws.sum_b);
  }
  MED3D_LAUNCH(backward_channels_kernel, element_grid(size.c), dim3(kElementThreads), 0, stream,
               size.c, static_cast<double>(size.n * size.spatial), have_sums, weight, stats,
               static_cast<const double*>(ws.sum_a), static_cast<const double*>(ws.sum_b),
               ws.params, dweight, dbias);
  if (dx == nullptr) return;
  if (training) {
    MED3D_LAUNCH(backward_train_kernel, element_grid(total), dim3(kElementThreads), 0, stream, d,
                 x, dy, static_cast<const double*>(ws.params), dx);
  } else {
    MED3D_LAUNCH(backward_eval_kernel, element_grid(total), dim3(kElementThreads), 0, stream, d,
                 dy, static_cast<const double*>(ws.params), dx);
  }
}

}  // namespace med3d::kernels::cuda
