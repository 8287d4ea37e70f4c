// PNG reading and writing through libpng's simplified API (png_image), which reports errors
// through png_image::message instead of longjmp, so no C++ object is skipped by a jump.
#include "med3d/trainers/png.h"

#include <fcntl.h>
#include <png.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "med3d/error.h"

namespace med3d::trainers {
namespace {

void check_image(const Image& image, const std::string& what) {
  MED3D_CHECK(image.channels == 1 || image.channels == 3 || image.channels == 4, what,
              ": channels must be 1 (gray), 3 (RGB) or 4 (RGBA), got ", image.channels);
  MED3D_CHECK(image.width >= 1 && image.height >= 1 && image.width <= kMaxPngSide &&
                  image.height <= kMaxPngSide,
              what, ": width and height must lie in [1, ", kMaxPngSide, "], got ", image.width,
              " x ", image.height);
  const uint64_t expected = static_cast<uint64_t>(image.width) *
                            static_cast<uint64_t>(image.height) *
                            static_cast<uint64_t>(image.channels);
  MED3D_CHECK(image.pixels.size() == expected, what, ": a ", image.width, " x ", image.height,
              " image with ", image.channels, " channels needs ", expected,
              " bytes of pixels, got ", image.pixels.size());
}

png_uint_32 format_for(int channels) {
  return channels == 1 ? PNG_FORMAT_GRAY : channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_RGBA;
}

// Writes `bytes` to a temporary file beside `path` and renames it over `path`.
void write_atomically(const std::string& path, const std::vector<uint8_t>& bytes) {
  // Unique per process and thread, so concurrent writes of one path do not share a temp file.
  const std::string temp = path + ".tmp." + std::to_string(::getpid()) + "." +
                           std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id()));
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  MED3D_CHECK(fd >= 0, "write_png: cannot create '", temp, "': ", std::strerror(errno),
              "; check that the folder exists and is writable");
  const uint8_t* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string reason = std::strerror(errno);
      ::close(fd);
      ::unlink(temp.c_str());
      detail::throw_error("write_png: writing '", temp, "' failed: ", reason,
                          " (disk full?); '", path, "' is untouched");
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  const bool closed = ::close(fd) == 0;
  if (!closed || std::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(temp.c_str());
    detail::throw_error("write_png: could not move '", temp, "' to '", path, "': ", reason);
  }
}

}  // namespace

Image make_image(int64_t width, int64_t height, int channels, uint8_t value) {
  MED3D_CHECK(width >= 0 && height >= 0 && (channels == 1 || channels == 3 || channels == 4),
              "make_image: expected width, height >= 0 and channels 1, 3 or 4, got ", width,
              " x ", height, " x ", channels);
  Image image;
  image.width = width;
  image.height = height;
  image.channels = channels;
  image.pixels.assign(static_cast<std::size_t>(width * height * channels), value);
  return image;
}

void write_png(const std::string& path, const Image& image) {
  check_image(image, "write_png('" + path + "')");
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = format_for(image.channels);
  const png_int_32 stride = static_cast<png_int_32>(image.width * image.channels);
  // First call sizes the encoded file, the second encodes it.
  png_alloc_size_t size = 0;
  int ok = png_image_write_to_memory(&png, nullptr, &size, 0, image.pixels.data(), stride,
                                     nullptr);
  std::vector<uint8_t> encoded;
  if (ok) {
    encoded.resize(size);
    ok = png_image_write_to_memory(&png, encoded.data(), &size, 0, image.pixels.data(), stride,
                                   nullptr);
    encoded.resize(size);
  }
  const std::string message = png.message;
  png_image_free(&png);
  MED3D_CHECK(ok, "write_png('", path, "'): libpng could not encode the image: ", message);
  write_atomically(path, encoded);
}

Image read_png(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MED3D_CHECK(in.good(), "read_png: cannot open '", path, "': ", std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  MED3D_CHECK(bytes.size() >= 8 && png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()),
                                               0, 8) == 0,
              "read_png: '", path, "' is not a PNG file (", bytes.size(),
              " bytes, no PNG signature)");

  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size())) {
    const std::string message = png.message;
    png_image_free(&png);
    detail::throw_error("read_png: '", path, "' is not a readable PNG: ", message);
  }
  Image image;
  image.width = png.width;
  image.height = png.height;
  const bool alpha = (png.format & PNG_FORMAT_FLAG_ALPHA) != 0;
  const bool colour = (png.format & PNG_FORMAT_FLAG_COLOR) != 0;
  image.channels = alpha ? 4 : colour ? 3 : 1;
  if (image.width > kMaxPngSide || image.height > kMaxPngSide ||
      image.width * image.height > kMaxPngPixels) {
    png_image_free(&png);
    detail::throw_error("read_png: '", path, "' is ", image.width, " x ", image.height,
                        " pixels; med3d reads at most ", kMaxPngSide, " pixels a side and ",
                        kMaxPngPixels, " pixels in all");
  }
  png.format = format_for(image.channels);
  image.pixels.resize(static_cast<std::size_t>(image.width * image.height * image.channels));
  const int ok = png_image_finish_read(&png, nullptr, image.pixels.data(),
                                       static_cast<png_int_32>(image.width * image.channels),
                                       nullptr);
  const std::string message = png.message;
  png_image_free(&png);
  MED3D_CHECK(ok, "read_png: '", path, "' is damaged or truncated: ", message);
  return image;
}

}  // namespace med3d::trainers
