// Element-wise ops and reductions. Binary ops take tensors of one shape, dtype and Context
// (no broadcasting); results are new tensors. All are differentiable and recorded on the tape.
#pragma once

#include "med3d/tensor.h"

namespace med3d {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& x, double value);
Tensor mul_scalar(const Tensor& x, double value);
Tensor relu(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor sum(const Tensor& x);   // one element, shape [1]
Tensor mean(const Tensor& x);  // one element, shape [1]
// Identity forward; backward multiplies the gradient by -lambda (domain-adversarial training).
Tensor gradient_reversal(const Tensor& x, double lambda);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator*(const Tensor& x, double s) { return mul_scalar(x, s); }
inline Tensor operator*(double s, const Tensor& x) { return mul_scalar(x, s); }
inline Tensor operator+(const Tensor& x, double s) { return add_scalar(x, s); }

}  // namespace med3d
