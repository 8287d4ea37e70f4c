// med3d-bench gpu-conv: our CUDA conv kernels (kernels/cuda/conv3d.cu, called directly through
// their launchers, as the conv op does) against cuDNN on the Med3D layer table. Times come from
// CUDA events around each run, with the L2 cache flushed (a write over twice its size) before
// every run, ours and cuDNN's alike. Each pass's output is also compared with cuDNN's.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>
#include <vector>

#include "commands.h"
#include "cudnn_ref.h"
#include "med3d/error.h"

#ifdef MED3D_BENCH_CUDA
#include <cuda_runtime.h>

#include "med3d/kernels/cuda/conv3d.h"
#endif

namespace med3d::bench {

#ifndef MED3D_BENCH_CUDA

int run_gpu_conv(const CommonOptions&) {
  detail::throw_error("gpu-conv: med3d-bench was built without CUDA; configure with -DMED3D_CUDA=ON "
                      "on a machine with the CUDA toolkit");
}

#else

namespace {

void check(cudaError_t status, const char* call) {
  MED3D_CHECK(status == cudaSuccess, call, " failed: ", cudaGetErrorString(status));
}

// A device buffer of floats, filled from a pattern.
struct DeviceFloats {
  float* data = nullptr;
  int64_t count = 0;
  explicit DeviceFloats(int64_t n) : count(n) {
    check(cudaMalloc(&data, static_cast<std::size_t>(std::max<int64_t>(n, 1)) * sizeof(float)), "cudaMalloc");
    std::vector<float> v(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
    check(cudaMemcpy(data, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  ~DeviceFloats() { cudaFree(data); }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
  std::vector<float> host() const {
    std::vector<float> v(static_cast<std::size_t>(count));
    check(cudaMemcpy(v.data(), data, v.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
    return v;
  }
};

std::string describe(const ConvLayer& l) {
  std::ostringstream out;
  out << l.N << "x" << l.C << "x" << l.D << "x" << l.H << "x" << l.W << (l.transposed ? " T> " : " > ") << l.K
      << " k" << l.kernel << "s" << l.stride << "p" << l.pad << "d" << l.dilation;
  return out.str();
}

// Event-timed runs on `stream`, each after an L2 flush.
Timing time_gpu(const std::function<void()>& fn, cudaStream_t stream, void* flush, std::size_t flush_bytes,
                int warmup, int runs) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<double> seconds;
  for (int i = 0; i < warmup + runs; ++i) {
    check(cudaMemsetAsync(flush, i & 0xff, flush_bytes, stream), "cudaMemsetAsync (L2 flush)");
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    fn();
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    if (i >= warmup) seconds.push_back(ms * 1e-3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return summarize(seconds);
}

double max_relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

}  // namespace

int run_gpu_conv(const CommonOptions& options) {
  check_only(options, med3d_conv_table(options.scale, options.quick), "conv layer");
  int devices = 0;
  MED3D_CHECK(cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0,
              "gpu-conv: no CUDA device is usable on this machine");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  const std::string reference = cudnn_version();
  std::printf("device: %s (sm_%d%d, %d SMs, L2 %d MiB)\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, prop.l2CacheSize >> 20);
  std::printf("reference: %s\n", reference.empty() ? "unavailable (built without cuDNN)"
                                                    : (reference + ", fp32 FMA math (no TF32), fastest algorithm "
                                                                   "of cudnnFind*AlgorithmEx, 1 GiB workspace").c_str());
  std::printf("scale %s, %d timed runs after %d warm-up, CUDA events, L2 flushed before each run, times in ms; "
              "speed_vs_ref = ref_ms / ours_ms (> 1: we are faster); max_rel_diff: ours vs cuDNN output\n\n",
              options.scale.c_str(), options.runs, options.warmup);
  cudaStream_t stream;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  const std::size_t flush_bytes = std::max<std::size_t>(2 * static_cast<std::size_t>(prop.l2CacheSize), 1 << 20);
  void* flush = nullptr;
  check(cudaMalloc(&flush, flush_bytes), "cudaMalloc (L2 flush buffer)");

  const double nan = std::numeric_limits<double>::quiet_NaN();
  Report report({{"layer"}, {"pass"}, {"shape"}, {"ours_ms", 4}, {"ours_min_ms", 4}, {"nominal_tflops", 2},
                 {"effective_tflops", 2}, {"ref_ms", 4}, {"ref_min_ms", 4}, {"ref_algo", 0},
                 {"speed_vs_ref", 2}, {"max_rel_diff", 7}});
  for (const ConvLayer& layer : med3d_conv_table(options.scale, options.quick)) {
    if (!selected(options, layer.name)) continue;
    const Conv3dParams p = conv_params(layer);
    DeviceFloats x(p.N * p.C * p.input_spatial()), w(p.K * p.channels_per_group() * p.taps()),
        y(p.N * p.K * p.output_spatial()), workspace(kernels::cuda::conv3d_wgrad_workspace_elements(p)),
        dgrad_workspace(kernels::cuda::conv3d_dgrad_workspace_elements(p));
    // cuDNN writes its own copies of each pass's output, so the two can be compared.
    DeviceFloats x_ref(x.count), w_ref(w.count), y_ref(y.count);
    const double nominal = conv_flops_nominal(layer), effective = conv_flops_effective(layer);
    for (Pass pass : {Pass::fprop, Pass::dgrad, Pass::wgrad}) {
      const Pass kp = kernel_pass(pass, layer.transposed);
      auto ours = [&] {
        namespace k = kernels::cuda;
        if (kp == Pass::fprop) k::conv3d_fprop(stream, p, x.data, w.data, nullptr, y.data);
        else if (kp == Pass::dgrad)
          k::conv3d_dgrad(stream, p, y.data, w.data, x.data,
                          dgrad_workspace.count > 0 ? dgrad_workspace.data : nullptr);
        else k::conv3d_wgrad(stream, p, x.data, y.data, w.data, workspace.count > 0 ? workspace.data : nullptr);
      };
      const Timing t = time_gpu(ours, stream, flush, flush_bytes, options.warmup, options.runs);
      double ref_ms = nan, ref_min_ms = nan, diff = nan;
      int algorithm = -1;
      if (!reference.empty()) {
        // Inputs of the pass are ours (same values); the output goes to the _ref buffer.
        ConvBuffers b{x.data, w.data, y.data};
        if (kp == Pass::fprop) b.y = y_ref.data;
        else if (kp == Pass::dgrad) b.x = x_ref.data;
        else b.w = w_ref.data;
        const Timing r = time_gpu(cudnn_conv(p, kp, b, stream, &algorithm), stream, flush, flush_bytes,
                                  options.warmup, options.runs);
        ref_ms = 1e3 * r.median_s, ref_min_ms = 1e3 * r.min_s;
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        if (kp == Pass::fprop) diff = max_relative_difference(y.host(), y_ref.host());
        else if (kp == Pass::dgrad) diff = max_relative_difference(x.host(), x_ref.host());
        else diff = max_relative_difference(w.host(), w_ref.host());
      }
      report.add({layer.name, std::string(pass_name(pass, layer.transposed)), describe(layer), 1e3 * t.median_s,
                  1e3 * t.min_s, nominal / t.median_s / 1e12, effective / t.median_s / 1e12, ref_ms, ref_min_ms,
                  static_cast<double>(algorithm), ref_ms / (1e3 * t.median_s), diff});
      std::fflush(stdout);
    }
  }
  cudaFree(flush);
  cudaStreamDestroy(stream);
  nlohmann::json document = {{"bench", "gpu-conv"}, {"scale", options.scale}, {"quick", options.quick},
                             {"runs", options.runs}, {"warmup", options.warmup}, {"device", prop.name},
                             {"reference", reference.empty() ? "unavailable" : reference}};
  emit(report, options, document, std::string("med3d CUDA conv speed vs ") +
                                      (reference.empty() ? "cuDNN" : reference) + " (ref time / our time)",
       "speed_vs_ref", {"layer", "pass"});
  return 0;
}

#endif

}  // namespace med3d::bench
