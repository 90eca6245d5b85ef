// Sinusoidal positional table ("Attention Is All You Need", section 3.5). Plain scalar code in
// double precision: it runs once, at load time.
#include <cmath>
#include <cstdint>

#include "kernels/kernels.h"

namespace tessera::kernels {

void sinusoidal_positions(int64_t positions, int64_t dim, float* out) {
  for (int64_t p = 0; p < positions; ++p) {
    float* row = out + p * dim;  // [dim]
    for (int64_t j = 0; j < dim; ++j) {
      const int64_t two_i = j - (j % 2);  // columns 2i and 2i+1 share one frequency
      const double angle = static_cast<double>(p) /
                           std::pow(10000.0, static_cast<double>(two_i) / static_cast<double>(dim));
      row[j] = static_cast<float>(j % 2 == 0 ? std::sin(angle) : std::cos(angle));
    }
  }
}

}  // namespace tessera::kernels
