// RGB8 images, a dependency-free PNG encoder and a small bitmap font.
//
// The encoder writes a plain PNG: IHDR (8-bit truecolour), one IDAT holding a zlib stream made of
// "stored" (uncompressed) deflate blocks of at most 65535 bytes, filter type 0 on every row, and
// IEND. CRC-32 and Adler-32 are computed here. Files are larger than compressed ones, but any
// viewer reads them and nothing outside the repository is needed.
//
// The font is a 5x7 glyph table for printable ASCII (plus U+2423 OPEN BOX, used to show
// spaces), drawn at an integer scale with one column of spacing; other code points are drawn as
// '?'. Text is UTF-8.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::png {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

class Image {
 public:
  Image() = default;
  // width, height >= 1 and each at most 1 << 15; filled with `fill`. Throws Error otherwise.
  Image(int width, int height, Rgb fill = {255, 255, 255});

  int width() const { return width_; }
  int height() const { return height_; }
  // Pixel access; out-of-range coordinates throw on get and are ignored by set (clipping).
  Rgb get(int x, int y) const;
  void set(int x, int y, Rgb c);
  void fill_rect(int x, int y, int w, int h, Rgb c);              // clipped
  const std::vector<uint8_t>& pixels() const { return pixels_; }  // row-major RGB

 private:
  int width_ = 0, height_ = 0;
  std::vector<uint8_t> pixels_;
};

// Checksums as PNG and zlib define them. Pass the previous result to continue a running value.
uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0);
uint32_t adler32(const uint8_t* data, size_t n, uint32_t adler = 1);

// The PNG file's bytes.
std::vector<uint8_t> encode(const Image& img);
// Writes the PNG to `path` (through a temporary file renamed into place). Throws Error.
void write(const std::string& path, const Image& img);

// --- text -------------------------------------------------------------------------------------
constexpr int kGlyphWidth = 5, kGlyphHeight = 7, kGlyphAdvance = 6;  // font units

// Code points of UTF-8 text (invalid bytes become U+FFFD).
std::vector<char32_t> utf8_decode(const std::string& text);
// Length along the writing direction, in pixels: advance * scale per character, less the trailing
// column of spacing (0 for empty text).
int text_length(const std::string& text, int scale);
// Horizontal text; (x, y) is the top-left corner of the first glyph.
void draw_text(Image& img, int x, int y, const std::string& text, int scale, Rgb color);
// Text rotated 90° counter-clockwise (read bottom to top); (x, y_bottom) is the bottom-left corner
// of the first glyph: the text occupies columns [x, x + 7*scale) and rows
// [y_bottom - text_length, y_bottom).
void draw_text_up(Image& img, int x, int y_bottom, const std::string& text, int scale, Rgb color);

}  // namespace tessera::png
