// med3d-bench conv: our CPU conv kernels (kernels/cpu/conv3d.cpp, called directly with a
// preallocated scratch, as the conv op does) against oneDNN on the Med3D layer table.
#include <cmath>
#include <cstdio>
#include <limits>
#include <new>
#include <sstream>
#include <vector>

#include "commands.h"
#include "flops.h"
#include "med3d/kernels/cpu/conv3d.h"
#include "med3d/kernels/cpu/conv3d_direct.h"
#include "med3d/kernels/cpu/conv3d_padded.h"
#include "onednn_ref.h"

namespace med3d::bench {

namespace {

std::string describe(const ConvLayer& l) {
  std::ostringstream out;
  out << l.N << "x" << l.C << "x" << l.D << "x" << l.H << "x" << l.W << (l.transposed ? " T> " : " > ") << l.K
      << " k" << l.kernel << "s" << l.stride << "p" << l.pad << "d" << l.dilation;
  return out.str();
}

// Buffers start on a 64-byte line, as the engine's pool gives tensors (engine/src/cpu_pool.cpp) and
// as oneDNN allocates its own: a vector's 16-byte start split our 64-byte stores, the line tiles'
// streamed ones included (DenseASPP d12's dgrad took 1.09x the time).
template <class T>
struct LineAligned {
  using value_type = T;
  LineAligned() = default;
  template <class U>
  LineAligned(const LineAligned<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
  bool operator==(const LineAligned&) const { return true; }
};
using Floats = std::vector<float, LineAligned<float>>;

Floats pattern(int64_t n) {
  Floats v(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
  return v;
}

}  // namespace

int run_conv(const CommonOptions& options) {
  check_only(options, med3d_conv_table(options.scale, options.quick), "conv layer");
  const Machine machine = measure_machine(options.threads, options.quick);
  print_machine(machine);
  const std::string reference = onednn_version();
  std::printf("reference: %s\n",
              reference.empty() ? "unavailable (built without Debian libdnnl-dev; install it and reconfigure)"
                                : (reference + ", direct convolution, memory formats of its choice").c_str());
  std::printf("scale %s, %d timed runs after %d warm-up (ours and the reference alternating), times in ms; "
              "speed_vs_ref = the median over the runs of the reference's time / ours in the same pair (> 1: we are "
              "faster); ref_plain: oneDNN with NCDHW in and out, its reorders timed (as a plain-layout caller such as "
              "PyTorch runs it), paired with ours in runs of its own; packed: ours with the weights packed in advance "
              "(conv3d_packed_weights_elements: the direct kernels' fprop and dgrad, dgrad's GEMMs), as oneDNN's "
              "weights are in its format before its timing starts, paired with the reference in runs of their own "
              "(elsewhere nothing is packed in advance: the ours / speed_vs_ref pair); native: ours in our own "
              "formats as oneDNN runs in its own, the weights packed and, where the line tiles run the pass "
              "(conv3d_direct_grouped_applies; of the 1x1x1 convs, their fprop), and a 1x1x1 conv's wgrad, the "
              "activations in channel groups of 8 (elsewhere the packed pair)\n\n",
              options.scale.c_str(), options.runs, options.warmup);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Report report({{"layer"},
                 {"pass"},
                 {"shape"},
                 {"ours_ms", 3},
                 {"ours_min_ms", 3},
                 {"nominal_gflops", 1},
                 {"effective_gflops", 1},
                 {"eff_of_peak", 2},
                 {"ref_ms", 3},
                 {"ref_min_ms", 3},
                 {"speed_vs_ref", 2},
                 {"ref_plain_ms", 3},
                 {"speed_vs_ref_plain", 2},
                 {"ours_packed_ms", 3},
                 {"speed_vs_ref_packed", 2},
                 {"ours_native_ms", 3},
                 {"speed_vs_ref_native", 2},
                 {"handoff_ratio", 1}});
  nlohmann::json geometry = nlohmann::json::array();
  for (const ConvLayer& layer : med3d_conv_table(options.scale, options.quick)) {
    if (!selected(options, layer.name)) continue;
    const Conv3dParams p = conv_params(layer);
    Floats x = pattern(p.N * p.C * p.input_spatial()), w = pattern(p.K * p.C * p.taps()),
           y = pattern(p.N * p.K * p.output_spatial());
    const int64_t scratch_n = kernels::cpu::conv3d_scratch_elements(p);
    Floats scratch(static_cast<std::size_t>(std::max<int64_t>(scratch_n, 1)));
    const double nominal = conv_flops_nominal(layer), effective = conv_flops_effective(layer);
    for (Pass pass : {Pass::fprop, Pass::dgrad, Pass::wgrad}) {
      const Pass kp = kernel_pass(pass, layer.transposed);
      auto ours = [&] {
        namespace k = kernels::cpu;
        if (kp == Pass::fprop)
          k::conv3d_fprop<float>(p, x.data(), w.data(), nullptr, y.data(), scratch.data(), scratch_n);
        else if (kp == Pass::dgrad)
          k::conv3d_dgrad<float>(p, y.data(), w.data(), x.data(), scratch.data(), scratch_n);
        else
          k::conv3d_wgrad<float>(p, x.data(), y.data(), w.data(), scratch.data(), scratch_n);
      };
      // The same pass with the weights packed once, before the timing (where it reads them: the direct
      // kernels' fprop and dgrad, dgrad's GEMMs; conv3d_packed_weights_elements).
      const kernels::PackFor pack_for = kp == Pass::fprop ? kernels::PackFor::fprop : kernels::PackFor::dgrad;
      const int64_t packed_n =
          kp == Pass::wgrad ? 0 : kernels::cpu::conv3d_packed_weights_elements(p, pack_for, scratch_n);
      Floats packed(static_cast<std::size_t>(packed_n));
      if (packed_n > 0) kernels::cpu::conv3d_pack_weights(p, pack_for, scratch_n, w.data(), packed.data());
      auto ours_packed = [&] {
        namespace k = kernels::cpu;
        if (kp == Pass::fprop)
          k::conv3d_fprop<float>(p, x.data(), w.data(), nullptr, y.data(), scratch.data(), scratch_n, packed.data());
        else
          k::conv3d_dgrad<float>(p, y.data(), w.data(), x.data(), scratch.data(), scratch_n, packed.data());
      };
      // The same pass in our own activation layout (as oneDNN's blocked formats, no conversion timed): the input
      // and output in channel groups, with the weights packed for the direct kernels, where the dispatcher runs
      // them on the line tiles (not Winograd's 3x3x3 same convs); the padded kernels' fprop (the stem's) writes
      // its output in the groups and keeps its input NCDHW, as oneDNN keeps a single channel's. A 1x1x1 conv's
      // fprop runs on the line tiles too, which need no packing of x in the groups (the dispatcher's GEMM packs
      // it at every call); its dgrad stays on the GEMM, which they do not beat (the bottleneck's, large scale:
      // 5.06-5.29 ms against 4.81-5.06); its wgrad reads x and dy in the groups (conv3d_pointwise_wgrad_grouped),
      // as fprop's x and y.
      namespace k = kernels::cpu;
      const bool padded = kp == Pass::fprop && k::conv3d_padded_applies(p);
      const bool pointwise = p.taps() == 1;
      const bool pointwise_wgrad = kp == Pass::wgrad && k::conv3d_pointwise_wgrad_grouped_applies(p);
      const bool grouped = padded || pointwise_wgrad ||
                           (k::conv3d_direct_grouped_applies(p, pack_for) &&
                            (pointwise ? kp == Pass::fprop : packed_n > 0));
      const bool backward = kp == Pass::dgrad;
      const int64_t in_c = backward ? p.K : p.C, out_c = backward ? p.C : p.K;
      const int64_t in_v = backward ? p.output_spatial() : p.input_spatial();
      const int64_t out_v = backward ? p.input_spatial() : p.output_spatial();
      Floats grouped_in, grouped_out, direct_packed;
      if (grouped) {
        if (!padded) grouped_in = pattern(k::conv3d_grouped_elements(p.N, in_c, in_v));
        grouped_out = pattern(k::conv3d_grouped_elements(p.N, out_c, out_v));
        if (!padded && !pointwise_wgrad) {
          direct_packed.resize(static_cast<std::size_t>(k::conv3d_direct_packed_elements(p, pack_for)));
          k::conv3d_direct_pack_weights(p, pack_for, w.data(), direct_packed.data());
        }
      }
      auto ours_grouped = [&] {
        if (padded)
          k::conv3d_padded_fprop_grouped(p, x.data(), w.data(), grouped_out.data());
        else if (pointwise_wgrad)
          k::conv3d_pointwise_wgrad_grouped(p, grouped_in.data(), grouped_out.data(), w.data());
        else if (kp == Pass::fprop)
          k::conv3d_direct_fprop_grouped(p, grouped_in.data(), direct_packed.data(), grouped_out.data());
        else
          k::conv3d_direct_dgrad_grouped(p, grouped_in.data(), direct_packed.data(), grouped_out.data());
      };
      // The host's regime at this row (bench/common.h): its hand-off cost, which passes whose threads
      // share data (our and oneDNN's layout conversions among them) feel.
      const double handoff = measure_host_regime(options.threads, options.quick).ratio();
      Timing t;
      double native_ms = nan, native_speed = nan;
      double ref_ms = nan, ref_min_ms = nan, speed = nan, plain_ms = nan, plain_speed = nan;
      double packed_ms = nan, packed_speed = nan;
      if (reference.empty()) {
        t = time_runs(ours, options.warmup, options.runs);
        packed_ms = 1e3 * (packed_n > 0 ? time_runs(ours_packed, options.warmup, options.runs) : t).median_s;
        native_ms = grouped ? 1e3 * time_runs(ours_grouped, options.warmup, options.runs).median_s : packed_ms;
      } else {
        const Alternating both = time_alternating(ours, onednn_conv(p, kp, OnednnLayout::blocked), options.warmup,
                                                  options.runs);
        t = both.a;
        ref_ms = 1e3 * both.b.median_s, ref_min_ms = 1e3 * both.b.min_s, speed = both.b_over_a;
        const Alternating plain = time_alternating(ours, onednn_conv(p, kp, OnednnLayout::plain), options.warmup,
                                                   options.runs);
        plain_ms = 1e3 * plain.b.median_s, plain_speed = plain.b_over_a;
        packed_ms = 1e3 * t.median_s, packed_speed = speed;
        if (packed_n > 0) {
          const Alternating with_packed = time_alternating(ours_packed, onednn_conv(p, kp, OnednnLayout::blocked),
                                                           options.warmup, options.runs);
          packed_ms = 1e3 * with_packed.a.median_s, packed_speed = with_packed.b_over_a;
        }
        native_ms = packed_ms, native_speed = packed_speed;
        if (grouped) {
          const Alternating native = time_alternating(ours_grouped, onednn_conv(p, kp, OnednnLayout::blocked),
                                                      options.warmup, options.runs);
          native_ms = 1e3 * native.a.median_s, native_speed = native.b_over_a;
        }
      }
      report.add({layer.name, std::string(pass_name(pass, layer.transposed)), describe(layer), 1e3 * t.median_s,
                  1e3 * t.min_s, nominal / t.median_s / 1e9, effective / t.median_s / 1e9,
                  effective / t.median_s / 1e9 / machine.fma_gflops, ref_ms, ref_min_ms, speed, plain_ms, plain_speed,
                  packed_ms, packed_speed, native_ms, native_speed, handoff});
      geometry.push_back({{"N", layer.N}, {"C", layer.C}, {"D", layer.D}, {"H", layer.H}, {"W", layer.W},
                          {"K", layer.K}, {"kernel", layer.kernel}, {"stride", layer.stride},
                          {"pad", layer.pad}, {"dilation", layer.dilation}, {"transposed", layer.transposed},
                          {"pass", pass_name(pass, layer.transposed)}, {"nominal_flops", nominal},
                          {"effective_flops", effective}});
      std::fflush(stdout);
    }
  }
  const HostRegime regime_after = measure_host_regime(options.threads, options.quick);
  print_host_regime(" after", regime_after);
  nlohmann::json document = {{"bench", "conv"},       {"scale", options.scale},
                             {"quick", options.quick}, {"runs", options.runs},
                             {"warmup", options.warmup}, {"machine", to_json(machine)},
                             {"host_regime_after", to_json(regime_after)},
                             {"reference", reference.empty() ? "unavailable" : reference},
                             {"geometry", geometry}};
  emit(report, options, document, "med3d conv speed vs " + (reference.empty() ? std::string("reference") : reference) +
                                      " (ref time / our time)",
       "speed_vs_ref", {"layer", "pass"});
  return 0;
}

}  // namespace med3d::bench
