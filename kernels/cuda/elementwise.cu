// Element-wise kernels: 1D grid-stride loops over the shared functors, and a deterministic
// two-pass sum (per-block partials in double, then one block adds them in block order).
#include "cuda_common.cuh"

#include "med3d/kernels/cuda/elementwise.h"
#include "med3d/kernels/elementwise.h"

namespace med3d::kernels::cuda {

namespace {

constexpr unsigned kSumBlocks = 256;

struct Relu {
  __device__ float operator()(float v) const { return relu_forward(v); }
};
struct Sigmoid {
  __device__ float operator()(float v) const { return sigmoid_forward(v); }
};
struct AddScalar {
  float s;
  __device__ float operator()(float v) const { return v + s; }
};
struct MulScalar {
  float s;
  __device__ float operator()(float v) const { return v * s; }
};
struct Add {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct Sub {
  __device__ float operator()(float a, float b) const { return a - b; }
};
struct Mul {
  __device__ float operator()(float a, float b) const { return a * b; }
};
struct ReluBackward {
  __device__ float operator()(float y, float dy) const { return relu_backward(y, dy); }
};
struct SigmoidBackward {
  __device__ float operator()(float y, float dy) const { return sigmoid_backward(y, dy); }
};

__global__ void fill_kernel(float value, float* y, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_stride()) y[i] = value;
}

template <class Fn>
__global__ void unary_kernel(Fn fn, const float* x, float* y, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_stride()) y[i] = fn(x[i]);
}

template <class Fn>
__global__ void binary_kernel(Fn fn, const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_stride()) y[i] = fn(a[i], b[i]);
}

template <class Fn>
void launch_unary(Stream stream, Fn fn, const float* x, float* y, int64_t n) {
  auto kernel = &unary_kernel<Fn>;
  MED3D_LAUNCH(kernel, element_grid(n), dim3(kElementThreads), 0, stream, fn, x, y, n);
}

template <class Fn>
void launch_binary(Stream stream, Fn fn, const float* a, const float* b, float* y, int64_t n) {
  auto kernel = &binary_kernel<Fn>;
  MED3D_LAUNCH(kernel, element_grid(n), dim3(kElementThreads), 0, stream, fn, a, b, y, n);
}

// Block b sums the elements b, b + blocks*threads, ... (strided by thread), in a fixed order.
__global__ void sum_partial_kernel(const float* x, int64_t n, double* partial) {
  MED3D_EXTERN_SHARED(double, scratch);
  double s = 0.0;
  for (int64_t i = grid_index(); i < n; i += grid_stride()) s += static_cast<double>(x[i]);
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_final_kernel(const double* partial, unsigned count, double scale, float* y) {
  MED3D_EXTERN_SHARED(double, scratch);
  const double s = block_sum(threadIdx.x < count ? partial[threadIdx.x] : 0.0, scratch);
  if (threadIdx.x == 0) y[0] = static_cast<float>(s * scale);
}

__global__ void fill_scaled_scalar_kernel(const float* scalar, double scale, float* y, int64_t n) {
  const float value = static_cast<float>(static_cast<double>(scalar[0]) * scale);
  for (int64_t i = grid_index(); i < n; i += grid_stride()) y[i] = value;
}

template <class From, class To>
__global__ void convert_kernel(const From* x, To* y, int64_t n) {
  for (int64_t i = grid_index(); i < n; i += grid_stride()) y[i] = static_cast<To>(x[i]);
}

}  // namespace

void fill(Stream stream, float value, float* y, int64_t n) {
  if (n == 0) return;
  MED3D_LAUNCH(fill_kernel, element_grid(n), dim3(kElementThreads), 0, stream, value, y, n);
}

void unary(Stream stream, UnaryOp op, float scalar, const float* x, float* y, int64_t n) {
  if (n == 0) return;
  switch (op) {
    case UnaryOp::relu: return launch_unary(stream, Relu{}, x, y, n);
    case UnaryOp::sigmoid: return launch_unary(stream, Sigmoid{}, x, y, n);
    case UnaryOp::add_scalar: return launch_unary(stream, AddScalar{scalar}, x, y, n);
    case UnaryOp::mul_scalar: return launch_unary(stream, MulScalar{scalar}, x, y, n);
  }
}

void binary(Stream stream, BinaryOp op, const float* a, const float* b, float* y, int64_t n) {
  if (n == 0) return;
  switch (op) {
    case BinaryOp::add: return launch_binary(stream, Add{}, a, b, y, n);
    case BinaryOp::sub: return launch_binary(stream, Sub{}, a, b, y, n);
    case BinaryOp::mul: return launch_binary(stream, Mul{}, a, b, y, n);
    case BinaryOp::relu_backward: return launch_binary(stream, ReluBackward{}, a, b, y, n);
    case BinaryOp::sigmoid_backward: return launch_binary(stream, SigmoidBackward{}, a, b, y, n);
  }
}

int64_t sum_workspace_elements(int64_t) { return kSumBlocks; }

void sum(Stream stream, const float* x, int64_t n, double scale, float* y, double* workspace) {
  const std::size_t shared = kElementThreads / 32 * sizeof(double);
  // Always kSumBlocks blocks (empty ones write 0), so the final pass reads every partial.
  MED3D_LAUNCH(sum_partial_kernel, dim3(kSumBlocks), dim3(kElementThreads), shared, stream, x, n,
               workspace);
  MED3D_LAUNCH(sum_final_kernel, dim3(1), dim3(kSumBlocks), kSumBlocks / 32 * sizeof(double),
               stream, workspace, kSumBlocks, scale, y);
}

void fill_scaled_scalar(Stream stream, const float* scalar, double scale, float* y, int64_t n) {
  if (n == 0) return;
  MED3D_LAUNCH(fill_scaled_scalar_kernel, element_grid(n), dim3(kElementThreads), 0, stream,
               scalar, scale, y, n);
}

void convert(Stream stream, const float* x, double* y, int64_t n) {
  if (n == 0) return;
  auto kernel = &convert_kernel<float, double>;
  MED3D_LAUNCH(kernel, element_grid(n), dim3(kElementThreads), 0, stream, x, y, n);
}

void convert(Stream stream, const double* x, float* y, int64_t n) {
  if (n == 0) return;
  auto kernel = &convert_kernel<double, float>;
  MED3D_LAUNCH(kernel, element_grid(n), dim3(kElementThreads), 0, stream, x, y, n);
}

}  // namespace med3d::kernels::cuda
