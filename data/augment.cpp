#include "med3d/data/augment.h"

#include <algorithm>
#include <cmath>

#include "med3d/context.h"
#include "med3d/kernels/philox.h"

namespace med3d::data {

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kSnap = 1e-6;

using Mat3 = std::array<double, 9>;

Mat3 matmul(const Mat3& a, const Mat3& b) {
  Mat3 c{};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 3; ++k) c[3 * i + j] += a[3 * i + k] * b[3 * k + j];
  return c;
}

// Rotation in the plane of axes (i, j) by `degrees`: e_i -> cos e_i + sin e_j.
Mat3 plane_rotation(int i, int j, double degrees) {
  const double r = degrees * kPi / 180.0;
  const double c = std::cos(r), s = std::sin(r);
  Mat3 m{1, 0, 0, 0, 1, 0, 0, 0, 1};
  m[3 * i + i] = c;
  m[3 * i + j] = -s;
  m[3 * j + i] = s;
  m[3 * j + j] = c;
  return m;
}

double snap(double x) {
  const double r = std::nearbyint(x);
  return std::abs(x - r) < kSnap ? r : x;
}

void check_probability(double p, const char* name) {
  MED3D_CHECK(p >= 0 && p <= 1, "draw_augment_params: ", name, " must lie in [0, 1], got ", p);
}

}  // namespace

std::array<double, 3> Affine3::apply(const std::array<double, 3>& p) const {
  std::array<double, 3> x{};
  for (int i = 0; i < 3; ++i)
    x[i] = m[3 * i] * p[0] + m[3 * i + 1] * p[1] + m[3 * i + 2] * p[2] + offset[i];
  return x;
}

Affine3 compose(const Affine3& outer, const Affine3& inner) {
  Affine3 r;
  r.m = matmul(outer.m, inner.m);
  r.offset = outer.apply(inner.offset);
  return r;
}

Affine3 box_map(const Box3& box, const Index3& out) {
  Affine3 r;
  for (int a = 0; a < 3; ++a) {
    MED3D_CHECK(out[a] > 0 && box.hi[a] > box.lo[a], "box_map: the box [", box.lo[a], ", ",
                box.hi[a], ") and the output extent ", out[a], " on axis ", a, " must be non-empty");
    const double step = static_cast<double>(box.hi[a] - box.lo[a]) / static_cast<double>(out[a]);
    r.m[3 * a + a] = step;
    r.offset[a] = static_cast<double>(box.lo[a]) + 0.5 * step - 0.5;
  }
  return r;
}

std::array<double, 3> centre_of(const Index3& shape, const std::optional<Box3>& foreground) {
  std::array<double, 3> c{};
  for (int a = 0; a < 3; ++a)
    c[a] = foreground ? 0.5 * static_cast<double>(foreground->lo[a] + foreground->hi[a] - 1)
                      : 0.5 * static_cast<double>(shape[a] - 1);
  return c;
}

AugmentParams draw_augment_params(const AugmentOptions& o, const Index3& shape,
                                  const std::optional<Box3>& foreground, SampleRng& rng) {
  MED3D_CHECK(o.max_rotation_degrees >= 0 && o.max_rotation_degrees <= 180,
              "draw_augment_params: max_rotation_degrees must lie in [0, 180], got ",
              o.max_rotation_degrees);
  MED3D_CHECK(o.scale_min > 0 && o.scale_min <= o.scale_max,
              "draw_augment_params: need 0 < scale_min <= scale_max, got ", o.scale_min, " and ",
              o.scale_max);
  MED3D_CHECK(o.max_translation_fraction >= 0,
              "draw_augment_params: max_translation_fraction must be >= 0, got ",
              o.max_translation_fraction);
  MED3D_CHECK(o.noise_std_max >= 0, "draw_augment_params: noise_std_max must be >= 0, got ",
              o.noise_std_max);
  MED3D_CHECK(o.gamma_min > 0 && o.gamma_min <= o.gamma_max,
              "draw_augment_params: need 0 < gamma_min <= gamma_max, got ", o.gamma_min, " and ",
              o.gamma_max);
  for (double p : o.flip_probability) check_probability(p, "flip_probability");
  check_probability(o.noise_probability, "noise_probability");
  check_probability(o.gamma_probability, "gamma_probability");

  // Every draw happens unconditionally, so a sample's stream layout is fixed.
  AugmentParams p;
  for (int a = 0; a < 3; ++a)
    p.rotation_degrees[a] = rng.uniform(-o.max_rotation_degrees, o.max_rotation_degrees);
  p.scale = rng.uniform(o.scale_min, o.scale_max);
  for (int a = 0; a < 3; ++a) {
    const double extent = static_cast<double>(foreground ? foreground->size()[a] : shape[a]);
    const double t = o.max_translation_fraction * extent;
    p.translation[a] = rng.uniform(-t, t);
  }
  for (int a = 0; a < 3; ++a) p.flip[a] = rng.bernoulli(o.flip_probability[a]);
  const bool noise = rng.bernoulli(o.noise_probability);
  const double noise_std = rng.uniform(0.0, o.noise_std_max);
  p.noise_std = noise ? noise_std : 0.0;
  const bool gamma = rng.bernoulli(o.gamma_probability);
  const double g = rng.uniform(o.gamma_min, o.gamma_max);
  p.gamma = gamma ? g : 1.0;
  p.centre = centre_of(shape, o.rotate_about_foreground ? foreground : std::nullopt);
  return p;
}

Affine3 augment_map(const AugmentParams& p, const Index3& out, const Affine3& base) {
  MED3D_CHECK(p.scale > 0, "augment_map: scale must be positive, got ", p.scale);
  Affine3 flip;
  for (int a = 0; a < 3; ++a)
    if (p.flip[a]) {
      flip.m[3 * a + a] = -1;
      flip.offset[a] = static_cast<double>(out[a] - 1);
    }
  // Inverse of y = c + s R (x - c) + t:  x = c + R^T (y - c - t) / s.
  const Mat3 r = matmul(matmul(plane_rotation(1, 2, p.rotation_degrees[0]),
                               plane_rotation(0, 2, p.rotation_degrees[1])),
                        plane_rotation(0, 1, p.rotation_degrees[2]));
  Affine3 inverse;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) inverse.m[3 * i + j] = r[3 * j + i] / p.scale;
  std::array<double, 3> shift{};
  for (int a = 0; a < 3; ++a) shift[a] = -p.centre[a] - p.translation[a];
  Affine3 to_centre;
  to_centre.offset = shift;
  inverse = compose(inverse, to_centre);
  for (int a = 0; a < 3; ++a) inverse.offset[a] += p.centre[a];
  return compose(inverse, compose(base, flip));
}

double image_minimum(const Tensor& image) {
  volume_shape(image, "image_minimum");
  MED3D_CHECK(image.dtype() == DType::f32, "image_minimum: expected an f32 image, got ", image.str());
  const float* x = image.data<float>();
  return image.numel() == 0 ? 0.0 : static_cast<double>(*std::min_element(x, x + image.numel()));
}

std::pair<Tensor, Tensor> resample(const Tensor& image, const Tensor& label, const Affine3& map,
                                   const Index3& out, double image_fill) {
  const Index3 n = volume_shape(image, "resample");
  MED3D_CHECK(image.dtype() == DType::f32, "resample: the image must be f32, got ", image.str());
  MED3D_CHECK(label.defined() && label.shape() == image.shape() && label.dtype() == DType::i32,
              "resample: the label must be an i32 tensor of the image's shape ", image.shape().str(),
              ", got ", label.defined() ? label.str() : std::string("undefined"));
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(out[a] > 0, "resample: output extents must be positive, got ", out[a], " on axis ", a);
  Context context = image.context();
  Tensor out_image = context.empty({out[0], out[1], out[2]}, DType::f32);
  Tensor out_label = context.empty({out[0], out[1], out[2]}, DType::i32);
  const float* src = image.data<float>();
  const int32_t* src_label = label.data<int32_t>();
  float* dst = out_image.data<float>();
  int32_t* dst_label = out_label.data<int32_t>();
  const float fill = static_cast<float>(image_fill);
  const int64_t sh = n[1] * n[2], sw = n[2];
  auto at = [&](int64_t d, int64_t h, int64_t w) -> float {
    if (d < 0 || d >= n[0] || h < 0 || h >= n[1] || w < 0 || w >= n[2]) return fill;
    return src[d * sh + h * sw + w];
  };
  const auto& m = map.m;
  for (int64_t d = 0; d < out[0]; ++d)
    for (int64_t h = 0; h < out[1]; ++h) {
      const std::array<double, 3> row = map.apply({static_cast<double>(d), static_cast<double>(h), 0.0});
      const int64_t base = (d * out[1] + h) * out[2];
      for (int64_t w = 0; w < out[2]; ++w) {
        const double wd = static_cast<double>(w);
        const double x0 = snap(row[0] + m[2] * wd);
        const double x1 = snap(row[1] + m[5] * wd);
        const double x2 = snap(row[2] + m[8] * wd);
        // Nearest for the label; outside the volume is background.
        // Compared as doubles before any conversion, so far-away coordinates cannot overflow.
        const double r0 = std::floor(x0 + 0.5), r1 = std::floor(x1 + 0.5), r2 = std::floor(x2 + 0.5);
        const bool inside = r0 >= 0 && r0 < static_cast<double>(n[0]) && r1 >= 0 &&
                            r1 < static_cast<double>(n[1]) && r2 >= 0 && r2 < static_cast<double>(n[2]);
        dst_label[base + w] = inside ? src_label[static_cast<int64_t>(r0) * sh + static_cast<int64_t>(r1) * sw +
                                                 static_cast<int64_t>(r2)]
                                     : 0;
        // Trilinear for the image; zero-weight corners outside the volume read `fill`.
        const double f0 = std::floor(x0), f1 = std::floor(x1), f2 = std::floor(x2);
        // Written so that NaN coordinates also take the fill branch.
        const bool near = f0 >= -1 && f0 <= static_cast<double>(n[0]) && f1 >= -1 &&
                          f1 <= static_cast<double>(n[1]) && f2 >= -1 && f2 <= static_cast<double>(n[2]);
        if (!near) {
          dst[base + w] = fill;
          continue;
        }
        const auto i0 = static_cast<int64_t>(f0), i1 = static_cast<int64_t>(f1), i2 = static_cast<int64_t>(f2);
        const float t0 = static_cast<float>(x0 - f0), t1 = static_cast<float>(x1 - f1),
                    t2 = static_cast<float>(x2 - f2);
        if (i0 >= 0 && i0 + 1 < n[0] && i1 >= 0 && i1 + 1 < n[1] && i2 >= 0 && i2 + 1 < n[2]) {
          // All eight corners inside: the same arithmetic without bounds checks.
          const float* q = src + i0 * sh + i1 * sw + i2;
          const float c00 = q[0] * (1 - t2) + q[1] * t2;
          const float c01 = q[sw] * (1 - t2) + q[sw + 1] * t2;
          const float c10 = q[sh] * (1 - t2) + q[sh + 1] * t2;
          const float c11 = q[sh + sw] * (1 - t2) + q[sh + sw + 1] * t2;
          const float c0 = c00 * (1 - t1) + c01 * t1;
          const float c1 = c10 * (1 - t1) + c11 * t1;
          dst[base + w] = c0 * (1 - t0) + c1 * t0;
          continue;
        }
        const float c00 = at(i0, i1, i2) * (1 - t2) + at(i0, i1, i2 + 1) * t2;
        const float c01 = at(i0, i1 + 1, i2) * (1 - t2) + at(i0, i1 + 1, i2 + 1) * t2;
        const float c10 = at(i0 + 1, i1, i2) * (1 - t2) + at(i0 + 1, i1, i2 + 1) * t2;
        const float c11 = at(i0 + 1, i1 + 1, i2) * (1 - t2) + at(i0 + 1, i1 + 1, i2 + 1) * t2;
        const float c0 = c00 * (1 - t1) + c01 * t1;
        const float c1 = c10 * (1 - t1) + c11 * t1;
        dst[base + w] = c0 * (1 - t0) + c1 * t0;
      }
    }
  return {out_image, out_label};
}

void apply_intensity(Tensor& image, const AugmentParams& p, uint64_t noise_seed) {
  volume_shape(image, "apply_intensity");
  MED3D_CHECK(image.dtype() == DType::f32, "apply_intensity: expected an f32 image, got ", image.str());
  MED3D_CHECK(p.gamma > 0 && p.noise_std >= 0, "apply_intensity: need gamma > 0 and noise_std >= 0, got ",
              p.gamma, " and ", p.noise_std);
  float* x = image.data<float>();
  const int64_t count = image.numel();
  if (count == 0) return;
  if (p.gamma != 1.0) {
    const auto [lo_it, hi_it] = std::minmax_element(x, x + count);
    const double lo = *lo_it, range = static_cast<double>(*hi_it) - lo;
    // f32 pow: the double version costs twice as much per voxel and the result is f32.
    const float lo_f = static_cast<float>(lo), range_f = static_cast<float>(range);
    const float inv_range = 1.0f / range_f, gamma = static_cast<float>(p.gamma);
    if (range > 0)
      for (int64_t i = 0; i < count; ++i)
        x[i] = lo_f + range_f * std::pow(std::max((x[i] - lo_f) * inv_range, 0.0f), gamma);
  }
  if (p.noise_std > 0) {
    // One Philox block (4 words) gives two Box-Muller pairs: 4 normals for voxels 4j..4j+3.
    const float scale = static_cast<float>(p.noise_std);
    constexpr float kTwoPi = 6.283185307179586f;
    for (int64_t j = 0; 4 * j < count; ++j) {
      const kernels::Philox4x32 r = kernels::philox4x32_10(static_cast<uint64_t>(j), noise_seed);
      float z[4];
      for (int pair = 0; pair < 2; ++pair) {
        const float u1 = (static_cast<float>(r.v[2 * pair] >> 8) + 1.0f) * (1.0f / 16777217.0f);  // (0, 1]
        const float u2 = static_cast<float>(r.v[2 * pair + 1] >> 8) * (1.0f / 16777216.0f);       // [0, 1)
        const float radius = std::sqrt(-2.0f * std::log(u1));
        z[2 * pair] = radius * std::cos(kTwoPi * u2);
        z[2 * pair + 1] = radius * std::sin(kTwoPi * u2);
      }
      for (int64_t k = 0; k < 4 && 4 * j + k < count; ++k) x[4 * j + k] += scale * z[k];
    }
  }
}

std::pair<Tensor, Tensor> augment(const Tensor& image, const Tensor& label,
                                  const AugmentOptions& options, uint64_t seed) {
  const Index3 n = volume_shape(image, "augment");
  SampleRng rng(seed);
  const AugmentParams params = draw_augment_params(options, n, foreground_box(label), rng);
  const double fill = options.image_fill ? *options.image_fill : image_minimum(image);
  auto [out_image, out_label] = resample(image, label, augment_map(params, n), n, fill);
  apply_intensity(out_image, params, splitmix64(seed ^ 0x6E6F697365ull));
  return {out_image, out_label};
}

}  // namespace med3d::data
