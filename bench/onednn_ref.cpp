#include "onednn_ref.h"

#include <memory>
#include <sstream>
#include <unordered_map>
#include <utility>
#include <vector>

#include "med3d/error.h"

#ifdef MED3D_BENCH_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace med3d::bench {

#ifndef MED3D_BENCH_DNNL

std::string onednn_version() { return ""; }

std::function<void()> onednn_conv(const Conv3dParams&, Pass, OnednnLayout) {
  detail::throw_error("oneDNN reference unavailable: med3d-bench was built without Debian libdnnl-dev");
}

#else

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  std::ostringstream out;
  out << "oneDNN " << v->major << "." << v->minor << "." << v->patch;
  return out.str();
}

namespace {

using dnnl::memory;

struct DnnlPass {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  dnnl::primitive primitive;
  std::unordered_map<int, memory> args;
  // OnednnLayout::plain: the reorders from the plain inputs before the primitive and into the
  // plain outputs after it (where oneDNN's format differs).
  std::vector<std::pair<dnnl::reorder, std::pair<memory, memory>>> before, after;
};

memory filled(const memory::desc& desc, const dnnl::engine& engine) {
  memory m(desc, engine);
  float* data = static_cast<float*>(m.get_data_handle());
  const std::size_t n = desc.get_size() / sizeof(float);
  for (std::size_t i = 0; i < n; ++i) data[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
  return m;
}

}  // namespace

std::function<void()> onednn_conv(const Conv3dParams& p, Pass pass, OnednnLayout layout) {
  MED3D_CHECK(p.groups == 1, "onednn_conv: groups must be 1, got ", p.groups);
  auto s = std::make_shared<DnnlPass>();
  const auto f32 = memory::data_type::f32;
  const auto any = memory::format_tag::any;
  const memory::desc src({p.N, p.C, p.D, p.H, p.W}, f32, any);
  const memory::desc wei({p.K, p.C, p.T, p.R, p.S}, f32, any);
  const memory::desc dst({p.N, p.K, p.Z, p.P, p.Q}, f32, any);
  memory::dims stride, dilation, pad_l, pad_r;
  const Dims3 in = p.input_extent(), k = p.kernel_extent(), out = p.output_extent();
  for (int a = 0; a < 3; ++a) {
    stride.push_back(p.stride[a]);
    dilation.push_back(p.dilation[a] - 1);  // oneDNN counts the holes
    pad_l.push_back(p.pad[a]);
    // PyTorch floors the output size; oneDNN wants the right padding that yields it exactly.
    pad_r.push_back((out[a] - 1) * p.stride[a] + (k[a] - 1) * p.dilation[a] + 1 - in[a] - p.pad[a]);
  }
  const auto algo = dnnl::algorithm::convolution_direct;
  const dnnl::convolution_forward::desc fd(dnnl::prop_kind::forward_training, algo, src, wei, dst,
                                           stride, dilation, pad_l, pad_r);
  const dnnl::convolution_forward::primitive_desc fpd(fd, s->engine);
  if (pass == Pass::fprop) {
    s->primitive = dnnl::convolution_forward(fpd);
    s->args = {{DNNL_ARG_SRC, filled(fpd.src_desc(), s->engine)},
               {DNNL_ARG_WEIGHTS, filled(fpd.weights_desc(), s->engine)},
               {DNNL_ARG_DST, memory(fpd.dst_desc(), s->engine)}};
  } else if (pass == Pass::dgrad) {
    const dnnl::convolution_backward_data::desc bd(algo, src, wei, dst, stride, dilation, pad_l, pad_r);
    const dnnl::convolution_backward_data::primitive_desc bpd(bd, s->engine, fpd);
    s->primitive = dnnl::convolution_backward_data(bpd);
    s->args = {{DNNL_ARG_DIFF_DST, filled(bpd.diff_dst_desc(), s->engine)},
               {DNNL_ARG_WEIGHTS, filled(bpd.weights_desc(), s->engine)},
               {DNNL_ARG_DIFF_SRC, memory(bpd.diff_src_desc(), s->engine)}};
  } else {
    const dnnl::convolution_backward_weights::desc wd(algo, src, wei, dst, stride, dilation, pad_l, pad_r);
    const dnnl::convolution_backward_weights::primitive_desc wpd(wd, s->engine, fpd);
    s->primitive = dnnl::convolution_backward_weights(wpd);
    s->args = {{DNNL_ARG_SRC, filled(wpd.src_desc(), s->engine)},
               {DNNL_ARG_DIFF_DST, filled(wpd.diff_dst_desc(), s->engine)},
               {DNNL_ARG_DIFF_WEIGHTS, memory(wpd.diff_weights_desc(), s->engine)}};
  }
  if (layout == OnednnLayout::plain) {
    // Each argument's plain twin (ncdhw / oidhw), and the reorder between them where they differ.
    const auto plain_desc = [&](int arg) {
      const bool weights = arg == DNNL_ARG_WEIGHTS || arg == DNNL_ARG_DIFF_WEIGHTS;
      const bool source = arg == DNNL_ARG_SRC || arg == DNNL_ARG_DIFF_SRC;
      const memory::dims dims = weights  ? memory::dims{p.K, p.C, p.T, p.R, p.S}
                                : source ? memory::dims{p.N, p.C, p.D, p.H, p.W}
                                         : memory::dims{p.N, p.K, p.Z, p.P, p.Q};
      return memory::desc(dims, f32, weights ? memory::format_tag::oidhw : memory::format_tag::ncdhw);
    };
    for (auto& [arg, blocked] : s->args) {
      const memory::desc plain = plain_desc(arg);
      if (plain == blocked.get_desc()) continue;
      const bool output = arg == DNNL_ARG_DST || arg == DNNL_ARG_DIFF_SRC || arg == DNNL_ARG_DIFF_WEIGHTS;
      if (output) {
        memory out(plain, s->engine);
        s->after.push_back({dnnl::reorder(blocked, out), {blocked, out}});
      } else {
        memory in = filled(plain, s->engine);
        s->before.push_back({dnnl::reorder(in, blocked), {in, blocked}});
      }
    }
  }
  return [s] {
    for (auto& [reorder, io] : s->before) reorder.execute(s->stream, io.first, io.second);
    s->primitive.execute(s->stream, s->args);
    for (auto& [reorder, io] : s->after) reorder.execute(s->stream, io.first, io.second);
    s->stream.wait();
  };
}

#endif

}  // namespace med3d::bench
