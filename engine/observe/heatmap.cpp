#include "engine/observe/heatmap.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "engine/io/error.h"

namespace tessera::png {

namespace {
// Viridis sampled at 0, 0.1, ..., 1 (linear interpolation between the stops).
constexpr std::array<std::array<uint8_t, 3>, 11> kViridis = {{{68, 1, 84},
                                                              {72, 36, 117},
                                                              {65, 68, 135},
                                                              {53, 95, 141},
                                                              {42, 120, 142},
                                                              {33, 145, 140},
                                                              {34, 168, 132},
                                                              {68, 191, 112},
                                                              {122, 209, 81},
                                                              {189, 223, 38},
                                                              {253, 231, 37}}};

constexpr Rgb kWhite{255, 255, 255}, kBlack{0, 0, 0}, kGray{128, 128, 128}, kDim{90, 90, 90};
}  // namespace

Rgb colormap(double v) {
  if (!(v > 0)) v = 0;  // also NaN
  if (v > 1) v = 1;
  const double x = v * (kViridis.size() - 1);
  const size_t i = std::min(static_cast<size_t>(x), kViridis.size() - 2);
  const double f = x - static_cast<double>(i);
  auto mix = [&](int c) {
    return static_cast<uint8_t>(std::lround(kViridis[i][c] * (1 - f) + kViridis[i + 1][c] * f));
  };
  return {mix(0), mix(1), mix(2)};
}

std::string visible_label(const std::string& label) {
  std::string out;
  for (char c : label) {
    if (c == ' ')
      out += "\xE2\x90\xA3";  // U+2423 OPEN BOX
    else
      out += c;
  }
  return out;
}

Image render_heatmap(const Heatmap& h) {
  const size_t rows = h.row_labels.size(), cols = h.col_labels.size();
  if (rows == 0 || cols == 0 || h.values.size() != rows * cols)
    throw Error("heatmap: " + std::to_string(h.values.size()) + " values for " +
                std::to_string(rows) + " row and " + std::to_string(cols) + " column labels");
  if (h.label_scale < 1 || h.label_scale > 8) throw Error("heatmap: label scale must be in 1..8");
  const int s = h.label_scale;
  const int glyph_h = kGlyphHeight * s;
  const int cell = h.cell > 0 ? h.cell : glyph_h + 8;
  if (cell < glyph_h) throw Error("heatmap: cells must be at least as tall as the labels");
  const int margin = 14, label_gap = 8;
  const int sub_scale = s;

  std::vector<std::string> rl, cl;
  int row_w = 0, col_h = 0;
  for (const auto& l : h.row_labels) {
    rl.push_back(visible_label(l));
    row_w = std::max(row_w, text_length(rl.back(), s));
  }
  for (const auto& l : h.col_labels) {
    cl.push_back(visible_label(l));
    col_h = std::max(col_h, text_length(cl.back(), s));
  }

  // Vertical layout: title, subtitle, column labels, grid.
  int y = margin;
  const int title_y = y;
  y += glyph_h + 6;
  const int subtitle_y = y;
  if (!h.subtitle.empty()) y += kGlyphHeight * sub_scale + 6;
  y += 6;
  const int grid_top = y + col_h + label_gap;
  const int grid_left = margin + row_w + label_gap;
  const int grid_w = static_cast<int>(cols) * cell, grid_h = static_cast<int>(rows) * cell;

  // Colour bar to the right, as tall as the grid (at least 120 px), ticks at 0, 0.5, 1.
  const int bar_left = grid_left + grid_w + 24, bar_w = 18;
  const int bar_h = std::max(grid_h, 120), bar_top = grid_top;
  const int tick_len = 4;
  const int ticks_left = bar_left + bar_w + tick_len + 8;
  const int right = ticks_left + text_length("0.5", s);

  const int width = std::max({right + margin, margin + text_length(h.title, s) + margin,
                              margin + text_length(h.subtitle, sub_scale) + margin});
  const int height = std::max(grid_top + grid_h, bar_top + bar_h + glyph_h / 2) + margin;
  Image img(width, height, kWhite);

  draw_text(img, margin, title_y, h.title, s, kBlack);
  if (!h.subtitle.empty()) draw_text(img, margin, subtitle_y, h.subtitle, sub_scale, kDim);

  // Cells.
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c)
      img.fill_rect(grid_left + static_cast<int>(c) * cell, grid_top + static_cast<int>(r) * cell,
                    cell, cell, colormap(h.values[r * cols + c]));
  // Frame.
  img.fill_rect(grid_left - 1, grid_top - 1, grid_w + 2, 1, kGray);
  img.fill_rect(grid_left - 1, grid_top + grid_h, grid_w + 2, 1, kGray);
  img.fill_rect(grid_left - 1, grid_top - 1, 1, grid_h + 2, kGray);
  img.fill_rect(grid_left + grid_w, grid_top - 1, 1, grid_h + 2, kGray);

  // Row labels: right-aligned against the grid, centred on their row.
  for (size_t r = 0; r < rows; ++r)
    draw_text(img, grid_left - label_gap - text_length(rl[r], s),
              grid_top + static_cast<int>(r) * cell + (cell - glyph_h) / 2, rl[r], s, kBlack);
  // Column labels: rotated, starting just above the grid, centred on their column.
  for (size_t c = 0; c < cols; ++c)
    draw_text_up(img, grid_left + static_cast<int>(c) * cell + (cell - glyph_h) / 2,
                 grid_top - label_gap, cl[c], s, kBlack);

  // Colour bar: 1 at the top, 0 at the bottom.
  for (int i = 0; i < bar_h; ++i) {
    const double v = 1.0 - static_cast<double>(i) / (bar_h - 1);
    img.fill_rect(bar_left, bar_top + i, bar_w, 1, colormap(v));
  }
  img.fill_rect(bar_left - 1, bar_top - 1, bar_w + 2, 1, kGray);
  img.fill_rect(bar_left - 1, bar_top + bar_h, bar_w + 2, 1, kGray);
  img.fill_rect(bar_left - 1, bar_top - 1, 1, bar_h + 2, kGray);
  img.fill_rect(bar_left + bar_w, bar_top - 1, 1, bar_h + 2, kGray);
  const std::pair<double, const char*> ticks[] = {{1.0, "1"}, {0.5, "0.5"}, {0.0, "0"}};
  for (const auto& [v, text] : ticks) {
    const int ty = bar_top + static_cast<int>(std::lround((1.0 - v) * (bar_h - 1)));
    img.fill_rect(bar_left + bar_w, ty, tick_len, 1, kBlack);
    draw_text(img, ticks_left, ty - glyph_h / 2, text, s, kBlack);
  }
  return img;
}

}  // namespace tessera::png
