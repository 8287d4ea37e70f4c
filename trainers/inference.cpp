// Sliding-window prediction, argmax, image-only preparation and the map back to the input
// file's grid. Contracts and conventions: see med3d/trainers/inference.h.
#include "med3d/trainers/inference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "med3d/error.h"
#include "med3d/ops/loss.h"

namespace med3d::trainers {

namespace {

using Index3 = std::array<int64_t, 3>;
using Mat4 = std::array<double, 16>;

// Copies x [..., D, H, W] (f32, contiguous) reversing the last three axes where mask bit a
// (a = 0 for D, 1 for H, 2 for W) is set.
Tensor flip_spatial(const Tensor& x, int mask) {
  const int rank = x.rank();
  const Index3 n{x.dim(rank - 3), x.dim(rank - 2), x.dim(rank - 1)};
  const int64_t volume = n[0] * n[1] * n[2];
  const int64_t outer = volume > 0 ? x.numel() / volume : 0;
  Tensor out = x.context().empty(x.shape(), DType::f32);
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  const bool fd = (mask & 1) != 0, fh = (mask & 2) != 0, fw = (mask & 4) != 0;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t d = 0; d < n[0]; ++d)
      for (int64_t h = 0; h < n[1]; ++h) {
        const int64_t sd = fd ? n[0] - 1 - d : d, sh = fh ? n[1] - 1 - h : h;
        const float* row = src + o * volume + (sd * n[1] + sh) * n[2];
        float* out_row = dst + o * volume + (d * n[1] + h) * n[2];
        if (fw)
          for (int64_t w = 0; w < n[2]; ++w) out_row[w] = row[n[2] - 1 - w];
        else
          std::memcpy(out_row, row, static_cast<std::size_t>(n[2]) * sizeof(float));
      }
  return out;
}

std::string index3_str(const Index3& v) {
  std::string s = "{";  // appended, not "a" + b: GCC 12 warns falsely (-Wrestrict) on that
  for (int a = 0; a < 3; ++a) s.append(a ? ", " : "").append(std::to_string(v[a]));
  return s.append("}");
}

}  // namespace

std::vector<int64_t> window_starts(int64_t n, int64_t patch, double overlap) {
  MED3D_CHECK(patch > 0 && n >= patch, "window_starts: expected 0 < patch <= extent, got patch ",
              patch, " and extent ", n, "; pad the image to the patch size first");
  MED3D_CHECK(std::isfinite(overlap) && overlap >= 0 && overlap < 1,
              "window_starts: overlap must lie in [0, 1), got ", overlap);
  const double target_step = std::max(1.0, static_cast<double>(patch) * (1.0 - overlap));
  const auto steps =
      static_cast<int64_t>(std::ceil(static_cast<double>(n - patch) / target_step)) + 1;
  std::vector<int64_t> starts(static_cast<std::size_t>(steps), 0);
  if (steps > 1) {
    const double actual = static_cast<double>(n - patch) / static_cast<double>(steps - 1);
    for (int64_t i = 0; i < steps; ++i)
      starts[static_cast<std::size_t>(i)] =
          static_cast<int64_t>(std::llround(actual * static_cast<double>(i)));
  }
  return starts;
}

Tensor window_weights(const Context& context, const Index3& patch, WindowWeighting weighting,
                      double sigma_scale) {
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(patch[a] > 0, "window_weights: patch extents must be positive, got ",
                index3_str(patch));
  Tensor out = context.empty(Shape({patch[0], patch[1], patch[2]}), DType::f32);
  float* w = out.data<float>();
  if (weighting == WindowWeighting::uniform) {
    out.fill(1.0);
    return out;
  }
  MED3D_CHECK(std::isfinite(sigma_scale) && sigma_scale > 0,
              "window_weights: sigma_scale must be positive, got ", sigma_scale);
  // Separable: one 1-D profile per axis, each with maximum 1 at the centre voxel(s).
  std::array<std::vector<double>, 3> profile;
  for (int a = 0; a < 3; ++a) {
    const double centre = static_cast<double>(patch[a] - 1) / 2;
    const double sigma = static_cast<double>(patch[a]) * sigma_scale;
    double peak = 0;
    for (int64_t i = 0; i < patch[a]; ++i) {
      const double t = (static_cast<double>(i) - centre) / sigma;
      profile[a].push_back(std::exp(-0.5 * t * t));
      peak = std::max(peak, profile[a].back());
    }
    for (double& v : profile[a]) v /= peak;
  }
  for (int64_t d = 0; d < patch[0]; ++d)
    for (int64_t h = 0; h < patch[1]; ++h)
      for (int64_t x = 0; x < patch[2]; ++x) {
        const double v = profile[0][static_cast<std::size_t>(d)] *
                         profile[1][static_cast<std::size_t>(h)] *
                         profile[2][static_cast<std::size_t>(x)];
        *w++ = std::max(static_cast<float>(v), kMinWindowWeight);
      }
  return out;
}

Tensor sliding_window_predict(const LogitsFn& logits_fn, const Tensor& image,
                              const SlidingWindowOptions& options) {
  const char* op = "sliding_window_predict";
  MED3D_CHECK(static_cast<bool>(logits_fn), op, ": logits_fn is empty");
  MED3D_CHECK(image.defined(), op, ": image is undefined");
  MED3D_CHECK(image.rank() == 5 && image.dim(0) == 1 && image.dim(1) >= 1, op,
              ": expected an image [1, C, D, H, W], got ", image.shape().str());
  MED3D_CHECK(image.device().is_cpu() && image.dtype() == DType::f32, op,
              ": expected a CPU f32 image, got ", image.str());
  const Index3 n{image.dim(2), image.dim(3), image.dim(4)};
  const Index3& p = options.patch;
  for (int a = 0; a < 3; ++a) {
    MED3D_CHECK(n[a] > 0, op, ": image extents must be positive, got ", image.shape().str());
    MED3D_CHECK(p[a] > 0, op, ": patch extents must be positive, got ", index3_str(p));
  }
  MED3D_CHECK(std::isfinite(options.overlap) && options.overlap >= 0 && options.overlap < 1, op,
              ": overlap must lie in [0, 1), got ", options.overlap);
  MED3D_CHECK(options.batch_size >= 1, op, ": batch_size must be at least 1, got ",
              options.batch_size);

  Context context = image.context();
  NoGrad no_grad(context);
  FrozenWeights frozen(context);  // every window runs the same weights: their packing is done once
  const int64_t channels = image.dim(1);

  // Pad axes smaller than the patch (centred; the odd voxel goes after).
  Index3 padded{}, before{};
  bool needs_pad = false;
  for (int a = 0; a < 3; ++a) {
    padded[a] = std::max(n[a], p[a]);
    before[a] = (padded[a] - n[a]) / 2;
    needs_pad = needs_pad || padded[a] != n[a];
  }
  Tensor input = image;
  if (needs_pad) {
    double fill = 0;
    if (options.pad_value == PadValue::image_minimum) {
      const float* x = image.data<float>();
      fill = *std::min_element(x, x + image.numel());
    }
    input = context.full(Shape({1, channels, padded[0], padded[1], padded[2]}), fill);
    const float* src = image.data<float>();
    float* dst = input.data<float>();
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t d = 0; d < n[0]; ++d)
        for (int64_t h = 0; h < n[1]; ++h)
          std::memcpy(dst + ((c * padded[0] + d + before[0]) * padded[1] + h + before[1]) *
                                    padded[2] + before[2],
                      src + ((c * n[0] + d) * n[1] + h) * n[2],
                      static_cast<std::size_t>(n[2]) * sizeof(float));
  }

  std::array<std::vector<int64_t>, 3> starts;
  for (int a = 0; a < 3; ++a) starts[a] = window_starts(padded[a], p[a], options.overlap);
  std::vector<Index3> windows;
  for (int64_t d : starts[0])
    for (int64_t h : starts[1])
      for (int64_t w : starts[2]) windows.push_back({d, h, w});

  const Tensor weight_map = window_weights(context, p, options.weighting, options.sigma_scale);
  const float* weight = weight_map.data<float>();
  const int64_t patch_voxels = p[0] * p[1] * p[2];
  const int64_t padded_voxels = padded[0] * padded[1] * padded[2];
  std::vector<float> weight_sum(static_cast<std::size_t>(padded_voxels), 0.0f);
  std::vector<float> accum;  // [K, padded], sized once K is known
  int64_t classes = 0;
  const int num_flips = options.flip_tta ? 8 : 1;
  const float* in = input.data<float>();

  for (std::size_t first = 0; first < windows.size();
       first += static_cast<std::size_t>(options.batch_size)) {
    const std::size_t count =
        std::min(windows.size() - first, static_cast<std::size_t>(options.batch_size));
    const auto batch = static_cast<int64_t>(count);
    Tensor patches = context.empty(Shape({batch, channels, p[0], p[1], p[2]}), DType::f32);
    float* dst = patches.data<float>();
    for (std::size_t b = 0; b < count; ++b) {
      const Index3& s = windows[first + b];
      for (int64_t c = 0; c < channels; ++c)
        for (int64_t d = 0; d < p[0]; ++d)
          for (int64_t h = 0; h < p[1]; ++h) {
            std::memcpy(dst, in + ((c * padded[0] + s[0] + d) * padded[1] + s[1] + h) *
                                      padded[2] + s[2],
                        static_cast<std::size_t>(p[2]) * sizeof(float));
            dst += p[2];
          }
    }

    Tensor probs;  // [B, K, pD, pH, pW], the mean over flips
    for (int mask = 0; mask < num_flips; ++mask) {
      Tensor logits = logits_fn(mask == 0 ? patches : flip_spatial(patches, mask));
      MED3D_CHECK(logits.defined(), op, ": logits_fn returned an undefined tensor");
      if (!logits.device().is_cpu()) logits = logits.to(Device::cpu());
      if (logits.dtype() != DType::f32) logits = logits.to(DType::f32);
      MED3D_CHECK(logits.rank() == 5 && logits.dim(0) == batch && logits.dim(1) >= 1 &&
                      logits.dim(2) == p[0] && logits.dim(3) == p[1] && logits.dim(4) == p[2],
                  op, ": logits_fn must map patches ", patches.shape().str(),
                  " to logits [", batch, ", K, ", p[0], ", ", p[1], ", ", p[2], "], got ",
                  logits.shape().str());
      if (classes == 0) {
        classes = logits.dim(1);
        accum.assign(static_cast<std::size_t>(classes * padded_voxels), 0.0f);
      }
      MED3D_CHECK(logits.dim(1) == classes, op, ": logits_fn returned ", logits.dim(1),
                  " classes after returning ", classes, " before");
      Tensor prob = softmax(logits);
      if (mask != 0) prob = flip_spatial(prob, mask);
      if (mask == 0) {
        probs = prob;
      } else {
        float* acc = probs.data<float>();
        const float* add = prob.data<float>();
        for (int64_t i = 0; i < probs.numel(); ++i) acc[i] += add[i];
      }
    }
    const float flip_scale = 1.0f / static_cast<float>(num_flips);
    const float* pr = probs.data<float>();
    for (std::size_t b = 0; b < count; ++b) {
      const Index3& s = windows[first + b];
      for (int64_t k = 0; k <= classes; ++k) {  // k == classes: the weight sum
        const float* src = pr + (static_cast<int64_t>(b) * classes + k) * patch_voxels;
        float* acc = k < classes ? accum.data() + k * padded_voxels : weight_sum.data();
        const float* wt = weight;
        for (int64_t d = 0; d < p[0]; ++d)
          for (int64_t h = 0; h < p[1]; ++h) {
            float* row = acc + ((s[0] + d) * padded[1] + s[1] + h) * padded[2] + s[2];
            if (k < classes)
              for (int64_t w = 0; w < p[2]; ++w) row[w] += wt[w] * (src[w] * flip_scale);
            else
              for (int64_t w = 0; w < p[2]; ++w) row[w] += wt[w];
            wt += p[2];
            src += p[2];
          }
      }
    }
  }

  Tensor out = context.empty(Shape({1, classes, n[0], n[1], n[2]}), DType::f32);
  float* o = out.data<float>();
  for (int64_t k = 0; k < classes; ++k)
    for (int64_t d = 0; d < n[0]; ++d)
      for (int64_t h = 0; h < n[1]; ++h) {
        const int64_t row = ((d + before[0]) * padded[1] + h + before[1]) * padded[2] + before[2];
        const float* acc = accum.data() + k * padded_voxels + row;
        const float* ws = weight_sum.data() + row;
        for (int64_t w = 0; w < n[2]; ++w) *o++ = acc[w] / ws[w];
      }
  return out;
}

Tensor argmax_labels(const Tensor& probabilities) {
  const char* op = "argmax_labels";
  MED3D_CHECK(probabilities.defined(), op, ": probabilities are undefined");
  const int rank = probabilities.rank();
  MED3D_CHECK((rank == 5 && probabilities.dim(0) == 1) || rank == 4, op,
              ": expected probabilities [1, K, D, H, W] or [K, D, H, W], got ",
              probabilities.shape().str());
  const Shape& s = probabilities.shape();
  const Tensor x = probabilities.reshape(
      Shape({1, s.dim(-4), s.dim(-3), s.dim(-2), s.dim(-1)}));
  return argmax(x).reshape(Shape({s.dim(-3), s.dim(-2), s.dim(-1)}));
}

PreparedCase prepare_image(const Context& context, const std::string& image_path,
                           const PreprocessOptions& options) {
  Volume image = read_nifti(context, image_path, options.read);
  PreparedCase out;
  std::string id = std::filesystem::path(image_path).filename().string();
  for (const char* suffix : {".nii.gz", ".nii"})
    if (id.size() > std::strlen(suffix) && id.ends_with(suffix)) {
      id.resize(id.size() - std::strlen(suffix));
      break;
    }
  out.id = id;
  if (!options.orientation.empty()) image = reorient_to(image, options.orientation);
  out.original_shape = {image.data.dim(0), image.data.dim(1), image.data.dim(2)};
  out.original_spacing = image.spacing;
  out.original_affine = image.affine;
  if (options.target_spacing)
    image = resample(image, *options.target_spacing, Interpolation::linear);
  image.data = normalize_intensity(image.data, options.intensity);
  out.image = std::move(image);
  return out;
}

namespace {

// Inverse of an affine with an invertible 3x3 part.
Mat4 inverse_affine(const char* op, const Mat4& a) {
  const double det = a[0] * (a[5] * a[10] - a[6] * a[9]) - a[1] * (a[4] * a[10] - a[6] * a[8]) +
                     a[2] * (a[4] * a[9] - a[5] * a[8]);
  MED3D_CHECK(std::isfinite(det) && det != 0, op, ": affine is singular (determinant ", det,
              "); a voxel grid needs three independent axes");
  Mat4 inv{};
  inv[0] = (a[5] * a[10] - a[6] * a[9]) / det;
  inv[1] = (a[2] * a[9] - a[1] * a[10]) / det;
  inv[2] = (a[1] * a[6] - a[2] * a[5]) / det;
  inv[4] = (a[6] * a[8] - a[4] * a[10]) / det;
  inv[5] = (a[0] * a[10] - a[2] * a[8]) / det;
  inv[6] = (a[2] * a[4] - a[0] * a[6]) / det;
  inv[8] = (a[4] * a[9] - a[5] * a[8]) / det;
  inv[9] = (a[1] * a[8] - a[0] * a[9]) / det;
  inv[10] = (a[0] * a[5] - a[1] * a[4]) / det;
  for (int r = 0; r < 3; ++r)
    inv[4 * r + 3] = -(inv[4 * r] * a[3] + inv[4 * r + 1] * a[7] + inv[4 * r + 2] * a[11]);
  inv[15] = 1;
  return inv;
}

// Per target tensor axis a: the source tensor axis and source coordinate = scale * i + shift.
struct AxisMapping {
  std::array<int, 3> source_axis{};
  std::array<double, 3> scale{}, shift{};
};

AxisMapping grid_mapping(const char* op, const Mat4& source_affine, const Index3& target_shape,
                         const Mat4& target_affine) {
  const Mat4 inv = inverse_affine(op, source_affine);
  Mat4 m{};  // target voxel (i, j, k, 1) -> source voxel
  for (int r = 0; r < 4; ++r)
    for (int k = 0; k < 4; ++k)
      for (int c = 0; c < 4; ++c) m[4 * r + c] += inv[4 * r + k] * target_affine[4 * k + c];
  const double extent =
      static_cast<double>(std::max({target_shape[0], target_shape[1], target_shape[2], int64_t{1}}));
  AxisMapping out;
  std::array<bool, 3> row_used{};
  for (int c = 0; c < 3; ++c) {  // target voxel axis c is target tensor axis 2 - c
    int best = 0;
    for (int r = 1; r < 3; ++r)
      if (std::abs(m[4 * r + c]) > std::abs(m[4 * best + c])) best = r;
    for (int r = 0; r < 3; ++r)
      MED3D_CHECK(r == best || std::abs(m[4 * r + c]) * extent <= 1e-3, op,
                  ": the target grid is not axis-aligned with the source grid (voxel map entry [",
                  r, "][", c, "] = ", m[4 * r + c],
                  "); only permutations, flips, scaling and shifts are supported");
    MED3D_CHECK(!row_used[best] && std::abs(m[4 * best + c]) > 0, op,
                ": the target grid is not axis-aligned with the source grid");
    row_used[best] = true;
    const int a = 2 - c;
    out.source_axis[a] = 2 - best;
    out.scale[a] = m[4 * best + c];
    out.shift[a] = m[4 * best + 3];
  }
  return out;
}

struct Taps {
  std::vector<int64_t> i0, i1;
  std::vector<double> w1;
};

double snap(double x) {
  const double r = std::round(x);
  return std::abs(x - r) < 1e-6 ? r : x;
}

}  // namespace

Tensor resample_to_grid(const Tensor& values, const Mat4& source_affine, const Index3& target_shape,
                        const Mat4& target_affine, Interpolation interpolation) {
  const char* op = "resample_to_grid";
  MED3D_CHECK(values.defined() && values.rank() >= 3, op,
              ": expected values [..., D, H, W], got ",
              values.defined() ? values.shape().str() : std::string("undefined"));
  MED3D_CHECK(values.device().is_cpu(), op, ": expected a CPU tensor, got ", values.str());
  const int rank = values.rank();
  const Index3 n{values.dim(rank - 3), values.dim(rank - 2), values.dim(rank - 1)};
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(n[a] > 0 && target_shape[a] > 0, op, ": grid extents must be positive, got ",
                values.shape().str(), " and target ", index3_str(target_shape));
  const bool linear = interpolation == Interpolation::linear;
  MED3D_CHECK(!linear || is_floating(values.dtype()), op,
              ": linear interpolation needs floating values, got ", dtype_name(values.dtype()),
              "; use Interpolation::nearest for labels");
  const AxisMapping map = grid_mapping(op, source_affine, target_shape, target_affine);
  const Index3 stride{n[1] * n[2], n[2], 1};

  // Per target axis: source element offsets of the two taps and the weight of the second.
  std::array<Taps, 3> taps;
  for (int a = 0; a < 3; ++a) {
    const int b = map.source_axis[a];
    const int64_t last = n[b] - 1;
    for (int64_t i = 0; i < target_shape[a]; ++i) {
      const double x = snap(map.scale[a] * static_cast<double>(i) + map.shift[a]);
      int64_t i0 = 0, i1 = 0;
      double w1 = 0;
      if (linear) {
        const double xc = std::clamp(x, 0.0, static_cast<double>(last));
        i0 = static_cast<int64_t>(std::floor(xc));
        i1 = std::min(i0 + 1, last);
        w1 = xc - static_cast<double>(i0);
      } else {
        i0 = i1 = std::clamp<int64_t>(static_cast<int64_t>(std::floor(x + 0.5)), 0, last);
      }
      taps[a].i0.push_back(i0 * stride[b]);
      taps[a].i1.push_back(i1 * stride[b]);
      taps[a].w1.push_back(w1);
    }
  }

  std::vector<int64_t> extents(values.shape().begin(), values.shape().end());
  for (int a = 0; a < 3; ++a) extents[static_cast<std::size_t>(rank - 3 + a)] = target_shape[a];
  Tensor out = values.context().empty(Shape(extents), values.dtype());
  const int64_t in_volume = n[0] * n[1] * n[2];
  const int64_t out_volume = target_shape[0] * target_shape[1] * target_shape[2];
  const int64_t outer = values.numel() / in_volume;

  auto run_linear = [&]<class T>() {
    const T* src = values.data<T>();
    T* dst = out.data<T>();
#pragma omp parallel for schedule(static) if (outer * out_volume > (int64_t{1} << 18))
    for (int64_t plane = 0; plane < outer * target_shape[0]; ++plane) {
      const int64_t o = plane / target_shape[0];
      const auto d = static_cast<std::size_t>(plane % target_shape[0]);
      const T* base = src + o * in_volume;
      T* row = dst + o * out_volume + static_cast<int64_t>(d) * target_shape[1] * target_shape[2];
      const double wd1 = taps[0].w1[d], wd0 = 1 - wd1;
      for (std::size_t h = 0; h < static_cast<std::size_t>(target_shape[1]); ++h) {
        const double wh1 = taps[1].w1[h], wh0 = 1 - wh1;
        const int64_t o00 = taps[0].i0[d] + taps[1].i0[h], o01 = taps[0].i0[d] + taps[1].i1[h];
        const int64_t o10 = taps[0].i1[d] + taps[1].i0[h], o11 = taps[0].i1[d] + taps[1].i1[h];
        for (std::size_t w = 0; w < static_cast<std::size_t>(target_shape[2]); ++w) {
          const double ww1 = taps[2].w1[w], ww0 = 1 - ww1;
          const int64_t w0 = taps[2].i0[w], w1 = taps[2].i1[w];
          const double v =
              wd0 * (wh0 * (ww0 * static_cast<double>(base[o00 + w0]) +
                            ww1 * static_cast<double>(base[o00 + w1])) +
                     wh1 * (ww0 * static_cast<double>(base[o01 + w0]) +
                            ww1 * static_cast<double>(base[o01 + w1]))) +
              wd1 * (wh0 * (ww0 * static_cast<double>(base[o10 + w0]) +
                            ww1 * static_cast<double>(base[o10 + w1])) +
                     wh1 * (ww0 * static_cast<double>(base[o11 + w0]) +
                            ww1 * static_cast<double>(base[o11 + w1])));
          *row++ = static_cast<T>(v);
        }
      }
    }
  };
  auto run_nearest = [&]<class T>() {  // T: an unsigned type of the element's size
    const T* src = static_cast<const T*>(values.raw_data());
    T* dst = static_cast<T*>(out.raw_data());
    for (int64_t o = 0; o < outer; ++o) {
      const T* base = src + o * in_volume;
      for (std::size_t d = 0; d < static_cast<std::size_t>(target_shape[0]); ++d)
        for (std::size_t h = 0; h < static_cast<std::size_t>(target_shape[1]); ++h) {
          const int64_t off = taps[0].i0[d] + taps[1].i0[h];
          for (std::size_t w = 0; w < static_cast<std::size_t>(target_shape[2]); ++w)
            *dst++ = base[off + taps[2].i0[w]];
        }
    }
  };
  if (linear) {
    if (values.dtype() == DType::f32)
      run_linear.template operator()<float>();
    else
      run_linear.template operator()<double>();
  } else {
    switch (dtype_size(values.dtype())) {
      case 1: run_nearest.template operator()<uint8_t>(); break;
      case 4: run_nearest.template operator()<uint32_t>(); break;
      case 8: run_nearest.template operator()<uint64_t>(); break;
      default: detail::throw_error(op, ": unsupported dtype ", dtype_name(values.dtype()));
    }
  }
  return out;
}

Tensor labels_to_reference_grid(const Tensor& prediction, const PreparedCase& prepared,
                                const Volume& reference) {
  const char* op = "labels_to_reference_grid";
  MED3D_CHECK(prediction.defined(), op, ": prediction is undefined");
  MED3D_CHECK(prepared.image.data.defined() && prepared.image.data.rank() == 3, op,
              ": prepared.image holds no volume [D, H, W]");
  MED3D_CHECK(reference.data.defined() && reference.data.rank() == 3, op,
              ": reference holds no volume [D, H, W]");
  const Shape& grid = prepared.image.data.shape();
  const Shape& s = prediction.shape();
  const int rank = prediction.rank();
  const bool floating = is_floating(prediction.dtype());
  const bool shape_ok = floating ? ((rank == 5 && s[0] == 1) || rank == 4) : rank == 3;
  MED3D_CHECK(shape_ok && s.dim(-3) == grid[0] && s.dim(-2) == grid[1] && s.dim(-1) == grid[2],
              op, ": expected probabilities [1, K, D, H, W] or [K, D, H, W] (floating) or labels",
              " [D, H, W] (integer) on the prepared grid ", grid.str(), ", got ", s.str(), " ",
              dtype_name(prediction.dtype()));
  const Index3 ref_shape{reference.data.dim(0), reference.data.dim(1), reference.data.dim(2)};

  // The reference must be the grid prepare_case started from, up to axis order and flips.
  const AxisMapping check = grid_mapping(op, prepared.original_affine, ref_shape, reference.affine);
  for (int a = 0; a < 3; ++a) {
    const int b = check.source_axis[a];
    const double last = static_cast<double>(ref_shape[a] - 1);
    const double first_x = check.shift[a], last_x = check.scale[a] * last + check.shift[a];
    MED3D_CHECK(ref_shape[a] == prepared.original_shape[static_cast<std::size_t>(b)] &&
                    std::abs(std::abs(check.scale[a]) - 1) < 1e-4 &&
                    std::abs(std::min(first_x, last_x)) < 1e-3,
                op, ": reference '", reference.header.path, "' (shape ", index3_str(ref_shape),
                ") is not the grid case '", prepared.id, "' was prepared from (shape ",
                index3_str(prepared.original_shape),
                " after reorientation); pass the volume read from the case's image file");
  }

  if (!floating) {
    Tensor labels = resample_to_grid(prediction, prepared.image.affine, ref_shape,
                                     reference.affine, Interpolation::nearest);
    return labels.dtype() == DType::i32 ? labels : labels.to(DType::i32);
  }
  const Tensor probs = prediction.reshape(Shape({s.dim(-4), s.dim(-3), s.dim(-2), s.dim(-1)}));
  return argmax_labels(resample_to_grid(probs, prepared.image.affine, ref_shape, reference.affine,
                                        Interpolation::linear));
}

}  // namespace med3d::trainers
