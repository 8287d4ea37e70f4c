// Line plots of training curves as PNG: one or more panels stacked top to bottom (e.g.
// training loss per step or epoch above, validation Dice per epoch below), each with its own
// axes, grid, tick labels, title and legend, written with a built-in 5x7 bitmap font.
//
// Data: each Series is a list of (x[i], y[i]) points drawn in the given order, joined by
// 2-pixel lines in the series' colour (series_colour(index within the panel)). A point with a
// non-finite x or y (or one beyond +-1e100) is skipped and breaks the line; a point with no finite neighbour (a single
// point, or one between gaps) is drawn as a 5x5 square, and series of at most 30 points get a
// 3x3 marker on every point. Empty series still appear in the legend.
// Ranges: from the finite points of the panel's series, unless fixed by x_min/x_max/y_min/
// y_max (NaN = automatic, per bound). An automatic range is widened to "nice" tick steps
// (1, 2 or 5 x 10^k); a range of one value v is widened by 10% of |v| (1 when v = 0); a
// panel without points gets [0, 1]. Lines are clipped to the plot area.
// Layout: the picture is width x height pixels (RGB, white background): an optional title
// (twice the font size) at the top, then the panels sharing the remaining height equally.
// render_curves returns, for each panel, the plot area's pixel rectangle and data range so
// callers (and tests) can map data to pixels: pixel x = left + (x - x_min) / (x_max - x_min)
// * (right - left), pixel y = bottom - (y - y_min) / (y_max - y_min) * (bottom - top).
// Errors (med3d::Error): x and y of different lengths, no panels, a picture too small for its
// panels (under 200 pixels wide or 100 pixels of height per panel), a fixed range with
// min >= max.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "med3d/trainers/png.h"

namespace med3d::trainers {

struct Series {
  std::string name;
  std::vector<double> x;
  std::vector<double> y;
};

struct CurvePanel {
  std::string title;    // shown above the plot, left (e.g. "training loss")
  std::string x_label;  // shown under the x tick labels (e.g. "epoch")
  std::vector<Series> series;
  double x_min = std::numeric_limits<double>::quiet_NaN();
  double x_max = std::numeric_limits<double>::quiet_NaN();
  double y_min = std::numeric_limits<double>::quiet_NaN();
  double y_max = std::numeric_limits<double>::quiet_NaN();
};

struct CurvesOptions {
  int64_t width = 800;
  int64_t height = 500;
  std::string title;
};

struct PlotArea {
  int64_t left = 0, top = 0, right = 0, bottom = 0;  // pixels, inclusive
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
};

struct CurvesPicture {
  Image image;                 // RGB
  std::vector<PlotArea> areas; // one per panel, top to bottom
};

// Colour of the series at `index` in its panel (matplotlib's ten "tab" colours, repeating).
std::array<uint8_t, 3> series_colour(std::size_t index);

CurvesPicture render_curves(const std::vector<CurvePanel>& panels,
                            const CurvesOptions& options = {});

// Renders and writes the picture atomically (see write_png).
void write_curves_png(const std::string& path, const std::vector<CurvePanel>& panels,
                      const CurvesOptions& options = {});

}  // namespace med3d::trainers
