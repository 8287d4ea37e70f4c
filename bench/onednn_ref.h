// The CPU reference for conv passes: oneDNN (Debian libdnnl-dev), when the bench was built with
// it (MED3D_BENCH_DNNL). Each pass runs as oneDNN's own primitive (convolution forward_training,
// backward_data or backward_weights, algorithm direct) with memory formats of oneDNN's choice
// ("any"): inputs are reordered once, outside the timing, so the reference gets its best
// layout; ours runs on plain NCDHW. Threads: oneDNN uses the OpenMP runtime we set.
#pragma once

#include <functional>
#include <string>

#include "flops.h"

namespace med3d::bench {

// "oneDNN 2.6.3" or "" when the bench was built without it.
std::string onednn_version();
// One execution of `pass` of the forward conv `p` (see conv_params.h); throws med3d::Error
// when oneDNN is not available.
std::function<void()> onednn_conv(const Conv3dParams& p, Pass pass);

}  // namespace med3d::bench
