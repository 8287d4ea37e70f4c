// Every conv pass of the Med3D layer table (bench/flops.h, issue 7) on the GPU against cuDNN:
// our fprop, dgrad and wgrad kernels and cuDNN's fastest fp32 algorithm (no TF32) read the same
// device inputs; their outputs must agree to 1e-4 (normwise). Built only with cuDNN present.
#include <cuda_runtime.h>

#include <cmath>
#include <vector>

#include "cudnn_ref.h"
#include "flops.h"
#include "gpu_compare.h"
#include "med3d/kernels/cuda/conv3d.h"

using namespace med3d;
using namespace med3d::bench;

namespace {

Tensor device_pattern(Context& context, int64_t n, float phase) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.37f * static_cast<float>(i % 1009) + phase);
  return context.from_vector<float>({n}, v).to(Device::cuda(0));
}

float* device_floats(const Tensor& t) { return static_cast<float*>(const_cast<void*>(t.raw_data())); }

}  // namespace

TEST_CASE("gpu: every conv pass of the Med3D layer table matches cuDNN", "[gpu][cudnn]") {
  Context context(Device::cpu(), 3);
  cudaStream_t stream;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  for (const ConvLayer& layer : med3d_conv_table("small", false)) {
    const Conv3dParams p = conv_params(layer);
    const Tensor x = device_pattern(context, p.N * p.C * p.input_spatial(), 0.1f);
    const Tensor w = device_pattern(context, p.K * p.channels_per_group() * p.taps(), 0.7f);
    const Tensor y = device_pattern(context, p.N * p.K * p.output_spatial(), 1.3f);
    const Tensor workspace =
        context.zeros({std::max<int64_t>(kernels::cuda::conv3d_wgrad_workspace_elements(p), 1)}).to(Device::cuda(0));
    const Tensor dgrad_workspace =
        context.zeros({std::max<int64_t>(kernels::cuda::conv3d_dgrad_workspace_elements(p), 1)}).to(Device::cuda(0));
    for (Pass pass : {Pass::fprop, Pass::dgrad, Pass::wgrad}) {
      INFO(layer.name << " " << pass_name(pass, false));
      const Tensor ours = context.zeros({pass == Pass::fprop ? y.numel() : pass == Pass::dgrad ? x.numel() : w.numel()})
                              .to(Device::cuda(0));
      const Tensor theirs = ours.clone();
      // The tensors were filled on the runtime's own stream; this test's kernels run on `stream`.
      REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
      ConvBuffers b{device_floats(x), device_floats(w), device_floats(y)};
      if (pass == Pass::fprop) {
        kernels::cuda::conv3d_fprop(stream, p, device_floats(x), device_floats(w), nullptr, device_floats(ours));
        b.y = device_floats(theirs);
      } else if (pass == Pass::dgrad) {
        kernels::cuda::conv3d_dgrad(stream, p, device_floats(y), device_floats(w), device_floats(ours),
                                    device_floats(dgrad_workspace));
        b.x = device_floats(theirs);
      } else {
        kernels::cuda::conv3d_wgrad(stream, p, device_floats(x), device_floats(y), device_floats(ours),
                                    device_floats(workspace));
        b.w = device_floats(theirs);
      }
      int algorithm = -1;
      cudnn_conv(p, pass, b, stream, &algorithm)();
      REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
      CHECK(gpu_test::relative_error(ours, theirs) < 1e-4);
    }
  }
  cudaStreamDestroy(stream);
}
