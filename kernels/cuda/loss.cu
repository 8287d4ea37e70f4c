// Losses: label conversion, deterministic sums and the per-element gradients. Every loss sum
// runs in two passes: `blocks` blocks (a function of the count only) each reduce a grid-strided
// share of the items into double partials, then one block adds each row of partials in block
// order and its thread 0 finishes the loss on the device. Rows: `Width` sums per class
// (blockIdx.y), so Dice's per-class sums need no atomics either.
#include "cuda_common.cuh"

#include "med3d/kernels/cuda/loss.h"
#include "med3d/kernels/loss.h"

namespace med3d::kernels::cuda {

namespace {

constexpr unsigned kReduceThreads = 256;  // also the most partials a row may hold
constexpr std::size_t kReduceShared = kReduceThreads / 32 * sizeof(double);

unsigned reduce_blocks(int64_t count) {
  const int64_t blocks = (count + kReduceThreads - 1) / kReduceThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks > kReduceThreads ? kReduceThreads : blocks);
}

// Workspace layout: [kept (what backward reads), 2C + 2][totals, rows][partials, rows * blocks].
int64_t kept_elements(int64_t channels) { return 2 * channels + 2; }
int64_t max_rows(int64_t channels) { return 3 * channels + 2; }

template <class L>
__global__ void class_targets_kernel(const L* labels, int64_t n, bool has_ignore,
                                     int64_t ignore_index, int64_t channels, int32_t* targets,
                                     unsigned long long* first_invalid) {
  for (int64_t i = grid_index(); i < n; i += grid_stride()) {
    const int64_t label = static_cast<int64_t>(labels[i]);
    int32_t target = kIgnoredTarget;
    if (has_ignore && label == ignore_index) {
      target = kIgnoredTarget;
    } else if (label >= 0 && label < channels) {
      target = static_cast<int32_t>(label);
    } else {
      // Integer minimum: the same position wins whatever the order.
      atomicMin(first_invalid, static_cast<unsigned long long>(i));
    }
    targets[i] = target;
  }
}

__global__ void init_first_invalid_kernel(unsigned long long* first_invalid) {
  if (grid_index() == 0) first_invalid[0] = ~0ull;
}

template <class L>
void launch_class_targets(Stream stream, const L* labels, int64_t n, bool has_ignore,
                          int64_t ignore_index, int64_t channels, int32_t* targets,
                          unsigned long long* first_invalid) {
  if (n == 0) return;
  auto kernel = &class_targets_kernel<L>;
  MED3D_LAUNCH(kernel, element_grid(n), dim3(kElementThreads), 0, stream, labels, n, has_ignore,
               ignore_index, channels, targets, first_invalid);
}

// Terms: term(i, c, acc) adds item i's share of class row c (blockIdx.y) to acc[0, Width).
struct CrossEntropyTerm {
  const float* x;
  const int32_t* target;
  const float* class_weights;
  ChannelLayout layout;
  __device__ void operator()(int64_t p, unsigned, double* acc) const {
    const int32_t t = target[p];
    if (t == kIgnoredTarget) return;
    const double w = class_weight_of(class_weights, t);
    acc[0] += w * cross_entropy_at(x + layout.base(p), layout.channels, layout.spatial, t);
    acc[1] += w;
  }
};

// Per class c: intersection, probability sum, target count (as kernels::cpu::dice_sums).
struct DiceTerm {
  const float* p;
  const int32_t* target;
  ChannelLayout layout;
  __device__ void operator()(int64_t q, unsigned c, double* acc) const {
    const double v = static_cast<double>(p[layout.base(q) + int64_t(c) * layout.spatial]);
    acc[1] += v;
    if (target[q] == static_cast<int32_t>(c)) {
      acc[0] += v;
      acc[2] += 1.0;
    }
  }
};

struct SquaredErrorTerm {
  const float* x;
  const float* t;
  __device__ void operator()(int64_t i, unsigned, double* acc) const {
    acc[0] += squared_error(static_cast<double>(x[i]), static_cast<double>(t[i]));
  }
};

struct BceTerm {
  const float* x;
  const float* t;
  const float* pos_weight;
  ChannelLayout layout;
  __device__ void operator()(int64_t i, unsigned, double* acc) const {
    acc[0] += bce_with_logits(static_cast<double>(x[i]), static_cast<double>(t[i]),
                              class_weight_of(pos_weight, layout.channel_of(i)));
  }
};

// Finishers run in thread 0 of the final block with every row's total.
struct CrossEntropyFinish {
  float nan;  // the loss when every position is ignored (0 / 0), as in PyTorch
  __device__ void operator()(const double* totals, double* kept, float* loss) const {
    kept[0] = totals[1];
    loss[0] = totals[1] != 0 ? static_cast<float>(totals[0] / totals[1]) : nan;
  }
};

struct DiceFinish {
  int64_t channels;
  int64_t first_class;
  double smooth;
  __device__ void operator()(const double* totals, double* kept, float* loss) const {
    const double included = static_cast<double>(channels - first_class);
    double dice_total = 0;
    for (int64_t c = 0; c < channels; ++c) {
      const double intersection = totals[3 * c], p_sum = totals[3 * c + 1], g_sum = totals[3 * c + 2];
      DiceCoefficients k;  // zero for excluded classes
      if (c >= first_class) {
        dice_total += (2 * intersection + smooth) / (p_sum + g_sum + smooth);
        k = dice_gradient_coefficients(intersection, p_sum, g_sum, smooth, included);
      }
      kept[2 * c] = k.a;
      kept[2 * c + 1] = k.b;
    }
    loss[0] = static_cast<float>(1.0 - dice_total / included);
  }
};

struct ScaledSumFinish {
  double scale;
  __device__ void operator()(const double* totals, double*, float* loss) const {
    loss[0] = static_cast<float>(totals[0] * scale);
  }
};

// partial[(row) * gridDim.x + blockIdx.x], row = blockIdx.y * Width + k.
template <int Width, class Term>
__global__ void partial_sums_kernel(Term term, int64_t count, double* partial) {
  MED3D_EXTERN_SHARED(double, scratch);
  double acc[Width] = {};
  for (int64_t i = grid_index(); i < count; i += grid_stride()) term(i, blockIdx.y, acc);
  for (int k = 0; k < Width; ++k) {
    const double s = block_sum(acc[k], scratch);
    if (threadIdx.x == 0) partial[(int64_t(blockIdx.y) * Width + k) * gridDim.x + blockIdx.x] = s;
  }
}

template <class Finish>
__global__ void final_sums_kernel(Finish finish, const double* partial, unsigned rows,
                                  unsigned blocks, double* totals, double* kept, float* loss) {
  MED3D_EXTERN_SHARED(double, scratch);
  for (unsigned r = 0; r < rows; ++r) {
    const double s =
        block_sum(threadIdx.x < blocks ? partial[int64_t(r) * blocks + threadIdx.x] : 0.0, scratch);
    if (threadIdx.x == 0) totals[r] = s;
  }
  if (threadIdx.x == 0) finish(totals, kept, loss);
}

template <int Width, class Term, class Finish>
void reduce(Stream stream, Term term, int64_t count, unsigned classes, Finish finish, float* loss,
            double* workspace, int64_t channels) {
  const unsigned blocks = reduce_blocks(count);
  const unsigned rows = Width * classes;
  double* kept = workspace;
  double* totals = kept + kept_elements(channels);
  double* partial = totals + max_rows(channels);
  auto partial_kernel = &partial_sums_kernel<Width, Term>;
  MED3D_LAUNCH(partial_kernel, dim3(blocks, classes), dim3(kReduceThreads), kReduceShared, stream,
               term, count, partial);
  auto final_kernel = &final_sums_kernel<Finish>;
  MED3D_LAUNCH(final_kernel, dim3(1), dim3(kReduceThreads), kReduceShared, stream, finish, partial,
               rows, blocks, totals, kept, loss);
}

__global__ void cross_entropy_backward_kernel(const float* x, const int32_t* target,
                                              const float* class_weights, const float* dy,
                                              const double* weight_sum, float* dx,
                                              ChannelLayout layout) {
  const double scale = weight_sum[0] != 0 ? static_cast<double>(dy[0]) / weight_sum[0] : 0.0;
  for (int64_t p = grid_index(); p < layout.positions(); p += grid_stride()) {
    const int64_t base = layout.base(p);
    const int32_t t = target[p];
    if (t == kIgnoredTarget) {
      for (int64_t c = 0; c < layout.channels; ++c) dx[base + c * layout.spatial] = 0.0f;
      continue;
    }
    cross_entropy_backward_at(x + base, dx + base, layout.channels, layout.spatial, t,
                              scale * class_weight_of(class_weights, t));
  }
}

__global__ void dice_backward_kernel(const int32_t* target, const double* coefficients,
                                     const float* dy, float* dp, ChannelLayout layout) {
  const double scale = static_cast<double>(dy[0]);
  for (int64_t q = grid_index(); q < layout.positions(); q += grid_stride()) {
    float* dq = dp + layout.base(q);
    for (int64_t c = 0; c < layout.channels; ++c) {
      const double g = target[q] == c ? 1.0 : 0.0;
      dq[c * layout.spatial] =
          static_cast<float>(scale * (coefficients[2 * c] * g + coefficients[2 * c + 1]));
    }
  }
}

// dx, dt = factor * dy[0] * (x - t) and its negative.
__global__ void mse_backward_kernel(const float* x, const float* t, double factor,
                                    const float* dy, float* dx, float* dt, int64_t n) {
  const double scale = factor * static_cast<double>(dy[0]);
  for (int64_t i = grid_index(); i < n; i += grid_stride()) {
    const double g = scale * (static_cast<double>(x[i]) - static_cast<double>(t[i]));
    if (dx) dx[i] = static_cast<float>(g);
    if (dt) dt[i] = static_cast<float>(-g);
  }
}

__global__ void bce_backward_kernel(const float* x, const float* t, const float* pos_weight,
                                    double factor, const float* dy, float* dx, float* dt,
                                    ChannelLayout layout) {
  const double scale = factor * static_cast<double>(dy[0]);
  const int64_t n = layout.batch * layout.channels * layout.spatial;
  for (int64_t i = grid_index(); i < n; i += grid_stride()) {
    const double xi = static_cast<double>(x[i]);
    const double pw = class_weight_of(pos_weight, layout.channel_of(i));
    if (dx) dx[i] = static_cast<float>(scale * bce_with_logits_dx(xi, static_cast<double>(t[i]), pw));
    if (dt) dt[i] = static_cast<float>(scale * bce_with_logits_dt(xi, pw));
  }
}

}  // namespace

void init_first_invalid(Stream stream, unsigned long long* first_invalid) {
  MED3D_LAUNCH(init_first_invalid_kernel, dim3(1), dim3(32), 0, stream, first_invalid);
}

void class_targets(Stream stream, const int32_t* labels, int64_t n, bool has_ignore,
                   int64_t ignore_index, int64_t channels, int32_t* targets,
                   unsigned long long* first_invalid) {
  launch_class_targets(stream, labels, n, has_ignore, ignore_index, channels, targets, first_invalid);
}
void class_targets(Stream stream, const int64_t* labels, int64_t n, bool has_ignore,
                   int64_t ignore_index, int64_t channels, int32_t* targets,
                   unsigned long long* first_invalid) {
  launch_class_targets(stream, labels, n, has_ignore, ignore_index, channels, targets, first_invalid);
}
void class_targets(Stream stream, const uint8_t* labels, int64_t n, bool has_ignore,
                   int64_t ignore_index, int64_t channels, int32_t* targets,
                   unsigned long long* first_invalid) {
  launch_class_targets(stream, labels, n, has_ignore, ignore_index, channels, targets, first_invalid);
}

int64_t loss_workspace_elements(int64_t count, int64_t channels) {
  return kept_elements(channels) + max_rows(channels) * (1 + reduce_blocks(count));
}

void cross_entropy_forward(Stream stream, const float* x, const int32_t* target,
                           const float* class_weights, ChannelLayout layout, float* loss,
                           double* workspace) {
  reduce<2>(stream, CrossEntropyTerm{x, target, class_weights, layout}, layout.positions(), 1,
            CrossEntropyFinish{__builtin_nanf("")}, loss, workspace, layout.channels);
}

void cross_entropy_backward(Stream stream, const float* x, const int32_t* target,
                            const float* class_weights, const float* dy, const double* weight_sum,
                            float* dx, ChannelLayout layout) {
  if (layout.positions() == 0) return;
  MED3D_LAUNCH(cross_entropy_backward_kernel, element_grid(layout.positions()),
               dim3(kElementThreads), 0, stream, x, target, class_weights, dy, weight_sum, dx,
               layout);
}

void dice_forward(Stream stream, const float* p, const int32_t* target, ChannelLayout layout,
                  int64_t first_class, double smooth, float* loss, double* workspace) {
  reduce<3>(stream, DiceTerm{p, target, layout}, layout.positions(),
            static_cast<unsigned>(layout.channels),
            DiceFinish{layout.channels, first_class, smooth}, loss, workspace, layout.channels);
}

void dice_backward(Stream stream, const int32_t* target, const double* coefficients,
                   const float* dy, float* dp, ChannelLayout layout) {
  if (layout.positions() == 0) return;
  MED3D_LAUNCH(dice_backward_kernel, element_grid(layout.positions()), dim3(kElementThreads), 0,
               stream, target, coefficients, dy, dp, layout);
}

void mse_forward(Stream stream, const float* x, const float* t, int64_t n, float* loss,
                 double* workspace) {
  reduce<1>(stream, SquaredErrorTerm{x, t}, n, 1, ScaledSumFinish{1.0 / static_cast<double>(n)},
            loss, workspace, 1);
}

void mse_backward(Stream stream, const float* x, const float* t, const float* dy, float* dx,
                  float* dt, int64_t n) {
  if (n == 0) return;
  MED3D_LAUNCH(mse_backward_kernel, element_grid(n), dim3(kElementThreads), 0, stream, x, t,
               2.0 / static_cast<double>(n), dy, dx, dt, n);
}

void bce_with_logits_forward(Stream stream, const float* x, const float* t, const float* pos_weight,
                             ChannelLayout layout, float* loss, double* workspace) {
  const int64_t n = layout.batch * layout.channels * layout.spatial;
  reduce<1>(stream, BceTerm{x, t, pos_weight, layout}, n, 1,
            ScaledSumFinish{1.0 / static_cast<double>(n)}, loss, workspace, 1);
}

void bce_with_logits_backward(Stream stream, const float* x, const float* t,
                              const float* pos_weight, const float* dy, float* dx, float* dt,
                              ChannelLayout layout) {
  const int64_t n = layout.batch * layout.channels * layout.spatial;
  if (n == 0) return;
  MED3D_LAUNCH(bce_backward_kernel, element_grid(n), dim3(kElementThreads), 0, stream, x, t,
               pos_weight, 1.0 / static_cast<double>(n), dy, dx, dt, layout);
}

}  // namespace med3d::kernels::cuda
