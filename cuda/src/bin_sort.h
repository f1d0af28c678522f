// bin_sort.h: the per-thread pieces of the small-scene ("binned") path of dd3g_raster.cu, compiled for the GPU
// and for the CPU (cuda/tests/bin_twin.cpp, tests/cuda/test_bin_twin.py), so that a CPU test checks the very code
// that the kernels run.
//
// The binned path replaces the depth sort, the scan over Gaussians, the list writer, the tile sort and the range
// search of the default path (about ten dependent kernels) by three kernels:
//   count    k_bin_count projects and counts every tile of its Gaussian's walk in a shared-memory histogram of the
//            block's camera; the block adds its histogram to the per-tile counters (one global atomic per tile
//            it touched) and keeps what each atomic returned: the block's offset inside that tile
//   scan     one block turns the counters into tile ranges [start, end) (clamped to the capacity)
//   scatter  the walk again; each entry goes to tile start + block offset + a rank inside the block (a shared
//            atomic) and stores (depth bits, index)
// and a raster kernel that sorts each tile's entries in shared memory by the 64-bit key
//     (float bits of the camera depth) << 32 | (camera, Gaussian) number
// before blending. The default path orders a tile by a stable depth sort of the (camera, Gaussian) numbers, i.e. by
// exactly this key (positive floats order like their bits; ties go to the smaller number), so both paths blend
// every tile in the same order and render bit-identical images. The atomics decide only where an entry is stored,
// never the order in which it is blended.
//
// A tile's entries are sorted in one piece when there are at most kRoundFirst (256) of them (bitonic sort of the
// next power of two). Larger tiles go in rounds (below: "progressive rounds"), each of which collects the keys in
// [lo, thr], sorts and blends them, and moves lo past thr, until every pixel of the tile has stopped. A round's
// `thr` comes from one histogram pass (bin_split_*), or, where that would take more than kTileSortMax keys, from an
// MSD radix selection of the kTileSortMax-th smallest key (a 256-bin histogram per byte). The keys of one tile are
// distinct (a Gaussian enters a tile at most once and the number is in the key), so the rounds blend every key
// once, in ascending order.
#pragma once

#include "raster_math.h"

// Keys sorted at once (the most a round holds): 8 bytes each in shared memory (2,048: 16 KB, 29 KB with the blending batch,
// which leaves room for 7 raster blocks per H100/H200 SM; 4,096 would leave 4). A power of two, at least 2. Test
// builds set it small (cuda/tests/build_emit_variants.sh, build/binned_s64) to run the rounds everywhere.
#ifndef DD3G_RASTER_TILE_SORT_MAX
#define DD3G_RASTER_TILE_SORT_MAX 2048
#endif

namespace dd3g {

constexpr int kTileSortMax = DD3G_RASTER_TILE_SORT_MAX;
static_assert(kTileSortMax >= 2 && (kTileSortMax & (kTileSortMax - 1)) == 0, "a power of two, at least 2");
// The count and scatter kernels aggregate per block in shared memory (one camera per block): a frame bins only if a
// camera has at most kBinTilesMax tiles (4,096 = 1024 x 1024 pixels; 32 KB for the scatter's two arrays).
constexpr int kBinTilesMax = 4096;
constexpr int kBinThreads = 128;  // (camera, Gaussian) pairs per count / scatter block
// Threads per (camera, Gaussian) in the count and scatter kernels (bin_walk_rows). 0: by size, 4 up to
// kBinSplitFourMax pairs, else 2 (H200, benchmarks/rasterizer_notes.md run 10: 4 is best at 6k and 16k Gaussians,
// 2 at 65k, where a Gaussian covers fewer tile rows); 1, 2 or 4 force one (test and timing builds).
#ifndef DD3G_RASTER_BIN_SPLIT
#define DD3G_RASTER_BIN_SPLIT 0
#endif
static_assert(DD3G_RASTER_BIN_SPLIT == 0 || DD3G_RASTER_BIN_SPLIT == 1 || DD3G_RASTER_BIN_SPLIT == 2 ||
                  DD3G_RASTER_BIN_SPLIT == 4,
              "0 (by size), 1, 2 or 4 threads per Gaussian");
constexpr int64_t kBinSplitFourMax = 1 << 15;
inline int bin_split_for(int64_t pairs) {
    if (DD3G_RASTER_BIN_SPLIT != 0) return DD3G_RASTER_BIN_SPLIT;
    return pairs <= kBinSplitFourMax ? 4 : 2;
}
constexpr uint64_t kKeyNone = ~0ull;  // padding: sorts after every real key (depth bits < 0xFFFFFFFF)

DD3G_HD uint64_t bin_key(uint32_t depth_bits, uint32_t index) { return ((uint64_t)depth_bits << 32) | index; }
DD3G_HD uint32_t bin_key_index(uint64_t key) { return (uint32_t)key; }

DD3G_HD int next_pow2(int n) {
    int p = 1;
    while (p < n) p <<= 1;
    return p;
}

// The range of a tile whose entries start at `start` of the list (exclusive prefix sum of the tile counts, in tile
// order) clamped to the capacity: the scan kernel's output. Entries at or past the capacity are dropped.
DD3G_HD void bin_range(uint64_t start, uint64_t count, uint64_t capacity, uint64_t* s0, uint64_t* s1) {
    *s0 = start < capacity ? start : capacity;
    *s1 = start + count < capacity ? start + count : capacity;
}

// A share of the walk of a visible Gaussian: the rows ty0 + first, ty0 + first + step, ... (0 <= first < step); in
// each, f(ty * tiles_x + tx) for every tile (tight_row_span once per row, the span once per walk, or the whole rect
// row without tight binning).
// The `step` shares first = 0 .. step-1 together visit every tile of bin_walk once: the count and scatter kernels
// give each Gaussian bin_split_for(pairs) threads, so that a Gaussian over many tile rows is not one long serial
// chain of shared atomics.
template <typename F>
DD3G_HD void bin_walk_rows(const Projected& p, bool tight, int tiles_x, int first, int step, F&& f) {
    TightSpan e{};
    if (tight) e = tight_span(p);
    for (int ty = p.ty0 + first; ty < p.ty1; ty += step) {
        int c0 = p.tx0, c1 = p.tx1;
        if (tight) tight_row_span(p, e, ty, &c0, &c1);
        for (int tx = c0; tx < c1; ++tx) f((uint32_t)(ty * tiles_x + tx));
    }
}
// The whole walk, row by row, in emit_walk.h's order.
template <typename F>
DD3G_HD void bin_walk(const Projected& p, bool tight, int tiles_x, F&& f) {
    bin_walk_rows(p, tight, tiles_x, 0, 1, f);
}

// Bitonic sort of keys[0, n), n a power of two, ascending: for k = 2, 4, ..., n and j = k/2, ..., 1 (a barrier
// after every (k, j) stage) call bitonic_step for every pair q in [0, n/2).
DD3G_HD void bitonic_step(uint64_t* keys, int q, int k, int j) {
    const int i = ((q & ~(j - 1)) << 1) | (q & (j - 1));  // the pair's lower element; its partner is i + j
    const uint64_t a = keys[i], b = keys[i + j];
    if ((a > b) == ((i & k) == 0)) {  // ascending runs where bit k of i is 0, descending where it is 1
        keys[i] = b;
        keys[i + j] = a;
    }
}

// Radix selection of the r-th smallest (1-based) of the distinct keys >= lo, most significant byte first: for
// shift = 56, 48, ..., 0, histogram the byte at `shift` of every key for which bin_select_match holds, then
// bin_select_pick. After the pass at shift 0, prefix is the selected key.
DD3G_HD bool bin_select_match(uint64_t key, uint64_t lo, uint64_t prefix, int shift) {
    if (key < lo) return false;
    const int above = shift + 8;  // the bits already chosen
    return above >= 64 || (key >> above) == (prefix >> above);
}
DD3G_HD int bin_select_digit(uint64_t key, int shift) { return (int)((key >> shift) & 255u); }
// hist: the 256 counts of this pass. Chooses the byte whose bin holds the r-th candidate, sets it in *prefix and
// makes *r the rank inside that bin.
DD3G_HD void bin_select_pick(const uint32_t* hist, int shift, uint64_t* prefix, uint32_t* r) {
    uint32_t below = 0;
    int d = 0;
    for (; d < 255; ++d) {
        if (below + hist[d] >= *r) break;
        below += hist[d];
    }
    *r -= below;
    *prefix |= (uint64_t)d << shift;
}

// Progressive rounds (every tile with more than kRoundFirst keys). Pixels usually stop (transmittance below 1e-4)
// after a small part of a dense tile's list, so sorting the whole tile wastes most of the sort (measured: the sort was
// 48 of 180 us of a 65k-Gaussian frame, benchmarks/rasterizer_notes.md run 7). Round r takes at least
// bin_round_target(r) of the smallest keys not yet blended (256, 512, ... up to kTileSortMax), found by one
// histogram pass: all keys left lie in [kmin, kmax] and share the bits above the highest bit in which kmin and kmax
// differ, so the 8 bits at bin_split_shift order them; the round takes every key whose digit is at most the first
// digit at which the running count reaches the target (bin_split_is_pick), i.e. the keys in [lo, bin_split_thr].
// When that is more than kTileSortMax keys (a lumpy histogram), the round falls back to the exact radix selection.
constexpr int kRoundFirst = kTileSortMax < 256 ? kTileSortMax : 256;
// first << round, capped at sort_max (both powers of two, first <= sort_max)
DD3G_HD int bin_round_target(int round, int first, int sort_max) {
    const int shift = round < 30 ? round : 30;
    return (sort_max >> shift) >= first ? (first << shift) : sort_max;
}
DD3G_HD int bin_clz64(uint64_t x) {  // x != 0
#ifdef __CUDA_ARCH__
    return __clzll((long long)x);
#else
    return __builtin_clzll(x);
#endif
}
// kmin < kmax: the lowest bit of the 8-bit window that holds their highest differing bit at its top (or bit 0)
DD3G_HD int bin_split_shift(uint64_t kmin, uint64_t kmax) {
    const int top = 63 - bin_clz64(kmin ^ kmax);
    return top > 7 ? top - 7 : 0;
}
// Digit d is the pick when the keys of smaller digits are fewer than the target and those up to d are not.
DD3G_HD bool bin_split_is_pick(uint32_t below, uint32_t count, uint32_t target) {
    return below < target && below + count >= target;
}
// The largest key whose digit (at shift) is at most d, among keys sharing kmin's bits above the window.
DD3G_HD uint64_t bin_split_thr(uint64_t kmin, int shift, int d) {
    const int above = shift + 8;
    const uint64_t prefix = above >= 64 ? 0ull : (kmin >> above) << above;
    const uint64_t low = shift == 0 ? 0ull : (~0ull >> (64 - shift));
    return prefix | ((uint64_t)d << shift) | low;
}

}  // namespace dd3g
