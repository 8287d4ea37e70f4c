#include "med3d/trainers/overlay.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <span>

#include "med3d/error.h"
#include "trainers/draw.h"

namespace med3d::trainers {
namespace {

constexpr std::array<std::array<uint8_t, 3>, 8> kPalette = {{
    {230, 25, 75}, {60, 180, 75}, {255, 225, 25}, {0, 130, 200},
    {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230},
}};

constexpr int64_t kDash = 4;  // pixels per dash and per gap of prediction contours

draw::Rgb rgb(const std::array<uint8_t, 3>& c) { return {c[0], c[1], c[2]}; }

// Percentile q in [0, 1] of `values` (reordered), interpolated linearly between order
// statistics as numpy.percentile does by default.
double percentile(std::vector<float>& values, double q) {
  const double position = q * static_cast<double>(values.size() - 1);
  const std::size_t below = static_cast<std::size_t>(std::floor(position));
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(below),
                   values.end());
  const double low = values[below];
  if (below + 1 >= values.size()) return low;
  const double high = *std::min_element(values.begin() + static_cast<std::ptrdiff_t>(below) + 1,
                                        values.end());
  return low + (position - static_cast<double>(below)) * (high - low);
}

std::array<double, 2> intensity_window(std::span<const float> voxels) {
  constexpr std::size_t kMaxSamples = std::size_t{1} << 20;
  const std::size_t stride = (voxels.size() + kMaxSamples - 1) / kMaxSamples;
  std::vector<float> samples;
  samples.reserve(std::min(voxels.size(), kMaxSamples));
  for (std::size_t i = 0; i < voxels.size(); i += stride)
    if (std::isfinite(voxels[i])) samples.push_back(voxels[i]);
  if (samples.empty()) return {0.0, 0.0};
  const double low = percentile(samples, 0.005);
  const double high = percentile(samples, 0.995);
  return {low, high};
}

uint8_t grey(float value, const std::array<double, 2>& window) {
  if (!std::isfinite(value)) return 0;
  if (window[1] <= window[0]) return value > window[0] ? 255 : 0;
  const double t = (static_cast<double>(value) - window[0]) / (window[1] - window[0]);
  return static_cast<uint8_t>(std::lround(std::clamp(t, 0.0, 1.0) * 255.0));
}

// Rounded centroid of the non-zero voxels; false when there are none.
bool foreground_centre(std::span<const int32_t> labels, const std::array<int64_t, 3>& size,
                       std::array<int64_t, 3>& centre) {
  double sum[3] = {0, 0, 0};
  int64_t count = 0;
  for (int64_t d = 0; d < size[0]; ++d)
    for (int64_t h = 0; h < size[1]; ++h)
      for (int64_t w = 0; w < size[2]; ++w)
        if (labels[static_cast<std::size_t>((d * size[1] + h) * size[2] + w)] != 0) {
          sum[0] += static_cast<double>(d);
          sum[1] += static_cast<double>(h);
          sum[2] += static_cast<double>(w);
          ++count;
        }
  if (count == 0) return false;
  for (int a = 0; a < 3; ++a)
    centre[a] = std::clamp<int64_t>(std::llround(sum[a] / static_cast<double>(count)), 0,
                                    size[a] - 1);
  return true;
}

// The labels as a CPU i32 tensor (the same storage when they already are one); undefined
// when absent.
Tensor labels_of(const Tensor& labels, const Shape& shape, const char* what) {
  if (!labels.defined()) return {};
  MED3D_CHECK(labels.shape() == shape, "render_overlays: the ", what,
              " labels must have the image's shape ", shape.str(), ", got ",
              labels.shape().str());
  MED3D_CHECK(labels.dtype() == DType::i32 || labels.dtype() == DType::u8,
              "render_overlays: the ", what, " labels must be i32 or u8, got ",
              dtype_name(labels.dtype()));
  return labels.detach().to(Device::cpu()).to(DType::i32);
}

struct PlaneSpec {
  const char* name;
  int fixed;                // tensor axis held fixed
  int row_axis, col_axis;   // tensor axes along the picture's rows (down) and columns (right)
  const char* letters[4];   // top, bottom, left, right
};

// Radiological display: every displayed axis runs against its tensor axis (see overlay.h).
constexpr PlaneSpec kPlanes[3] = {
    {"axial", 0, 1, 2, {"A", "P", "R", "L"}},
    {"coronal", 1, 0, 2, {"S", "I", "R", "L"}},
    {"sagittal", 2, 0, 1, {"S", "I", "A", "P"}},
};

// Picture size in pixels for `rows` x `cols` voxels of the given spacings.
std::array<int64_t, 2> picture_size(int64_t rows, int64_t cols, double row_mm, double col_mm,
                                    const OverlayOptions& options) {
  const double height_mm = static_cast<double>(rows) * row_mm;
  const double width_mm = static_cast<double>(cols) * col_mm;
  double pixel_mm = std::min({row_mm, col_mm,
                              std::min(height_mm, width_mm) / static_cast<double>(options.min_side)});
  if (std::max(height_mm, width_mm) / pixel_mm > static_cast<double>(options.max_side))
    pixel_mm = std::max(height_mm, width_mm) / static_cast<double>(options.max_side);
  return {std::clamp<int64_t>(std::llround(height_mm / pixel_mm), 1, options.max_side),
          std::clamp<int64_t>(std::llround(width_mm / pixel_mm), 1, options.max_side)};
}

void draw_contours(Image& picture, const std::vector<int32_t>& shown, bool dashed) {
  const int64_t width = picture.width, height = picture.height;
  auto at = [&](int64_t x, int64_t y) {
    return shown[static_cast<std::size_t>(y * width + x)];
  };
  std::vector<uint8_t> edge(shown.size(), 0);
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x) {
      const int32_t label = at(x, y);
      edge[static_cast<std::size_t>(y * width + x)] =
          label != 0 && (x == 0 || y == 0 || x == width - 1 || y == height - 1 ||
                         at(x - 1, y) != label || at(x + 1, y) != label ||
                         at(x, y - 1) != label || at(x, y + 1) != label);
    }
  // Dashes follow the distance along the line (breadth-first over 8-connected contour pixels
  // from the first pixel of each piece in raster order), so they show in every direction; a
  // pattern fixed in the plane such as (x + y) would leave 45-degree lines all on or all off.
  std::vector<int64_t> along(dashed ? shown.size() : 0, -1);
  std::vector<int64_t> queue;
  for (int64_t start = 0; dashed && start < width * height; ++start) {
    if (!edge[static_cast<std::size_t>(start)] || along[static_cast<std::size_t>(start)] >= 0)
      continue;
    along[static_cast<std::size_t>(start)] = 0;
    queue.assign(1, start);
    for (std::size_t head = 0; head < queue.size(); ++head) {
      const int64_t p = queue[head], px = p % width, py = p / width;
      for (int64_t dy = -1; dy <= 1; ++dy)
        for (int64_t dx = -1; dx <= 1; ++dx) {
          const int64_t nx = px + dx, ny = py + dy, n = ny * width + nx;
          if (nx < 0 || ny < 0 || nx >= width || ny >= height) continue;
          if (!edge[static_cast<std::size_t>(n)] || along[static_cast<std::size_t>(n)] >= 0)
            continue;
          along[static_cast<std::size_t>(n)] = along[static_cast<std::size_t>(p)] + 1;
          queue.push_back(n);
        }
    }
  }
  for (int64_t p = 0; p < width * height; ++p) {
    if (!edge[static_cast<std::size_t>(p)]) continue;
    const bool gap = dashed && (along[static_cast<std::size_t>(p)] / kDash) % 2 == 1;
    draw::set_pixel(picture, p % width, p / width,
                    gap ? draw::Rgb{0, 0, 0} : rgb(label_colour(shown[static_cast<std::size_t>(p)])));
  }
}

}  // namespace

std::array<uint8_t, 3> label_colour(int32_t label) {
  const int64_t index = ((static_cast<int64_t>(label) - 1) % 8 + 8) % 8;
  return kPalette[static_cast<std::size_t>(index)];
}

std::vector<OverlayPlane> render_overlays(const Tensor& image, const std::array<double, 3>& spacing,
                                          const Tensor& reference, const Tensor& prediction,
                                          const OverlayOptions& options) {
  MED3D_CHECK(image.defined() && image.rank() == 3,
              "render_overlays: expected a [D, H, W] image, got ",
              image.defined() ? image.shape().str() : std::string("an undefined tensor"));
  MED3D_CHECK(image.dtype() == DType::f32 || image.dtype() == DType::f64,
              "render_overlays: expected a floating image (f32 or f64), got ",
              dtype_name(image.dtype()));
  MED3D_CHECK(image.numel() > 0, "render_overlays: the image ", image.shape().str(),
              " is empty");
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(std::isfinite(spacing[a]) && spacing[a] > 0,
                "render_overlays: spacing must be positive and finite (mm along D, H, W), got {",
                spacing[0], ", ", spacing[1], ", ", spacing[2], "}");
  MED3D_CHECK(options.min_side >= 1 && options.max_side >= options.min_side &&
                  options.max_side <= kMaxPngSide,
              "render_overlays: expected 1 <= min_side <= max_side <= ", kMaxPngSide, ", got ",
              options.min_side, " and ", options.max_side);

  const std::array<int64_t, 3> size = {image.dim(0), image.dim(1), image.dim(2)};
  // Views of CPU f32 / i32 tensors, copied only when on another device or of another dtype.
  const Tensor image_f32 = image.detach().to(Device::cpu()).to(DType::f32);
  const Tensor reference_i32 = labels_of(reference, image.shape(), "reference");
  const Tensor prediction_i32 = labels_of(prediction, image.shape(), "prediction");
  const std::size_t count = static_cast<std::size_t>(image.numel());
  const std::span<const float> voxels(image_f32.data<float>(), count);
  std::span<const int32_t> ref, pred;
  if (reference_i32.defined()) ref = {reference_i32.data<int32_t>(), count};
  if (prediction_i32.defined()) pred = {prediction_i32.data<int32_t>(), count};
  const std::array<double, 2> window = intensity_window(voxels);

  std::array<int64_t, 3> centre = {size[0] / 2, size[1] / 2, size[2] / 2};
  if (ref.empty() || !foreground_centre(ref, size, centre))
    if (!pred.empty()) foreground_centre(pred, size, centre);

  std::vector<OverlayPlane> planes;
  for (const PlaneSpec& spec : kPlanes) {
    const int64_t rows = size[spec.row_axis], cols = size[spec.col_axis];
    const std::array<int64_t, 2> pixels =
        picture_size(rows, cols, spacing[spec.row_axis], spacing[spec.col_axis], options);
    const int64_t height = pixels[0], width = pixels[1];
    // Source voxel of each picture row and column (nearest neighbour, axes reversed).
    std::vector<int64_t> row_voxel(static_cast<std::size_t>(height));
    std::vector<int64_t> col_voxel(static_cast<std::size_t>(width));
    for (int64_t y = 0; y < height; ++y)
      row_voxel[y] = rows - 1 - std::min<int64_t>(rows - 1, static_cast<int64_t>(std::floor(
                                    (static_cast<double>(y) + 0.5) * static_cast<double>(rows) /
                                    static_cast<double>(height))));
    for (int64_t x = 0; x < width; ++x)
      col_voxel[x] = cols - 1 - std::min<int64_t>(cols - 1, static_cast<int64_t>(std::floor(
                                    (static_cast<double>(x) + 0.5) * static_cast<double>(cols) /
                                    static_cast<double>(width))));
    auto voxel_index = [&](int64_t y, int64_t x) {
      std::array<int64_t, 3> index{};
      index[spec.fixed] = centre[spec.fixed];
      index[spec.row_axis] = row_voxel[y];
      index[spec.col_axis] = col_voxel[x];
      return static_cast<std::size_t>((index[0] * size[1] + index[1]) * size[2] + index[2]);
    };

    OverlayPlane plane;
    plane.name = spec.name;
    plane.axis = spec.fixed;
    plane.slice = centre[spec.fixed];
    plane.image = make_image(width, height, 3);
    for (int64_t y = 0; y < height; ++y)
      for (int64_t x = 0; x < width; ++x) {
        const uint8_t g = grey(voxels[voxel_index(y, x)], window);
        draw::set_pixel(plane.image, x, y, {g, g, g});
      }
    for (const std::span<const int32_t>* labels : {&ref, &pred}) {
      if (labels->empty()) continue;
      std::vector<int32_t> shown(static_cast<std::size_t>(width * height));
      for (int64_t y = 0; y < height; ++y)
        for (int64_t x = 0; x < width; ++x)
          shown[static_cast<std::size_t>(y * width + x)] = (*labels)[voxel_index(y, x)];
      draw_contours(plane.image, shown, labels == &pred);
    }
    if (options.annotate) {
      // White text over a black drop shadow reads on bright and dark tissue alike.
      auto text = [&plane](int64_t x, int64_t y, const std::string& words) {
        draw::draw_text(plane.image, x + 1, y + 1, words, {0, 0, 0});
        draw::draw_text(plane.image, x, y, words, {255, 255, 255});
      };
      const std::string title = std::string(spec.name) + " " + "dhw"[spec.fixed] + "=" +
                                std::to_string(plane.slice) + "/" +
                                std::to_string(size[spec.fixed]);
      text(3, 3, title);
      const int64_t mid_x = width / 2 - draw::kGlyphWidth / 2;
      const int64_t mid_y = height / 2 - draw::kGlyphHeight / 2;
      text(mid_x, 3 + draw::text_height() + 3, spec.letters[0]);
      text(mid_x, height - 4 - draw::kGlyphHeight, spec.letters[1]);
      text(3, mid_y, spec.letters[2]);
      text(width - 4 - draw::kGlyphWidth, mid_y, spec.letters[3]);
    }
    planes.push_back(std::move(plane));
  }
  return planes;
}

std::vector<std::string> write_overlays(const std::string& dir, const std::string& case_name,
                                        const Tensor& image, const std::array<double, 3>& spacing,
                                        const Tensor& reference, const Tensor& prediction,
                                        const OverlayOptions& options) {
  MED3D_CHECK(!case_name.empty() && case_name.find('/') == std::string::npos &&
                  case_name != "." && case_name != "..",
              "write_overlays: the case name must be a plain file name, got '", case_name, "'");
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  MED3D_CHECK(!error, "write_overlays: cannot create the folder '", dir, "': ", error.message());
  std::vector<std::string> paths;
  for (const OverlayPlane& plane : render_overlays(image, spacing, reference, prediction, options)) {
    paths.push_back((std::filesystem::path(dir) / (case_name + "_" + plane.name + ".png")).string());
    write_png(paths.back(), plane.image);
  }
  return paths;
}

}  // namespace med3d::trainers
