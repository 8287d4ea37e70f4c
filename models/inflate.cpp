#include "med3d/models/inflate.h"

#include <cmath>
#include <map>
#include <set>

namespace med3d {

std::vector<double> default_inflation_alphas(int64_t depth) {
  switch (depth) {
    case 1: return {1.0};
    case 3: return {0.25, 0.5, 0.25};
    case 7: return {0.05, 0.1, 0.2, 0.3, 0.2, 0.1, 0.05};
    default:
      detail::throw_error("default_inflation_alphas: no default alphas for kernel depth ", depth,
                          " (defaults exist for 1, 3 and 7); pass explicit alphas");
  }
}

Tensor inflate_conv_weight(const Tensor& w2d, int64_t depth, InflateMode mode, const std::vector<double>& alphas) {
  MED3D_CHECK(w2d.defined() && w2d.rank() == 4 && is_floating(w2d.dtype()), "inflate_conv_weight: expected a 2D conv ",
              "weight [O, I, kH, kW] of f32/f64, got ", w2d.defined() ? w2d.str() : std::string("undefined"));
  MED3D_CHECK(depth >= 1, "inflate_conv_weight: depth must be >= 1, got ", depth);
  std::vector<double> taps(static_cast<std::size_t>(depth), 0.0);
  if (mode == InflateMode::Center) {
    taps[static_cast<std::size_t>(depth / 2)] = 1.0;
  } else if (mode == InflateMode::Average) {
    for (double& t : taps) t = 1.0 / static_cast<double>(depth);
  } else {
    taps = alphas.empty() ? default_inflation_alphas(depth) : alphas;
    MED3D_CHECK(static_cast<int64_t>(taps.size()) == depth, "inflate_conv_weight: ", taps.size(),
                " alphas for kernel depth ", depth, "; pass one alpha per depth tap");
  }
  const std::vector<double> w = w2d.to(DType::f64).to_vector<double>();
  const int64_t outer = w2d.dim(0) * w2d.dim(1), plane = w2d.dim(2) * w2d.dim(3);
  std::vector<double> out(static_cast<std::size_t>(outer * depth * plane));
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t t = 0; t < depth; ++t)
      for (int64_t p = 0; p < plane; ++p)
        out[static_cast<std::size_t>((o * depth + t) * plane + p)] =
            taps[static_cast<std::size_t>(t)] * w[static_cast<std::size_t>(o * plane + p)];
  return w2d.context()
      .from_vector(Shape{w2d.dim(0), w2d.dim(1), depth, w2d.dim(2), w2d.dim(3)}, out)
      .to(w2d.dtype());
}

Tensor sum_input_channels(const Tensor& w2d) {
  MED3D_CHECK(w2d.defined() && w2d.rank() == 4 && is_floating(w2d.dtype()),
              "sum_input_channels: expected a 2D conv weight [O, C, kH, kW] of f32/f64");
  const std::vector<double> w = w2d.to(DType::f64).to_vector<double>();
  const int64_t o_count = w2d.dim(0), c_count = w2d.dim(1), plane = w2d.dim(2) * w2d.dim(3);
  std::vector<double> out(static_cast<std::size_t>(o_count * plane), 0.0);
  for (int64_t o = 0; o < o_count; ++o)
    for (int64_t c = 0; c < c_count; ++c)  // fixed order: the same sum on every run
      for (int64_t p = 0; p < plane; ++p)
        out[static_cast<std::size_t>(o * plane + p)] += w[static_cast<std::size_t>((o * c_count + c) * plane + p)];
  return w2d.context().from_vector(Shape{o_count, 1, w2d.dim(2), w2d.dim(3)}, out).to(w2d.dtype());
}

NamedTensors inflate_state_dict(const NamedTensors& state2d, const Module& model3d, InflateMode mode,
                                TransferReport* report) {
  TransferReport local;
  TransferReport& r = report ? *report : local;
  r = TransferReport{};
  std::map<std::string, Tensor> incoming;
  for (const auto& [key, tensor] : state2d)
    incoming[key.rfind("module.", 0) == 0 ? key.substr(7) : key] = tensor;
  NamedTensors out;
  std::set<std::string> known;
  for (const auto& [name, target] : model3d.state_dict()) {
    known.insert(name);
    auto it = incoming.find(name);
    if (it == incoming.end()) {
      r.left_new.push_back(name);
      out.emplace_back(name, target);
      continue;
    }
    Tensor source = it->second;
    const bool conv = source.rank() == 4 && target.rank() == 5;
    if (conv && source.dim(1) != target.dim(1) && target.dim(1) == 1) source = sum_input_channels(source);
    if (conv && source.dim(0) == target.dim(0) && source.dim(1) == target.dim(1) && source.dim(2) == target.dim(3) &&
        source.dim(3) == target.dim(4))
      source = inflate_conv_weight(source, target.dim(2), mode);
    if (source.shape() != target.shape()) {
      r.skipped.push_back(name + " (shape " + it->second.shape().str() + " does not inflate to " +
                          target.shape().str() + ")");
      r.left_new.push_back(name);
      out.emplace_back(name, target);
      continue;
    }
    r.taken.push_back(name);
    out.emplace_back(name, source.to(target.dtype()));
  }
  for (const auto& [name, tensor] : incoming)
    if (!known.count(name)) r.skipped.push_back(name + " (not in the model)");
  return out;
}

TransferReport inflate_into(Module& model3d, const std::string& path2d, InflateMode mode) {
  Checkpoint checkpoint;
  try {
    checkpoint = load_safetensors(model3d.context(), path2d);
  } catch (const Error& error) {
    detail::throw_error("inflate_into: cannot read 2D checkpoint '", path2d, "': ", error.what());
  }
  TransferReport report;
  NamedTensors state = inflate_state_dict(checkpoint.tensors, model3d, mode, &report);
  const std::set<std::string> names(report.taken.begin(), report.taken.end());
  NamedTensors taken;
  for (const auto& [name, tensor] : state)
    if (names.count(name)) taken.emplace_back(name, tensor);
  model3d.load_state_dict(taken, /*strict=*/false);
  return report;
}

}  // namespace med3d
