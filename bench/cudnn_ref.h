// The GPU reference for conv passes: cuDNN 9 (from the CUDA toolkit's directory), when the bench
// was built with it (MED3D_BENCH_CUDNN). Each pass runs cuDNN's fastest algorithm for this shape
// as found by cudnnFind*AlgorithmEx (workspace allowed, up to 1 GiB), in fp32 with
// CUDNN_FMA_MATH (no TF32: our kernels are exact fp32 FMA as well), on NCDHW tensors.
#pragma once

#include <functional>
#include <string>

#include "flops.h"

struct CUstream_st;

namespace med3d::bench {

// Device buffers of one conv layer, owned by the caller (x, w, y in the forward conv's roles).
struct ConvBuffers {
  float* x = nullptr;
  float* w = nullptr;
  float* y = nullptr;
};

// "cuDNN 9.x.y" or "" when the bench was built without it.
std::string cudnn_version();
// One execution of `pass` of the forward conv `p` on `stream`, with the algorithm found once
// here; throws med3d::Error when cuDNN is unavailable. The returned function owns its handle,
// descriptors and workspace. `algorithm` receives the chosen algorithm's number.
std::function<void()> cudnn_conv(const Conv3dParams& p, Pass pass, const ConvBuffers& buffers,
                                 CUstream_st* stream, int* algorithm);

}  // namespace med3d::bench
