// cull_twin.cpp: checks the raster kernels' warp culling (cuda/src/raster_math.h warp_mask, which k_raster and
// k_raster_binned call when staging a Gaussian) on the CPU against a per-pixel brute force. Used by
// tests/cuda/test_cull_twin.py; build:
//     g++ -std=c++17 -O2 -Icuda/src -Icuda/tests cuda/tests/cull_twin.cpp -o cull_twin
// Usage: cull_twin SEED CASES   -> one summary line; exit 0 if no warp that a Gaussian reaches was culled, else 1.
//
// For random projected Gaussians (twin_cases.h, plus small round ones like those of dense scenes) and tiles in and
// around their rect, every pixel centre of the tile is tested in double precision with a generous threshold
// (alpha = o exp(-sigma) >= (1 - 1e-4) / 255, sigma >= 0): a pixel that passes is one the kernels' float alpha test
// could blend, so its warp's bit must be set (no false culling), for 8 x 4 and 16 x 2 pixel warps. Tightness: the
// bits set whose warp holds no pixel with sigma <= ln(255 o) + 0.25 are counted as loose (printed; the test bounds
// their share), so that a mask of all ones would not pass for a correct one.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "raster_math.h"
#include "twin_cases.h"

namespace {

using twin::I;
using twin::U;

long long g_cases = 0, g_bits = 0, g_needed = 0, g_loose = 0, g_missed = 0, g_degenerate = 0, g_faint = 0;

// sigma (float64) of pixel centre (px, py) for the conic as the kernels store it
double sigma_at(const dd3g::Projected& p, double px, double py) {
    const double dx = p.x - px, dy = p.y - py;
    return 0.5 * (p.ca * dx * dx + p.cc * dy * dy) + (double)p.cb * dx * dy;
}

template <int kWarpW>
bool check_tile(const dd3g::Projected& p, int tx, int ty) {
    constexpr int kCols = dd3g::kTile / kWarpW, kRows = 32 / kWarpW;
    const float x0 = (float)(tx * dd3g::kTile), y0 = (float)(ty * dd3g::kTile);
    const uint32_t mask =
        dd3g::warp_mask<kWarpW>(p.x, p.y, p.ca, p.cb, p.cc, dd3g::reject_log2(p.opacity), x0, y0);
    const double thr = (1.0 - 1e-4) / 255.0, lg = std::log((double)p.opacity * 255.0);
    bool ok = true;
    for (int w = 0; w < 8; ++w) {
        bool needed = false, near = false;
        for (int l = 0; l < 32; ++l) {
            const double px = x0 + (w % kCols) * kWarpW + l % kWarpW + 0.5;
            const double py = y0 + (w / kCols) * kRows + l / kWarpW + 0.5;
            const double s = sigma_at(p, px, py);
            if (s >= 0.0 && p.opacity * std::exp(-s) >= thr) needed = true;
            if (s <= lg + 0.25) near = true;
        }
        const bool set = (mask >> w) & 1u;
        g_bits += set;
        g_needed += needed;
        if (set && !near) ++g_loose;
        if (needed && !set) {
            ++g_missed;
            if (ok)
                printf("MISSED warp %d (W %d) tile (%d, %d): mean (%.4f, %.4f) conic (%g, %g, %g) opacity %g mask %02x\n",
                       w, kWarpW, tx, ty, p.x, p.y, p.ca, p.cb, p.cc, p.opacity, mask);
            ok = false;
        }
    }
    return ok;
}

// A small, nearly round Gaussian anywhere in a tile grid (the splats of a dense scene: 0.5 - 6 px standard deviation).
void small_projected(std::mt19937_64& rng, int tiles_x, int tiles_y, dd3g::Projected& p) {
    p.x = (float)U(rng, 0, 16.0 * tiles_x);
    p.y = (float)U(rng, 0, 16.0 * tiles_y);
    const double sx = U(rng, 0.5, 6), sy = sx * U(rng, 0.5, 2), rho = U(rng, -0.9, 0.9);
    const double cxx = sx * sx + 0.3, cyy = sy * sy + 0.3, cxy = rho * sx * sy, det = cxx * cyy - cxy * cxy;
    p.ca = (float)(cyy / det);
    p.cb = (float)(-cxy / det);
    p.cc = (float)(cxx / det);
    p.opacity = (float)U(rng, 0.02, 1.0);
    const double r = 3.33 * std::max(sx, sy) + 1;
    p.tx0 = std::max(0, (int)std::floor((p.x - r) / 16));
    p.ty0 = std::max(0, (int)std::floor((p.y - r) / 16));
    p.tx1 = std::min(tiles_x, (int)std::ceil((p.x + r) / 16));
    p.ty1 = std::min(tiles_y, (int)std::ceil((p.y + r) / 16));
    p.depth = 1.f;
    p.visible = true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: cull_twin SEED CASES\n");
        return 2;
    }
    std::mt19937_64 rng(strtoull(argv[1], nullptr, 10));
    const long cases = strtol(argv[2], nullptr, 10);
    bool ok = true;
    for (long c = 0; c < cases; ++c) {
        const int tiles_x = I(rng, 1, 40), tiles_y = I(rng, 1, 40);
        dd3g::Projected p{};
        if (c % 2) small_projected(rng, tiles_x, tiles_y, p);
        else twin::random_projected(rng, tiles_x, tiles_y, p);
        const float det = p.ca * p.cc - p.cb * p.cb;
        g_degenerate += !(det > 0.f) || !(p.ca > 0.f);
        g_faint += p.opacity < dd3g::kAlphaThreshold;
        // the rect's tiles (at most 64 of them) and a ring of one tile around it
        for (int k = 0; k < 12; ++k) {
            const int tx = I(rng, p.tx0 - 1, p.tx1), ty = I(rng, p.ty0 - 1, p.ty1);
            ok &= check_tile<8>(p, tx, ty);
            ok &= check_tile<16>(p, tx, ty);
            ++g_cases;
        }
    }
    printf("%s tiles=%lld bits=%lld needed=%lld loose=%lld missed=%lld degenerate=%lld faint=%lld\n", ok ? "OK" : "FAIL",
           g_cases, g_bits, g_needed, g_loose, g_missed, g_degenerate, g_faint);
    return ok ? 0 : 1;
}
