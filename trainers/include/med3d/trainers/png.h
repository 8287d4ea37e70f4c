// 8-bit PNG files through libpng's simplified API (Debian libpng-dev).
//
// Image: `width` x `height` pixels of `channels` interleaved 8-bit samples, row-major from the
// top-left pixel: sample c of pixel (x, y) is pixels[(y * width + x) * channels + c].
// channels: 1 = gray, 3 = RGB, 4 = RGBA (straight, not premultiplied, alpha).
//
// write_png writes sRGB 8-bit PNG to a temporary file in the target's folder and renames it
// over `path`, so readers never see a half-written picture and an existing file is replaced
// whole or not at all. The folder must exist.
// read_png returns 8-bit gray, RGB or RGBA files exactly (the channel count of the file);
// gray+alpha files come back as RGBA, palette files as RGB (RGBA with transparency), and
// 16-bit files are reduced to 8 bits by libpng. Pictures over kMaxPngSide pixels a side or
// kMaxPngPixels in all are refused before any pixel memory is allocated.
// Errors throw med3d::Error naming the file and the cause (cannot open, not a PNG, bad size).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace med3d::trainers {

struct Image {
  int64_t width = 0;
  int64_t height = 0;
  int channels = 3;  // 1, 3 or 4
  std::vector<uint8_t> pixels;
};

// libpng's default limit on a side when reading; writes are held to the same.
inline constexpr int64_t kMaxPngSide = 1000000;
// read_png refuses larger pictures (1 GiB of RGBA) before allocating their pixels.
inline constexpr int64_t kMaxPngPixels = int64_t{1} << 28;

// An image of the given size with every sample set to `value`.
Image make_image(int64_t width, int64_t height, int channels, uint8_t value = 0);

void write_png(const std::string& path, const Image& image);
Image read_png(const std::string& path);

}  // namespace med3d::trainers
