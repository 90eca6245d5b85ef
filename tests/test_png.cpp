// The PNG encoder, font and heatmap renderer. Writes files that tests/test_png.py decodes with
// Python's zlib + struct:
//   test_png OUT_DIR   -> OUT_DIR/pattern.png (301x223, pixel (x, y) = pattern(x, y) below),
//                         OUT_DIR/tiny.png (1x1), OUT_DIR/heatmap.png (a small labelled heatmap)
// and checks the checksums against known values. Exit code 1 on any failure.
#include <cstdio>
#include <cstring>
#include <string>

#include "engine/observe/heatmap.h"
#include "engine/observe/png.h"

namespace {
int failures = 0;
void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    ++failures;
  }
}
const uint8_t* bytes(const char* s) {
  return reinterpret_cast<const uint8_t*>(s);
}
}  // namespace

int main(int argc, char** argv) {
  using namespace tessera::png;
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_png OUT_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];

  // Known checksums ("123456789" is the standard CRC check string).
  check(crc32(bytes("123456789"), 9) == 0xCBF43926u, "crc32('123456789') == 0xCBF43926");
  check(crc32(bytes("IEND"), 4) == 0xAE426082u, "crc32('IEND') == 0xAE426082");
  check(crc32(bytes("56789"), 5, crc32(bytes("1234"), 4)) == 0xCBF43926u, "crc32 continues");
  check(adler32(bytes("Wikipedia"), 9) == 0x11E60398u, "adler32('Wikipedia') == 0x11E60398");
  check(adler32(nullptr, 0) == 1u, "adler32('') == 1");
  {
    std::string big(100000, '\xFF');  // exercises the modulo reduction
    uint32_t a = 1, b = 0;
    for (unsigned char c : big) {
      a = (a + c) % 65521;
      b = (b + a) % 65521;
    }
    check(adler32(bytes(big.c_str()), big.size()) == ((b << 16) | a), "adler32 of 100000 x 0xFF");
  }

  // Pattern image: 223 rows of 1 + 903 bytes = 201592 bytes of scanlines, so 4 stored blocks.
  Image img(301, 223);
  for (int y = 0; y < img.height(); ++y)
    for (int x = 0; x < img.width(); ++x)
      img.set(x, y,
              {static_cast<uint8_t>((x * 7 + y * 3) & 255), static_cast<uint8_t>((x * y) & 255),
               static_cast<uint8_t>(((255 - x) ^ y) & 255)});
  write(dir + "/pattern.png", img);
  write(dir + "/tiny.png", Image(1, 1, {10, 20, 30}));

  // Text: a glyph is drawn, non-ASCII becomes '?', the rotated text covers the rotated box.
  check(text_length("abc", 2) == (3 * 6 - 1) * 2, "text_length");
  check(text_length("\xC3\xA9", 1) == 5, "one code point for a 2-byte UTF-8 character");
  {
    Image a(20, 20), b(20, 20);
    draw_text(a, 0, 0, "\xC3\xA9", 1, {0, 0, 0});  // é -> '?'
    draw_text(b, 0, 0, "?", 1, {0, 0, 0});
    check(a.pixels() == b.pixels(), "non-ASCII drawn as '?'");
    Image c(20, 20);
    draw_text_up(c, 0, 10, "L", 1, {0, 0, 0});
    // 'L' rotated counter-clockwise: its bottom bar becomes the right column (x = 6), read upward.
    int right = 0, elsewhere_outside = 0;
    for (int y = 0; y < 20; ++y)
      for (int x = 0; x < 20; ++x)
        if (c.get(x, y) == Rgb{0, 0, 0}) {
          if (x == 6) ++right;
          if (x > 6 || y >= 10 || y < 5) ++elsewhere_outside;
        }
    check(right == 5, "rotated 'L' has its bar in column 6");
    check(elsewhere_outside == 0, "rotated text stays in its box");
  }
  check(colormap(0) == Rgb{68, 1, 84} && colormap(1) == Rgb{253, 231, 37}, "colormap ends");

  Heatmap h;
  h.title = "test head 0";
  h.row_labels = {"a", " ", "</s>"};
  h.col_labels = {"x", "y"};
  h.values = {1, 0, 0.5, 0.5, 0, 1};
  const Image hm = render_heatmap(h);
  write(dir + "/heatmap.png", hm);
  check(hm.width() > 2 * 22 && hm.height() > 3 * 22, "heatmap size");

  if (failures) return 1;
  std::printf("ok\n");
  return 0;
}
