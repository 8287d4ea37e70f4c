// Resampling, median spacing from headers, intensity normalisation, prepare_case.
// Geometry and conventions: see med3d/data/preprocess.h and med3d/data/nifti.h.
#include "med3d/data/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "med3d/error.h"

namespace med3d {

namespace {

using Mat4 = std::array<double, 16>;

// Per output index along one axis: the two input taps and the weight of the second.
struct AxisTaps {
  std::vector<int64_t> i0, i1;
  std::vector<double> w1;
};

AxisTaps linear_taps(int64_t n_in, int64_t n_out, double ratio) {
  AxisTaps taps;
  taps.i0.resize(static_cast<std::size_t>(n_out));
  taps.i1.resize(static_cast<std::size_t>(n_out));
  taps.w1.resize(static_cast<std::size_t>(n_out));
  for (int64_t o = 0; o < n_out; ++o) {
    double x = (static_cast<double>(o) + 0.5) * ratio - 0.5;
    x = std::clamp(x, 0.0, static_cast<double>(n_in - 1));
    const int64_t i0 = static_cast<int64_t>(std::floor(x));
    const auto s = static_cast<std::size_t>(o);
    taps.i0[s] = i0;
    taps.i1[s] = std::min(i0 + 1, n_in - 1);
    taps.w1[s] = x - static_cast<double>(i0);
  }
  return taps;
}

std::vector<int64_t> nearest_taps(int64_t n_in, int64_t n_out, double ratio) {
  std::vector<int64_t> taps(static_cast<std::size_t>(n_out));
  for (int64_t o = 0; o < n_out; ++o) {
    const auto i = static_cast<int64_t>(std::floor((static_cast<double>(o) + 0.5) * ratio));
    taps[static_cast<std::size_t>(o)] = std::clamp<int64_t>(i, 0, n_in - 1);
  }
  return taps;
}

template <class T>
void resample_linear(const T* in, T* out, const std::array<int64_t, 3>& n_in,
                     const std::array<int64_t, 3>& n_out, const std::array<double, 3>& ratio) {
  const AxisTaps td = linear_taps(n_in[0], n_out[0], ratio[0]);
  const AxisTaps th = linear_taps(n_in[1], n_out[1], ratio[1]);
  const AxisTaps tw = linear_taps(n_in[2], n_out[2], ratio[2]);
  const int64_t hw_in = n_in[1] * n_in[2];
#pragma omp parallel for schedule(static)
  for (int64_t d = 0; d < n_out[0]; ++d) {
    const auto sd = static_cast<std::size_t>(d);
    const double wd1 = td.w1[sd], wd0 = 1.0 - wd1;
    const T* p0 = in + td.i0[sd] * hw_in;
    const T* p1 = in + td.i1[sd] * hw_in;
    for (int64_t h = 0; h < n_out[1]; ++h) {
      const auto sh = static_cast<std::size_t>(h);
      const double wh1 = th.w1[sh], wh0 = 1.0 - wh1;
      const int64_t r0 = th.i0[sh] * n_in[2], r1 = th.i1[sh] * n_in[2];
      T* row = out + (d * n_out[1] + h) * n_out[2];
      for (int64_t w = 0; w < n_out[2]; ++w) {
        const auto sw = static_cast<std::size_t>(w);
        const int64_t c0 = tw.i0[sw], c1 = tw.i1[sw];
        const double ww1 = tw.w1[sw], ww0 = 1.0 - ww1;
        auto plane = [&](const T* p) {
          return wh0 * (ww0 * static_cast<double>(p[r0 + c0]) +
                        ww1 * static_cast<double>(p[r0 + c1])) +
                 wh1 * (ww0 * static_cast<double>(p[r1 + c0]) +
                        ww1 * static_cast<double>(p[r1 + c1]));
        };
        row[w] = static_cast<T>(wd0 * plane(p0) + wd1 * plane(p1));
      }
    }
  }
}

template <class T>
void resample_nearest(const T* in, T* out, const std::array<int64_t, 3>& n_in,
                      const std::array<int64_t, 3>& n_out, const std::array<double, 3>& ratio) {
  const std::vector<int64_t> td = nearest_taps(n_in[0], n_out[0], ratio[0]);
  const std::vector<int64_t> th = nearest_taps(n_in[1], n_out[1], ratio[1]);
  const std::vector<int64_t> tw = nearest_taps(n_in[2], n_out[2], ratio[2]);
#pragma omp parallel for schedule(static)
  for (int64_t d = 0; d < n_out[0]; ++d)
    for (int64_t h = 0; h < n_out[1]; ++h) {
      const T* src = in + (td[static_cast<std::size_t>(d)] * n_in[1] +
                           th[static_cast<std::size_t>(h)]) * n_in[2];
      T* row = out + (d * n_out[1] + h) * n_out[2];
      for (int64_t w = 0; w < n_out[2]; ++w) row[w] = src[tw[static_cast<std::size_t>(w)]];
    }
}

Mat4 header_affine(const NiftiHeaderInfo& header) {
  if (header.affine_source == "sform") return header.sform;
  if (header.affine_source == "qform") return header.qform;
  Mat4 a{};
  a[0] = header.pixdim[1];
  a[5] = header.pixdim[2];
  a[10] = header.pixdim[3];
  a[15] = 1;
  return a;
}

// World axis (0 = x R/L, 1 = y A/P, 2 = z S/I) named by an orientation letter.
int world_axis(const char* op, const std::string& code, char letter) {
  switch (letter) {
    case 'R': case 'L': return 0;
    case 'A': case 'P': return 1;
    case 'S': case 'I': return 2;
  }
  detail::throw_error(op, ": orientation '", code,
                      "' must be three letters, one of R/L, A/P, S/I each (e.g. \"RAS\")");
}

template <class T>
void moments(const T* v, int64_t n, bool positive_only, double& mean, double& sd,
             int64_t& count) {
  // Two passes in double, serial and in index order: the result does not depend on threads.
  double sum = 0;
  count = 0;
  for (int64_t i = 0; i < n; ++i)
    if (!positive_only || v[i] > 0) {
      sum += static_cast<double>(v[i]);
      ++count;
    }
  mean = count > 0 ? sum / static_cast<double>(count) : 0.0;
  double ss = 0;
  for (int64_t i = 0; i < n; ++i)
    if (!positive_only || v[i] > 0) {
      const double e = static_cast<double>(v[i]) - mean;
      ss += e * e;
    }
  sd = count > 0 ? std::sqrt(ss / static_cast<double>(count)) : 0.0;
}

// Value at fractional rank `rank` of the partially sorted copy (numpy's linear method).
double value_at_rank(std::vector<double>& v, double rank) {
  const auto lo = static_cast<std::size_t>(std::floor(rank));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(lo), v.end());
  const double a = v[lo];
  double b = a;
  if (hi != lo) b = *std::min_element(v.begin() + static_cast<std::ptrdiff_t>(hi), v.end());
  return a + (b - a) * (rank - static_cast<double>(lo));
}

std::vector<double> values_of(const char* op, const Tensor& t) {
  MED3D_CHECK(t.defined() && t.numel() > 0, op, ": expected a non-empty tensor");
  MED3D_CHECK(t.device().is_cpu(), op, ": expected a CPU tensor");
  if (t.dtype() != DType::f32) {
    std::vector<double> v = t.to(DType::f64).to_vector<double>();
    for (std::size_t i = 0; i < v.size(); ++i)
      MED3D_CHECK(std::isfinite(v[i]), op, ": value ", i, " is ", v[i],
                  "; percentiles need finite values");
    return v;
  }
  const float* p = t.data<float>();  // the common case, without an intermediate tensor
  std::vector<double> v(p, p + t.numel());
  // nth_element needs a strict weak order, which NaN breaks.
  for (std::size_t i = 0; i < v.size(); ++i)
    MED3D_CHECK(std::isfinite(v[i]), op, ": value ", i, " is ", v[i],
                "; percentiles need finite values");
  return v;
}

}  // namespace

std::array<int64_t, 3> resampled_shape(const std::array<int64_t, 3>& shape,
                                       const std::array<double, 3>& spacing,
                                       const std::array<double, 3>& target_spacing) {
  std::array<int64_t, 3> out{};
  for (int a = 0; a < 3; ++a) {
    MED3D_CHECK(std::isfinite(spacing[a]) && spacing[a] > 0 && std::isfinite(target_spacing[a]) &&
                    target_spacing[a] > 0 && shape[a] > 0,
                "resample: axis ", a, " needs a positive size and spacings, got size ", shape[a],
                ", spacing ", spacing[a], " mm, target ", target_spacing[a], " mm");
    out[a] = std::max<int64_t>(
        1, std::llround(static_cast<double>(shape[a]) * spacing[a] / target_spacing[a]));
  }
  return out;
}

Volume resample(const Volume& volume, const std::array<double, 3>& target_spacing,
                Interpolation interpolation) {
  const char* op = "resample";
  MED3D_CHECK(volume.data.defined() && volume.data.rank() == 3, op,
              ": expected volume data [D, H, W], got ",
              volume.data.defined() ? volume.data.shape().str() : std::string("undefined"));
  MED3D_CHECK(volume.data.device().is_cpu(), op, ": volumes are resampled on the CPU");
  const std::array<int64_t, 3> n_in{volume.data.dim(0), volume.data.dim(1), volume.data.dim(2)};
  const std::array<int64_t, 3> n_out = resampled_shape(n_in, volume.spacing, target_spacing);
  std::array<double, 3> ratio{};
  for (int a = 0; a < 3; ++a) ratio[a] = target_spacing[a] / volume.spacing[a];

  Volume out = volume;
  out.data = volume.data.context().empty(Shape({n_out[0], n_out[1], n_out[2]}),
                                         volume.data.dtype());
  const DType dtype = volume.data.dtype();
  if (interpolation == Interpolation::linear) {
    MED3D_CHECK(dtype == DType::f32 || dtype == DType::f64, op,
                ": linear interpolation needs an f32 or f64 image, got ", dtype_name(dtype),
                "; use Interpolation::nearest for labels");
    if (dtype == DType::f32)
      resample_linear(volume.data.data<float>(), out.data.data<float>(), n_in, n_out, ratio);
    else
      resample_linear(volume.data.data<double>(), out.data.data<double>(), n_in, n_out, ratio);
  } else {
    switch (dtype) {
      case DType::f32:
        resample_nearest(volume.data.data<float>(), out.data.data<float>(), n_in, n_out, ratio);
        break;
      case DType::f64:
        resample_nearest(volume.data.data<double>(), out.data.data<double>(), n_in, n_out, ratio);
        break;
      case DType::i32:
        resample_nearest(volume.data.data<int32_t>(), out.data.data<int32_t>(), n_in, n_out,
                         ratio);
        break;
      case DType::i64:
        resample_nearest(volume.data.data<int64_t>(), out.data.data<int64_t>(), n_in, n_out,
                         ratio);
        break;
      case DType::u8:
        resample_nearest(volume.data.data<uint8_t>(), out.data.data<uint8_t>(), n_in, n_out,
                         ratio);
        break;
    }
  }

  // Voxel axis c of the affine (i, j, k) is tensor axis 2 - c. Output voxel 0 sits at input
  // index 0.5 * ratio - 0.5 along each axis; columns scale by the ratio.
  for (int c = 0; c < 3; ++c) {
    const double r = ratio[2 - c];
    const double shift = 0.5 * r - 0.5;
    for (int row = 0; row < 3; ++row) {
      out.affine[4 * row + 3] += volume.affine[4 * row + c] * shift;
      out.affine[4 * row + c] = volume.affine[4 * row + c] * r;
    }
  }
  out.spacing = target_spacing;
  return out;
}

std::array<double, 3> header_spacing(const NiftiHeaderInfo& header,
                                     const std::string& orientation) {
  const char* op = "header_spacing";
  const Mat4 affine = header_affine(header);
  std::array<double, 3> column{};  // spacing of voxel axes i, j, k
  for (int c = 0; c < 3; ++c)
    column[c] = std::sqrt(affine[c] * affine[c] + affine[4 + c] * affine[4 + c] +
                          affine[8 + c] * affine[8 + c]);
  if (orientation.empty()) return {column[2], column[1], column[0]};
  MED3D_CHECK(orientation.size() == 3, op, ": orientation '", orientation,
              "' must be three letters such as \"RAS\"");
  const std::string file_code = orientation_code(affine);
  std::array<double, 3> target{};  // spacing of the reoriented voxel axes i', j', k'
  for (int t = 0; t < 3; ++t) {
    const int axis = world_axis(op, orientation, orientation[static_cast<std::size_t>(t)]);
    bool found = false;
    for (int c = 0; c < 3 && !found; ++c)
      if (world_axis(op, file_code, file_code[static_cast<std::size_t>(c)]) == axis) {
        target[t] = column[c];
        found = true;
      }
    MED3D_CHECK(found, op, ": orientation '", orientation,
                "' must name each of the x (R/L), y (A/P) and z (S/I) axes once");
  }
  return {target[2], target[1], target[0]};
}

std::array<double, 3> median_spacing(const Dataset& dataset, const std::string& orientation) {
  MED3D_CHECK(!dataset.cases.empty(), "median_spacing: dataset '", dataset.name,
              "' has no cases");
  std::array<std::vector<double>, 3> per_axis;
  for (const DatasetCase& c : dataset.cases) {
    const std::array<double, 3> s = header_spacing(read_nifti_header(c.image_path), orientation);
    for (int a = 0; a < 3; ++a) per_axis[a].push_back(s[a]);
  }
  std::array<double, 3> median{};
  for (int a = 0; a < 3; ++a) {
    std::vector<double>& v = per_axis[a];
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    median[a] = n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  }
  return median;
}

double percentile(const Tensor& values, double p) {
  MED3D_CHECK(std::isfinite(p) && p >= 0 && p <= 100, "percentile: p must be in [0, 100], got ",
              p);
  std::vector<double> v = values_of("percentile", values);
  return value_at_rank(v, p / 100.0 * static_cast<double>(v.size() - 1));
}

std::pair<double, double> percentiles(const Tensor& values, double lower, double upper) {
  MED3D_CHECK(std::isfinite(lower) && std::isfinite(upper) && 0 <= lower && lower <= upper &&
                  upper <= 100,
              "percentiles: need 0 <= lower <= upper <= 100, got ", lower, " and ", upper);
  std::vector<double> v = values_of("percentiles", values);
  const double n1 = static_cast<double>(v.size() - 1);
  const double hi = value_at_rank(v, upper / 100.0 * n1);
  const double lo = value_at_rank(v, lower / 100.0 * n1);
  return {lo, hi};
}

Tensor normalize_intensity(const Tensor& image, const IntensityOptions& options) {
  const char* op = "normalize_intensity";
  MED3D_CHECK(image.defined() && image.numel() > 0, op, ": expected a non-empty image");
  MED3D_CHECK(image.device().is_cpu(), op, ": images are normalised on the CPU");
  Tensor out = image.to(DType::f32).clone();
  float* v = out.data<float>();
  const int64_t n = out.numel();
  switch (options.mode) {
    case IntensityMode::none:
      return out;
    case IntensityMode::percentile_zscore: {
      const auto [lo, hi] = percentiles(out, options.lower_percentile, options.upper_percentile);
      const auto flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
      for (int64_t i = 0; i < n; ++i) v[i] = std::clamp(v[i], flo, fhi);
      double mean = 0, sd = 0;
      int64_t count = 0;
      moments(v, n, false, mean, sd, count);
      MED3D_CHECK(sd > 0, op, ": the image is constant after clipping to the ",
                  options.lower_percentile, "/", options.upper_percentile,
                  " percentiles (value ", mean, "); cannot z-score it");
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i)
        v[i] = static_cast<float>((static_cast<double>(v[i]) - mean) / sd);
      return out;
    }
    case IntensityMode::ct_window: {
      const double a = options.window_min, b = options.window_max;
      MED3D_CHECK(std::isfinite(a) && std::isfinite(b) && a < b, op,
                  ": CT window needs window_min < window_max, got [", a, ", ", b, "]");
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i)
        v[i] = static_cast<float>((std::clamp(static_cast<double>(v[i]), a, b) - a) / (b - a));
      return out;
    }
    case IntensityMode::nonzero_zscore: {
      double mean = 0, sd = 0;
      int64_t count = 0;
      moments(v, n, true, mean, sd, count);
      MED3D_CHECK(count > 0 && sd > 0, op, ": nonzero_zscore needs voxels > 0 with varying "
                  "values; found ", count, " voxels > 0 (sd ", sd, ")");
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i)
        v[i] = v[i] > 0 ? static_cast<float>((static_cast<double>(v[i]) - mean) / sd) : 0.0f;
      return out;
    }
  }
  detail::throw_error(op, ": unknown intensity mode");
}

PreparedCase prepare_case(const Context& context, const DatasetCase& c,
                          const PreprocessOptions& options) {
  CaseVolumes volumes = load_case(context, c, options.read);
  PreparedCase out;
  out.id = c.id;
  out.domain = c.domain;
  if (!options.orientation.empty()) {
    volumes.image = reorient_to(volumes.image, options.orientation);
    volumes.label = reorient_to(volumes.label, options.orientation);
  }
  out.original_shape = {volumes.image.data.dim(0), volumes.image.data.dim(1),
                        volumes.image.data.dim(2)};
  out.original_spacing = volumes.image.spacing;
  out.original_affine = volumes.image.affine;
  if (options.target_spacing) {
    volumes.image = resample(volumes.image, *options.target_spacing, Interpolation::linear);
    volumes.label = resample(volumes.label, *options.target_spacing, Interpolation::nearest);
  }
  volumes.image.data = normalize_intensity(volumes.image.data, options.intensity);
  out.image = std::move(volumes.image);
  out.label = std::move(volumes.label);
  return out;
}

}  // namespace med3d
