// A labelled heatmap of a [rows, cols] matrix of values in [0, 1] (attention weights) as an RGB
// image: a title line, column labels on top (rotated 90°), row labels on the left, one square
// cell per value in a viridis-like colormap, and a colour bar from 0 to 1 on the right.
#pragma once

#include <string>
#include <vector>

#include "engine/observe/png.h"

namespace tessera::png {

// Viridis-like sequential colormap; v is clamped to [0, 1] (NaN maps to 0).
Rgb colormap(double v);

struct Heatmap {
  std::string title;
  std::string subtitle;                 // optional second line (smaller)
  std::vector<std::string> row_labels;  // one per row (UTF-8; spaces drawn as U+2423 OPEN BOX)
  std::vector<std::string> col_labels;  // one per column
  std::vector<double> values;           // row-major [rows, cols]
  int cell = 0;                         // cell size in pixels; 0 = chosen from the sizes
  int label_scale = 2;                  // font scale of labels and title
};

// Throws Error when the labels' counts disagree with the values.
Image render_heatmap(const Heatmap& h);

// A label as drawn: spaces become U+2423 (the visible-space glyph).
std::string visible_label(const std::string& label);

}  // namespace tessera::png
