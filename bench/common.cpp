#include "common.h"

#include <immintrin.h>
#include <omp.h>
#include <sys/resource.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "med3d/error.h"
#include "trainers/draw.h"

namespace med3d::bench {

using Clock = std::chrono::steady_clock;

Timing summarize(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  Timing timing;
  timing.runs = static_cast<int>(t.size());
  if (t.empty()) return timing;
  const std::size_t m = t.size() / 2;
  timing.median_s = t.size() % 2 ? t[m] : 0.5 * (t[m - 1] + t[m]);
  timing.min_s = t.front();
  return timing;
}

bool selected(const CommonOptions& options, const std::string& name) {
  return options.only.empty() || std::find(options.only.begin(), options.only.end(), name) != options.only.end();
}

void check_only(const CommonOptions& options, const std::vector<std::string>& known, const char* what) {
  for (const std::string& name : options.only) {
    if (std::find(known.begin(), known.end(), name) != known.end()) continue;
    std::string list;
    for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
    detail::throw_error("--only: no ", what, " named '", name, "'; pick from ", list);
  }
}

namespace {
// One call of fn, its wall-clock seconds appended to t.
void time_once(const std::function<void()>& fn, std::vector<double>& t) {
  const auto start = Clock::now();
  fn();
  t.push_back(std::chrono::duration<double>(Clock::now() - start).count());
}
}  // namespace

Timing time_runs(const std::function<void()>& fn, int warmup, int runs) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) time_once(fn, t);
  return summarize(std::move(t));
}

Alternating time_alternating(const std::function<void()>& a, const std::function<void()>& b, int warmup, int runs) {
  for (int i = 0; i < warmup; ++i) a(), b();
  std::vector<double> ta, tb, ratios;
  for (int i = 0; i < runs; ++i) {
    a();
    time_once(a, ta);
    b();
    time_once(b, tb);
    ratios.push_back(tb.back() / ta.back());
  }
  return {summarize(std::move(ta)), summarize(std::move(tb)), summarize(std::move(ratios)).median_s};
}

std::string join_shape(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  for (std::size_t i = 0; i < shape.size(); ++i) out << (i ? "x" : "") << shape[i];
  return out.str();
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  if (!(in >> a >> b >> c)) return "unknown";
  std::ostringstream out;
  out << a << ' ' << b << ' ' << c;
  return out.str();
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

namespace {

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

// Independent multiply-add chains, enough to cover the FMA latency on two pipes; the result
// is returned so the loop cannot be dropped.
float fma_loop(int64_t iterations) {
#if defined(__AVX512F__)
  using V = __m512;
  auto set = [](float v) { return _mm512_set1_ps(v); };
  auto fma = [](V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); };
  auto first = [](V v) { return _mm512_cvtss_f32(v); };
  constexpr double kLanes = 16;
#elif defined(__AVX2__) && defined(__FMA__)
  using V = __m256;
  auto set = [](float v) { return _mm256_set1_ps(v); };
  auto fma = [](V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); };
  auto first = [](V v) { return _mm256_cvtss_f32(v); };
  constexpr double kLanes = 8;
#else
  using V = float;
  auto set = [](float v) { return v; };
  auto fma = [](V a, V b, V c) { return std::fma(a, b, c); };
  auto first = [](V v) { return v; };
  constexpr double kLanes = 1;
#endif
  (void)kLanes;
  constexpr int kChains = 12;
  V acc[kChains];
  for (int j = 0; j < kChains; ++j) acc[j] = set(1.0f + 0.001f * static_cast<float>(j));
  const V m = set(0.999999f), c = set(1e-7f);
  for (int64_t i = 0; i < iterations; ++i)
    for (int j = 0; j < kChains; ++j) acc[j] = fma(acc[j], m, c);
  float total = 0;
  for (int j = 0; j < kChains; ++j) total += first(acc[j]);
  return total;
}

double fma_lanes() {
#if defined(__AVX512F__)
  return 16;
#elif defined(__AVX2__) && defined(__FMA__)
  return 8;
#else
  return 1;
#endif
}

double measure_fma(int threads, bool quick) {
  const int64_t iterations = quick ? 2'000'000 : 20'000'000;
  // Each thread times its own loop and the rates add up, best of 7: timed as one region, a
  // thread started late or paused by the host's other jobs halved the whole (93 GFLOP/s read on
  // 2 threads where 165-179 is usual).
  const double flops = 2.0 * 12 * fma_lanes() * static_cast<double>(iterations);
  double best = 0;
  for (int rep = 0; rep < 7; ++rep) {
    volatile float sink = 0;
    double total = 0;
#pragma omp parallel num_threads(threads)
    {
      const auto start = Clock::now();
      const float r = fma_loop(iterations);
      const double rate = flops / std::chrono::duration<double>(Clock::now() - start).count() / 1e9;
#pragma omp critical
      {
        sink = sink + r;
        total += rate;
      }
    }
    best = std::max(best, total);
  }
  return best;
}

double measure_sgemm(bool quick) {
  const int64_t n = quick ? 512 : 2048;
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  double best = 0;
  for (int rep = 0; rep < (quick ? 2 : 5); ++rep) {
    const auto start = Clock::now();
    c.noalias() = a * b;
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, 2.0 * static_cast<double>(n * n * n) / s / 1e9);
  }
  volatile float sink = c(0, 0);
  (void)sink;
  return best;
}

double measure_copy(int threads, bool quick) {
  const std::size_t bytes = quick ? (std::size_t(64) << 20) : (std::size_t(256) << 20);
  std::vector<char> a(bytes, 1), b(bytes, 0);
  double best = 0;
  for (int rep = 0; rep < (quick ? 2 : 5); ++rep) {
    const auto start = Clock::now();
#pragma omp parallel num_threads(threads)
    {
      const std::size_t t = static_cast<std::size_t>(omp_get_thread_num());
      const std::size_t n = static_cast<std::size_t>(omp_get_num_threads());
      const std::size_t lo = bytes * t / n, hi = bytes * (t + 1) / n;
      std::memcpy(b.data() + lo, a.data() + lo, hi - lo);
    }
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, 2.0 * static_cast<double>(bytes) / s / 1e9);
  }
  return best;
}

}  // namespace

double HostRegime::ratio() const {
  return own_line_ns > 0 ? handoff_line_ns / own_line_ns : std::numeric_limits<double>::quiet_NaN();
}

// 3x: in the placement at 3.7-4.0 (first seen on 2026-12-07, for 10-20 s at a time) layer2's
// small-scale fprop on NCDHW took 1.21-1.29 ms against 0.97-1.01 at 1.6 (in channel groups 0.94
// against 0.89; 2026-12-07d results), where the 4x this took before called it fast.
std::string HostRegime::name() const {
  if (own_line_ns <= 0) return "-";
  return ratio() > 3 ? "slow" : "fast";
}

// Thread 1 reads 256 KiB (L2-resident) right after it wrote it, or right after thread 0 wrote it;
// the median of the repetitions (the best one could be a moment when the host ran both threads on
// one vCPU). Eight independent sums so that the loads overlap (one chain of adds would time the
// adds).
HostRegime measure_host_regime(int threads, bool quick) {
  if (threads < 2) return {};
  constexpr std::size_t kFloats = (std::size_t(256) << 10) / sizeof(float), kLineFloats = 16, kChains = 8;
  std::vector<float> buffers[2] = {std::vector<float>(kFloats), std::vector<float>(kFloats)};
  std::vector<double> seconds[2];
  volatile float sink = 0;
  for (int rep = 0; rep < (quick ? 11 : 61); ++rep)
    for (int from_other = 0; from_other < 2; ++from_other) {
      double s = 0;
#pragma omp parallel num_threads(2)
      {
        const int id = omp_get_thread_num();
        std::fill(buffers[id].begin(), buffers[id].end(), static_cast<float>(rep));
#pragma omp barrier
        if (id == 1) {
          const float* src = buffers[from_other ? 0 : 1].data();
          const auto start = Clock::now();
          float sums[kChains] = {};
          for (std::size_t i = 0; i < kFloats; i += kChains * kLineFloats)
            for (std::size_t j = 0; j < kChains; ++j) sums[j] += src[i + j * kLineFloats];
          s = std::chrono::duration<double>(Clock::now() - start).count();
          for (float v : sums) sink = sink + v;
        }
      }
      seconds[from_other].push_back(s);
    }
  const double lines = static_cast<double>(kFloats / kLineFloats);
  return {summarize(seconds[0]).median_s / lines * 1e9, summarize(seconds[1]).median_s / lines * 1e9};
}

nlohmann::json to_json(const HostRegime& r) {
  return {{"regime", r.name()}, {"own_line_ns", r.own_line_ns}, {"handoff_line_ns", r.handoff_line_ns}};
}

Machine measure_machine(int threads, bool quick) {
  Machine m;
  m.threads = threads;
  m.cpu = cpu_name();
  m.load_before = load_average();
  m.fma_gflops = measure_fma(threads, quick);
  m.sgemm_gflops = measure_sgemm(quick);
  m.copy_gbs = measure_copy(threads, quick);
  m.regime = measure_host_regime(threads, quick);
  return m;
}

nlohmann::json to_json(const Machine& m) {
  return {{"cpu", m.cpu},
          {"threads", m.threads},
          {"fma_peak_gflops", m.fma_gflops},
          {"sgemm_gflops", m.sgemm_gflops},
          {"copy_gbs", m.copy_gbs},
          {"host_regime", to_json(m.regime)},
          {"load_average_before", m.load_before}};
}

void print_host_regime(const char* when, const HostRegime& r) {
  if (r.own_line_ns > 0)
    std::printf("host regime%s %s: a 64-byte line another thread has just written is read in %.2f ns, one's own "
                "in %.2f ns (slow above 3x: hand-offs of data between threads cost that much more)\n",
                when, r.name().c_str(), r.handoff_line_ns, r.own_line_ns);
}

void print_machine(const Machine& m) {
  std::printf("machine: %s, %d threads; FMA peak %.0f GFLOP/s, Eigen sgemm %.0f GFLOP/s, copy %.1f GB/s "
              "(read+write); load average %s (cores shared with other jobs)\n",
              m.cpu.c_str(), m.threads, m.fma_gflops, m.sgemm_gflops, m.copy_gbs, m.load_before.c_str());
  print_host_regime("", m.regime);
}

std::string Report::cell_text(const Cell& cell, int precision) const {
  if (const auto* text = std::get_if<std::string>(&cell)) return *text;
  const double v = std::get<double>(cell);
  if (!std::isfinite(v)) return "-";
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(std::max(precision, 0));
  out << v;
  return out.str();
}

void Report::print_table() const {
  std::vector<std::size_t> width(columns_.size());
  for (std::size_t c = 0; c < columns_.size(); ++c) {
    width[c] = columns_[c].name.size();
    for (const auto& row : rows_) width[c] = std::max(width[c], cell_text(row[c], columns_[c].precision).size());
  }
  auto line = [&](auto text_of) {
    std::string out;
    for (std::size_t c = 0; c < columns_.size(); ++c) {
      const std::string text = text_of(c);
      const std::string pad(width[c] - text.size(), ' ');
      out += c ? "  " : "";
      out += columns_[c].precision < 0 ? text + pad : pad + text;  // numbers align right
    }
    std::printf("%s\n", out.c_str());
  };
  line([&](std::size_t c) { return columns_[c].name; });
  for (const auto& row : rows_) line([&](std::size_t c) { return cell_text(row[c], columns_[c].precision); });
}

void Report::print_csv() const {
  for (std::size_t c = 0; c < columns_.size(); ++c) std::printf("%s%s", c ? "," : "", columns_[c].name.c_str());
  std::printf("\n");
  for (const auto& row : rows_) {
    for (std::size_t c = 0; c < columns_.size(); ++c)
      std::printf("%s%s", c ? "," : "", cell_text(row[c], std::max(columns_[c].precision, 4)).c_str());
    std::printf("\n");
  }
}

nlohmann::json Report::rows_json() const {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : rows_) {
    nlohmann::json object;
    for (std::size_t c = 0; c < columns_.size(); ++c) {
      if (const auto* text = std::get_if<std::string>(&row[c]))
        object[columns_[c].name] = *text;
      else if (std::isfinite(std::get<double>(row[c])))
        object[columns_[c].name] = std::get<double>(row[c]);
      else
        object[columns_[c].name] = nullptr;
    }
    rows.push_back(object);
  }
  return rows;
}

void Report::plot(const std::string& path, const std::string& title, const std::string& value,
                  const std::vector<std::string>& labels) const {
  auto column = [&](const std::string& name) {
    for (std::size_t c = 0; c < columns_.size(); ++c)
      if (columns_[c].name == name) return c;
    detail::throw_error("plot: no column '", name, "'");
  };
  const std::size_t vc = column(value);
  std::vector<std::size_t> lc;
  for (const auto& l : labels) lc.push_back(column(l));
  std::vector<std::pair<std::string, double>> bars;
  // A log axis centred on parity: slower rows grow left of 1.0, faster rows right of it.
  double low = 0.5, top = 2.0;
  for (const auto& row : rows_) {
    std::ostringstream label;
    for (std::size_t c : lc) label << (c == lc.front() ? "" : " ") << cell_text(row[c], 0);
    const double v = std::get<double>(row[vc]);
    bars.emplace_back(label.str(), v);
    if (std::isfinite(v) && v > 0) low = std::min(low, v), top = std::max(top, v);
  }
  low /= 1.3, top *= 1.3;
  namespace draw = trainers::draw;
  const int64_t bar_h = 12, gap = 4, left = 12 + draw::text_width(std::string(30, 'x')), right = 60;
  const int64_t width = left + 560 + right;
  const int64_t height = 40 + static_cast<int64_t>(bars.size()) * (bar_h + gap) + 24;
  trainers::Image image = trainers::make_image(width, height, 3, 255);
  const draw::Rgb black{0, 0, 0}, faster{46, 139, 87}, slower{205, 92, 92}, grey{120, 120, 120};
  draw::draw_text(image, 12, 12, title + " (log scale)", black, 1);
  const double span = static_cast<double>(width - left - right);
  auto x_of = [&](double v) {
    return left + static_cast<int64_t>(std::lround(span * std::log(v / low) / std::log(top / low)));
  };
  int64_t y = 32;
  for (const auto& [label, v] : bars) {
    draw::draw_text(image, 12, y + 3, label.substr(0, 30), black);
    if (std::isfinite(v) && v > 0) {
      const int64_t x0 = std::min(x_of(1.0), x_of(v)), x1 = std::max(x_of(1.0), x_of(v));
      draw::fill_rect(image, x0, y, x1 + 1, y + bar_h, v >= 1.0 ? faster : slower);
      std::ostringstream text;
      text.setf(std::ios::fixed);
      text.precision(2);
      text << v;
      draw::draw_text(image, v >= 1.0 ? x1 + 4 : x0 - 4 - draw::text_width(text.str()), y + 3, text.str(), black);
    } else {
      draw::draw_text(image, x_of(1.0) + 4, y + 3, "n/a", grey);
    }
    y += bar_h + gap;
  }
  for (int64_t yy = 28; yy < y; yy += 6) draw::fill_rect(image, x_of(1.0), yy, x_of(1.0) + 1, yy + 3, black);
  draw::draw_text(image, x_of(1.0) - 6, y + 6, "1.0", black);
  trainers::write_png(path, image);
}

void emit(const Report& report, const CommonOptions& options, nlohmann::json document,
          const std::string& plot_title, const std::string& plot_value,
          const std::vector<std::string>& plot_labels) {
  // An empty report (`machine`) has nothing to print: the ceilings were printed already.
  if (!report.empty() && options.csv) report.print_csv();
  if (!report.empty() && !options.csv) report.print_table();
  document["rows"] = report.rows_json();
  document["load_average_after"] = load_average();
  if (!options.json_path.empty()) {
    std::ofstream out(options.json_path);
    MED3D_CHECK(out.good(), "cannot write '", options.json_path, "'");
    out << document.dump(2) << "\n";
  }
  if (!options.plot_path.empty()) report.plot(options.plot_path, plot_title, plot_value, plot_labels);
}

}  // namespace med3d::bench
