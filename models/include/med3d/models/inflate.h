// 2D-to-3D weight inflation (Eshed Ohn-Bar et al. / Carreira & Zisserman's I3D): a 3D conv
// weight [O, I, T, kH, kW] made from a 2D one [O, I, kH, kW] along a new depth axis of T taps:
//   Center:  the middle tap (T / 2) holds W, every other tap is 0 (the 3D conv first acts as
//            the 2D conv on each slice);
//   Average: every tap holds W / T (a volume constant along depth gives the 2D output);
//   Alphas:  tap t holds alpha_t * W, default alphas 0.25/0.5/0.25 (T = 3) and
//            0.05/0.1/0.2/0.3/0.2/0.1/0.05 (T = 7), which sum to 1 like Average.
// inflate_state_dict turns a 2D ResNet state dict (torchvision key layout: conv1, bn1,
// layer1..4, fc) into the state of a 3D model with the same keys: rank-4 conv weights are
// inflated to the model's kernel depth, other matching tensors are copied, keys the model
// lacks (fc.*) are skipped. A 3-channel stem becomes 1-channel by summing over the input
// channels (a grey image fed as R = G = B gives the same response). Values are computed in f64
// and stored in the model's dtype.
#pragma once

#include <string>
#include <vector>

#include "med3d/models/weights.h"

namespace med3d {

enum class InflateMode { Center, Average, Alphas };

// 0.25/0.5/0.25 for depth 3, 0.05/0.1/0.2/0.3/0.2/0.1/0.05 for depth 7, 1 for depth 1; other
// depths throw (pass explicit alphas).
std::vector<double> default_inflation_alphas(int64_t depth);

// w2d [O, I, kH, kW] -> [O, I, depth, kH, kW] in w2d's dtype. `alphas` (Alphas mode only,
// empty = defaults) must have `depth` entries.
Tensor inflate_conv_weight(const Tensor& w2d, int64_t depth, InflateMode mode,
                           const std::vector<double>& alphas = {});

// [O, C, kH, kW] -> [O, 1, kH, kW]: sums over the input channels.
Tensor sum_input_channels(const Tensor& w2d);

// The model's state with every transferable key of `state2d` replaced (see the header
// contract); `report` says which keys were taken, skipped and left new.
NamedTensors inflate_state_dict(const NamedTensors& state2d, const Module& model3d, InflateMode mode,
                                TransferReport* report = nullptr);

// Reads a 2D safetensors state dict and loads its inflation into `model3d`.
TransferReport inflate_into(Module& model3d, const std::string& path2d, InflateMode mode);

}  // namespace med3d
