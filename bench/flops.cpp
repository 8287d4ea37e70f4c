#include "flops.h"

#include <algorithm>

namespace med3d::bench {

const char* pass_name(Pass pass, bool transposed) {
  switch (pass) {
    case Pass::fprop: return transposed ? "tfwd" : "fprop";
    case Pass::dgrad: return transposed ? "tdgrad" : "dgrad";
    case Pass::wgrad: return transposed ? "twgrad" : "wgrad";
  }
  return "?";
}

Pass kernel_pass(Pass pass, bool transposed) {
  if (!transposed || pass == Pass::wgrad) return pass;
  return pass == Pass::fprop ? Pass::dgrad : Pass::fprop;
}

Conv3dParams conv_params(const ConvLayer& l) {
  const Dims3 k{l.kernel, l.kernel, l.kernel}, s{l.stride, l.stride, l.stride},
      p{l.pad, l.pad, l.pad}, d{l.dilation, l.dilation, l.dilation};
  if (l.transposed)
    return kernels::conv_transpose3d_params("bench", {l.N, l.C, l.D, l.H, l.W},
                                            {l.C, l.K, k[0], k[1], k[2]}, s, p, {0, 0, 0}, d, 1);
  return kernels::conv3d_params("bench", {l.N, l.C, l.D, l.H, l.W}, {l.K, l.C, k[0], k[1], k[2]}, s,
                                p, d, 1);
}

std::vector<ConvLayer> med3d_conv_table(const std::string& scale, bool quick) {
  std::vector<ConvLayer> table = {
      {"stem", 2, 1, 32, 64, 64, 64, 7, 2, 3, 1},
      {"layer1", 2, 64, 8, 16, 16, 64, 3, 1, 1, 1},
      {"layer2", 2, 64, 8, 16, 16, 128, 3, 2, 1, 1},
      {"layer3_d2", 2, 128, 4, 8, 8, 256, 3, 1, 2, 2},
      {"layer4_d4", 2, 256, 4, 8, 8, 512, 3, 1, 4, 4},
      {"bottleneck_1x1", 2, 1024, 4, 8, 8, 256, 1, 1, 0, 1},
      {"head_tconv", 2, 512, 4, 8, 8, 32, 2, 2, 0, 1, true},
  };
  for (int64_t d : {3, 6, 12, 18, 24})
    table.push_back({std::string("aspp_d").append(std::to_string(d)), 2, 512, 8, 16, 16, 64, 3, 1, d, d});
  table.push_back({"classifier", 2, 32, 16, 32, 32, 2, 1, 1, 0, 1});
  for (ConvLayer& l : table) {
    if (scale == "large") {
      l.N = 1, l.D *= 2, l.H *= 2, l.W *= 2;
    }
    if (quick) {
      l.N = 1;
      l.D = std::max<int64_t>(l.D / 2, 1), l.H = std::max<int64_t>(l.H / 2, 1),
      l.W = std::max<int64_t>(l.W / 2, 1);
      if (l.C > 1) l.C /= 2;
      if (l.K > 2) l.K /= 2;
    }
  }
  return table;
}

double conv_flops_nominal(const ConvLayer& layer) {
  return static_cast<double>(kernels::conv3d_flops_nominal(conv_params(layer)));
}

double conv_flops_effective(const ConvLayer& layer) {
  return static_cast<double>(kernels::conv3d_flops_effective(conv_params(layer)));
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t e : shape) n *= e;
  return n;
}

std::vector<OpCase> med3d_op_cases(const std::string& scale, bool quick) {
  // Shapes where these ops run in ResNet-18 + heads at the 2x1x32x64x64 input: after the stem
  // (64 channels at 16x32x32), a 32-channel decoder map upsampled x2, and 2-class logits at
  // the input resolution.
  std::vector<OpCase> cases = {
      {"batch_norm", {2, 64, 16, 32, 32}},
      {"relu", {2, 64, 16, 32, 32}},
      {"max_pool_k3s2", {2, 64, 16, 32, 32}},
      {"upsample_trilinear_x2", {2, 32, 16, 32, 32}},
      {"cross_entropy", {2, 2, 32, 64, 64}},
  };
  constexpr double f = 4;  // bytes per f32 (and per i32 label)
  for (OpCase& c : cases) {
    if (scale == "large") c.shape[0] = 1, c.shape[2] *= 2, c.shape[3] *= 2, c.shape[4] *= 2;
    if (quick) c.shape[0] = 1, c.shape[2] /= 2, c.shape[3] /= 2, c.shape[4] /= 2;
    const double n = static_cast<double>(numel(c.shape));
    if (c.name == "batch_norm" || c.name == "relu") {
      c.bytes_forward = 2 * n * f;   // read x, write y
      c.bytes_backward = 3 * n * f;  // read x, dy; write dx
    } else if (c.name == "max_pool_k3s2") {
      double out = static_cast<double>(c.shape[0] * c.shape[1]);
      for (int a = 2; a < 5; ++a) out *= static_cast<double>((c.shape[static_cast<std::size_t>(a)] - 1) / 2 + 1);
      c.bytes_forward = (n + out) * f;   // read x, write y
      c.bytes_backward = (out + n) * f;  // read dy, write dx
    } else if (c.name == "upsample_trilinear_x2") {
      c.bytes_forward = 9 * n * f;   // read x, write 8x as many outputs
      c.bytes_backward = 9 * n * f;  // read dy, write dx
    } else if (c.name == "cross_entropy") {
      const double positions = n / static_cast<double>(c.shape[1]);
      c.bytes_forward = (n + positions) * f;       // read logits and labels
      c.bytes_backward = (2 * n + positions) * f;  // read logits and labels, write dlogits
    }
  }
  return cases;
}

}  // namespace med3d::bench
