// host_twin.cpp: runs the rasteriser's per-Gaussian code (cuda/src/raster_math.h, the same source the GPU
// kernels include) on the CPU, plus a plain CPU version of the binning and blending, so that CI without a GPU
// can test the arithmetic. Used by tests/cuda/test_host_twin.py; build:
//     g++ -std=c++17 -O2 -Icuda/src cuda/tests/host_twin.cpp -o host_twin
// Usage: host_twin IN OUT   (binary formats: see tests/cuda/test_host_twin.py)
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <vector>

#include "raster_math.h"

namespace {

template <typename T>
bool read(FILE* f, T* dst, size_t n) { return fread(dst, sizeof(T), n, f) == n; }

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: host_twin IN OUT\n");
        return 2;
    }
    FILE* f = fopen(argv[1], "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open\n", argv[1]);
        return 2;
    }
    int32_t hdr[5];
    float cam[28];
    if (!read(f, hdr, 5) || !read(f, cam, 28)) {
        fprintf(stderr, "%s: short header\n", argv[1]);
        return 2;
    }
    const int N = hdr[0], K = hdr[1], W = hdr[2], H = hdr[3];
    const bool tight = hdr[4] != 0;
    const float* V = cam;
    const float* Kc = cam + 16;
    const float near_plane = cam[25], far_plane = cam[26], eps2d = cam[27];
    std::vector<float> means(3 * N), quats(4 * N), scales(3 * N), opac(N), sh((size_t)N * K * 3);
    if (!read(f, means.data(), means.size()) || !read(f, quats.data(), quats.size()) ||
        !read(f, scales.data(), scales.size()) || !read(f, opac.data(), opac.size()) ||
        !read(f, sh.data(), sh.size())) {
        fprintf(stderr, "%s: short data\n", argv[1]);
        return 2;
    }
    fclose(f);

    const int tiles_x = (W + dd3g::kTile - 1) / dd3g::kTile, tiles_y = (H + dd3g::kTile - 1) / dd3g::kTile;
    std::vector<dd3g::Projected> P(N);
    std::vector<int32_t> n_rect(N, 0), n_tight(N, 0);
    float cc[3];
    dd3g::camera_centre(V, cc);
    for (int i = 0; i < N; ++i) {
        dd3g::Projected& p = P[i];
        dd3g::project_gaussian(&means[3 * i], &quats[4 * i], &scales[3 * i], opac[i], V, Kc, W, H, near_plane,
                               far_plane, eps2d, tiles_x, tiles_y, p);
        if (!p.visible) continue;
        n_rect[i] = (p.tx1 - p.tx0) * (p.ty1 - p.ty0);
        for (int ty = p.ty0; ty < p.ty1; ++ty) {
            int c0, c1;
            dd3g::tight_row(p, ty, &c0, &c1);
            n_tight[i] += c1 - c0;
        }
        const float* shg = &sh[(size_t)i * K * 3];
        float rgb[3];
        dd3g::eval_sh(K, means[3 * i] - cc[0], means[3 * i + 1] - cc[1], means[3 * i + 2] - cc[2],
                      [&](int j) { return shg[j]; }, rgb);
        p.r = std::max(rgb[0] + 0.5f, 0.f);
        p.g = std::max(rgb[1] + 0.5f, 0.f);
        p.b = std::max(rgb[2] + 0.5f, 0.f);
    }

    // Bin in depth order (stable: ties keep index order, like the stable GPU radix sorts).
    std::vector<int> order(N);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
        bool va = P[a].visible && (tight ? n_tight[a] : n_rect[a]) > 0;
        bool vb = P[b].visible && (tight ? n_tight[b] : n_rect[b]) > 0;
        if (va != vb) return va;
        return va && P[a].depth < P[b].depth;
    });
    std::vector<std::vector<int>> bins((size_t)tiles_x * tiles_y);
    for (int i : order) {
        const dd3g::Projected& p = P[i];
        if (!p.visible) continue;
        for (int ty = p.ty0; ty < p.ty1; ++ty) {
            int c0 = p.tx0, c1 = p.tx1;
            if (tight) dd3g::tight_row(p, ty, &c0, &c1);
            for (int tx = c0; tx < c1; ++tx) bins[(size_t)ty * tiles_x + tx].push_back(i);
        }
    }
    std::vector<float> img((size_t)H * W * 5, 0.f);
    for (int py = 0; py < H; ++py) {
        for (int px = 0; px < W; ++px) {
            const std::vector<int>& bin = bins[(size_t)(py / dd3g::kTile) * tiles_x + px / dd3g::kTile];
            float T = 1.f, c[4] = {0, 0, 0, 0};
            const float fx = px + 0.5f, fy = py + 0.5f;
            for (int i : bin) {
                const dd3g::Projected& p = P[i];
                float dx = p.x - fx, dy = p.y - fy;
                float sigma = 0.5f * (p.ca * dx * dx + p.cc * dy * dy) + p.cb * dx * dy;
                float alpha = std::min(dd3g::kAlphaMax, p.opacity * expf(-sigma));
                if (sigma < 0.f || alpha < dd3g::kAlphaThreshold) continue;
                float next_T = T * (1.f - alpha);
                if (next_T <= dd3g::kTransmittanceMin) break;
                float w = alpha * T;
                c[0] += p.r * w;
                c[1] += p.g * w;
                c[2] += p.b * w;
                c[3] += p.depth * w;
                T = next_T;
            }
            float* o = &img[((size_t)py * W + px) * 5];
            o[0] = c[0];
            o[1] = c[1];
            o[2] = c[2];
            o[3] = 1.f - T;
            o[4] = c[3] / std::max(1.f - T, 1e-10f);
        }
    }

    FILE* g = fopen(argv[2], "wb");
    if (!g) {
        fprintf(stderr, "%s: cannot write\n", argv[2]);
        return 2;
    }
    for (int i = 0; i < N; ++i) {
        const dd3g::Projected& p = P[i];
        float row[11] = {p.visible ? 1.f : 0.f, p.x, p.y, p.depth, p.opacity, p.ca, p.cb, p.cc, p.r, p.g, p.b};
        if (!p.visible) std::fill(row + 1, row + 11, 0.f);
        int32_t ti[6] = {p.tx0, p.ty0, p.tx1, p.ty1, n_rect[i], n_tight[i]};
        if (!p.visible) std::fill(ti, ti + 4, 0);
        fwrite(row, sizeof(float), 11, g);
        fwrite(ti, sizeof(int32_t), 6, g);
    }
    fwrite(img.data(), sizeof(float), img.size(), g);
    fclose(g);
    return 0;
}
