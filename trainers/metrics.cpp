#include "med3d/trainers/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "med3d/context.h"
#include "med3d/error.h"

namespace med3d::trainers {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Grid {
  int64_t d = 0, h = 0, w = 0;
  int64_t size() const { return d * h * w; }
};

void check_labels(const Tensor& t, const char* op, const char* what) {
  MED3D_CHECK(t.defined(), op, ": ", what, " is an undefined tensor; pass a [D, H, W] label tensor");
  MED3D_CHECK(t.device().is_cpu(), op, ": ", what, " must be a CPU tensor, got ", t.str(),
              "; move it with .to(Device::cpu())");
  MED3D_CHECK(t.rank() == 3, op, ": ", what, " must be a [D, H, W] label tensor, got shape ",
              t.shape().str());
  MED3D_CHECK(t.dtype() == DType::i32 || t.dtype() == DType::u8, op, ": ", what,
              " must hold labels as i32 or u8, got ", dtype_name(t.dtype()),
              "; read label files with read_label_nifti");
}

void check_spacing(const Spacing& spacing, const char* op) {
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(std::isfinite(spacing[a]) && spacing[a] > 0, op, ": spacing must be finite and > 0 mm on "
                "every axis, got {", spacing[0], ", ", spacing[1], ", ", spacing[2],
                "}; take it from the reference volume (Volume::spacing)");
}

Grid grid_of(const Tensor& t) { return {t.dim(0), t.dim(1), t.dim(2)}; }

// M = {labels == label} as bytes.
std::vector<uint8_t> mask_of(const Tensor& labels, int label) {
  std::vector<uint8_t> mask(static_cast<std::size_t>(labels.numel()));
  if (labels.dtype() == DType::u8) {
    const uint8_t* p = labels.data<uint8_t>();
    for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = p[i] == label;
  } else {
    const int32_t* p = labels.data<int32_t>();
    for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = p[i] == label;
  }
  return mask;
}

std::vector<uint8_t> nonzero_of(const Tensor& t, const char* op, const char* what) {
  MED3D_CHECK(t.defined() && t.rank() == 3 && t.dtype() == DType::u8 && t.device().is_cpu(), op,
              ": ", what, " must be a u8 [D, H, W] CPU mask, got ",
              t.defined() ? t.str() : std::string("an undefined tensor"));
  const uint8_t* p = t.data<uint8_t>();
  std::vector<uint8_t> mask(static_cast<std::size_t>(t.numel()));
  for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = p[i] != 0;
  return mask;
}

// Face-connected erosion with background outside the volume: a mask voxel is on the surface
// when one of its 6 neighbours is background or outside.
bool on_surface(const std::vector<uint8_t>& m, const Grid& g, int64_t d, int64_t h, int64_t w) {
  const int64_t i = (d * g.h + h) * g.w + w;
  if (!m[i]) return false;
  if (d == 0 || d == g.d - 1 || h == 0 || h == g.h - 1 || w == 0 || w == g.w - 1) return true;
  const int64_t sd = g.h * g.w;
  return !m[i - sd] || !m[i + sd] || !m[i - g.w] || !m[i + g.w] || !m[i - 1] || !m[i + 1];
}

std::vector<uint8_t> surface_of(const std::vector<uint8_t>& m, const Grid& g) {
  std::vector<uint8_t> s(m.size(), 0);
#pragma omp parallel for if (g.size() > (int64_t{1} << 18)) schedule(static)
  for (int64_t d = 0; d < g.d; ++d)
    for (int64_t h = 0; h < g.h; ++h)
      for (int64_t w = 0; w < g.w; ++w) s[(d * g.h + h) * g.w + w] = on_surface(m, g, d, h, w);
  return s;
}

// One line of the Felzenszwalb-Huttenlocher transform: out[q] = min_p a (q - p)^2 + f[p], a =
// spacing^2 of the axis. v, z are scratch (n and n + 1 entries). Infinite f[p] are skipped.
void transform_line(const double* f, int64_t n, double a, double* out, int64_t* v, double* z) {
  int64_t k = -1;
  for (int64_t q = 0; q < n; ++q) {
    if (f[q] == kInf) continue;
    double s = -kInf;
    while (k >= 0) {
      const int64_t p = v[k];
      s = ((f[q] + a * static_cast<double>(q * q)) - (f[p] + a * static_cast<double>(p * p))) /
          (2.0 * a * static_cast<double>(q - p));
      if (s > z[k]) break;
      --k;
    }
    if (k < 0) s = -kInf;
    ++k;
    v[k] = q;
    z[k] = s;
    z[k + 1] = kInf;
  }
  if (k < 0) {
    std::fill(out, out + n, kInf);
    return;
  }
  int64_t j = 0;
  for (int64_t q = 0; q < n; ++q) {
    while (z[j + 1] < static_cast<double>(q)) ++j;
    const double diff = static_cast<double>(q - v[j]);
    out[q] = a * diff * diff + f[v[j]];
  }
}

// In place along one axis of the grid: n elements per line at `stride`, lines enumerated by
// (outer, inner) with inner contiguous-ish offsets.
void transform_axis(std::vector<double>& values, const Grid& g, int axis, double spacing) {
  const int64_t dims[3] = {g.d, g.h, g.w};
  const int64_t strides[3] = {g.h * g.w, g.w, 1};
  const int64_t n = dims[axis];
  const int64_t lines = g.size() / std::max<int64_t>(n, 1);
  const double a = spacing * spacing;
  // The other two axes, outer first, enumerate the lines.
  int other[2], c = 0;
  for (int ax = 0; ax < 3; ++ax)
    if (ax != axis) other[c++] = ax;
  const int64_t inner_n = dims[other[1]];
#pragma omp parallel if (g.size() > (int64_t{1} << 16))
  {
    std::vector<double> line(static_cast<std::size_t>(n)), out(static_cast<std::size_t>(n));
    std::vector<int64_t> v(static_cast<std::size_t>(n));
    std::vector<double> z(static_cast<std::size_t>(n) + 1);
#pragma omp for schedule(static)
    for (int64_t l = 0; l < lines; ++l) {
      const int64_t base = (l / inner_n) * strides[other[0]] + (l % inner_n) * strides[other[1]];
      const int64_t stride = strides[axis];
      for (int64_t q = 0; q < n; ++q) line[q] = values[base + q * stride];
      transform_line(line.data(), n, a, out.data(), v.data(), z.data());
      for (int64_t q = 0; q < n; ++q) values[base + q * stride] = out[q];
    }
  }
}

std::vector<double> squared_edt(const std::vector<uint8_t>& features, const Grid& g,
                                const Spacing& spacing) {
  std::vector<double> values(features.size());
  for (std::size_t i = 0; i < features.size(); ++i) values[i] = features[i] ? 0.0 : kInf;
  if (g.size() == 0) return values;
  transform_axis(values, g, 2, spacing[2]);
  transform_axis(values, g, 1, spacing[1]);
  transform_axis(values, g, 0, spacing[0]);
  return values;
}

// Distances from each voxel of `from` to the nearest voxel of `to` (both on grid g).
std::vector<double> distances_between(const std::vector<uint8_t>& from,
                                      const std::vector<uint8_t>& to, const Grid& g,
                                      const Spacing& spacing) {
  const std::vector<double> sq = squared_edt(to, g, spacing);
  std::vector<double> out;
  for (std::size_t i = 0; i < from.size(); ++i)
    if (from[i]) out.push_back(std::sqrt(sq[i]));
  return out;
}

double mean_of(const std::vector<double>& v) {
  return v.empty() ? kNaN : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

}  // namespace

double percentile_linear(std::vector<double> values, double q) {
  MED3D_CHECK(!values.empty(), "percentile_linear: no values; pass at least one");
  MED3D_CHECK(q >= 0 && q <= 100, "percentile_linear: q must lie in [0, 100], got ", q);
  std::sort(values.begin(), values.end());
  const double position = q / 100.0 * static_cast<double>(values.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(std::floor(position));
  const std::size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (position - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

Tensor surface_mask(const Tensor& labels, int label) {
  check_labels(labels, "surface_mask", "labels");
  const Grid g = grid_of(labels);
  const std::vector<uint8_t> s = surface_of(mask_of(labels, label), g);
  Tensor out = labels.context().zeros(labels.shape(), DType::u8);
  std::copy(s.begin(), s.end(), out.data<uint8_t>());
  return out;
}

Tensor squared_distance_transform(const Tensor& features, const Spacing& spacing) {
  const char* op = "squared_distance_transform";
  check_spacing(spacing, op);
  const std::vector<uint8_t> f = nonzero_of(features, op, "features");
  const std::vector<double> sq = squared_edt(f, grid_of(features), spacing);
  Tensor out = features.context().empty(features.shape(), DType::f64);
  std::copy(sq.begin(), sq.end(), out.data<double>());
  return out;
}

std::vector<double> directed_distances(const Tensor& from, const Tensor& to,
                                       const Spacing& spacing) {
  const char* op = "directed_distances";
  check_spacing(spacing, op);
  const std::vector<uint8_t> a = nonzero_of(from, op, "from");
  const std::vector<uint8_t> b = nonzero_of(to, op, "to");
  MED3D_CHECK(from.shape() == to.shape(), op, ": shapes differ: from ", from.shape().str(),
              " vs to ", to.shape().str());
  MED3D_CHECK(std::find(b.begin(), b.end(), 1) != b.end(), op,
              ": `to` has no non-zero voxel, so no distance is defined");
  return distances_between(a, b, grid_of(from), spacing);
}

SegmentationMetrics segmentation_metrics(const Tensor& pred, const Tensor& ref,
                                         const Spacing& spacing, int label) {
  const char* op = "segmentation_metrics";
  check_labels(pred, op, "pred");
  check_labels(ref, op, "ref");
  MED3D_CHECK(pred.shape() == ref.shape(), op, ": pred and ref shapes differ: pred ",
              pred.shape().str(), " vs ref ", ref.shape().str(),
              "; resample the prediction onto the reference grid");
  check_spacing(spacing, op);

  const Grid g = grid_of(ref);
  const std::vector<uint8_t> p = mask_of(pred, label);
  const std::vector<uint8_t> r = mask_of(ref, label);
  SegmentationMetrics m;
  m.label = label;
  // Bounding box of P ∪ R: it holds both surfaces, so the distance transform on it is exact.
  int64_t lo[3] = {g.d, g.h, g.w}, hi[3] = {-1, -1, -1};
  for (int64_t d = 0; d < g.d; ++d)
    for (int64_t h = 0; h < g.h; ++h)
      for (int64_t w = 0; w < g.w; ++w) {
        const int64_t i = (d * g.h + h) * g.w + w;
        m.pred_voxels += p[i];
        m.ref_voxels += r[i];
        m.intersection += p[i] & r[i];
        if (p[i] | r[i]) {
          const int64_t x[3] = {d, h, w};
          for (int a = 0; a < 3; ++a) {
            lo[a] = std::min(lo[a], x[a]);
            hi[a] = std::max(hi[a], x[a]);
          }
        }
      }
  const int64_t np = m.pred_voxels, nr = m.ref_voxels;
  if (np == 0 && nr == 0) {
    m.dice = m.iou = 1;
    m.voe = m.rvd = 0;
    return m;  // distances stay 0
  }
  m.dice = 2.0 * static_cast<double>(m.intersection) / static_cast<double>(np + nr);
  m.iou = static_cast<double>(m.intersection) / static_cast<double>(np + nr - m.intersection);
  m.voe = 1 - m.iou;
  m.rvd = nr > 0 ? static_cast<double>(np - nr) / static_cast<double>(nr) : kNaN;
  if (np == 0 || nr == 0) {
    m.assd = m.hd95 = m.hausdorff = m.asd_pred_to_ref = m.asd_ref_to_pred = kNaN;
    return m;
  }

  const Grid box{hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1};
  std::vector<uint8_t> sp(static_cast<std::size_t>(box.size())), sr(sp.size());
  for (int64_t d = 0; d < box.d; ++d)
    for (int64_t h = 0; h < box.h; ++h)
      for (int64_t w = 0; w < box.w; ++w) {
        const int64_t j = (d * box.h + h) * box.w + w;
        sp[j] = on_surface(p, g, d + lo[0], h + lo[1], w + lo[2]);
        sr[j] = on_surface(r, g, d + lo[0], h + lo[1], w + lo[2]);
        m.pred_surface_voxels += sp[j];
        m.ref_surface_voxels += sr[j];
      }
  std::vector<double> pr = distances_between(sp, sr, box, spacing);
  const std::vector<double> rp = distances_between(sr, sp, box, spacing);
  m.asd_pred_to_ref = mean_of(pr);
  m.asd_ref_to_pred = mean_of(rp);
  pr.insert(pr.end(), rp.begin(), rp.end());
  m.assd = mean_of(pr);
  m.hausdorff = *std::max_element(pr.begin(), pr.end());
  m.hd95 = percentile_linear(std::move(pr), 95);
  return m;
}

std::vector<SegmentationMetrics> evaluate_segmentation(const Tensor& pred, const Tensor& ref,
                                                       const Spacing& spacing,
                                                       const std::vector<int>& labels) {
  MED3D_CHECK(!labels.empty(), "evaluate_segmentation: no labels to evaluate; pass the label "
              "values (e.g. {1, 2}) or take them from label_counts(ref)");
  std::vector<SegmentationMetrics> out;
  out.reserve(labels.size());
  for (int label : labels) out.push_back(segmentation_metrics(pred, ref, spacing, label));
  return out;
}

std::vector<std::pair<int, int64_t>> label_counts(const Tensor& labels) {
  check_labels(labels, "label_counts", "labels");
  std::map<int, int64_t> counts;
  if (labels.dtype() == DType::u8) {
    int64_t hist[256] = {};
    const uint8_t* p = labels.data<uint8_t>();
    for (int64_t i = 0; i < labels.numel(); ++i) ++hist[p[i]];
    for (int v = 1; v < 256; ++v)
      if (hist[v]) counts[v] = hist[v];
  } else {
    const int32_t* p = labels.data<int32_t>();
    for (int64_t i = 0; i < labels.numel(); ++i)
      if (p[i] != 0) ++counts[p[i]];
  }
  return {counts.begin(), counts.end()};
}

double mean_skip_nan(const std::vector<double>& values) {
  double sum = 0;
  int64_t n = 0;
  for (double v : values)
    if (!std::isnan(v)) {
      sum += v;
      ++n;
    }
  return n > 0 ? sum / static_cast<double>(n) : kNaN;
}

std::vector<SegmentationSummary> mean_over_cases(
    const std::vector<std::vector<SegmentationMetrics>>& cases) {
  std::vector<int> order;
  std::map<int, std::vector<const SegmentationMetrics*>> by_label;
  for (const auto& c : cases)
    for (const auto& m : c) {
      auto& list = by_label[m.label];
      if (list.empty()) order.push_back(m.label);
      list.push_back(&m);
    }
  std::vector<SegmentationSummary> out;
  for (int label : order) {
    const auto& list = by_label[label];
    SegmentationSummary s;
    s.label = label;
    s.cases = static_cast<int64_t>(list.size());
    auto mean = [&](double SegmentationMetrics::*field) {
      std::vector<double> v;
      for (const SegmentationMetrics* m : list) v.push_back(m->*field);
      return mean_skip_nan(v);
    };
    s.dice = mean(&SegmentationMetrics::dice);
    s.iou = mean(&SegmentationMetrics::iou);
    s.voe = mean(&SegmentationMetrics::voe);
    s.rvd = mean(&SegmentationMetrics::rvd);
    s.assd = mean(&SegmentationMetrics::assd);
    s.hd95 = mean(&SegmentationMetrics::hd95);
    s.hausdorff = mean(&SegmentationMetrics::hausdorff);
    int64_t inter = 0, total = 0;
    for (const SegmentationMetrics* m : list) {
      inter += m->intersection;
      total += m->pred_voxels + m->ref_voxels;
      s.cases_with_distances += !std::isnan(m->assd);
    }
    s.dice_global = total > 0 ? 2.0 * static_cast<double>(inter) / static_cast<double>(total) : 1.0;
    out.push_back(s);
  }
  return out;
}

double accuracy(const std::vector<int>& predicted, const std::vector<int>& truth) {
  MED3D_CHECK(!truth.empty(), "accuracy: no samples; pass at least one prediction");
  MED3D_CHECK(predicted.size() == truth.size(), "accuracy: ", predicted.size(),
              " predictions but ", truth.size(), " true classes; pass one prediction per sample");
  int64_t hits = 0;
  for (std::size_t i = 0; i < truth.size(); ++i) hits += predicted[i] == truth[i];
  return static_cast<double>(hits) / static_cast<double>(truth.size());
}

double roc_auc(const std::vector<double>& scores, const std::vector<int>& positive) {
  MED3D_CHECK(scores.size() == positive.size(), "roc_auc: ", scores.size(), " scores but ",
              positive.size(), " labels; pass one score per sample");
  int64_t npos = 0;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    MED3D_CHECK(positive[i] == 0 || positive[i] == 1, "roc_auc: labels must be 0 or 1, sample ",
                i, " has ", positive[i]);
    MED3D_CHECK(std::isfinite(scores[i]), "roc_auc: score of sample ", i, " is ", scores[i],
                "; scores must be finite");
    npos += positive[i];
  }
  const int64_t nneg = static_cast<int64_t>(scores.size()) - npos;
  MED3D_CHECK(npos > 0 && nneg > 0, "roc_auc: undefined with ", npos, " positives and ", nneg,
              " negatives; the samples need both classes");
  // Mann-Whitney U from mid-ranks: tied scores share the mean of their ranks, which counts
  // each positive-negative tie as 1/2.
  std::vector<std::size_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });
  double rank_sum = 0;
  for (std::size_t i = 0; i < idx.size();) {
    std::size_t j = i;
    while (j + 1 < idx.size() && scores[idx[j + 1]] == scores[idx[i]]) ++j;
    const double mid_rank = (static_cast<double>(i + 1) + static_cast<double>(j + 1)) / 2;
    for (std::size_t t = i; t <= j; ++t)
      if (positive[idx[t]]) rank_sum += mid_rank;
    i = j + 1;
  }
  const double u = rank_sum - static_cast<double>(npos) * static_cast<double>(npos + 1) / 2;
  return u / (static_cast<double>(npos) * static_cast<double>(nneg));
}

RocAuc roc_auc_one_vs_rest(const std::vector<std::vector<double>>& scores,
                           const std::vector<int>& truth) {
  const char* op = "roc_auc_one_vs_rest";
  MED3D_CHECK(!scores.empty(), op, ": no samples");
  MED3D_CHECK(scores.size() == truth.size(), op, ": ", scores.size(), " score rows but ",
              truth.size(), " true classes");
  const std::size_t k = scores[0].size();
  MED3D_CHECK(k >= 2, op, ": needs scores for K >= 2 classes, got ", k);
  for (std::size_t i = 0; i < scores.size(); ++i) {
    MED3D_CHECK(scores[i].size() == k, op, ": sample ", i, " has ", scores[i].size(),
                " scores, sample 0 has ", k, "; every sample needs one score per class");
    MED3D_CHECK(truth[i] >= 0 && static_cast<std::size_t>(truth[i]) < k, op, ": class of sample ",
                i, " is ", truth[i], ", outside [0, ", k, ")");
  }
  RocAuc out;
  out.per_class.assign(k, kNaN);
  double sum = 0;
  for (std::size_t c = 0; c < k; ++c) {
    std::vector<double> column(scores.size());
    std::vector<int> positive(scores.size());
    int64_t npos = 0;
    for (std::size_t i = 0; i < scores.size(); ++i) {
      column[i] = scores[i][c];
      positive[i] = truth[i] == static_cast<int>(c);
      npos += positive[i];
    }
    if (npos == 0 || npos == static_cast<int64_t>(scores.size())) continue;
    out.per_class[c] = roc_auc(column, positive);
    sum += out.per_class[c];
    ++out.classes_defined;
  }
  MED3D_CHECK(out.classes_defined > 0, op, ": no class has both positive and negative samples, "
              "so no AUC is defined");
  out.macro = sum / out.classes_defined;
  return out;
}

}  // namespace med3d::trainers
