// Concatenation (forward and backward), flatten, and MedicalNet's detached shortcut type A.
#include <string>

#include "engine/src/op_util.h"
#include "med3d/kernels/cpu/concat.h"
#include "med3d/kernels/cuda/shape.h"
#include "med3d/ops/nn.h"
#include "med3d/ops/shape.h"
#include "med3d/tape.h"

namespace med3d {

using detail::dispatch_floating;

Tensor concat(const std::vector<Tensor>& xs, int axis) {
  constexpr const char* op = "concat";
  MED3D_CHECK(!xs.empty(), op, ": expected at least one tensor, got none");
  for (std::size_t k = 0; k < xs.size(); ++k) {
    const std::string name = "xs[" + std::to_string(k) + "]";
    detail::check_floating(op, name.c_str(), xs[k]);
    if (k > 0) detail::check_compatible(op, xs[0], "xs[0]", xs[k], name.c_str());
  }
  const Shape& first = xs[0].shape();
  const int rank = first.rank();
  MED3D_CHECK(rank >= 1 && axis >= -rank && axis < rank, op, ": axis ", axis,
              " is out of range for tensors of shape ", first.str());
  const int a = axis < 0 ? axis + rank : axis;

  std::vector<int64_t> extents;
  for (std::size_t k = 0; k < xs.size(); ++k) {
    const Shape& shape = xs[k].shape();
    bool match = shape.rank() == rank;
    for (int d = 0; match && d < rank; ++d) match = d == a || shape[d] == first[d];
    MED3D_CHECK(match, op, ": xs[", k, "] has shape ", shape.str(), " but xs[0] has ", first.str(),
                "; all parts must have equal extents except along axis ", a);
    extents.push_back(shape[a]);
  }
  int64_t outer = 1, inner = 1, total = 0;
  for (int d = 0; d < a; ++d) outer *= first[d];
  for (int d = a + 1; d < rank; ++d) inner *= first[d];
  for (int64_t e : extents) total += e;
  std::vector<int64_t> out_extents(first.begin(), first.end());
  out_extents[a] = total;

  Tensor y = detail::empty_like(xs[0], Shape(out_extents), xs[0].dtype());
  if (y.device().is_cuda()) {
    if constexpr (detail::kWithCuda) {
      int64_t start = 0;  // of part k along the axis
      for (std::size_t k = 0; k < xs.size(); ++k) {
        kernels::cuda::copy_rows(detail::cuda_stream(y), detail::device_data<float>(xs[k]),
                                 extents[k] * inner, detail::device_data<float>(y) + start * inner,
                                 total * inner, outer, extents[k] * inner);
        start += extents[k];
      }
    }
  } else {
    dispatch_floating(y.dtype(), op, [&]<class T>() {
    std::vector<const T*> parts;
      for (const Tensor& x : xs) parts.push_back(x.data<T>());
      kernels::cpu::concat_forward(parts, extents, outer, inner, y.data<T>());
    });
  }

  std::vector<Shape> shapes;
  for (const Tensor& x : xs) shapes.push_back(x.shape());
  record(op, xs, {y}, {}, [shapes, extents, outer, inner](const BackwardArgs& g) {
    const Tensor& dy = g.dy[0];
    std::vector<Tensor> grads(shapes.size());
    if (dy.device().is_cuda()) {
      if constexpr (detail::kWithCuda) {
        int64_t start = 0, total = 0;
        for (int64_t e : extents) total += e;
        for (std::size_t k = 0; k < shapes.size(); ++k) {
          if (g.needs_grad[k]) {
            grads[k] = detail::empty_like(dy, shapes[k], dy.dtype());
            kernels::cuda::copy_rows(detail::cuda_stream(dy), detail::device_data<float>(dy) + start * inner,
                                     total * inner, detail::device_data<float>(grads[k]),
                                     extents[k] * inner, outer, extents[k] * inner);
          }
          start += extents[k];
        }
      }
      return grads;
    }
    dispatch_floating(dy.dtype(), "concat backward", [&]<class T>() {
      std::vector<T*> parts(shapes.size(), nullptr);
      for (std::size_t k = 0; k < shapes.size(); ++k) {
        if (!g.needs_grad[k]) continue;
        grads[k] = detail::empty_like(dy, shapes[k], dy.dtype());
        parts[k] = grads[k].data<T>();
      }
      kernels::cpu::concat_backward(dy.data<T>(), parts, extents, outer, inner);
    });
    return grads;
  });
  return y;
}

Tensor flatten(const Tensor& x) {
  detail::check_floating("flatten", "x", x);
  MED3D_CHECK(x.rank() >= 2, "flatten: expected [N, ...] with at least 2 dimensions, got ",
              x.shape().str());
  int64_t rest = 1;
  for (int d = 1; d < x.rank(); ++d) rest *= x.dim(d);
  return x.reshape({x.dim(0), rest});
}

Tensor zero_pad_channels_subsample(const Tensor& x, int64_t stride, int64_t out_channels) {
  constexpr const char* op = "zero_pad_channels_subsample";
  detail::check_floating(op, "x", x);
  MED3D_CHECK(x.rank() == 5, op, ": x must be [N, C, D, H, W], got ", x.shape().str());
  MED3D_CHECK(stride >= 1, op, ": stride must be >= 1, got ", stride);
  const int64_t n = x.dim(0), c = x.dim(1), d = x.dim(2), h = x.dim(3), w = x.dim(4);
  MED3D_CHECK(out_channels >= c, op, ": out_channels (", out_channels,
              ") must be >= the input's channels (", c, "); shortcut A only appends zero channels");
  auto sub = [stride](int64_t extent) { return (extent + stride - 1) / stride; };
  Tensor y = detail::empty_like(x, {n, out_channels, sub(d), sub(h), sub(w)}, x.dtype());
  if (x.device().is_cuda()) {
    if constexpr (detail::kWithCuda)
      kernels::cuda::zero_pad_channels_subsample(detail::cuda_stream(x), detail::device_data<float>(x),
                                                 detail::device_data<float>(y), n, c, d, h, w,
                                                 stride, out_channels);
    return y;  // deliberately not recorded, as below
  }
  dispatch_floating(x.dtype(), op, [&]<class T>() {
    kernels::cpu::zero_pad_channels_subsample(x.data<T>(), y.data<T>(), n, c, d, h, w, stride,
                                              out_channels);
  });
  // Deliberately not recorded: MedicalNet detaches this branch (see shape.h).
  return y;
}

}  // namespace med3d
