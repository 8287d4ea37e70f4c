// Training pictures and logs (trainers/): PNG files, slice overlays, curve plots, the
// progress line and the metrics log. Expected values are computed here independently of the
// library: pixel positions from the documented geometry, colours from the documented palette.
#include <stdlib.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "med3d/med3d.h"
#include "med3d/trainers/curves.h"
#include "med3d/trainers/metrics_log.h"
#include "med3d/trainers/overlay.h"
#include "med3d/trainers/png.h"
#include "med3d/trainers/progress.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace med3d;
using namespace med3d::trainers;

namespace {

using TempDir = med3d::test::ScratchDir;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

using Rgb = std::array<uint8_t, 3>;

Rgb pixel(const Image& image, int64_t x, int64_t y) {
  const uint8_t* p = image.pixels.data() + (y * image.width + x) * image.channels;
  return {p[0], p[1], p[2]};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// PNG

TEST_CASE("pictures: PNG round trip is exact for gray RGB and RGBA", "[pictures]") {
  TempDir dir;
  for (const int channels : {1, 3, 4}) {
    Image image = make_image(7, 5, channels);
    for (std::size_t i = 0; i < image.pixels.size(); ++i)
      image.pixels[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
    const std::string path = dir.file("image" + std::to_string(channels) + ".png");
    write_png(path, image);
    const Image back = read_png(path);
    CHECK(back.width == 7);
    CHECK(back.height == 5);
    CHECK(back.channels == channels);
    CHECK(back.pixels == image.pixels);
  }
  // Overwriting replaces the file whole and leaves no temporary file behind.
  Image small = make_image(2, 3, 3, 9);
  write_png(dir.file("image3.png"), small);
  CHECK(read_png(dir.file("image3.png")).pixels == small.pixels);
  CHECK(dir.count() == 3);
}

TEST_CASE("pictures: PNG errors name the problem", "[pictures]") {
  TempDir dir;
  Image bad = make_image(4, 4, 3);
  bad.pixels.pop_back();
  CHECK_THROWS_WITH(write_png(dir.file("bad.png"), bad), Catch::Contains("needs 48 bytes"));
  Image two = make_image(4, 4, 3);
  two.channels = 2;
  CHECK_THROWS_WITH(write_png(dir.file("two.png"), two), Catch::Contains("channels must be"));
  CHECK_THROWS_WITH(write_png(dir.file("no_such_folder/x.png"), make_image(1, 1, 1)),
                    Catch::Contains("cannot create"));
  CHECK_THROWS_WITH(read_png(dir.file("missing.png")), Catch::Contains("cannot open"));
  std::ofstream(dir.file("text.png")) << "not a picture at all";
  CHECK_THROWS_WITH(read_png(dir.file("text.png")), Catch::Contains("not a PNG"));
  // A truncated file: the first half of a valid one.
  write_png(dir.file("whole.png"), make_image(64, 64, 3, 77));
  const std::string whole = slurp(dir.file("whole.png"));
  std::ofstream(dir.file("half.png"), std::ios::binary) << whole.substr(0, whole.size() / 2);
  CHECK_THROWS_AS(read_png(dir.file("half.png")), Error);
  CHECK(dir.count() == 3);  // text.png, whole.png, half.png: no temporary files left
}

// ---------------------------------------------------------------------------------------------
// Overlays

namespace {

// Volume [4, 8, 16] with spacing {2, 1, 0.5} mm: every plane is 8 x 8 mm, so every picture is
// 256 x 256 with voxel blocks of (rows x columns) axial 32 x 16, coronal 64 x 16, sagittal
// 64 x 32 pixels.
constexpr int64_t kD = 4, kH = 8, kW = 16;

float voxel_value(int64_t d, int64_t h, int64_t w) {
  return static_cast<float>(d * 128 + h * 16 + w);
}

// Reference: label 1 on d 1..3, h 2..6, w 5..11 with label 2 on the single voxel (2, 4, 8);
// centroid of the non-zero voxels (2, 4, 8). Prediction: label 1 on d 1..3, h 3..7, w 5..11.
int32_t reference_label(int64_t d, int64_t h, int64_t w) {
  if (d == 2 && h == 4 && w == 8) return 2;
  return d >= 1 && d <= 3 && h >= 2 && h <= 6 && w >= 5 && w <= 11 ? 1 : 0;
}
int32_t prediction_label(int64_t d, int64_t h, int64_t w) {
  return d >= 1 && d <= 3 && h >= 3 && h <= 7 && w >= 5 && w <= 11 ? 1 : 0;
}

// numpy.percentile(values 0..511, q) with linear interpolation.
double ramp_percentile(double q) { return q / 100.0 * 511.0; }

uint8_t expected_grey(double v) {
  const double low = ramp_percentile(0.5), high = ramp_percentile(99.5);
  const double t = std::min(1.0, std::max(0.0, (v - low) / (high - low)));
  return static_cast<uint8_t>(std::lround(t * 255.0));
}

}  // namespace

TEST_CASE("pictures: overlay contours lie exactly on the label borders of each plane", "[pictures]") {
  Context context;
  std::vector<float> image_values;
  std::vector<int32_t> reference_values, prediction_values;
  for (int64_t d = 0; d < kD; ++d)
    for (int64_t h = 0; h < kH; ++h)
      for (int64_t w = 0; w < kW; ++w) {
        image_values.push_back(voxel_value(d, h, w));
        reference_values.push_back(reference_label(d, h, w));
        prediction_values.push_back(prediction_label(d, h, w));
      }
  const Tensor image = context.from_vector(Shape{kD, kH, kW}, image_values);
  const Tensor reference = context.from_vector(Shape{kD, kH, kW}, reference_values);
  const Tensor prediction = context.from_vector(Shape{kD, kH, kW}, prediction_values);
  OverlayOptions options;
  options.annotate = false;
  const std::vector<OverlayPlane> planes =
      render_overlays(image, {2.0, 1.0, 0.5}, reference, prediction, options);
  REQUIRE(planes.size() == 3);

  // The documented palette: label 1 red, label 2 green, repeating every 8 values.
  CHECK(label_colour(1) == Rgb{230, 25, 75});
  CHECK(label_colour(2) == Rgb{60, 180, 75});
  CHECK(label_colour(9) == label_colour(1));

  struct Expect {
    const char* name;
    int fixed;
    int64_t slice;
    int row_axis, col_axis;
    int64_t block_rows, block_cols;
  };
  const Expect expects[3] = {{"axial", 0, 2, 1, 2, 32, 16},
                             {"coronal", 1, 4, 0, 2, 64, 16},
                             {"sagittal", 2, 8, 0, 1, 64, 32}};
  const int64_t sizes[3] = {kD, kH, kW};
  for (int p = 0; p < 3; ++p) {
    const Expect& e = expects[p];
    const OverlayPlane& plane = planes[static_cast<std::size_t>(p)];
    INFO("plane " << e.name);
    CHECK(plane.name == e.name);
    CHECK(plane.axis == e.fixed);
    CHECK(plane.slice == e.slice);
    REQUIRE(plane.image.width == 256);
    REQUIRE(plane.image.height == 256);
    REQUIRE(plane.image.channels == 3);
    // Radiological display: row 0 shows the highest index of the row axis, column 0 the
    // highest index of the column axis.
    auto voxel = [&](int64_t x, int64_t y) {
      std::array<int64_t, 3> index{};
      index[static_cast<std::size_t>(e.fixed)] = e.slice;
      index[static_cast<std::size_t>(e.row_axis)] = sizes[e.row_axis] - 1 - y / e.block_rows;
      index[static_cast<std::size_t>(e.col_axis)] = sizes[e.col_axis] - 1 - x / e.block_cols;
      return index;
    };
    auto label_at = [&](bool reference_map, int64_t x, int64_t y) -> int32_t {
      if (x < 0 || y < 0 || x >= 256 || y >= 256) return -1;  // outside: differs from all
      const auto i = voxel(x, y);
      return reference_map ? reference_label(i[0], i[1], i[2]) : prediction_label(i[0], i[1], i[2]);
    };
    auto contour = [&](bool reference_map, int64_t x, int64_t y) {
      const int32_t l = label_at(reference_map, x, y);
      return l > 0 && (label_at(reference_map, x - 1, y) != l || label_at(reference_map, x + 1, y) != l ||
                       label_at(reference_map, x, y - 1) != l || label_at(reference_map, x, y + 1) != l);
    };
    // Prediction dashes: breadth-first distance along the 8-connected contour pixels from the
    // first pixel of each piece in raster order; 4 pixels coloured, then 4 black.
    std::vector<int64_t> along(256 * 256, -1);
    for (int64_t start = 0; start < 256 * 256; ++start) {
      if (!contour(false, start % 256, start / 256) || along[start] >= 0) continue;
      std::deque<int64_t> queue{start};
      along[start] = 0;
      while (!queue.empty()) {
        const int64_t p = queue.front();
        queue.pop_front();
        for (int64_t n : {p - 257, p - 256, p - 255, p - 1, p + 1, p + 255, p + 256, p + 257}) {
          if (n < 0 || n >= 256 * 256 || std::abs(n % 256 - p % 256) > 1) continue;
          if (!contour(false, n % 256, n / 256) || along[n] >= 0) continue;
          along[n] = along[p] + 1;
          queue.push_back(n);
        }
      }
    }
    int64_t mismatches = 0, reference_pixels = 0, prediction_pixels = 0, gaps = 0;
    for (int64_t y = 0; y < 256; ++y)
      for (int64_t x = 0; x < 256; ++x) {
        const auto i = voxel(x, y);
        const uint8_t g = expected_grey(voxel_value(i[0], i[1], i[2]));
        Rgb expected{g, g, g};
        if (contour(true, x, y)) {
          expected = label_colour(label_at(true, x, y));
          ++reference_pixels;
        }
        if (contour(false, x, y)) {
          const bool gap = (along[y * 256 + x] / 4) % 2 == 1;
          expected = gap ? Rgb{0, 0, 0} : label_colour(label_at(false, x, y));
          ++prediction_pixels;
          gaps += gap;
        }
        if (pixel(plane.image, x, y) != expected) {
          if (mismatches < 5)
            UNSCOPED_INFO("pixel (" << x << ", " << y << ") is " << int(pixel(plane.image, x, y)[0])
                                    << "," << int(pixel(plane.image, x, y)[1]) << ","
                                    << int(pixel(plane.image, x, y)[2]) << " expected "
                                    << int(expected[0]) << "," << int(expected[1]) << ","
                                    << int(expected[2]));
          ++mismatches;
        }
      }
    CHECK(gaps > prediction_pixels / 3);  // about half the prediction contour is gaps
    CHECK(gaps < prediction_pixels * 2 / 3);
    CHECK(mismatches == 0);
    CHECK(reference_pixels > 100);  // the planes do show both contours
    CHECK(prediction_pixels > 50);
  }
  // The axial cube outline by hand: rows 32..191 (h 6..2), columns 64..175 (w 11..5).
  const Image& axial = planes[0].image;
  CHECK(pixel(axial, 100, 32) == label_colour(1));   // top edge (h = 6, anterior)
  CHECK(pixel(axial, 64, 180) == label_colour(1));   // left edge (w = 11, patient's right)
  CHECK(pixel(axial, 175, 180) == label_colour(1));  // right edge (w = 5) below the prediction
  // The prediction outline starts at its top-left corner (64, 0); (175, y) lies 110 + y
  // pixels along it (the diagonal step at the corner saves one).
  CHECK(pixel(axial, 175, 100) == label_colour(1));  // 210: a dash, over the reference
  CHECK(pixel(axial, 175, 104) == Rgb{0, 0, 0});     // 214: a gap
  CHECK(pixel(axial, 100, 33)[0] == pixel(axial, 100, 33)[1]);  // inside: grey
}

TEST_CASE("pictures: overlays without labels use the volume centre and write three files", "[pictures]") {
  Context context;
  TempDir dir;
  std::vector<float> values(static_cast<std::size_t>(5 * 6 * 7));
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 13);
  const Tensor image = context.from_vector(Shape{5, 6, 7}, values);
  const std::vector<std::string> paths =
      write_overlays(dir.file("pictures"), "case_007", image, {3.0, 1.0, 1.0});
  REQUIRE(paths.size() == 3);
  CHECK(paths[0] == dir.file("pictures/case_007_axial.png"));
  CHECK(paths[1] == dir.file("pictures/case_007_coronal.png"));
  CHECK(paths[2] == dir.file("pictures/case_007_sagittal.png"));
  // Axial 6 x 7 mm: 256 x round(7 / 6 * 256) = 299. Coronal and sagittal are 15 mm tall:
  // coronal 15 x 7 mm -> pixel 7/256 mm -> 549 x 256; sagittal 15 x 6 mm -> 640 x 256.
  const int64_t expected[3][2] = {{299, 256}, {256, 549}, {256, 640}};
  for (int p = 0; p < 3; ++p) {
    const Image back = read_png(paths[static_cast<std::size_t>(p)]);
    CHECK(back.width == expected[p][0]);
    CHECK(back.height == expected[p][1]);
  }
  const std::vector<OverlayPlane> planes = render_overlays(image, {3.0, 1.0, 1.0});
  CHECK(planes[0].slice == 2);
  CHECK(planes[1].slice == 3);
  CHECK(planes[2].slice == 3);
  // An empty reference falls back to the prediction's centre.
  std::vector<int32_t> empty(values.size(), 0), one(values.size(), 0);
  one[(4 * 6 + 1) * 7 + 6] = 3;  // voxel (4, 1, 6)
  const std::vector<OverlayPlane> from_prediction = render_overlays(
      image, {3.0, 1.0, 1.0}, context.from_vector(Shape{5, 6, 7}, empty),
      context.from_vector(Shape{5, 6, 7}, one));
  CHECK(from_prediction[0].slice == 4);
  CHECK(from_prediction[1].slice == 1);
  CHECK(from_prediction[2].slice == 6);

  CHECK_THROWS_WITH(render_overlays(image, {1.0, 0.0, 1.0}), Catch::Contains("spacing"));
  CHECK_THROWS_WITH(render_overlays(image, {1, 1, 1}, context.zeros(Shape{5, 6, 8}, DType::i32)),
                    Catch::Contains("shape"));
  CHECK_THROWS_WITH(write_overlays(dir.path(), "a/b", image, {1, 1, 1}),
                    Catch::Contains("plain file name"));
}

// ---------------------------------------------------------------------------------------------
// Curves

TEST_CASE("pictures: curves draw lines through the data points and skip NaN gaps", "[pictures]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CurvePanel loss;
  loss.title = "training loss";
  loss.x_label = "epoch";
  Series decay{"train", {}, {}};
  for (int i = 0; i <= 40; ++i) {
    decay.x.push_back(i * 0.25);
    decay.y.push_back(1.0 / (1.0 + i * 0.25));
  }
  Series flat{"flat", {0, 10}, {0.5, 0.5}};
  loss.series = {decay, flat};
  CurvePanel dice;
  dice.title = "validation Dice";
  dice.y_min = 0;
  dice.y_max = 1;
  dice.series = {Series{"liver", {1, 2, 3, 4}, {0.2, nan, 0.6, 0.8}},
                 Series{"single", {2}, {0.5}}, Series{"empty", {}, {}}};
  CurvesOptions options;
  options.title = "run 1";
  const CurvesPicture picture = render_curves({loss, dice}, options);
  REQUIRE(picture.image.width == 800);
  REQUIRE(picture.image.height == 500);
  REQUIRE(picture.areas.size() == 2);
  const PlotArea& top = picture.areas[0];
  const PlotArea& bottom = picture.areas[1];
  CHECK(top.bottom < bottom.top);
  CHECK(top.x_min <= 0);
  CHECK(top.x_max >= 10);
  CHECK(top.y_min <= 1.0 / 11);
  CHECK(top.y_max >= 1.0);
  CHECK(bottom.y_min == 0);
  CHECK(bottom.y_max == 1);

  auto to_pixel = [](const PlotArea& a, double x, double y) {
    return std::array<int64_t, 2>{
        std::lround(a.left + (x - a.x_min) / (a.x_max - a.x_min) * (a.right - a.left)),
        std::lround(a.bottom - (y - a.y_min) / (a.y_max - a.y_min) * (a.bottom - a.top))};
  };
  auto colour_at = [&](const PlotArea& a, double x, double y) {
    const auto p = to_pixel(a, x, y);
    return pixel(picture.image, p[0], p[1]);
  };
  // Every point of the decay curve and points on the segments between them.
  for (std::size_t i = 1; i + 1 < decay.x.size(); ++i) {
    if (std::abs(decay.y[i] - 0.5) < 0.05) continue;  // where the flat line crosses it
    INFO("point " << i);
    CHECK(colour_at(top, decay.x[i], decay.y[i]) == series_colour(0));
  }
  // The flat series: a horizontal line; every pixel of its colour in the plot lies within one
  // row of y = 0.5.
  const int64_t flat_row = to_pixel(top, 0, 0.5)[1];
  int64_t flat_pixels = 0, stray = 0;
  for (int64_t y = top.top; y <= top.bottom; ++y)
    for (int64_t x = top.left + 1; x <= top.right; ++x)
      if (pixel(picture.image, x, y) == series_colour(1)) {
        ++flat_pixels;
        stray += std::abs(y - flat_row) > 1;
      }
  CHECK(flat_pixels >= top.right - top.left);
  CHECK(stray == 0);
  // Dice: x = 1 is isolated by the NaN (a marker, no line to x = 3); 3 -> 4 is a line.
  CHECK(colour_at(bottom, 1, 0.2) == series_colour(0));
  CHECK(colour_at(bottom, 3, 0.6) == series_colour(0));
  CHECK(colour_at(bottom, 3.5, 0.7) == series_colour(0));
  CHECK(colour_at(bottom, 2, 0.4) != series_colour(0));  // midway across the NaN gap
  CHECK(colour_at(bottom, 2, 0.5) == series_colour(1));  // the single point's marker
  // The picture is mostly white background with black axes and text.
  int64_t white = 0, black = 0;
  for (std::size_t i = 0; i < picture.image.pixels.size(); i += 3) {
    const uint8_t* p = picture.image.pixels.data() + i;
    white += p[0] == 255 && p[1] == 255 && p[2] == 255;
    black += p[0] == 0 && p[1] == 0 && p[2] == 0;
  }
  CHECK(white > 800 * 500 / 2);
  CHECK(black > 1000);
}

TEST_CASE("pictures: curves handle empty constant and single-point data and reject bad input", "[pictures]") {
  TempDir dir;
  CurvePanel nothing;
  nothing.title = "no data yet";
  write_curves_png(dir.file("curves.png"), {nothing});
  const Image back = read_png(dir.file("curves.png"));
  CHECK(back.width == 800);
  CHECK(back.height == 500);
  CHECK(back.channels == 3);

  CurvePanel single;
  single.series = {Series{"loss", {3}, {0.25}}};
  const CurvesPicture one = render_curves({single}, {400, 300, ""});
  const PlotArea& a = one.areas[0];
  CHECK(a.x_min < 3);
  CHECK(a.x_max > 3);
  CHECK(a.y_min < 0.25);
  CHECK(a.y_max > 0.25);
  const int64_t cx = std::lround(a.left + (3 - a.x_min) / (a.x_max - a.x_min) * (a.right - a.left));
  const int64_t cy = std::lround(a.bottom - (0.25 - a.y_min) / (a.y_max - a.y_min) * (a.bottom - a.top));
  for (int dy = -2; dy <= 2; ++dy)
    for (int dx = -2; dx <= 2; ++dx) CHECK(pixel(one.image, cx + dx, cy + dy) == series_colour(0));

  CurvePanel all_nan;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  all_nan.series = {Series{"loss", {1, 2, nan}, {nan, nan, 1}}};
  const CurvesPicture empty = render_curves({all_nan}, {400, 300, ""});
  CHECK(empty.areas[0].x_min == 0);
  CHECK(empty.areas[0].x_max == 1);
  int64_t coloured = 0;
  for (std::size_t i = 0; i < empty.image.pixels.size(); i += 3)
    coloured += Rgb{empty.image.pixels[i], empty.image.pixels[i + 1], empty.image.pixels[i + 2]} ==
                series_colour(0);
  CHECK(coloured == 24);  // only the 12 x 2 legend swatch

  // A constant series gets a range around its value; absurd values are skipped like NaN.
  CurvePanel constant;
  constant.series = {Series{"loss", {0, 1, 2}, {5, 5, 5}}};
  const PlotArea c = render_curves({constant}, {400, 300, ""}).areas[0];
  CHECK(c.y_min <= 4.5);
  CHECK(c.y_max >= 5.5);
  CHECK(c.y_max - c.y_min <= 2);
  CurvePanel wild;
  wild.series = {Series{"loss", {1, 2, 3}, {1, 1e300, 2}}};
  const PlotArea w = render_curves({wild}, {400, 300, ""}).areas[0];
  CHECK(w.y_min <= 1);
  CHECK(w.y_max >= 2);
  CHECK(w.y_max <= 3);

  CurvePanel mismatched;
  mismatched.series = {Series{"loss", {1, 2}, {1}}};
  CHECK_THROWS_WITH(render_curves({mismatched}), Catch::Contains("2 x values and 1 y values"));
  CHECK_THROWS_WITH(render_curves({nothing, nothing, nothing}, {800, 250, ""}),
                    Catch::Contains("needs width"));
  CHECK_THROWS_WITH(render_curves({}), Catch::Contains("at least one panel"));
  CurvePanel inverted;
  inverted.y_min = 1;
  inverted.y_max = 0;
  CHECK_THROWS_WITH(render_curves({inverted}), Catch::Contains("min < max"));
}

// ---------------------------------------------------------------------------------------------
// Progress line

TEST_CASE("pictures: format_duration", "[pictures]") {
  CHECK(format_duration(0) == "0s");
  CHECK(format_duration(45.2) == "45s");
  CHECK(format_duration(59.6) == "1m00s");
  CHECK(format_duration(83) == "1m23s");
  CHECK(format_duration(3599) == "59m59s");
  CHECK(format_duration(3600) == "1h00m");
  CHECK(format_duration(3700) == "1h01m");
  CHECK(format_duration(86399) == "23h59m");
  CHECK(format_duration(200000) == "2d07h");
  CHECK(format_duration(-1) == "--");
  CHECK(format_duration(std::numeric_limits<double>::quiet_NaN()) == "--");
  CHECK(format_duration(std::numeric_limits<double>::infinity()) == "--");
  CHECK(format_fixed(0.41234) == "0.4123");
  CHECK(format_scientific(0.01) == "1.00e-02");
  CHECK(format_fixed(std::numeric_limits<double>::quiet_NaN()) == "nan");
}

TEST_CASE("pictures: progress line rate and ETA with a fake clock", "[pictures]") {
  double now = 100;
  ProgressMeter meter(20, 400, [&now] { return now; }, 0.1);
  meter.start_epoch(3);
  CHECK(meter.line() == "epoch 3/20  step 0/400  -- step/s  ETA --");
  now += 1.0;
  meter.update(1);  // 1 s per step
  now += 0.5;
  meter.update(2);  // 0.5 s: EMA 1 + 0.1 * (0.5 - 1) = 0.95
  now += 1.0;
  meter.update(4);  // two steps of 0.5 s: as two updates, 0.905 then 0.8645
  CHECK(meter.steps_per_second() == Approx(1 / 0.8645).epsilon(1e-12));
  // Remaining: 17 later epochs of 400 steps plus 396 steps of this one.
  CHECK(meter.eta_seconds() == Approx(7196 * 0.8645).epsilon(1e-12));  // 6220.94 s
  CHECK(meter.line({{"loss", format_fixed(0.41234)}, {"lr", format_scientific(0.01)}}) ==
        "epoch 3/20  step 4/400  1.2 step/s  ETA 1h43m  loss 0.4123  lr 1.00e-02");

  // Validation between epochs does not count as step time.
  now += 500;
  meter.start_epoch(4);
  now += 0.8645;
  meter.update(1);
  CHECK(meter.steps_per_second() == Approx(1 / 0.8645).epsilon(1e-12));
  CHECK(meter.epoch() == 4);
  CHECK(meter.step() == 1);

  // Slow steps read as seconds per step; fast ones with no decimals.
  double t = 0;
  ProgressMeter slow(1, 10, [&t] { return t; });
  t = 2.5;
  slow.update(1);
  CHECK(slow.line() == "epoch 1/1  step 1/10  2.50 s/step  ETA 23s");
  ProgressMeter fast(2, 1000, [&t] { return t; });
  t += 0.25;
  fast.update(50);  // 0.005 s per step; 1950 steps left
  CHECK(fast.line() == "epoch 1/2  step 50/1000  200 step/s  ETA 10s");

  CHECK_THROWS_WITH(slow.update(11), Catch::Contains("step must lie in"));
  CHECK_THROWS_WITH(slow.start_epoch(2), Catch::Contains("epoch must lie in [1, 1]"));
  CHECK_THROWS_AS(ProgressMeter(0, 10), Error);
}

// ---------------------------------------------------------------------------------------------
// Metrics log

TEST_CASE("pictures: metrics log writes CSV and JSONL rows and appends on reopen", "[pictures]") {
  TempDir dir;
  const std::string run = dir.file("run");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  {
    MetricsLog log(run, {"epoch", "step", "loss", "dice", "phase"});
    log.append({{{"epoch", 1}, {"step", 10}, {"loss", 0.5}, {"phase", "train"}}});
    log.append({{{"epoch", 1}, {"dice", 0.25}, {"phase", "val, fold \"0\""}}});
    // Every row is on disk as soon as append returns.
    CHECK(slurp(run + "/metrics.csv") ==
          "epoch,step,loss,dice,phase\n"
          "1,10,0.5,,train\n"
          "1,,,0.25,\"val, fold \"\"0\"\"\"\n");
    CHECK_THROWS_WITH(log.append({{{"epoch", 2}, {"accuracy", 0.9}}}),
                      Catch::Contains("'accuracy' is not a column"));
  }
  {
    MetricsLog log(run);  // resume: columns from the existing header
    CHECK(log.columns() == std::vector<std::string>{"epoch", "step", "loss", "dice", "phase"});
    log.append({{{"epoch", 2}, {"step", 20}, {"loss", nan}, {"phase", "train"}}});
    log.append({{{"epoch", 2}, {"step", 30}, {"loss", 0.1f}}});
  }
  CHECK(slurp(run + "/metrics.csv") ==
        "epoch,step,loss,dice,phase\n"
        "1,10,0.5,,train\n"
        "1,,,0.25,\"val, fold \"\"0\"\"\"\n"
        "2,20,nan,,train\n"
        "2,30,0.10000000149011612,,\n");
  CHECK(slurp(run + "/metrics.jsonl") ==
        "{\"epoch\":1,\"step\":10,\"loss\":0.5,\"phase\":\"train\"}\n"
        "{\"epoch\":1,\"dice\":0.25,\"phase\":\"val, fold \\\"0\\\"\"}\n"
        "{\"epoch\":2,\"step\":20,\"loss\":null,\"phase\":\"train\"}\n"
        "{\"epoch\":2,\"step\":30,\"loss\":0.10000000149011612}\n");

  const std::vector<MetricsRow> rows = read_metrics_jsonl(run + "/metrics.jsonl");
  REQUIRE(rows.size() == 4);
  REQUIRE(rows[0].values.size() == 4);
  CHECK(rows[0].values[0].first == "epoch");
  CHECK(rows[0].values[2].first == "loss");
  CHECK(rows[0].find("epoch")->is_integer());
  CHECK(rows[0].find("loss")->number() == 0.5);
  CHECK(rows[1].find("phase")->text() == "val, fold \"0\"");
  CHECK(rows[1].find("loss") == nullptr);
  CHECK(std::isnan(rows[2].find("loss")->number()));
  CHECK(rows[3].find("loss")->number() == static_cast<double>(0.1f));

  // A different column list for an existing run is refused.
  CHECK_THROWS_WITH(MetricsLog(run, {"epoch", "loss"}), Catch::Contains("same columns"));
}

TEST_CASE("pictures: metrics log drops a cut-off last line and series handle resumed runs", "[pictures]") {
  TempDir dir;
  {
    MetricsLog log(dir.path());  // columns from the first row
    log.append({{{"epoch", 1}, {"dice", 0.5}}});
    log.append({{{"epoch", 2}, {"dice", 0.6}}});
    log.append({{{"epoch", 3}, {"dice", 0.7}}});
    CHECK(log.columns() == std::vector<std::string>{"epoch", "dice"});
  }
  // A run killed in the middle of a row.
  std::ofstream(dir.file("metrics.jsonl"), std::ios::app) << "{\"epoch\":4,\"di";
  std::ofstream(dir.file("metrics.csv"), std::ios::app) << "4,0.";
  CHECK(read_metrics_jsonl(dir.file("metrics.jsonl")).size() == 3);  // partial line ignored
  {
    // Resumed from the epoch-2 checkpoint: epochs 3 and 4 are logged again.
    MetricsLog log(dir.path());
    log.append({{{"epoch", 3}, {"dice", 0.75}}});
    log.append({{{"epoch", 4}, {"dice", 0.8}}});
  }
  CHECK(slurp(dir.file("metrics.csv")) == "epoch,dice\n1,0.5\n2,0.6\n3,0.7\n3,0.75\n4,0.8\n");
  const std::vector<MetricsRow> rows = read_metrics_jsonl(dir.file("metrics.jsonl"));
  REQUIRE(rows.size() == 5);
  const Series dice = metrics_series(rows, "epoch", "dice", "validation Dice");
  CHECK(dice.name == "validation Dice");
  CHECK(dice.x == std::vector<double>{1, 2, 3, 4});
  CHECK(dice.y == std::vector<double>{0.5, 0.6, 0.75, 0.8});

  // A malformed line in the middle is an error naming the line.
  std::ofstream(dir.file("bad.jsonl")) << "{\"a\":1}\n[1,2]\n{\"a\":2}\n";
  CHECK_THROWS_WITH(read_metrics_jsonl(dir.file("bad.jsonl")), Catch::Contains("line 2"));
  CHECK_THROWS_WITH(read_metrics_jsonl(dir.file("missing.jsonl")), Catch::Contains("cannot open"));
}
