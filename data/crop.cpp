#include "med3d/data/crop.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "med3d/context.h"
#include "med3d/kernels/philox.h"

namespace med3d::data {

bool Box3::contains(const Box3& inner) const {
  for (int a = 0; a < 3; ++a)
    if (inner.lo[a] < lo[a] || inner.hi[a] > hi[a]) return false;
  return true;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t derive_seed(uint64_t seed, uint64_t epoch, uint64_t sample) {
  return splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ sample);
}

double SampleRng::uniform() { return kernels::philox_uniform(seed_, 0, counter_++); }

double SampleRng::uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

int64_t SampleRng::integer(int64_t count) {
  MED3D_CHECK(count > 0, "SampleRng::integer: count must be positive, got ", count);
  const auto k = static_cast<int64_t>(uniform() * static_cast<double>(count));
  return std::min(k, count - 1);
}

bool SampleRng::bernoulli(double probability) { return uniform() < probability; }

double SampleRng::normal() { return kernels::philox_normal(seed_, 0, counter_++); }

Index3 volume_shape(const Tensor& volume, const char* who) {
  MED3D_CHECK(volume.defined(), who, ": the volume is undefined");
  MED3D_CHECK(volume.rank() == 3, who, ": expected a [D, H, W] volume, got ", volume.str(),
              "; drop batch and channel axes first");
  MED3D_CHECK(volume.device().is_cpu(), who, ": expected a CPU tensor, got ", volume.str());
  return {volume.dim(0), volume.dim(1), volume.dim(2)};
}

namespace {

void check_label(const Tensor& label, const char* who) {
  volume_shape(label, who);
  MED3D_CHECK(label.dtype() == DType::i32, who, ": labels must be i32, got ", label.str(),
              "; read them with read_label_nifti or convert with .to(DType::i32)");
}

}  // namespace

std::optional<Box3> foreground_box(const Tensor& label) {
  check_label(label, "foreground_box");
  const Index3 n = volume_shape(label, "foreground_box");
  const int32_t* l = label.data<int32_t>();
  Box3 box{{n[0], n[1], n[2]}, {0, 0, 0}};
  bool any = false;
  for (int64_t d = 0; d < n[0]; ++d)
    for (int64_t h = 0; h < n[1]; ++h) {
      const int32_t* row = l + (d * n[1] + h) * n[2];
      int64_t first = -1, last = -1;
      for (int64_t w = 0; w < n[2]; ++w)
        if (row[w] != 0) {
          if (first < 0) first = w;
          last = w;
        }
      if (first < 0) continue;
      any = true;
      box.lo = {std::min(box.lo[0], d), std::min(box.lo[1], h), std::min(box.lo[2], first)};
      box.hi = {std::max(box.hi[0], d + 1), std::max(box.hi[1], h + 1), std::max(box.hi[2], last + 1)};
    }
  if (!any) return std::nullopt;
  return box;
}

Box3 med3d_crop_box(const Index3& shape, const std::optional<Box3>& foreground, SampleRng& rng) {
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(shape[a] > 0, "med3d_crop_box: volume extents must be positive, got ", shape[a],
                " on axis ", a);
  if (!foreground) return Box3{{0, 0, 0}, shape};
  Box3 box;
  for (int a = 0; a < 3; ++a) {
    const int64_t lo = foreground->lo[a], hi = foreground->hi[a];
    MED3D_CHECK(0 <= lo && lo < hi && hi <= shape[a], "med3d_crop_box: foreground box [", lo,
                ", ", hi, ") on axis ", a, " does not lie in the volume extent ", shape[a]);
    const int64_t extent = hi - lo;
    // Half the box on each side: the crop always holds 2x the foreground box (as in
    // MedicalNet's __random_center_crop__), clamped to the volume.
    const int64_t inner_lo = std::max<int64_t>(0, lo - extent / 2);
    const int64_t inner_hi = std::min<int64_t>(shape[a], hi + (extent + 1) / 2);
    box.lo[a] = static_cast<int64_t>(std::floor(static_cast<double>(inner_lo) * rng.uniform()));
    box.hi[a] = inner_hi + static_cast<int64_t>(std::ceil(static_cast<double>(shape[a] - inner_hi) * rng.uniform()));
    box.hi[a] = std::min(box.hi[a], shape[a]);
  }
  return box;
}

Box3 sample_patch_box(const Tensor& label, const Index3& patch, double foreground_fraction,
                      SampleRng& rng, bool* on_foreground) {
  check_label(label, "sample_patch_box");
  const Index3 n = volume_shape(label, "sample_patch_box");
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(patch[a] > 0, "sample_patch_box: patch extents must be positive, got ", patch[a],
                " on axis ", a);
  MED3D_CHECK(foreground_fraction >= 0 && foreground_fraction <= 1,
              "sample_patch_box: foreground_fraction must lie in [0, 1], got ", foreground_fraction);
  // Draw the choice and the centre unconditionally, so the stream position after this call
  // does not depend on the label content.
  const bool want_foreground = rng.bernoulli(foreground_fraction);
  const double pick = rng.uniform();
  Index3 centre{};
  bool centred_on_foreground = false;
  if (want_foreground) {
    const int32_t* l = label.data<int32_t>();
    const int64_t count = label.numel();
    int64_t foreground = 0;
    for (int64_t i = 0; i < count; ++i) foreground += l[i] != 0;
    if (foreground > 0) {
      int64_t k = std::min(static_cast<int64_t>(pick * static_cast<double>(foreground)), foreground - 1);
      for (int64_t i = 0; i < count; ++i)
        if (l[i] != 0 && k-- == 0) {
          centre = {i / (n[1] * n[2]), (i / n[2]) % n[1], i % n[2]};
          centred_on_foreground = true;
          break;
        }
    }
  }
  Box3 box;
  for (int a = 0; a < 3; ++a) {
    if (n[a] <= patch[a]) {
      // Smaller than the patch: centre the volume, pad both sides.
      box.lo[a] = -((patch[a] - n[a]) / 2);
    } else {
      const int64_t c = centred_on_foreground ? centre[a] : rng.integer(n[a]);
      box.lo[a] = std::clamp<int64_t>(c - patch[a] / 2, 0, n[a] - patch[a]);
    }
    box.hi[a] = box.lo[a] + patch[a];
  }
  if (on_foreground) *on_foreground = centred_on_foreground;
  return box;
}

namespace {

template <class T>
void copy_box(const T* in, const Index3& n, const Box3& box, T fill, T* out) {
  const Index3 s = box.size();
  for (int64_t d = 0; d < s[0]; ++d)
    for (int64_t h = 0; h < s[1]; ++h) {
      T* row = out + (d * s[1] + h) * s[2];
      const int64_t sd = box.lo[0] + d, sh = box.lo[1] + h;
      if (sd < 0 || sd >= n[0] || sh < 0 || sh >= n[1]) {
        std::fill(row, row + s[2], fill);
        continue;
      }
      const int64_t w0 = std::clamp<int64_t>(-box.lo[2], 0, s[2]);
      const int64_t w1 = std::clamp<int64_t>(n[2] - box.lo[2], w0, s[2]);
      std::fill(row, row + w0, fill);
      if (w1 > w0) {
        const T* src = in + (sd * n[1] + sh) * n[2] + (box.lo[2] + w0);
        std::copy(src, src + (w1 - w0), row + w0);
      }
      std::fill(row + w1, row + s[2], fill);
    }
}

}  // namespace

Tensor crop(const Tensor& volume, const Box3& box, double fill) {
  const Index3 n = volume_shape(volume, "crop");
  const Index3 s = box.size();
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(s[a] > 0, "crop: the box must be non-empty, got [", box.lo[a], ", ", box.hi[a],
                ") on axis ", a);
  Tensor out = volume.context().empty({s[0], s[1], s[2]}, volume.dtype());
  if (volume.dtype() == DType::f32) {
    copy_box(volume.data<float>(), n, box, static_cast<float>(fill), out.data<float>());
  } else if (volume.dtype() == DType::i32) {
    copy_box(volume.data<int32_t>(), n, box, static_cast<int32_t>(fill), out.data<int32_t>());
  } else {
    detail::throw_error("crop: expected an f32 image or an i32 label, got ", volume.str());
  }
  return out;
}

}  // namespace med3d::data
