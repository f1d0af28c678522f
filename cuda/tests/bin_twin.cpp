// bin_twin.cpp: runs the binned path of cuda/src/dd3g_raster.cu (the per-thread pieces in cuda/src/bin_sort.h that
// k_project, k_bin_scan, k_bin_scatter and k_raster_binned call) on the CPU, phase by phase, and checks it against
// plain C++ written for this test. Used by tests/cuda/test_bin_twin.py; build:
//     g++ -std=c++17 -O2 -Icuda/src -Icuda/tests cuda/tests/bin_twin.cpp -o bin_twin
// Usage: bin_twin SEED CASES   -> prints one summary line, exit 0 if every case matched, 1 otherwise.
//
// Walks: for random projected Gaussians (twin_cases.h), bin_walk visits exactly emit_walk.h's tiles in its order.
// Lists: random frames of several cameras: counts per tile (the count pass), bin_range over the scan (with
// capacities above, at and below the list size), per-block offsets inside each tile taken in a random block
// order, ranks handed out in a random order (the atomics), and each tile's range then holds exactly its entries
// (all of them, or a subset of the right size when clamped).
// Tile sort: random sets of distinct keys (many equal depths, so the number decides), sorted in one piece or in
// progressive rounds (count with min/max, one-histogram split or exact radix selection, collect, bitonic sort) with
// small and large kTileSortMax-like limits; the concatenated rounds must equal std::sort, each round must hold at
// least min(target, remaining) and at most the limit keys.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <vector>

#include "bin_sort.h"
#include "emit_walk.h"
#include "twin_cases.h"

namespace {

using twin::I;
using twin::U;

long long g_walk_tiles = 0, g_blocks = 0, g_clamped = 0, g_rounds = 0, g_multi_round = 0, g_keys = 0,
          g_split_rounds = 0, g_exact_rounds = 0, g_split_walks = 0;

bool fail(const char* what, long long a, long long b) {
    printf("FAIL %s (%lld vs %lld)\n", what, a, b);
    return false;
}

// bin_walk vs emit_walk.h's serial writer walking the row record (its keys without the camera base)
bool check_walk(std::mt19937_64& rng) {
    const int tiles_x = I(rng, 1, 70), tiles_y = I(rng, 1, 70);
    const bool tight = U(rng, 0, 1) < 0.7;
    dd3g::Projected p{};
    twin::random_projected(rng, tiles_x, tiles_y, p);
    std::vector<uint32_t> ours;
    dd3g::bin_walk(p, tight, tiles_x, [&](uint32_t t) { ours.push_back(t); });
    const int area = (p.tx1 - p.tx0) * (p.ty1 - p.ty0);
    std::vector<uint32_t> keys(area + 1, 0xFFFFFFFFu), vals(area + 1, 0);
    uint32_t rec[dd3g::kRecordWords];  // the default path's walk: the projection's record, then the per-thread writer
    dd3g::make_row_record(p, tight, 0, rec);
    dd3g::RowSource src = dd3g::row_source(rec, tight, 0);
    if (src.kind == dd3g::kRowsComputed) dd3g::row_source_compute(src, p.x, p.y, p.opacity, p.ca, p.cb, p.cc);
    dd3g::emit_run_serial(src, 0, 7, tiles_x, 0, area, 0xFFFFFFFFu, keys.data(), vals.data());
    std::vector<uint32_t> theirs;
    for (int i = 0; i < area && keys[i] != 0xFFFFFFFFu; ++i) theirs.push_back(keys[i]);
    if (ours != theirs) return fail("bin_walk differs from the emit walk", (long long)ours.size(), (long long)theirs.size());
    // the kernels' shares (bin_walk_rows, `step` threads a Gaussian): together every tile of the walk, once
    const int step = I(rng, 1, 5);
    std::vector<uint32_t> shares;
    for (int first = 0; first < step; ++first)
        dd3g::bin_walk_rows(p, tight, tiles_x, first, step, [&](uint32_t t) { shares.push_back(t); });
    std::sort(shares.begin(), shares.end());
    std::sort(theirs.begin(), theirs.end());
    if (shares != theirs) return fail("the shares of bin_walk_rows differ from the walk", (long long)shares.size(),
                                      (long long)theirs.size());
    g_walk_tiles += (long long)ours.size();
    g_split_walks += step > 1 && p.ty1 - p.ty0 > 1;
    return true;
}

// count -> scan (bin_range) -> scatter with slots in a random order: each tile's range holds its own entries
bool check_list(std::mt19937_64& rng, int which) {
    const int C = I(rng, 1, 3), N = I(rng, 1, 300), tiles_x = I(rng, 1, 40), tiles_y = I(rng, 1, 40);
    const bool tight = which % 3 != 0;
    const int tpc = tiles_x * tiles_y, tiles = C * tpc;
    std::vector<std::vector<uint32_t>> walks(C * N);  // camera-based tiles of every (camera, Gaussian)
    for (int idx = 0; idx < C * N; ++idx) {
        if (U(rng, 0, 1) < 0.15) continue;  // culled
        dd3g::Projected p{};
        twin::random_projected(rng, tiles_x, tiles_y, p);
        const uint32_t base = (uint32_t)(idx / N) * (uint32_t)tpc;
        dd3g::bin_walk(p, tight, tiles_x, [&](uint32_t t) { walks[idx].push_back(base + t); });
    }
    // count as k_bin_count: blocks of B Gaussians of one camera, in a random order (the hardware's), each adds its
    // per-tile histogram to the tile counters with one atomic per touched tile and keeps what it returned (the
    // block's offset inside the tile)
    const int B = I(rng, 1, 64), nblk = (N + B - 1) / B;
    std::vector<int> order(C * nblk);
    for (int i = 0; i < C * nblk; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<uint32_t> counts(tiles, 0), boff((size_t)C * nblk * tpc, 0xDEADBEEFu);
    for (int blk : order) {
        const int cam = blk / nblk, g0 = (blk % nblk) * B;
        std::vector<uint32_t> local(tpc, 0);
        for (int g = g0; g < std::min(N, g0 + B); ++g)
            for (uint32_t t : walks[cam * N + g]) ++local[t - (uint32_t)(cam * tpc)];
        for (int t = 0; t < tpc; ++t)
            if (local[t]) {
                boff[(size_t)blk * tpc + t] = counts[cam * tpc + t];
                counts[cam * tpc + t] += local[t];
            }
    }
    uint64_t M = 0;
    for (uint32_t c : counts) M += c;
    uint64_t cap;
    switch (which % 4) {
        case 0: cap = M + (uint64_t)I(rng, 0, 500); break;
        case 1: cap = M; break;
        default: cap = M > 1 ? (uint64_t)I(rng, 1, (int)M - 1) : 1; break;
    }
    std::vector<uint64_t> s0(tiles), s1(tiles);
    uint64_t carry = 0;
    for (int t = 0; t < tiles; ++t) {
        dd3g::bin_range(carry, counts[t], cap, &s0[t], &s1[t]);
        carry += counts[t];
    }
    if (carry != M) return fail("scan total", (long long)carry, (long long)M);
    // scatter as k_bin_scatter: the same blocks in another random order; an entry's slot is the tile's start + the
    // block's offset + a rank inside the block handed out in a random order (shared atomics); at or past the tile's
    // end: dropped
    std::shuffle(order.begin(), order.end(), rng);
    const uint32_t kPoison = 0xA5A5A5A5u;
    std::vector<uint32_t> list(cap + 64, kPoison);
    for (int blk : order) {
        const int cam = blk / nblk, g0 = (blk % nblk) * B;
        std::vector<std::pair<uint32_t, uint32_t>> entries;  // (tile, number)
        for (int g = g0; g < std::min(N, g0 + B); ++g)
            for (uint32_t t : walks[cam * N + g]) entries.push_back({t, (uint32_t)(cam * N + g)});
        std::shuffle(entries.begin(), entries.end(), rng);
        std::vector<uint32_t> rank(tpc, 0);
        for (auto [t, idx] : entries) {
            const uint32_t lt = t - (uint32_t)(cam * tpc);
            const uint64_t slot = s0[t] + boff[(size_t)blk * tpc + lt] + rank[lt]++;
            if (slot < s1[t]) {
                if (list[slot] != kPoison) return fail("slot written twice", (long long)slot, t);
                list[slot] = idx;
            }
        }
        g_blocks += 1;
    }
    for (size_t j = cap; j < list.size(); ++j)
        if (list[j] != kPoison) return fail("write at or past the capacity", (long long)j, (long long)cap);
    for (int t = 0; t < tiles; ++t) {
        std::set<uint32_t> want;
        for (int idx = 0; idx < C * N; ++idx)
            for (uint32_t u : walks[idx])
                if (u == (uint32_t)t) want.insert((uint32_t)idx);
        if (s1[t] - s0[t] > want.size()) return fail("range longer than the tile's entries", t, (long long)want.size());
        if (cap >= M && s1[t] - s0[t] != want.size()) return fail("range misses entries", t, (long long)want.size());
        std::set<uint32_t> got;
        for (uint64_t j = s0[t]; j < s1[t]; ++j) {
            if (!want.count(list[j])) return fail("foreign entry in a tile's range", t, (long long)list[j]);
            got.insert(list[j]);
        }
        if (got.size() != s1[t] - s0[t]) return fail("an entry repeated in a tile", t, (long long)got.size());
    }
    g_clamped += cap < M;
    return true;
}

void bitonic_sort(std::vector<uint64_t>& s, int n) {  // as block_sort_keys: pad, then stage by stage
    const int P = dd3g::next_pow2(n);
    for (int i = n; i < P; ++i) s[i] = dd3g::kKeyNone;
    for (int k = 2; k <= P; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1)
            for (int q = 0; q < (P >> 1); ++q) dd3g::bitonic_step(s.data(), q, k, j);
}

// k_raster_binned's rounds over one tile's keys (in list order); the blend order must be the sorted keys
bool check_tile(std::mt19937_64& rng, int which) {
    static const int limits[] = {2, 8, 64, 256, 2048};
    const int S = limits[which % 5];
    const int n = which % 7 == 0 ? I(rng, 1, 4) : I(rng, 1, which % 2 ? 9000 : 300);
    // distinct keys: depths from a small pool (ties), numbers distinct
    const int depths = which % 3 == 0 ? n : I(rng, 1, 50);  // all depths distinct, or a small pool (ties, lumps)
    std::vector<uint32_t> pool(depths);
    for (auto& d : pool) d = (uint32_t)I(rng, 0x3C000000, 0x41000000);  // float bits of ~0.008 .. 8
    std::vector<uint32_t> numbers(n);
    for (int i = 0; i < n; ++i) numbers[i] = (uint32_t)i * 7u + (uint32_t)I(rng, 0, 6);
    std::shuffle(numbers.begin(), numbers.end(), rng);
    std::vector<uint64_t> list(n);
    for (int i = 0; i < n; ++i) list[i] = dd3g::bin_key(pool[I(rng, 0, depths - 1)], numbers[i]);
    std::vector<uint64_t> expect = list;
    std::sort(expect.begin(), expect.end());

    std::vector<uint64_t> blended, s_key(S);
    uint64_t lo = 0;
    int rounds = 0;
    const int first = std::min(256, S);  // kRoundFirst of a build whose kTileSortMax is S
    for (int round = 0;; ++round) {
        int m;
        uint64_t thr = dd3g::kKeyNone;
        if (lo == 0 && n <= first) {
            for (int j = 0; j < n; ++j) s_key[j] = list[j];
            m = n;
        } else {
            uint32_t left = 0;
            uint64_t kmin = dd3g::kKeyNone, kmax = 0;
            for (int j = 0; j < n; ++j)
                if (list[j] >= lo) {
                    ++left;
                    kmin = std::min(kmin, list[j]);
                    kmax = std::max(kmax, list[j]);
                }
            if (left == 0) break;
            const uint32_t target = (uint32_t)dd3g::bin_round_target(round, first, S);
            if (target < (uint32_t)std::min(first << std::min(round, 20), S)) return fail("round target", target, round);
            uint32_t expect_taken = left;
            if (left > target) {
                const int shift = dd3g::bin_split_shift(kmin, kmax);
                uint32_t hist[256] = {};
                for (int j = 0; j < n; ++j)
                    if (list[j] >= lo) ++hist[dd3g::bin_select_digit(list[j], shift)];
                int pick = -1;
                uint32_t pick_count = 0, below = 0;
                for (int d = 0; d < 256; ++d) {  // the kernel: one thread per digit, an exclusive block scan
                    if (dd3g::bin_split_is_pick(below, hist[d], target)) {
                        if (pick >= 0) return fail("two digits picked", pick, d);
                        pick = d;
                        pick_count = below + hist[d];
                    }
                    below += hist[d];
                }
                if (pick < 0 || below != left) return fail("no digit picked", pick, (long long)below);
                if (pick_count <= (uint32_t)S) {
                    thr = dd3g::bin_split_thr(kmin, shift, pick);
                    expect_taken = pick_count;
                    ++g_split_rounds;
                } else {
                    uint64_t prefix = 0;
                    uint32_t r = (uint32_t)S;
                    for (int shift8 = 56; shift8 >= 0; shift8 -= 8) {
                        uint32_t h8[256] = {};
                        for (int j = 0; j < n; ++j)
                            if (dd3g::bin_select_match(list[j], lo, prefix, shift8))
                                ++h8[dd3g::bin_select_digit(list[j], shift8)];
                        dd3g::bin_select_pick(h8, shift8, &prefix, &r);
                    }
                    thr = prefix;
                    expect_taken = (uint32_t)S;
                    ++g_exact_rounds;
                }
            }
            uint32_t taken = 0;
            std::vector<uint64_t> got;
            for (int j = 0; j < n; ++j)
                if (list[j] >= lo && list[j] <= thr) got.push_back(list[j]);
            std::shuffle(got.begin(), got.end(), rng);  // slots in atomic order
            for (uint64_t k : got) {
                if (taken < (uint32_t)S) s_key[taken] = k;
                ++taken;
            }
            if (taken != expect_taken || taken > (uint32_t)S || taken < std::min(target, left))
                return fail("round size", taken, expect_taken);
            m = (int)taken;
        }
        std::vector<uint64_t> buf(dd3g::next_pow2(std::max(m, 1)));
        std::copy(s_key.begin(), s_key.begin() + m, buf.begin());
        bitonic_sort(buf, m);
        blended.insert(blended.end(), buf.begin(), buf.begin() + m);
        ++rounds;
        if (thr == dd3g::kKeyNone) break;
        lo = thr + 1;
    }
    if (blended != expect) return fail("blend order differs from the sorted keys", (long long)blended.size(), n);
    g_rounds += rounds;
    g_multi_round += rounds > 1;
    g_keys += n;
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: bin_twin SEED CASES\n");
        return 2;
    }
    std::mt19937_64 rng(std::strtoull(argv[1], nullptr, 10));
    const int cases = std::atoi(argv[2]);
    for (int i = 0; i < cases; ++i) {
        for (int w = 0; w < 40; ++w)
            if (!check_walk(rng)) return 1;
        if (!check_list(rng, i)) return 1;
        if (!check_tile(rng, i)) return 1;
    }
    printf("OK walk_tiles=%lld split_walks=%lld blocks=%lld clamped=%lld keys=%lld rounds=%lld multi_round=%lld "
           "split_rounds=%lld exact_rounds=%lld\n", g_walk_tiles, g_split_walks, g_blocks, g_clamped, g_keys, g_rounds,
           g_multi_round, g_split_rounds, g_exact_rounds);
    return 0;
}
