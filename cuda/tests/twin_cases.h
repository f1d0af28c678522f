// twin_cases.h: random projected Gaussians for the CPU twins (emit_twin.cpp, bin_twin.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <random>

#include "raster_math.h"

namespace twin {

inline double U(std::mt19937_64& rng, double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); }
inline int I(std::mt19937_64& rng, int a, int b) { return std::uniform_int_distribution<int>(a, b)(rng); }  // [a, b]

// A visible Gaussian on a tiles_x x tiles_y grid as k_project stores it: a tile rect (mostly a few tiles, sometimes
// the whole grid) and an ellipse roughly inscribed in it, rotated; sometimes degenerate (whole rect rows),
// sometimes too faint for any tile (opacity below 1/255).
inline void random_projected(std::mt19937_64& rng, int tiles_x, int tiles_y, dd3g::Projected& p) {
    const double big = U(rng, 0, 1);
    const int w = big < 0.03 ? tiles_x : std::min(tiles_x, 1 + (int)std::floor(std::exp(U(rng, -0.5, 2.2))));
    const int h = big < 0.03 ? tiles_y : std::min(tiles_y, 1 + (int)std::floor(std::exp(U(rng, -0.5, 2.2))));
    p.tx0 = I(rng, 0, tiles_x - w);
    p.ty0 = I(rng, 0, tiles_y - h);
    p.tx1 = p.tx0 + w;
    p.ty1 = p.ty0 + h;
    const float cx = (float)(16.0 * (p.tx0 + p.tx1) / 2 + U(rng, -8, 8));
    const float cy = (float)(16.0 * (p.ty0 + p.ty1) / 2 + U(rng, -8, 8));
    const double sx = U(rng, 0.5, 8.0 * w), sy = U(rng, 0.5, 8.0 * h), th = U(rng, 0, 3.141592653589793),
                 rho = U(rng, -0.95, 0.95);
    const double a = 1 / (sx * sx), cc = 1 / (sy * sy), b = rho * std::sqrt(a * cc) * std::cos(th);
    p.x = cx;
    p.y = cy;
    p.ca = (float)a;
    p.cb = (float)b;
    p.cc = (float)cc;
    const double kind = U(rng, 0, 1);
    if (kind < 0.04) p.cb = (float)(2 * std::sqrt(a * cc));  // det < 0: whole rect rows
    else if (kind < 0.06) p.ca = 0.f;                        // a = 0: whole rect rows
    p.opacity = kind > 0.97 ? (float)U(rng, 0.0005, 1.0 / 255) : (float)U(rng, 0.02, 1.0);
    p.depth = (float)U(rng, 0.1, 10);
    p.visible = true;
}

}  // namespace twin
