#include "med3d/trainers/curves.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "med3d/error.h"
#include "trainers/draw.h"

namespace med3d::trainers {
namespace {

constexpr std::array<std::array<uint8_t, 3>, 10> kTab10 = {{
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189},
    {140, 86, 75}, {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
}};
const draw::Rgb kBlack{0, 0, 0};
const draw::Rgb kGrid{225, 225, 225};
constexpr int64_t kTitleHeight = 26;

draw::Rgb rgb(const std::array<uint8_t, 3>& c) { return {c[0], c[1], c[2]}; }

// Values beyond +-1e100 are skipped like NaN, so range arithmetic (high - low) stays finite.
bool usable(double v) { return std::isfinite(v) && std::abs(v) <= 1e100; }

// 1, 2 or 5 x 10^k, the nearest to `raw` (in ratio).
double nice_step(double raw) {
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double fraction = raw / magnitude;
  return (fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10) * magnitude;
}

struct Axis {
  double min = 0, max = 1, step = 0.2;
};

// The axis from the data range [low, high] (infinite when there is no data) and the fixed
// bounds (NaN = automatic).
Axis make_axis(double low, double high, double fixed_min, double fixed_max, int target_ticks,
               const char* what) {
  if (std::isfinite(fixed_min) && std::isfinite(fixed_max))
    MED3D_CHECK(fixed_min < fixed_max, "render_curves: the fixed ", what,
                " range must have min < max, got [", fixed_min, ", ", fixed_max, "]");
  if (!(low <= high)) low = 0, high = 1;  // no data
  if (std::isfinite(fixed_min)) low = fixed_min, high = std::max(high, low);
  if (std::isfinite(fixed_max)) high = fixed_max, low = std::min(low, high);
  if (low == high) {
    const double pad = low != 0 ? 0.1 * std::abs(low) : 1.0;
    if (!std::isfinite(fixed_min)) low -= pad;
    if (!std::isfinite(fixed_max)) high += pad;
    if (low == high) high = low + pad;  // both fixed to one value was rejected above
  }
  Axis axis;
  axis.step = nice_step((high - low) / target_ticks);
  axis.min = std::isfinite(fixed_min) ? low : std::floor(low / axis.step) * axis.step;
  axis.max = std::isfinite(fixed_max) ? high : std::ceil(high / axis.step) * axis.step;
  if (!(axis.max > axis.min)) axis.max = axis.min + axis.step;
  return axis;
}

std::vector<double> ticks(const Axis& axis) {
  std::vector<double> values;
  const double first = std::ceil(axis.min / axis.step - 1e-9);
  for (double k = first;; k += 1) {
    double v = k * axis.step;
    if (v > axis.max + 1e-9 * axis.step || values.size() > 50) break;
    if (std::abs(v) < 1e-9 * axis.step) v = 0;  // no "-0"
    values.push_back(v);
  }
  return values;
}

std::string tick_label(double value, const Axis& axis) {
  char text[32];
  const double big = std::max(std::abs(axis.min), std::abs(axis.max));
  if (big >= 1e6 || axis.step < 1e-4) {
    std::snprintf(text, sizeof text, "%.3g", value);
  } else {
    const int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(axis.step) - 1e-9)));
    std::snprintf(text, sizeof text, "%.*f", decimals, value);
  }
  return text;
}

void check_panels(const std::vector<CurvePanel>& panels, const CurvesOptions& options) {
  MED3D_CHECK(!panels.empty(), "render_curves: expected at least one panel, got none");
  const int64_t title = options.title.empty() ? 0 : kTitleHeight;
  const int64_t panel_count = static_cast<int64_t>(panels.size());
  MED3D_CHECK(options.width >= 200 && options.width <= kMaxPngSide &&
                  options.height >= title + 100 * panel_count && options.height <= kMaxPngSide,
              "render_curves: a picture of ", panels.size(), " panel(s)",
              title ? " and a title" : "", " needs width in [200, ", kMaxPngSide,
              "] and height in [", title + 100 * panel_count, ", ", kMaxPngSide, "], got ",
              options.width, " x ", options.height);
  for (const CurvePanel& panel : panels)
    for (const Series& series : panel.series)
      MED3D_CHECK(series.x.size() == series.y.size(), "render_curves: series '", series.name,
                  "' of panel '", panel.title, "' has ", series.x.size(), " x values and ",
                  series.y.size(), " y values; give one y per x");
}

void render_panel(Image& image, const CurvePanel& panel, int64_t top, int64_t bottom,
                  PlotArea& area) {
  const int64_t width = image.width;
  double x_low = INFINITY, x_high = -INFINITY, y_low = INFINITY, y_high = -INFINITY;
  for (const Series& series : panel.series)
    for (std::size_t i = 0; i < series.x.size(); ++i)
      if (usable(series.x[i]) && usable(series.y[i])) {
        x_low = std::min(x_low, series.x[i]), x_high = std::max(x_high, series.x[i]);
        y_low = std::min(y_low, series.y[i]), y_high = std::max(y_high, series.y[i]);
      }
  const int64_t header = 16, footer = panel.x_label.empty() ? 16 : 28;
  const int64_t plot_height = bottom - top - header - footer;
  const Axis x_axis = make_axis(x_low, x_high, panel.x_min, panel.x_max,
                                static_cast<int>(std::clamp<int64_t>(width / 100, 2, 10)), "x");
  const Axis y_axis = make_axis(y_low, y_high, panel.y_min, panel.y_max,
                                static_cast<int>(std::clamp<int64_t>(plot_height / 40, 2, 8)),
                                "y");
  const std::vector<double> x_ticks = ticks(x_axis), y_ticks = ticks(y_axis);
  int64_t label_width = 0;
  for (double v : y_ticks) label_width = std::max(label_width, draw::text_width(tick_label(v, y_axis)));

  area.left = 8 + label_width + 6;
  area.right = width - 16;
  area.top = top + header;
  area.bottom = bottom - footer;
  area.x_min = x_axis.min, area.x_max = x_axis.max;
  area.y_min = y_axis.min, area.y_max = y_axis.max;
  auto px = [&](double x) {
    return static_cast<double>(area.left) + (x - area.x_min) / (area.x_max - area.x_min) *
                                                static_cast<double>(area.right - area.left);
  };
  auto py = [&](double y) {
    return static_cast<double>(area.bottom) - (y - area.y_min) / (area.y_max - area.y_min) *
                                                  static_cast<double>(area.bottom - area.top);
  };

  // Grid and tick labels, then the axes over them.
  for (double v : y_ticks) {
    const int64_t y = std::lround(py(v));
    draw::fill_rect(image, area.left + 1, y, area.right + 1, y + 1, kGrid);
    draw::fill_rect(image, area.left - 3, y, area.left, y + 1, kBlack);
    const std::string text = tick_label(v, y_axis);
    draw::draw_text(image, area.left - 5 - draw::text_width(text), y - 3, text, kBlack);
  }
  int64_t last_label_end = INT64_MIN;
  for (double v : x_ticks) {
    const int64_t x = std::lround(px(v));
    draw::fill_rect(image, x, area.top, x + 1, area.bottom, kGrid);
    draw::fill_rect(image, x, area.bottom + 1, x + 1, area.bottom + 4, kBlack);
    const std::string text = tick_label(v, x_axis);
    const int64_t text_left = x - draw::text_width(text) / 2;
    if (text_left > last_label_end + 4) {  // skip labels that would overlap
      draw::draw_text(image, text_left, area.bottom + 6, text, kBlack);
      last_label_end = text_left + draw::text_width(text);
    }
  }
  draw::fill_rect(image, area.left, area.top, area.left + 1, area.bottom + 1, kBlack);
  draw::fill_rect(image, area.left, area.bottom, area.right + 1, area.bottom + 1, kBlack);
  if (!panel.x_label.empty())
    draw::draw_text(image, (area.left + area.right) / 2 - draw::text_width(panel.x_label) / 2,
                    area.bottom + 18, panel.x_label, kBlack);

  // Title on the left of the header, legend entries right-aligned.
  draw::draw_text(image, area.left, top + 4, panel.title, kBlack);
  int64_t legend_x = area.right;
  for (std::size_t s = panel.series.size(); s-- > 0;) {
    const std::string& name = panel.series[s].name;
    legend_x -= draw::text_width(name);
    draw::draw_text(image, legend_x, top + 4, name, kBlack);
    legend_x -= 16;
    draw::fill_rect(image, legend_x, top + 7, legend_x + 12, top + 9, rgb(series_colour(s)));
    legend_x -= 12;
  }

  // Series, clipped to the plot area; they may cover the axes (points at the range ends).
  const draw::Clip clip{area.left, area.top, area.right + 1, area.bottom + 1};
  for (std::size_t s = 0; s < panel.series.size(); ++s) {
    const Series& series = panel.series[s];
    const draw::Rgb colour = rgb(series_colour(s));
    const std::size_t n = series.x.size();
    auto finite = [&](std::size_t i) {
      return i < n && usable(series.x[i]) && usable(series.y[i]);
    };
    std::size_t finite_count = 0;
    for (std::size_t i = 0; i < n; ++i) finite_count += finite(i);
    for (std::size_t i = 0; i < n; ++i) {
      if (!finite(i)) continue;
      const double x = px(series.x[i]), y = py(series.y[i]);
      if (finite(i + 1))
        draw::draw_line(image, x, y, px(series.x[i + 1]), py(series.y[i + 1]), colour, 2, clip);
      const bool isolated = (i == 0 || !finite(i - 1)) && !finite(i + 1);
      const int half = isolated ? 2 : finite_count <= 30 ? 1 : -1;
      if (half >= 0)
        for (int d = -half; d <= half; ++d)
          draw::draw_line(image, x - half, y + d, x + half, y + d, colour, 1, clip);
    }
  }
}

}  // namespace

std::array<uint8_t, 3> series_colour(std::size_t index) { return kTab10[index % kTab10.size()]; }

CurvesPicture render_curves(const std::vector<CurvePanel>& panels, const CurvesOptions& options) {
  check_panels(panels, options);
  CurvesPicture picture;
  picture.image = make_image(options.width, options.height, 3, 255);
  int64_t top = 0;
  if (!options.title.empty()) {
    draw::draw_text(picture.image, options.width / 2 - draw::text_width(options.title, 2) / 2, 6,
                    options.title, kBlack, 2);
    top = kTitleHeight;
  }
  const int64_t count = static_cast<int64_t>(panels.size());
  picture.areas.resize(panels.size());
  for (int64_t p = 0; p < count; ++p) {
    const int64_t panel_top = top + (options.height - top) * p / count;
    const int64_t panel_bottom = top + (options.height - top) * (p + 1) / count;
    render_panel(picture.image, panels[static_cast<std::size_t>(p)], panel_top, panel_bottom,
                 picture.areas[static_cast<std::size_t>(p)]);
  }
  return picture;
}

void write_curves_png(const std::string& path, const std::vector<CurvePanel>& panels,
                      const CurvesOptions& options) {
  write_png(path, render_curves(panels, options).image);
}

}  // namespace med3d::trainers
