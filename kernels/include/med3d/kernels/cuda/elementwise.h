// CUDA launchers of the element-wise ops, fills and full reductions (f32, contiguous, device
// pointers, queued on `stream`). Each overwrites only its output; the output may alias an
// input of the same size (in-place updates). The per-element math is the functors of
// med3d/kernels/elementwise.h, shared with the CPU loops.
#pragma once

#include <cstdint>

#include "med3d/kernels/cuda/runtime.h"

namespace med3d::kernels::cuda {

enum class UnaryOp { relu, sigmoid, add_scalar, mul_scalar };
enum class BinaryOp { add, sub, mul, relu_backward, sigmoid_backward };

// y[i] = value.
void fill(Stream stream, float value, float* y, int64_t n);
// y[i] = op(x[i]) (`scalar` is the operand of add_scalar/mul_scalar).
void unary(Stream stream, UnaryOp op, float scalar, const float* x, float* y, int64_t n);
// y[i] = op(a[i], b[i]); relu/sigmoid_backward take (forward output, dy).
void binary(Stream stream, BinaryOp op, const float* a, const float* b, float* y, int64_t n);
// y[0] = scale * sum(x), summed in double in a fixed order (deterministic). `workspace` holds
// sum_workspace_elements(n) doubles.
int64_t sum_workspace_elements(int64_t n);
void sum(Stream stream, const float* x, int64_t n, double scale, float* y, double* workspace);
// y[i] = scale * scalar[0], reading the scalar on the device (no host round trip).
void fill_scaled_scalar(Stream stream, const float* scalar, double scale, float* y, int64_t n);
// Element type conversion between f32 and f64 (the other dtypes go through the host).
void convert(Stream stream, const float* x, double* y, int64_t n);
void convert(Stream stream, const double* x, float* y, int64_t n);

}  // namespace med3d::kernels::cuda
