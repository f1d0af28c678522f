// raster_math.h: the per-Gaussian arithmetic of the rasteriser, compiled for the GPU (by dd3g_raster.cu) and
// for the CPU (by cuda/tests/host_twin.cpp), so that a CPU test can check the very code the GPU runs.
//
// Everything here follows gsplat 1.5.3's classic forward (ProjectionEWA3DGSFused.cu, IntersectTile.cu,
// RasterizeToPixels3DGSFwd.cu, SphericalHarmonics): same formulas, same order of the float operations
// where it matters for which Gaussians are culled.
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define DD3G_HD __host__ __device__ __forceinline__
#define DD3G_UNROLL _Pragma("unroll")
#else
#define DD3G_HD inline
#define DD3G_UNROLL
#endif

namespace dd3g {

constexpr int kTile = 16;                        // tile side, pixels (block = kTile * kTile threads)
constexpr float kAlphaThreshold = 1.f / 255.f;   // skip a Gaussian at a pixel below this alpha
constexpr float kAlphaMax = 0.999f;              // gsplat 1.5.3 clamps alpha to 0.999
constexpr float kTransmittanceMin = 1e-4f;       // stop before T would drop to <= this
constexpr float kExtendMax = 3.33f;              // cap of the extent, in standard deviations
// Tight tile binning keeps every tile where sigma_min <= ln(255 o) + kSigmaMargin: the margin covers float
// rounding of the per-pixel test, so that no pixel that the rect binning would shade is lost. Warp culling
// (warp_mask) keeps the same margin.
constexpr float kSigmaMargin = 0.02f;
// The blend loop's rejection pre-test (dd3g_raster.cu, DD3G_RASTER_LOG2_BLEND): a pair with p = -sigma log2(e) below
// log2(kAlphaThreshold / opacity) - kRejectMargin has alpha clearly below the threshold.
constexpr float kRejectMargin = 1e-3f;
constexpr float kLn2 = 0.6931471805599453f;

struct Projected {
    float x, y;          // pixel coordinates of the mean
    float depth;         // camera z
    float opacity;
    float ca, cb, cc;    // conic: sigma = 0.5 * (ca dx^2 + cc dy^2) + cb dx dy
    float r, g, b;       // colour, >= 0
    int tx0, ty0, tx1, ty1;  // tile rect [tx0, tx1) x [ty0, ty1)
    bool visible;
};

DD3G_HD float clampf(float v, float lo, float hi) { return fminf(fmaxf(v, lo), hi); }

// 3DGS real SH basis, the sign convention of gsplat / the original 3DGS code. `sh` points at K*3 floats
// (coefficient-major: sh[k*3 + channel]); `load(i)` returns sh element i as float.
template <typename Load>
DD3G_HD void eval_sh(int K, float dx, float dy, float dz, const Load& load, float out[3]) {
    const float C0 = 0.28209479177387814f;
    for (int ch = 0; ch < 3; ++ch) out[ch] = C0 * load(ch);
    if (K <= 1) return;
    float inv = 1.f / sqrtf(dx * dx + dy * dy + dz * dz);
    float x = dx * inv, y = dy * inv, z = dz * inv;
    const float C1 = 0.4886025119029199f;
    float b1[3] = {-C1 * y, C1 * z, -C1 * x};
    for (int k = 0; k < 3; ++k)
        for (int ch = 0; ch < 3; ++ch) out[ch] += b1[k] * load((1 + k) * 3 + ch);
    if (K <= 4) return;
    float xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
    float b2[5] = {1.0925484305920792f * xy, -1.0925484305920792f * yz,
                   0.31539156525252005f * (2.f * zz - xx - yy), -1.0925484305920792f * xz,
                   0.5462742152960396f * (xx - yy)};
    for (int k = 0; k < 5; ++k)
        for (int ch = 0; ch < 3; ++ch) out[ch] += b2[k] * load((4 + k) * 3 + ch);
    if (K <= 9) return;
    float b3[7] = {-0.5900435899266435f * y * (3.f * xx - yy),
                   2.890611442640554f * xy * z,
                   -0.4570457994644658f * y * (4.f * zz - xx - yy),
                   0.3731763325901154f * z * (2.f * zz - 3.f * xx - 3.f * yy),
                   -0.4570457994644658f * x * (4.f * zz - xx - yy),
                   1.445305721320277f * z * (xx - yy),
                   -0.5900435899266435f * x * (xx - 3.f * yy)};
    for (int k = 0; k < 7; ++k)
        for (int ch = 0; ch < 3; ++ch) out[ch] += b3[k] * load((9 + k) * 3 + ch);
}

// Project one Gaussian into one camera. `V` is the row-major 4x4 world-to-camera matrix, `Kc` the row-major
// 3x3 intrinsics. Inputs are already converted to float. Returns p.visible = false for a culled Gaussian
// (behind the near plane, beyond far, degenerate 2D covariance, too transparent, off-screen).
DD3G_HD void project_gaussian(const float m[3], const float q_in[4], const float s[3], float opacity,
                              const float* V, const float* Kc, int width, int height, float near_plane,
                              float far_plane, float eps2d, int tiles_x, int tiles_y, Projected& p) {
    p.visible = false;
    float xc = V[0] * m[0] + V[1] * m[1] + V[2] * m[2] + V[3];
    float yc = V[4] * m[0] + V[5] * m[1] + V[6] * m[2] + V[7];
    float zc = V[8] * m[0] + V[9] * m[1] + V[10] * m[2] + V[11];
    if (!(zc >= near_plane && zc <= far_plane)) return;  // also culls NaN

    // rotation of the (normalised) quaternion; M = R * diag(s); covariance = M M^T
    float qw = q_in[0], qx = q_in[1], qy = q_in[2], qz = q_in[3];
    float inv_norm = 1.f / sqrtf(qx * qx + qy * qy + qz * qz + qw * qw);
    qw *= inv_norm; qx *= inv_norm; qy *= inv_norm; qz *= inv_norm;
    float x2 = qx * qx, y2 = qy * qy, z2 = qz * qz;
    float xy = qx * qy, xz = qx * qz, yz = qy * qz, wx = qw * qx, wy = qw * qy, wz = qw * qz;
    float R[9] = {1.f - 2.f * (y2 + z2), 2.f * (xy - wz), 2.f * (xz + wy),
                  2.f * (xy + wz), 1.f - 2.f * (x2 + z2), 2.f * (yz - wx),
                  2.f * (xz - wy), 2.f * (yz + wx), 1.f - 2.f * (x2 + y2)};
    float M[9];
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) M[r * 3 + c] = R[r * 3 + c] * s[c];
    // world-space covariance (symmetric): S = M M^T
    float S[9];
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c)
            S[r * 3 + c] = M[r * 3 + 0] * M[c * 3 + 0] + M[r * 3 + 1] * M[c * 3 + 1] + M[r * 3 + 2] * M[c * 3 + 2];
    // camera-space covariance: W S W^T with W the rotation rows of V
    float WS[9];
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c)
            WS[r * 3 + c] = V[r * 4 + 0] * S[0 * 3 + c] + V[r * 4 + 1] * S[1 * 3 + c] + V[r * 4 + 2] * S[2 * 3 + c];
    float Sc[9];
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c)
            Sc[r * 3 + c] = WS[r * 3 + 0] * V[c * 4 + 0] + WS[r * 3 + 1] * V[c * 4 + 1] + WS[r * 3 + 2] * V[c * 4 + 2];

    // perspective Jacobian with gsplat's clamping of x/z, y/z to 1.3x the field of view
    float fx = Kc[0], fy = Kc[4], cx = Kc[2], cy = Kc[5];
    float tan_fovx = 0.5f * width / fx, tan_fovy = 0.5f * height / fy;
    float lim_x_pos = (width - cx) / fx + 0.3f * tan_fovx;
    float lim_x_neg = cx / fx + 0.3f * tan_fovx;
    float lim_y_pos = (height - cy) / fy + 0.3f * tan_fovy;
    float lim_y_neg = cy / fy + 0.3f * tan_fovy;
    float rz = 1.f / zc, rz2 = rz * rz;
    float tx = zc * fminf(lim_x_pos, fmaxf(-lim_x_neg, xc * rz));
    float ty = zc * fminf(lim_y_pos, fmaxf(-lim_y_neg, yc * rz));
    float j00 = fx * rz, j02 = -fx * tx * rz2, j11 = fy * rz, j12 = -fy * ty * rz2;
    float c00 = j00 * (j00 * Sc[0] + j02 * Sc[6]) + j02 * (j00 * Sc[2] + j02 * Sc[8]);
    float c01 = j00 * (j11 * Sc[1] + j12 * Sc[2]) + j02 * (j11 * Sc[7] + j12 * Sc[8]);
    float c11 = j11 * (j11 * Sc[4] + j12 * Sc[5]) + j12 * (j11 * Sc[7] + j12 * Sc[8]);
    float mx = fx * xc * rz + cx, my = fy * yc * rz + cy;

    // low-pass filter, then invert
    c00 += eps2d;
    c11 += eps2d;
    float det = c00 * c11 - c01 * c01;
    if (!(det > 0.f)) return;
    float inv_det = 1.f / det;

    // opacity-aware extent (gsplat 1.5.3): pixels farther out have alpha < 1/255
    if (!(opacity >= kAlphaThreshold)) return;
    float extend = fminf(kExtendMax, sqrtf(2.f * logf(opacity / kAlphaThreshold)));
    float rad_x = ceilf(extend * sqrtf(c00));
    float rad_y = ceilf(extend * sqrtf(c11));
    if (rad_x <= 0.f && rad_y <= 0.f) return;
    if (mx + rad_x <= 0.f || mx - rad_x >= (float)width || my + rad_y <= 0.f || my - rad_y >= (float)height) return;

    float tile_x = mx / (float)kTile, tile_y = my / (float)kTile;
    float trx = rad_x / (float)kTile, try_ = rad_y / (float)kTile;
    p.tx0 = (int)clampf(floorf(tile_x - trx), 0.f, (float)tiles_x);
    p.ty0 = (int)clampf(floorf(tile_y - try_), 0.f, (float)tiles_y);
    p.tx1 = (int)clampf(ceilf(tile_x + trx), 0.f, (float)tiles_x);
    p.ty1 = (int)clampf(ceilf(tile_y + try_), 0.f, (float)tiles_y);
    if (p.tx1 <= p.tx0 || p.ty1 <= p.ty0) return;

    p.x = mx;
    p.y = my;
    p.depth = zc;
    p.opacity = opacity;
    p.ca = c11 * inv_det;
    p.cb = -c01 * inv_det;
    p.cc = c00 * inv_det;
    p.visible = true;
}

// Camera centre in world space of a row-major world-to-camera matrix: -R^T t.
DD3G_HD void camera_centre(const float* V, float c[3]) {
    for (int i = 0; i < 3; ++i) c[i] = -(V[0 + i] * V[3] + V[4 + i] * V[7] + V[8 + i] * V[11]);
}

// Tight binning's arithmetic. On the GPU (DD3G_RASTER_FAST_TIGHT=1, the default) the approximate square root,
// division and logarithm: errors of a few ulp, far inside the spans' 1e-3 px padding and the 0.02 sigma margin, so
// a tile at stake lies well outside every pixel's alpha >= 1/255 region. H200, run 13: -1 to -3 % (8-camera frames
// most); intersection counts move by at most 2 in 66M, images unchanged (tests/cuda/test_raster_gpu.py
// test_fast_tight_binning_renders_identical_images against build/exact_tight). The CPU (the twins) and
// DD3G_RASTER_FAST_TIGHT=0 use the exact libm operations: the same formulas.
#ifndef DD3G_RASTER_FAST_TIGHT
#define DD3G_RASTER_FAST_TIGHT 1
#endif
#if DD3G_RASTER_FAST_TIGHT && defined(__CUDA_ARCH__)
DD3G_HD float tight_sqrt(float x) {
    float r;
    asm("sqrt.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}
DD3G_HD float tight_div(float x, float y) { return __fdividef(x, y); }
DD3G_HD float tight_log(float x) { return __logf(x); }
#else
DD3G_HD float tight_sqrt(float x) { return sqrtf(x); }
DD3G_HD float tight_div(float x, float y) { return x / y; }
DD3G_HD float tight_log(float x) { return logf(x); }
#endif

// Tight binning's region of a projected Gaussian: sigma <= ln(255 o) + kSigmaMargin, the ellipse q(d) = ca dx^2 +
// 2 cb dx dy + cc dy^2 <= r2 around its mean. Everything in it that does not depend on the tile row, computed once per
// Gaussian (tight_span) and then used for each of its rows (tight_row_span): a walk over many rows pays the logarithm,
// the square roots and the divisions once (run 12: the 8-camera frames of 200k and 1M Gaussians 4-5 % faster, the
// same lists).
struct TightSpan {
    float r2, det, hy, dy_ext;
    int kind;  // 0: no tile (r2 <= 0), 1: degenerate after rounding (whole rect rows), 2: an ellipse
};

DD3G_HD TightSpan tight_span(const Projected& p) {
    TightSpan e;
    e.kind = 0;
    float lg = tight_log(tight_div(p.opacity, kAlphaThreshold));
    e.r2 = 2.f * (lg + kSigmaMargin);  // q(d) = ca dx^2 + 2 cb dx dy + cc dy^2 <= r2
    if (!(e.r2 > 0.f)) return e;
    float a = p.ca, b = p.cb, c = p.cc;
    e.det = a * c - b * b;
    e.kind = 1;
    if (!(e.det > 0.f) || !(a > 0.f) || !(c > 0.f)) return e;
    e.kind = 2;
    e.hy = tight_sqrt(tight_div(e.r2 * a, e.det)) * 1.0001f + 1e-3f;  // half height of the ellipse (slightly widened)
    float r = tight_sqrt(e.r2);
    e.dy_ext = tight_div(r * b, tight_sqrt(c * e.det));  // dy of the leftmost point (the rightmost is at -dy_ext)
    return e;
}

// Tight binning: the columns [*c0, *c1) of tile row `ty` that the region of span `e` (tight_span(p)) touches, inside
// the Gaussian's rect. Within the horizontal strip of the row (pixel edges ty*16 .. ty*16+16, a superset of the pixel
// centres) the ellipse's x-extent comes from its x-extreme points, so the cost is O(rows), not O(tiles).
DD3G_HD void tight_row_span(const Projected& p, const TightSpan& e, int ty, int* c0, int* c1) {
    *c0 = p.tx0;
    *c1 = p.tx0;
    if (e.kind == 0) return;
    if (e.kind == 1) {  // degenerate after rounding: keep the whole rect row
        *c1 = p.tx1;
        return;
    }
    float a = p.ca, b = p.cb;
    float lo = (float)(ty * kTile) - p.y, hi = (float)(ty * kTile + kTile) - p.y;
    lo = fmaxf(lo, -e.hy);
    hi = fminf(hi, e.hy);
    if (lo > hi) return;
    float dyr = clampf(-e.dy_ext, lo, hi), dyl = clampf(e.dy_ext, lo, hi);
    float xr = tight_div(-b * dyr + tight_sqrt(fmaxf(0.f, a * e.r2 - e.det * dyr * dyr)), a);
    float xl = tight_div(-b * dyl - tight_sqrt(fmaxf(0.f, a * e.r2 - e.det * dyl * dyl)), a);
    float pad = 1e-3f * (1.f + fabsf(xr) + fabsf(xl));  // rounding slack, in pixels
    float x_lo = p.x + xl - pad, x_hi = p.x + xr + pad;
    int t0 = (int)clampf(floorf(x_lo / (float)kTile), (float)p.tx0, (float)p.tx1);
    int t1 = (int)clampf(floorf(x_hi / (float)kTile) + 1.f, (float)p.tx0, (float)p.tx1);
    if (t1 > t0) {
        *c0 = t0;
        *c1 = t1;
    }
}

// tight_row_span for one row, the span computed here (the same values as a walk's precomputed span).
DD3G_HD void tight_row(const Projected& p, int ty, int* c0, int* c1) { tight_row_span(p, tight_span(p), ty, c0, c1); }

// The blend loop's rejection threshold for a Gaussian of this opacity (see kRejectMargin), stored with its conic by the
// projection: log2(kAlphaThreshold / opacity) - kRejectMargin.
DD3G_HD float reject_log2(float opacity) {
#if defined(__CUDA_ARCH__)
    return __log2f(kAlphaThreshold / opacity) - kRejectMargin;
#else
    return log2f(kAlphaThreshold / opacity) - kRejectMargin;
#endif
}

// Warp culling in the raster kernels: a 16x16 tile's 256 pixels are 8 warps of kWarpW x (32 / kWarpW) pixels, warp w
// covering columns (w % (16 / kWarpW)) * kWarpW .. + kWarpW - 1 and rows (w / (16 / kWarpW)) * (32 / kWarpW) .. of
// the tile. Bit w of the result is set when the Gaussian (mean (mx, my), conic a, b, c as Projected) may have
// alpha >= 1/255 at a pixel centre of warp w of the tile whose top-left pixel corner is (x0, y0); a clear bit means
// the blend loop would reject it at all 32 pixels, so the warp can skip it. `reject` is the pre-test's threshold
// log2(kAlphaThreshold / opacity) - kRejectMargin: the pairs that pass it have sigma <= -reject ln 2, and the mask
// keeps the ellipse q(d) = a dx^2 + 2 b dx dy + c dy^2 <= r2 = 2 (-reject ln 2 + kSigmaMargin) around them.
// Cheap on purpose (one reciprocal, a square root per band of rows; it runs once per staged Gaussian and tile, in
// front of the blending): per band of rows, the ellipse's x-extent is bounded by its centre line x = -b/a dy at the
// band's two ends, widened by its largest half-width within the band (at the row nearest its centre) -- a superset
// of the exact extent, equal to it for axis-aligned ellipses.
template <int kWarpW>
DD3G_HD uint32_t warp_mask(float mx, float my, float a, float b, float c, float reject, float x0, float y0) {
    constexpr int kCols = kTile / kWarpW, kRows = 32 / kWarpW, kBands = kTile / kRows;
    static_assert(kCols * kWarpW == kTile && kRows * kWarpW == 32 && kBands * kRows == kTile, "8 warps of 32");
    const float r2 = 2.f * (kSigmaMargin - reject * kLn2);
    if (!(r2 > 0.f)) return 0u;
    const float det = a * c - b * b;
    if (!(det > 0.f) || !(a > 0.f) || !(c > 0.f)) return (1u << (kCols * kBands)) - 1u;  // degenerate: every warp
    const float ia = 1.f / a;
    const float slope = -b * ia, w0 = r2 * ia, k = det * ia * ia;  // x-centre slope; half-width^2 = w0 - k dy^2
    uint32_t mask = 0;
    for (int band = 0; band < kBands; ++band) {
        const float lo = y0 + (float)(band * kRows) + 0.5f - my, hi = lo + (float)(kRows - 1);  // centre rows, from my
        const float dn = clampf(0.f, lo, hi);  // the band's row nearest the centre: its widest
        const float w2 = w0 - k * dn * dn;
        if (w2 < 0.f) continue;  // the ellipse ends before the band
        const float w = sqrtf(w2) * 1.0001f + 1e-3f;  // (slightly widened for rounding)
        const float xa = slope * lo, xb = slope * hi;
        const float x_lo = mx + fminf(xa, xb) - w, x_hi = mx + fmaxf(xa, xb) + w;
        for (int col = 0; col < kCols; ++col) {
            const float c_lo = x0 + (float)(col * kWarpW) + 0.5f, c_hi = c_lo + (float)(kWarpW - 1);
            if (x_hi >= c_lo && x_lo <= c_hi) mask |= 1u << (band * kCols + col);
        }
    }
    return mask;
}

}  // namespace dd3g
