// Internal drawing helpers for the training pictures (overlay.cpp, curves.cpp): pixels, filled
// rectangles, lines and text in a built-in 5x7 bitmap font, on 3-channel (RGB) Images.
// Everything clips to the image: drawing outside it is a no-op, never an error.
#pragma once

#include <cstdint>
#include <climits>
#include <string_view>

#include "med3d/trainers/png.h"

namespace med3d::trainers::draw {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

void set_pixel(Image& image, int64_t x, int64_t y, Rgb colour);
Rgb get_pixel(const Image& image, int64_t x, int64_t y);
// Fills [x0, x1) x [y0, y1).
void fill_rect(Image& image, int64_t x0, int64_t y0, int64_t x1, int64_t y1, Rgb colour);
// Pixels [x0, x1) x [y0, y1) that drawing may touch.
struct Clip {
  int64_t x0 = 0, y0 = 0, x1 = INT64_MAX, y1 = INT64_MAX;
};
// A straight line between pixel centres with a square brush `thickness` pixels wide, touching
// only pixels inside `clip`. Non-finite end points draw nothing.
void draw_line(Image& image, double x0, double y0, double x1, double y1, Rgb colour,
               int thickness = 1, const Clip& clip = {});

// Glyphs are 5x7 pixels with one pixel between letters; printable ASCII (32..126) is drawn,
// anything else as '?'. `scale` enlarges each font pixel to scale x scale.
inline constexpr int kGlyphWidth = 5;
inline constexpr int kGlyphHeight = 7;
int64_t text_width(std::string_view text, int scale = 1);
inline int64_t text_height(int scale = 1) { return kGlyphHeight * scale; }
// Draws `text` with its top-left corner at (x, y).
void draw_text(Image& image, int64_t x, int64_t y, std::string_view text, Rgb colour,
               int scale = 1);

}  // namespace med3d::trainers::draw
