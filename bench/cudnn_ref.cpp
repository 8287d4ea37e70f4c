#include "cudnn_ref.h"

#include <memory>
#include <sstream>
#include <vector>

#include "med3d/error.h"

#ifdef MED3D_BENCH_CUDNN
#include <cuda_runtime.h>
#include <cudnn.h>
#endif

namespace med3d::bench {

#ifndef MED3D_BENCH_CUDNN

std::string cudnn_version() { return ""; }

std::function<void()> cudnn_conv(const Conv3dParams&, Pass, const ConvBuffers&, CUstream_st*, int*) {
  detail::throw_error("cuDNN reference unavailable: med3d-bench was built without cuDNN (cudnn.h "
                      "and libcudnn from the CUDA toolkit)");
}

#else

namespace {

void check(cudnnStatus_t status, const char* call) {
  MED3D_CHECK(status == CUDNN_STATUS_SUCCESS, call, " failed: ", cudnnGetErrorString(status));
}
void check(cudaError_t status, const char* call) {
  MED3D_CHECK(status == cudaSuccess, call, " failed: ", cudaGetErrorString(status));
}

// The fastest of cudnnFind*'s results (sorted by time) that ran in plain fp32 FMA math.
template <class Perf>
int fastest_fp32(const Perf* perf, int found, const char* pass) {
  for (int i = 0; i < found; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].mathType == CUDNN_FMA_MATH) return perf[i].algo;
  detail::throw_error("cuDNN found no fp32 ", pass, " algorithm for this layer");
}

constexpr std::size_t kMaxWorkspace = std::size_t(1) << 30;

// Handle, descriptors and workspace of one pass; freed when the last copy of the closure goes.
struct CudnnPass {
  cudnnHandle_t handle = nullptr;
  cudnnTensorDescriptor_t x_desc = nullptr, y_desc = nullptr;
  cudnnFilterDescriptor_t w_desc = nullptr;
  cudnnConvolutionDescriptor_t conv_desc = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  int algorithm = 0;
  ~CudnnPass() {
    if (workspace) cudaFree(workspace);
    if (conv_desc) cudnnDestroyConvolutionDescriptor(conv_desc);
    if (w_desc) cudnnDestroyFilterDescriptor(w_desc);
    if (y_desc) cudnnDestroyTensorDescriptor(y_desc);
    if (x_desc) cudnnDestroyTensorDescriptor(x_desc);
    if (handle) cudnnDestroy(handle);
  }
};

void set_tensor(cudnnTensorDescriptor_t desc, int64_t n, int64_t c, int64_t d, int64_t h, int64_t w) {
  const int dims[5] = {int(n), int(c), int(d), int(h), int(w)};
  const int strides[5] = {int(c * d * h * w), int(d * h * w), int(h * w), int(w), 1};
  check(cudnnSetTensorNdDescriptor(desc, CUDNN_DATA_FLOAT, 5, dims, strides), "cudnnSetTensorNdDescriptor");
}

}  // namespace

std::string cudnn_version() {
  const std::size_t v = cudnnGetVersion();
  std::ostringstream out;
  out << "cuDNN " << v / 10000 << "." << (v % 10000) / 100 << "." << v % 100;
  return out.str();
}

std::function<void()> cudnn_conv(const Conv3dParams& p, Pass pass, const ConvBuffers& b,
                                 CUstream_st* stream, int* algorithm) {
  auto s = std::make_shared<CudnnPass>();
  check(cudnnCreate(&s->handle), "cudnnCreate");
  check(cudnnSetStream(s->handle, stream), "cudnnSetStream");
  check(cudnnCreateTensorDescriptor(&s->x_desc), "cudnnCreateTensorDescriptor");
  check(cudnnCreateTensorDescriptor(&s->y_desc), "cudnnCreateTensorDescriptor");
  check(cudnnCreateFilterDescriptor(&s->w_desc), "cudnnCreateFilterDescriptor");
  check(cudnnCreateConvolutionDescriptor(&s->conv_desc), "cudnnCreateConvolutionDescriptor");
  set_tensor(s->x_desc, p.N, p.C, p.D, p.H, p.W);
  set_tensor(s->y_desc, p.N, p.K, p.Z, p.P, p.Q);
  const int filter[5] = {int(p.K), int(p.channels_per_group()), int(p.T), int(p.R), int(p.S)};
  check(cudnnSetFilterNdDescriptor(s->w_desc, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 5, filter),
        "cudnnSetFilterNdDescriptor");
  const int pad[3] = {int(p.pad[0]), int(p.pad[1]), int(p.pad[2])};
  const int stride[3] = {int(p.stride[0]), int(p.stride[1]), int(p.stride[2])};
  const int dilation[3] = {int(p.dilation[0]), int(p.dilation[1]), int(p.dilation[2])};
  check(cudnnSetConvolutionNdDescriptor(s->conv_desc, 3, pad, stride, dilation, CUDNN_CROSS_CORRELATION,
                                        CUDNN_DATA_FLOAT),
        "cudnnSetConvolutionNdDescriptor");
  check(cudnnSetConvolutionGroupCount(s->conv_desc, int(p.groups)), "cudnnSetConvolutionGroupCount");
  check(cudnnSetConvolutionMathType(s->conv_desc, CUDNN_FMA_MATH), "cudnnSetConvolutionMathType");

  // The search workspace: as much as cuDNN may use, capped at 1 GiB.
  check(cudaMalloc(&s->workspace, kMaxWorkspace), "cudaMalloc (cuDNN workspace)");
  s->workspace_bytes = kMaxWorkspace;
  constexpr int kCandidates = 16;
  int found = 0;
  if (pass == Pass::fprop) {
    cudnnConvolutionFwdAlgoPerf_t perf[kCandidates];
    check(cudnnFindConvolutionForwardAlgorithmEx(s->handle, s->x_desc, b.x, s->w_desc, b.w, s->conv_desc,
                                                 s->y_desc, b.y, kCandidates, &found, perf, s->workspace,
                                                 s->workspace_bytes),
          "cudnnFindConvolutionForwardAlgorithmEx");
    s->algorithm = fastest_fp32(perf, found, "forward");
  } else if (pass == Pass::dgrad) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[kCandidates];
    check(cudnnFindConvolutionBackwardDataAlgorithmEx(s->handle, s->w_desc, b.w, s->y_desc, b.y, s->conv_desc,
                                                      s->x_desc, b.x, kCandidates, &found, perf, s->workspace,
                                                      s->workspace_bytes),
          "cudnnFindConvolutionBackwardDataAlgorithmEx");
    s->algorithm = fastest_fp32(perf, found, "backward-data");
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[kCandidates];
    check(cudnnFindConvolutionBackwardFilterAlgorithmEx(s->handle, s->x_desc, b.x, s->y_desc, b.y, s->conv_desc,
                                                        s->w_desc, b.w, kCandidates, &found, perf, s->workspace,
                                                        s->workspace_bytes),
          "cudnnFindConvolutionBackwardFilterAlgorithmEx");
    s->algorithm = fastest_fp32(perf, found, "backward-filter");
  }
  if (algorithm) *algorithm = s->algorithm;
  const ConvBuffers buffers = b;
  return [s, pass, buffers] {
    const float one = 1.0f, zero = 0.0f;
    if (pass == Pass::fprop)
      check(cudnnConvolutionForward(s->handle, &one, s->x_desc, buffers.x, s->w_desc, buffers.w, s->conv_desc,
                                    static_cast<cudnnConvolutionFwdAlgo_t>(s->algorithm), s->workspace,
                                    s->workspace_bytes, &zero, s->y_desc, buffers.y),
            "cudnnConvolutionForward");
    else if (pass == Pass::dgrad)
      check(cudnnConvolutionBackwardData(s->handle, &one, s->w_desc, buffers.w, s->y_desc, buffers.y, s->conv_desc,
                                         static_cast<cudnnConvolutionBwdDataAlgo_t>(s->algorithm), s->workspace,
                                         s->workspace_bytes, &zero, s->x_desc, buffers.x),
            "cudnnConvolutionBackwardData");
    else
      check(cudnnConvolutionBackwardFilter(s->handle, &one, s->x_desc, buffers.x, s->y_desc, buffers.y,
                                           s->conv_desc, static_cast<cudnnConvolutionBwdFilterAlgo_t>(s->algorithm),
                                           s->workspace, s->workspace_bytes, &zero, s->w_desc, buffers.w),
            "cudnnConvolutionBackwardFilter");
  };
}

#endif

}  // namespace med3d::bench
