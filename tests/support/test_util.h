// Test helpers: finite-difference gradient checks and golden comparisons with PyTorch.
#pragma once

#include <catch2/catch.hpp>
#include <omp.h>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "med3d/med3d.h"

namespace med3d::test {

// fn() run with OpenMP's team size set to `threads`, the previous size restored after it, also
// when fn throws (a failed REQUIRE), so that later tests run on the usual team.
template <class Fn>
auto with_threads(int threads, Fn&& fn) {
  struct Restore {
    int previous = omp_get_max_threads();
    ~Restore() { omp_set_num_threads(previous); }
  } restore;
  omp_set_num_threads(threads);
  return fn();
}

// Norm-relative error |a - b| / |b| (|b| floored so an all-zero reference still compares).
inline double relative_error(const Tensor& actual, const Tensor& expected) {
  REQUIRE(actual.shape() == expected.shape());
  const std::vector<double> a = actual.to_vector<double>();
  const std::vector<double> b = expected.to_vector<double>();
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff += (a[i] - b[i]) * (a[i] - b[i]);
    norm += b[i] * b[i];
  }
  return std::sqrt(diff) / std::max(std::sqrt(norm), 1e-12);
}

inline void require_close(const Tensor& actual, const Tensor& expected, double tolerance,
                          const std::string& what) {
  INFO(what << ": actual " << actual.str() << " vs expected " << expected.str());
  REQUIRE(actual.defined());
  REQUIRE(expected.defined());
  REQUIRE(actual.shape() == expected.shape());
  const double error = relative_error(actual, expected);
  INFO(what << ": norm-relative error " << error << " (tolerance " << tolerance << ")");
  REQUIRE(error < tolerance);
}

// Loads tests/golden/NAME.safetensors written by tests/golden/make_fixtures.py.
inline Checkpoint load_golden(const Context& context, const std::string& name) {
  return load_safetensors(context, std::string(MED3D_GOLDEN_DIR) + "/" + name + ".safetensors");
}

// Golden tolerance of the issue: norm-relative error below 1e-5 in f32.
inline constexpr double kGoldenTolerance = 1e-5;

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Compares the tape's gradients of <op(inputs), w> (w random) with central differences, for
// every element of every input that requires grad. Inputs should be small f64 tensors.
// Ops drawing random numbers must reseed inside `op` so each call sees the same stream.
inline void gradcheck(Context context, const OpFn& op, std::vector<Tensor> inputs,
                      double eps = 1e-6, double tolerance = 1e-6) {
  Tensor probe = op(inputs);
  Tensor weights = context.randn(probe.shape(), probe.dtype());
  for (Tensor& input : inputs)
    if (input.defined() && input.requires_grad()) input.zero_grad();
  backward(op(inputs), weights);
  const std::vector<double> w = weights.to_vector<double>();
  auto objective = [&]() {
    NoGrad no_grad(context);
    const std::vector<double> y = op(inputs).to_vector<double>();
    double total = 0;
    for (std::size_t i = 0; i < y.size(); ++i) total += y[i] * w[i];
    return total;
  };
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    Tensor& input = inputs[k];
    if (!input.defined() || !input.requires_grad()) continue;
    INFO("input " << k << " " << input.str());
    REQUIRE(input.grad().defined());
    const std::vector<double> analytic = input.grad().to_vector<double>();
    REQUIRE(input.dtype() == DType::f64);
    double* x = input.data<double>();
    for (int64_t i = 0; i < input.numel(); ++i) {
      const double saved = x[i];
      x[i] = saved + eps;
      const double plus = objective();
      x[i] = saved - eps;
      const double minus = objective();
      x[i] = saved;
      const double numeric = (plus - minus) / (2 * eps);
      INFO("element " << i << ": analytic " << analytic[i] << ", numeric " << numeric);
      REQUIRE(std::abs(analytic[i] - numeric) <= tolerance * (1 + std::abs(numeric)));
    }
  }
}

// A leaf f64 tensor of `shape` with standard normal values that requires grad.
inline Tensor random_leaf(Context& context, const Shape& shape, DType dtype = DType::f64) {
  Tensor t = context.randn(shape, dtype);
  t.set_requires_grad(true);
  return t;
}

// Two safetensors files hold the same tensors, names, shapes, dtypes and bits (resume checks).
inline void require_identical_files(const Context& context, const std::string& a, const std::string& b) {
  const Checkpoint x = load_safetensors(context, a), y = load_safetensors(context, b);
  REQUIRE(x.tensors.size() == y.tensors.size());
  for (std::size_t i = 0; i < x.tensors.size(); ++i) {
    INFO(x.tensors[i].first);
    REQUIRE(x.tensors[i].first == y.tensors[i].first);
    const Tensor& p = x.tensors[i].second;
    const Tensor& q = y.tensors[i].second;
    REQUIRE(p.shape() == q.shape());
    REQUIRE(p.dtype() == q.dtype());
    REQUIRE(std::memcmp(p.raw_data(), q.raw_data(), p.nbytes()) == 0);
  }
}

// A fresh folder under the system temp dir, removed with everything in it at scope exit.
class ScratchDir {
 public:
  ScratchDir() {
    std::string name = (std::filesystem::temp_directory_path() / "med3d_test_XXXXXX").string();
    REQUIRE(::mkdtemp(name.data()) != nullptr);
    path_ = name;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string path(const std::string& name = "") const { return (std::filesystem::path(path_) / name).string(); }
  std::string file(const std::string& name) const { return path(name); }
  std::set<std::string> listing() const {  // file names inside, sorted
    std::set<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(path_)) names.insert(entry.path().filename().string());
    return names;
  }
  std::size_t count() const { return listing().size(); }

 private:
  std::string path_;
};

}  // namespace med3d::test
