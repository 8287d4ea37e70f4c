// Connected components, bounding boxes, margins, crop and paste. Contracts: see
// med3d/trainers/roi.h.
#include "med3d/trainers/roi.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "med3d/context.h"
#include "med3d/error.h"

namespace med3d::trainers {

namespace {

std::string box_str(const Box3& b) {
  std::string s = "[";
  for (int a = 0; a < 3; ++a)
    s.append(a ? ", " : "").append(std::to_string(b.lo[a])).append(":").append(
        std::to_string(b.hi[a]));
  return s.append("]");
}

Index3 mask_shape(const Tensor& mask, const char* op) {
  MED3D_CHECK(mask.defined(), op, ": mask is undefined");
  MED3D_CHECK(mask.rank() == 3, op, ": expected a mask [D, H, W], got ", mask.shape().str());
  MED3D_CHECK(mask.device().is_cpu(), op, ": expected a CPU mask, got ", mask.str());
  return {mask.dim(0), mask.dim(1), mask.dim(2)};
}

// 1 where the mask is non-zero.
std::vector<uint8_t> foreground(const Tensor& mask) {
  std::vector<uint8_t> out(static_cast<std::size_t>(mask.numel()));
  auto fill = [&]<class T>() {
    const T* x = mask.data<T>();
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = x[i] != T{0} ? 1 : 0;
  };
  switch (mask.dtype()) {
    case DType::f32: fill.template operator()<float>(); break;
    case DType::f64: fill.template operator()<double>(); break;
    case DType::i32: fill.template operator()<int32_t>(); break;
    case DType::i64: fill.template operator()<int64_t>(); break;
    case DType::u8: fill.template operator()<uint8_t>(); break;
  }
  return out;
}

void check_box_inside(const char* op, const Box3& box, const Index3& shape) {
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(box.lo[a] >= 0 && box.lo[a] < box.hi[a] && box.hi[a] <= shape[a], op, ": box ",
                box_str(box), " must be non-empty and inside the volume {", shape[0], ", ",
                shape[1], ", ", shape[2], "}");
}

// Copies the box rows between a volume [..., D, H, W] and a patch [..., box size].
void copy_box(const Tensor& volume, const Tensor& patch, const Box3& box, bool to_patch) {
  const int rank = volume.rank();
  const Index3 n{volume.dim(rank - 3), volume.dim(rank - 2), volume.dim(rank - 1)};
  const Index3 b = box.size();
  const int64_t outer = volume.numel() / (n[0] * n[1] * n[2]);
  const std::size_t esize = dtype_size(volume.dtype());
  const std::size_t row_bytes = static_cast<std::size_t>(b[2]) * esize;
  auto* vol = static_cast<uint8_t*>(const_cast<void*>(volume.raw_data()));
  auto* pat = static_cast<uint8_t*>(const_cast<void*>(patch.raw_data()));
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t d = 0; d < b[0]; ++d)
      for (int64_t h = 0; h < b[1]; ++h) {
        const int64_t v =
            ((o * n[0] + box.lo[0] + d) * n[1] + box.lo[1] + h) * n[2] + box.lo[2];
        const int64_t p = ((o * b[0] + d) * b[1] + h) * b[2];
        uint8_t* vp = vol + static_cast<std::size_t>(v) * esize;
        uint8_t* pp = pat + static_cast<std::size_t>(p) * esize;
        if (to_patch)
          std::memcpy(pp, vp, row_bytes);
        else
          std::memcpy(vp, pp, row_bytes);
      }
}

}  // namespace

Components connected_components(const Tensor& mask, Connectivity connectivity) {
  const Index3 n = mask_shape(mask, "connected_components");
  const std::vector<uint8_t> fg = foreground(mask);
  Components out;
  out.labels = mask.context().zeros(Shape({n[0], n[1], n[2]}), DType::i32);
  int32_t* label = out.labels.data<int32_t>();
  std::vector<Index3> offsets;
  for (int64_t dd = -1; dd <= 1; ++dd)
    for (int64_t dh = -1; dh <= 1; ++dh)
      for (int64_t dw = -1; dw <= 1; ++dw) {
        const int64_t moved = std::abs(dd) + std::abs(dh) + std::abs(dw);
        if (moved == 0 || (connectivity == Connectivity::faces && moved > 1)) continue;
        offsets.push_back({dd, dh, dw});
      }
  std::vector<int64_t> stack;
  const int64_t total = n[0] * n[1] * n[2];
  for (int64_t start = 0; start < total; ++start) {
    if (!fg[static_cast<std::size_t>(start)] || label[start] != 0) continue;
    const auto id = static_cast<int32_t>(out.sizes.size() + 1);
    int64_t size = 0;
    label[start] = id;
    stack.push_back(start);
    while (!stack.empty()) {
      const int64_t v = stack.back();
      stack.pop_back();
      ++size;
      const int64_t d = v / (n[1] * n[2]), h = (v / n[2]) % n[1], w = v % n[2];
      for (const Index3& off : offsets) {
        const int64_t nd = d + off[0], nh = h + off[1], nw = w + off[2];
        if (nd < 0 || nd >= n[0] || nh < 0 || nh >= n[1] || nw < 0 || nw >= n[2]) continue;
        const int64_t u = (nd * n[1] + nh) * n[2] + nw;
        if (fg[static_cast<std::size_t>(u)] && label[u] == 0) {
          label[u] = id;
          stack.push_back(u);
        }
      }
    }
    out.sizes.push_back(size);
  }
  return out;
}

Tensor largest_component(const Tensor& mask, Connectivity connectivity) {
  const Components components = connected_components(mask, connectivity);
  Tensor out = mask.clone();
  int32_t keep = 0;
  int64_t best = 0;
  for (std::size_t i = 0; i < components.sizes.size(); ++i)
    if (components.sizes[i] > best) {
      best = components.sizes[i];
      keep = static_cast<int32_t>(i + 1);
    }
  const int32_t* label = components.labels.data<int32_t>();
  const std::size_t esize = dtype_size(out.dtype());
  auto* bytes = static_cast<uint8_t*>(out.raw_data());
  for (int64_t i = 0; i < out.numel(); ++i)
    if (label[i] != keep) std::memset(bytes + static_cast<std::size_t>(i) * esize, 0, esize);
  return out;
}

std::optional<Box3> bounding_box(const Tensor& mask) {
  const Index3 n = mask_shape(mask, "bounding_box");
  const std::vector<uint8_t> fg = foreground(mask);
  Box3 box{{n[0], n[1], n[2]}, {0, 0, 0}};
  bool any = false;
  std::size_t i = 0;
  for (int64_t d = 0; d < n[0]; ++d)
    for (int64_t h = 0; h < n[1]; ++h)
      for (int64_t w = 0; w < n[2]; ++w)
        if (fg[i++]) {
          any = true;
          const Index3 v{d, h, w};
          for (int a = 0; a < 3; ++a) {
            box.lo[a] = std::min(box.lo[a], v[a]);
            box.hi[a] = std::max(box.hi[a], v[a] + 1);
          }
        }
  if (!any) return std::nullopt;
  return box;
}

Box3 expand_box(const Box3& box, const Index3& margin, const Index3& shape) {
  check_box_inside("expand_box", box, shape);
  Box3 out;
  for (int a = 0; a < 3; ++a) {
    MED3D_CHECK(margin[a] >= 0, "expand_box: margins must be non-negative, got ", margin[a],
                " on axis ", a);
    out.lo[a] = std::max<int64_t>(0, box.lo[a] - margin[a]);
    out.hi[a] = std::min(shape[a], box.hi[a] + margin[a]);
  }
  return out;
}

Box3 random_expand_box(const Box3& box, const Index3& min_margin, const Index3& max_margin,
                       const Index3& shape, data::SampleRng& rng) {
  check_box_inside("random_expand_box", box, shape);
  Box3 out;
  for (int a = 0; a < 3; ++a) {
    MED3D_CHECK(0 <= min_margin[a] && min_margin[a] <= max_margin[a],
                "random_expand_box: expected 0 <= min_margin <= max_margin, got ", min_margin[a],
                " and ", max_margin[a], " on axis ", a);
    const int64_t choices = max_margin[a] - min_margin[a] + 1;
    const int64_t before = min_margin[a] + rng.integer(choices);
    const int64_t after = min_margin[a] + rng.integer(choices);
    out.lo[a] = std::max<int64_t>(0, box.lo[a] - before);
    out.hi[a] = std::min(shape[a], box.hi[a] + after);
  }
  return out;
}

Tensor crop_box(const Tensor& x, const Box3& box) {
  MED3D_CHECK(x.defined() && x.rank() >= 3, "crop_box: expected a tensor [..., D, H, W], got ",
              x.defined() ? x.shape().str() : std::string("undefined"));
  MED3D_CHECK(x.device().is_cpu(), "crop_box: expected a CPU tensor, got ", x.str());
  const int rank = x.rank();
  check_box_inside("crop_box", box, {x.dim(rank - 3), x.dim(rank - 2), x.dim(rank - 1)});
  std::vector<int64_t> extents(x.shape().begin(), x.shape().end());
  const Index3 b = box.size();
  for (int a = 0; a < 3; ++a) extents[static_cast<std::size_t>(rank - 3 + a)] = b[a];
  Tensor out = x.context().empty(Shape(extents), x.dtype());
  copy_box(x, out, box, true);
  return out;
}

namespace {

// Checks that `patch` fits `box` of `out` and writes it there.
void paste_into(const Tensor& out, const Tensor& patch, const Box3& box) {
  const char* op = "paste_box";
  const int rank = out.rank();
  check_box_inside(op, box, {out.dim(rank - 3), out.dim(rank - 2), out.dim(rank - 1)});
  const Index3 b = box.size();
  bool ok = patch.rank() == rank;
  for (int a = 0; ok && a < rank - 3; ++a) ok = out.dim(a) == patch.dim(a);
  for (int a = 0; ok && a < 3; ++a) ok = patch.dim(rank - 3 + a) == b[a];
  MED3D_CHECK(ok, op, ": patch ", patch.shape().str(), " does not fit box ", box_str(box),
              " of ", out.shape().str(), " (leading axes must match, spatial = box size)");
  copy_box(out, patch, box, false);
}

void check_tensor(const Tensor& x, const char* what) {
  MED3D_CHECK(x.defined() && x.rank() >= 3, "paste_box: expected ", what,
              " [..., D, H, W], got ", x.defined() ? x.shape().str() : std::string("undefined"));
  MED3D_CHECK(x.device().is_cpu(), "paste_box: expected a CPU tensor, got ", x.str());
}

}  // namespace

Tensor paste_box(const Tensor& full, const Tensor& patch, const Box3& box) {
  check_tensor(full, "full");
  check_tensor(patch, "patch");
  Tensor out = full.dtype() == patch.dtype() ? full.clone() : full.to(patch.dtype());
  paste_into(out, patch, box);
  return out;
}

Tensor paste_box(const Tensor& patch, const Box3& box, const Index3& shape, double fill) {
  check_tensor(patch, "patch");
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(shape[a] > 0, "paste_box: volume extents must be positive, got ", shape[a]);
  std::vector<int64_t> extents(patch.shape().begin(), patch.shape().end());
  const int rank = patch.rank();
  for (int a = 0; a < 3; ++a) extents[static_cast<std::size_t>(rank - 3 + a)] = shape[a];
  Tensor out = patch.context().full(Shape(extents), fill, patch.dtype());
  paste_into(out, patch, box);
  return out;
}

}  // namespace med3d::trainers
