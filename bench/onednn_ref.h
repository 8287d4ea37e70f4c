// The CPU reference for conv passes: oneDNN (Debian libdnnl-dev), when the bench was built with
// it (MED3D_BENCH_DNNL). Each pass runs as oneDNN's own primitive (convolution forward_training,
// backward_data or backward_weights, algorithm direct) with memory formats of oneDNN's choice
// ("any"): inputs are reordered once, outside the timing, so the reference gets its best
// layout; ours runs on plain NCDHW (and repacks its weights and input inside its time). A second
// reference times what a plain-layout caller of oneDNN pays (as PyTorch's oneDNN convs on NCDHW
// tensors): the reorders from the plain inputs and into the plain outputs, then the same
// primitive. Threads: oneDNN uses the OpenMP runtime we set.
#pragma once

#include <functional>
#include <string>

#include "flops.h"

namespace med3d::bench {

// "oneDNN 2.6.3" or "" when the bench was built without it.
std::string onednn_version();
enum class OnednnLayout {
  blocked,  // oneDNN's formats, converted outside the timing
  plain,    // NCDHW / OIDHW in and out, the conversions timed
};

// One execution of `pass` of the forward conv `p` (see conv_params.h) in `layout`; throws
// med3d::Error when oneDNN is not available.
std::function<void()> onednn_conv(const Conv3dParams& p, Pass pass, OnednnLayout layout);

}  // namespace med3d::bench
