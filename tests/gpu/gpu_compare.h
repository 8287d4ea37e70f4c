// Test support of the gpu suite: runs an op on the CPU and on cuda:0 with the same inputs and
// compares the outputs and, through one backward pass, the gradients of every floating input.
// The CPU op is the reference (itself checked against PyTorch and by finite differences).
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "med3d/med3d.h"

namespace med3d::gpu_test {

// max |a - b| / max |b|: normwise relative error (a sum of many terms may round to near zero
// in one element, so elementwise relative error would measure noise). A NaN or Inf in either
// tensor where the other is finite gives infinity: the emulator fills fresh device memory with
// NaN, so an element no kernel wrote fails here instead of vanishing in a max.
// `floor` bounds the scale from below: a tensor whose true values are 0 up to rounding (the
// bias of a conv followed by batch norm has a zero gradient) is compared against the scale of
// the tensors around it, not against its own noise.
inline double relative_error(const Tensor& actual, const Tensor& reference, double floor = 1e-12) {
  const std::vector<double> a = actual.to_vector<double>(), b = reference.to_vector<double>();
  REQUIRE(a.size() == b.size());
  double diff = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isfinite(a[i]) != std::isfinite(b[i])) return std::numeric_limits<double>::infinity();
    if (!std::isfinite(a[i])) continue;  // both non-finite: the CPU op made it so too
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / std::max(scale, floor);
}

inline double max_abs(const Tensor& t) {
  double m = 0.0;
  for (double v : t.to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Inputs are CPU tensors; floating ones get requires_grad. The op's output is reduced with
// fixed random weights, so every output element's gradient path is exercised.
inline void compare_with_cpu(const std::string& name, const std::vector<Tensor>& cpu_inputs,
                             const OpFn& op, double tolerance = 1e-4, bool backward_pass = true) {
  INFO("op: " << name);
  Context context = cpu_inputs.at(0).context();
  std::vector<Tensor> host, device;
  for (const Tensor& t : cpu_inputs) {
    Tensor h = t.detach().clone();
    Tensor d = t.detach().to(Device::cuda(0));
    if (backward_pass && is_floating(t.dtype())) {
      h.set_requires_grad(true);
      d.set_requires_grad(true);
    }
    host.push_back(h);
    device.push_back(d);
  }
  // One graph at a time: backward frees the Context's whole tape.
  const Tensor y_host = op(host);
  const Tensor weights = context.rand(y_host.shape(), y_host.dtype());
  if (backward_pass) backward(sum(mul(y_host, weights)));
  const Tensor y_device = op(device);
  REQUIRE(y_device.device() == Device::cuda(0));
  REQUIRE(y_device.shape() == y_host.shape());
  CHECK(relative_error(y_device, y_host) < tolerance);
  if (!backward_pass) return;
  backward(sum(mul(y_device, weights.to(Device::cuda(0)))));
  for (std::size_t i = 0; i < host.size(); ++i) {
    if (!host[i].requires_grad()) continue;
    INFO("gradient of input " << i);
    REQUIRE(host[i].grad().defined());
    REQUIRE(device[i].grad().defined());
    CHECK(device[i].grad().device() == Device::cuda(0));
    CHECK(relative_error(device[i].grad(), host[i].grad()) < tolerance);
  }
}

}  // namespace med3d::gpu_test
