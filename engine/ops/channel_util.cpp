#include "engine/ops/channel_util.h"

#include <sstream>
#include <string>

#include "engine/src/op_util.h"
#include "med3d/kernels/cpu/loss.h"
#include "med3d/kernels/cuda/loss.h"
#include "med3d/kernels/loss.h"

namespace med3d::detail {

kernels::ChannelLayout channel_layout(const char* op, const Tensor& x) {
  MED3D_CHECK(x.rank() >= 2 && x.rank() <= 5, op, ": expected [N, C, spatial...] with 2 to 5 ",
              "dimensions (channels on axis 1), got ", x.shape().str());
  MED3D_CHECK(x.dim(1) > 0, op, ": expected at least one channel, got ", x.shape().str());
  int64_t spatial = 1;
  for (int axis = 2; axis < x.rank(); ++axis) spatial *= x.dim(axis);
  return {x.dim(0), x.dim(1), spatial};
}

namespace {
std::string position_of(const Shape& shape, int64_t flat) {
  std::vector<int64_t> index(static_cast<std::size_t>(shape.rank()));
  for (int axis = shape.rank() - 1; axis >= 0; --axis) {
    index[axis] = flat % shape[axis];
    flat /= shape[axis];
  }
  std::ostringstream out;
  out << "[";
  for (std::size_t k = 0; k < index.size(); ++k) out << (k ? ", " : "") << index[k];
  out << "]";
  return out.str();
}
}  // namespace

Tensor class_targets(const char* op, const Tensor& logits, const Tensor& labels,
                     std::optional<int64_t> ignore_index) {
  MED3D_CHECK(labels.defined(), op, ": labels is an undefined tensor");
  MED3D_CHECK(labels.device() == logits.device(), op, ": labels are on ", labels.device().str(),
              " but logits are on ", logits.device().str(), "; move both to one device");
  MED3D_CHECK(labels.impl()->context.lock() == logits.impl()->context.lock(), op,
              ": logits and labels come from different Contexts; create both with one Context");
  const DType dtype = labels.dtype();
  MED3D_CHECK(dtype == DType::i32 || dtype == DType::i64 || dtype == DType::u8, op,
              ": labels must hold class indices as i32, i64 or u8, got ", dtype_name(dtype),
              "; convert with .to(DType::i32)");
  bool shape_ok = labels.rank() == logits.rank() - 1 && labels.dim(0) == logits.dim(0);
  for (int axis = 1; shape_ok && axis < labels.rank(); ++axis)
    shape_ok = labels.dim(axis) == logits.dim(axis + 1);
  MED3D_CHECK(shape_ok, op, ": labels must have the logits' shape without the channel axis; ",
              "logits ", logits.shape().str(), " need labels [N, spatial...], got ",
              labels.shape().str());

  const int64_t channels = logits.dim(1);
  Tensor targets = empty_like(logits, labels.shape(), DType::i32);
  const int64_t n = labels.numel();
  auto invalid_label = [&](int64_t label, int64_t i) {
    std::ostringstream ignored;
    if (ignore_index) ignored << " and is not ignore_index (" << *ignore_index << ")";
    throw_error(op, ": label ", label, " at position ", position_of(labels.shape(), i),
                " of labels ", labels.shape().str(), " is outside [0, ", channels, ")",
                ignored.str(), "; labels must be class indices below the ", channels,
                " channels of the logits");
  };
  if (labels.device().is_cuda()) {
    if constexpr (kWithCuda) {
      // The labels are checked on the device; only the first invalid position (8 bytes) comes
      // back, since a bad label must throw here as it does on the CPU.
      const kernels::cuda::Stream stream = cuda_stream(labels);
      Tensor first = empty_like(logits, {1}, DType::i64);
      auto* first_invalid = reinterpret_cast<unsigned long long*>(device_data<int64_t>(first));
      kernels::cuda::init_first_invalid(stream, first_invalid);
      const bool has_ignore = ignore_index.has_value();
      const int64_t ignore = ignore_index.value_or(0);
      auto convert = [&]<class L>() {
        kernels::cuda::class_targets(stream, device_data<L>(labels), n, has_ignore, ignore, channels,
                                     device_data<int32_t>(targets), first_invalid);
      };
      if (dtype == DType::i32) convert.template operator()<int32_t>();
      else if (dtype == DType::i64) convert.template operator()<int64_t>();
      else convert.template operator()<uint8_t>();
      unsigned long long position = 0;
      kernels::cuda::copy_to_host(&position, first_invalid, sizeof(position), stream);
      if (position != ~0ull) {
        const int64_t i = static_cast<int64_t>(position);
        const Tensor label = labels.to(Device::cpu());
        invalid_label(dispatch_any(dtype, [&]<class L>() -> int64_t {
                        return static_cast<int64_t>(label.data<L>()[i]);
                      }),
                      i);
      }
    }
    return targets;
  }
  auto convert = [&]<class L>() {
    const L* in = labels.data<L>();
    const int64_t i = kernels::cpu::class_targets(in, n, ignore_index.has_value(), ignore_index.value_or(0), channels,
                                                  targets.data<int32_t>());
    if (i >= 0) invalid_label(static_cast<int64_t>(in[i]), i);
  };
  if (dtype == DType::i32) convert.template operator()<int32_t>();
  else if (dtype == DType::i64) convert.template operator()<int64_t>();
  else convert.template operator()<uint8_t>();
  return targets;
}

}  // namespace med3d::detail
