// emit_twin.cpp: runs the three intersection-list writers of cuda/src/emit_walk.h (the code the k_emit /
// k_emit_staged / k_emit_flat kernels call) on the CPU over random cases and checks that they write the same list. Used by
// tests/cuda/test_emit_twin.py; build:
//     g++ -std=c++17 -O2 -Icuda/src cuda/tests/emit_twin.cpp -o emit_twin
// Usage: emit_twin SEED CASES   -> prints one summary line, exit 0 if every case matched, 1 otherwise.
// The flat writer (one thread per list position: emit_owner, emit_entry_at) runs position by position.
//
// The per-thread writer (emit_run_serial, DD3G_RASTER_EMIT=0) runs once per depth-sorted number k, as the old
// kernel's threads do. The staged writer runs as k_emit_staged does, with its barriers replaced by phases: per
// block, the segment; per window, every thread's emit_walk_fill into a "shared" window (guarded and poisoned every
// round), then every thread's emit_copy_out. Block sizes and windows other than the kernel's (kEmitThreads,
// kEmitChunk) are run too, so that long runs span many windows. Cases: random rects (1 x 1 up to the whole tile
// grid), random conics (tight rows of every shape, degenerate conics, opacities below 1/255 whose rows are all
// empty), culled Gaussians (count 0, garbage Projected: must not be read), counts larger than the walk (sentinel
// fill) or smaller (truncation), and capacities below, at and above the list size (the clamp).
// Every case runs twice from the same random draws: with a list per tile (gs = 0) and per group of 2 x 2 tiles
// (gs = 1, run 14), the reference for the latter built from the set of tiles that the Gaussian's tight rows touch;
// and where the counts are the walks', each tile's entries of its group's sorted list (by the tile's mask bit) must
// be its own sorted per-tile list, Gaussian for Gaussian: what k_raster's staging relies on.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "emit_walk.h"
#include "twin_cases.h"

namespace {

constexpr uint32_t kPoison = 0xA5A5A5A5u;  // never a key (< C * tiles + 1) nor a value (< C * N)
constexpr uint32_t kStale = 0x5A5A5A5Au;   // what the "shared" window holds before a round (stale data)
constexpr int kGuard = 64;                  // poisoned slots around every buffer: out-of-range writes show up
// The same for a list of 16-bit keys (Key = uint16_t: C * tiles < 65536, so every key and the sentinel are <= 65535;
// the cases keep C * tiles below 65534).
template <typename Key> constexpr Key poison_of() { return sizeof(Key) == 2 ? (Key)0xFFFFu : (Key)kPoison; }
template <typename Key> constexpr Key stale_of() { return sizeof(Key) == 2 ? (Key)0xFFFEu : (Key)kStale; }

struct Case {
    int C = 1, N = 0, tiles_x = 1, tiles_y = 1;
    int gs = 0, groups_x = 1, groups_y = 1;  // the list's walk: tiles (gs = 0) or 2 x 2 groups (gs = 1)
    bool tight = true;
    long long capacity = 0;
    std::vector<uint32_t> sorted_idx;        // depth order -> (camera, Gaussian) number
    std::vector<dd3g::Projected> proj;       // by (camera, Gaussian) number, what k_project stored
    std::vector<std::array<uint32_t, dd3g::kRecordWords>> recs;  // its row records (garbage where culled)
    std::vector<long long> counts, ends;     // by depth-sorted number
};

// What load_source gives a writer: the record, and for kRowsComputed the stored centre, opacity and conic.
dd3g::RowSource source(const Case& c, uint32_t idx) {
    dd3g::RowSource s = dd3g::row_source(c.recs[idx].data(), c.tight, c.gs);
    if (s.kind == dd3g::kRowsComputed) {
        const dd3g::Projected& q = c.proj[idx];
        dd3g::row_source_compute(s, q.x, q.y, q.opacity, q.ca, q.cb, q.cc);
    }
    return s;
}

// The list entries of one Gaussian by definition, in walk order, from the Projected (tight_row per tile row, no
// record): gs = 0, its tiles row-major (value = idx); gs = 1, for each group row the group columns from the first to
// the last one holding a touched tile, value = idx | (its touched tiles' bits) << kGroupMaskShift.
struct Entry {
    uint32_t key, val;  // key within the camera: row * cols + column
};
std::vector<Entry> walk_entries(const dd3g::Projected& p, bool tight, int gs, int cols, uint32_t idx) {
    std::vector<Entry> out;
    if (gs == 0) {
        for (int ty = p.ty0; ty < p.ty1; ++ty) {
            int c0 = p.tx0, c1 = p.tx1;
            if (tight) dd3g::tight_row(p, ty, &c0, &c1);
            for (int tx = c0; tx < c1; ++tx) out.push_back({(uint32_t)(ty * cols + tx), idx});
        }
        return out;
    }
    for (int gy = p.ty0 / 2; gy <= (p.ty1 - 1) / 2 && p.ty1 > p.ty0; ++gy) {
        std::vector<uint32_t> mask((size_t)cols, 0u);  // per group column: the touched tiles of the group
        for (int ty = 2 * gy; ty < 2 * gy + 2; ++ty) {
            if (ty < p.ty0 || ty >= p.ty1) continue;
            int c0 = p.tx0, c1 = p.tx1;
            if (tight) dd3g::tight_row(p, ty, &c0, &c1);
            for (int tx = c0; tx < c1; ++tx) mask[(size_t)(tx / 2)] |= 1u << ((ty % 2) * 2 + tx % 2);
        }
        int g0 = cols, g1 = -1;
        for (int g = 0; g < cols; ++g)
            if (mask[(size_t)g]) g0 = std::min(g0, g), g1 = std::max(g1, g);
        for (int g = g0; g <= g1; ++g)
            out.push_back({(uint32_t)(gy * cols + g), idx | mask[(size_t)g] << dd3g::kGroupMaskShift});
    }
    return out;
}

Case make_case(std::mt19937_64& rng, int which, int gs) {
    auto U = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
    auto I = [&](int a, int b) { return std::uniform_int_distribution<int>(a, b)(rng); };  // [a, b]
    Case c;
    c.C = I(1, 3);
    c.N = which % 7 == 0 ? I(1, 40) : I(50, 900);
    c.tiles_x = which % 13 == 4 ? I(250, 300) : I(1, 70);  // wide grids: rects over kRecordCols columns
    c.tiles_y = I(1, 70);
    c.gs = gs;
    c.groups_x = (c.tiles_x + gs) >> gs;
    c.groups_y = (c.tiles_y + gs) >> gs;
    c.tight = which % 3 != 0;
    const int CN = c.C * c.N;
    c.proj.resize(CN);
    std::vector<int> walk(CN, 0);
    for (int i = 0; i < CN; ++i) {
        dd3g::Projected& p = c.proj[i];
        if (U(0, 1) < 0.15) {  // culled: k_project left these fields unwritten (count 0); garbage
            p.tx0 = I(-100000, 100000); p.ty0 = I(-100000, 100000); p.tx1 = I(-100000, 100000);
            p.ty1 = I(-100000, 100000);
            p.x = p.y = p.ca = p.cb = p.cc = p.opacity = p.depth = NAN;
            p.visible = false;
            continue;
        }
        twin::random_projected(rng, c.tiles_x, c.tiles_y, p);
        if (U(0, 1) < 0.03) {  // rects at the record's limits: 11 to 14 rows, 254 to 257 columns
            const int h = std::min(c.tiles_y, I(dd3g::kRecordRows - 1, dd3g::kRecordRows + 2));
            const int w = std::min(c.tiles_x, I(dd3g::kRecordCols - 1, dd3g::kRecordCols + 2));
            p.ty0 = I(0, c.tiles_y - h);
            p.ty1 = p.ty0 + h;
            if (c.tiles_x > dd3g::kRecordCols) {
                p.tx0 = I(0, c.tiles_x - w);
                p.tx1 = p.tx0 + w;
            }
        }
        walk[i] = (int)walk_entries(p, c.tight, c.gs, c.groups_x, 0).size();
    }
    // the records k_project stores: their counts are the walks'; culled pairs get none (garbage here)
    c.recs.resize(CN);
    for (int i = 0; i < CN; ++i) {
        auto& w = c.recs[i];
        if (!c.proj[i].visible) {
            w.fill(kPoison);
            continue;
        }
        const uint32_t n = dd3g::make_row_record(c.proj[i], c.tight, c.gs, w.data());
        if ((int)n != walk[i]) {
            fprintf(stderr, "record count %u, walk %d (rect %d %d %d %d)\n", n, walk[i], c.proj[i].tx0, c.proj[i].ty0,
                    c.proj[i].tx1, c.proj[i].ty1);
            exit(1);
        }
    }
    // depth order: a random permutation of the (camera, Gaussian) numbers
    c.sorted_idx.resize(CN);
    for (int i = 0; i < CN; ++i) c.sorted_idx[i] = (uint32_t)i;
    std::shuffle(c.sorted_idx.begin(), c.sorted_idx.end(), rng);
    c.counts.resize(CN);
    c.ends.resize(CN);
    long long M = 0;
    for (int k = 0; k < CN; ++k) {
        const uint32_t i = c.sorted_idx[k];
        long long n = c.proj[i].visible ? walk[i] : 0;
        if (c.proj[i].visible && which % 5 == 1) {  // recount disagrees with the count: fill / truncation
            const double r = U(0, 1);
            if (r < 0.05) n += I(1, 40);
            else if (r < 0.10) n = std::max(0LL, n - I(1, 5));
        }
        c.counts[k] = n;
        M += n;
        c.ends[k] = M;
    }
    switch (which % 4) {
        case 0: c.capacity = M + I(0, 3000); break;                            // room to spare (sentinel pad)
        case 1: c.capacity = M; break;                                         // exact
        case 2: c.capacity = M > 0 ? I(1, (int)std::max(1LL, M - 1)) : 1; break;  // clamp inside the list
        default: c.capacity = M > 0 ? std::max(1LL, M / 2) : 1; break;
    }
    if (which % 11 == 5) c.capacity = M > 0 ? std::max(1LL, M - 1) : 1;    // clamp at the last entry
    return c;
}

// the list by definition (from the Projected, tight_row per row, no record): the reference of every writer
uint32_t per_cam(const Case& c) { return (uint32_t)(c.groups_x * c.groups_y); }
// The key of unused positions (Plan::sentinel): one past the last tile's, or with groups the last group's own key.
uint32_t sentinel_of(const Case& c) { return (uint32_t)c.C * per_cam(c) - (uint32_t)c.gs; }

void run_reference(const Case& c, std::vector<uint32_t>& keys, std::vector<uint32_t>& vals) {
    const uint32_t CN = (uint32_t)(c.C * c.N);
    const uint32_t sentinel = sentinel_of(c), tpc = per_cam(c);
    for (uint32_t k = 0; k < CN; ++k) {
        long long pos = k > 0 ? c.ends[k - 1] : 0;
        const long long end = std::min(c.ends[k], c.capacity);
        if (pos >= end) continue;
        const uint32_t idx = c.sorted_idx[k];
        for (const Entry& e : walk_entries(c.proj[idx], c.tight, c.gs, c.groups_x, idx)) {
            if (pos >= end) break;
            keys[kGuard + pos] = (idx / (uint32_t)c.N) * tpc + e.key;
            vals[kGuard + pos] = e.val;
            ++pos;
        }
        for (; pos < end; ++pos) {
            keys[kGuard + pos] = sentinel;
            vals[kGuard + pos] = 0;
        }
    }
}

// per-thread writer: one "thread" per depth-sorted number
template <typename Key>
void run_serial(const Case& c, std::vector<Key>& keys, std::vector<uint32_t>& vals) {
    const uint32_t CN = (uint32_t)(c.C * c.N);
    const uint32_t sentinel = sentinel_of(c), tpc = per_cam(c);
    for (uint32_t k = 0; k < CN; ++k) {
        long long pos, end;
        dd3g::emit_run(c.ends.data(), k, c.capacity, &pos, &end);
        if (pos >= end) continue;
        const uint32_t idx = c.sorted_idx[k];
        dd3g::emit_run_serial(source(c, idx), (idx / (uint32_t)c.N) * tpc, idx, c.groups_x, pos, end, sentinel,
                              keys.data() + kGuard, vals.data() + kGuard);
    }
}

// flat writer: one "thread" per list position j < min(M, capacity), as k_emit_flat's grid-stride loop
template <typename Key>
void run_flat(const Case& c, std::vector<Key>& keys, std::vector<uint32_t>& vals) {
    const uint32_t CN = (uint32_t)(c.C * c.N);
    const uint32_t sentinel = sentinel_of(c), tpc = per_cam(c);
    if (CN == 0) return;
    const long long M = c.ends[CN - 1], lim = std::min(M, c.capacity);
    for (long long j = 0; j < lim; ++j) {
        const uint32_t k = dd3g::emit_owner(j, CN, c.ends.data());
        const uint32_t idx = c.sorted_idx[k];
        uint32_t key;  // as k_emit_flat: the entry's key, stored as Key
        dd3g::emit_entry_at(source(c, idx), (idx / (uint32_t)c.N) * tpc, idx, c.groups_x,
                            j - dd3g::run_begin(c.ends.data(), k), sentinel, &key, vals.data() + kGuard + j);
        keys[kGuard + j] = (Key)key;
    }
}

// new writer, phase by phase; returns false (with a message) on a violated invariant
template <typename Key>
bool run_staged(const Case& c, int nthreads, int chunk, std::vector<Key>& keys, std::vector<uint32_t>& vals,
                long long* rounds, char* msg, size_t msg_len) {
    const uint32_t CN = (uint32_t)(c.C * c.N);
    const uint32_t sentinel = sentinel_of(c), tpc = per_cam(c);
    std::vector<Key> s_keys(chunk + 2 * kGuard);
    std::vector<uint32_t> s_vals(chunk + 2 * kGuard);
    const Key poison = poison_of<Key>(), stale = stale_of<Key>();
    std::vector<dd3g::EmitWalk> w(nthreads);
    // copy-out target of one block: checked to hold writes inside the block's segment only, then moved to keys/vals
    std::vector<Key> out_k(keys.size(), poison);
    std::vector<uint32_t> out_v(vals.size(), kPoison);
    long long prev_hi = 0;
    const uint32_t blocks = (CN + nthreads - 1) / nthreads;
    for (uint32_t b = 0; b < blocks; ++b) {
        const uint32_t k0 = b * (uint32_t)nthreads;
        long long lo, hi;
        dd3g::emit_block_segment(k0, nthreads, CN, c.ends.data(), c.capacity, &lo, &hi);
        if (lo >= hi) continue;
        if (lo != prev_hi) {  // segments tile [0, min(M, capacity)) in block order
            snprintf(msg, msg_len, "block %u segment starts at %lld, previous ended at %lld", b, lo, prev_hi);
            return false;
        }
        prev_hi = hi;
        for (int t = 0; t < nthreads; ++t) {
            w[t] = dd3g::EmitWalk{};
            const uint32_t k = k0 + (uint32_t)t;
            if (k >= CN) continue;
            long long pos, end;
            dd3g::emit_run(c.ends.data(), k, c.capacity, &pos, &end);
            if (pos < end) {
                const uint32_t idx = c.sorted_idx[k];
                dd3g::emit_walk_begin(w[t], source(c, idx), (idx / (uint32_t)c.N) * tpc, idx, c.groups_x, pos, end);
            }
        }
        long long win_end = 0;
        for (long long win = dd3g::emit_first_window(lo); win < hi; win += chunk) {
            ++*rounds;
            win_end = win + chunk;
            if (win % dd3g::kEmitAlign != 0) {
                snprintf(msg, msg_len, "window %lld not aligned", win);
                return false;
            }
            std::fill(s_keys.begin(), s_keys.end(), stale);
            std::fill(s_vals.begin(), s_vals.end(), kStale);
            for (int t = 0; t < nthreads; ++t) {  // phase 1 (before the first barrier)
                if (w[t].pos < w[t].end && w[t].pos < win) {
                    snprintf(msg, msg_len, "thread %d at %lld before window %lld", t, w[t].pos, win);
                    return false;
                }
                dd3g::emit_walk_fill(w[t], win + chunk, sentinel, s_keys.data() + kGuard, s_vals.data() + kGuard, win);
            }
            for (int g = 0; g < kGuard; ++g)
                if (s_keys[g] != stale || s_vals[g] != kStale || s_keys[kGuard + chunk + g] != stale ||
                    s_vals[kGuard + chunk + g] != kStale) {
                    snprintf(msg, msg_len, "write outside the shared window (block %u, window %lld)", b, win);
                    return false;
                }
            // every slot that is copied out was written in this round
            const long long j0 = std::max(lo, win) - win, j1 = std::min(hi, win + chunk) - win;
            for (long long j = j0; j < j1; ++j)
                if (s_keys[kGuard + j] == stale || s_vals[kGuard + j] == kStale) {
                    snprintf(msg, msg_len, "slot %lld of window %lld not produced (block %u)", j, win, b);
                    return false;
                }
            for (int t = 0; t < nthreads; ++t)  // phase 2 (between the barriers)
                dd3g::emit_copy_out(t, nthreads, win, chunk, lo, hi, s_keys.data() + kGuard, s_vals.data() + kGuard,
                                    out_k.data() + kGuard, out_v.data() + kGuard);
        }
        // the block wrote exactly [lo, hi): scan its windows and the guards around them
        const long long i0 = std::max(0LL, dd3g::emit_first_window(lo)),
                        i1 = std::min((long long)out_k.size(), win_end + 2 * kGuard);
        for (long long i = i0; i < i1; ++i) {
            const long long pos = i - kGuard;
            const bool inside = pos >= lo && pos < hi;
            if (inside != (out_k[i] != poison) || inside != (out_v[i] != kPoison)) {
                snprintf(msg, msg_len, "block %u [%lld, %lld): position %lld written=%d", b, lo, hi, pos,
                         (int)(out_k[i] != poison));
                return false;
            }
            if (inside) {
                keys[i] = out_k[i];
                vals[i] = out_v[i];
                out_k[i] = poison;
                out_v[i] = kPoison;
            }
        }
        for (int t = 0; t < nthreads; ++t)
            if (w[t].pos != w[t].end) {
                snprintf(msg, msg_len, "block %u thread %d stopped at %lld of %lld", b, t, w[t].pos, w[t].end);
                return false;
            }
    }
    const long long M = CN ? c.ends[CN - 1] : 0;
    if (prev_hi != std::min(M, c.capacity)) {
        snprintf(msg, msg_len, "segments end at %lld, list at %lld", prev_hi, std::min(M, c.capacity));
        return false;
    }
    return true;
}

// k_ranges, lane by lane: the kRangeProbes probes of one half warp, then the narrowing, until the interval is empty.
long long range_search(const std::vector<uint32_t>& keys, long long n, uint32_t target, int* steps) {
    long long lo = 0, hi = n;
    while (lo < hi) {
        int c = 0;
        for (int j = 0; j < dd3g::kRangeProbes; ++j) c += keys[(size_t)dd3g::range_probe(lo, hi, j)] < target;
        dd3g::range_narrow(&lo, &hi, c);
        ++*steps;
    }
    return lo;
}

// Every key's range of a sorted list keys[0, n) (sentinel keys last), as k_ranges finds it (the search, both ends
// clamped to lim = min(list size, n): range_clamp), against std::lower_bound and a linear scan of the runs of
// keys[0, lim) (the list's own entries), for the keys [0, num_keys): with gs = 1 the last group's key is the
// sentinel, and its range is its entries before the unused tail. False (with a message) on a difference.
bool check_ranges(const std::vector<uint32_t>& keys, long long n, long long lim, uint32_t num_keys, long long* tiles,
                  int* max_steps, char* msg, size_t msg_len) {
    std::vector<long long> first(num_keys, -1), last(num_keys, -1);
    for (long long i = 0; i < lim; ++i)
        if (keys[i] < num_keys) {
            if (first[keys[i]] < 0) first[keys[i]] = i;
            last[keys[i]] = i + 1;
        }
    for (uint32_t t = 0; t < num_keys; ++t) {
        int steps0 = 0, steps1 = 0;
        const long long s0 = dd3g::range_clamp(range_search(keys, n, t, &steps0), lim),
                        s1 = dd3g::range_clamp(range_search(keys, n, t + 1, &steps1), lim);
        *max_steps = std::max(*max_steps, std::max(steps0, steps1));
        const long long l0 = std::min<long long>(std::lower_bound(keys.begin(), keys.begin() + n, t) - keys.begin(), lim);
        const long long l1 =
            std::min<long long>(std::lower_bound(keys.begin(), keys.begin() + n, t + 1) - keys.begin(), lim);
        const bool ok = s0 == l0 && s1 == l1 && (first[t] < 0 ? s0 == s1 : s0 == first[t] && s1 == last[t]);
        if (!ok) {
            snprintf(msg, msg_len, "key %u of %u (n=%lld, lim=%lld): search [%lld, %lld), lower_bound [%lld, %lld), "
                     "run [%lld, %lld)", t, num_keys, n, lim, s0, s1, l0, l1, first[t], last[t]);
            return false;
        }
        ++*tiles;
    }
    return true;
}

// The whole list of a case (no capacity clamp), stable-sorted by key as the tile sort leaves it: (key, value) pairs.
std::vector<std::pair<uint32_t, uint32_t>> sorted_list(const Case& c) {
    std::vector<std::pair<uint32_t, uint32_t>> out;
    for (uint32_t idx : c.sorted_idx) {
        if (!c.proj[idx].visible) continue;
        for (const Entry& e : walk_entries(c.proj[idx], c.tight, c.gs, c.groups_x, idx))
            out.push_back({(idx / (uint32_t)c.N) * per_cam(c) + e.key, e.val});
    }
    std::stable_sort(out.begin(), out.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    return out;
}

// k_raster's view of a group list: tile (tx, ty) of camera cam walks its group's range and keeps the entries with
// its bit, (ty % 2) * 2 + tx % 2. Those must be the tile's own per-tile list, Gaussian for Gaussian, in order.
bool check_group_filter(const Case& tiles, const Case& groups, long long* checked, char* msg, size_t msg_len) {
    const auto lt = sorted_list(tiles), lg = sorted_list(groups);
    auto range = [](const std::vector<std::pair<uint32_t, uint32_t>>& l, uint32_t key) {
        auto lo = std::lower_bound(l.begin(), l.end(), key, [](const auto& a, uint32_t k) { return a.first < k; });
        auto hi = std::upper_bound(l.begin(), l.end(), key, [](uint32_t k, const auto& a) { return k < a.first; });
        return std::make_pair(lo, hi);
    };
    for (int cam = 0; cam < tiles.C; ++cam)
        for (int ty = 0; ty < tiles.tiles_y; ++ty)
            for (int tx = 0; tx < tiles.tiles_x; ++tx) {
                std::vector<uint32_t> want, got;
                const auto rt = range(lt, (uint32_t)cam * per_cam(tiles) + (uint32_t)(ty * tiles.tiles_x + tx));
                for (auto it = rt.first; it != rt.second; ++it) want.push_back(it->second);
                const uint32_t g = (uint32_t)cam * per_cam(groups) + (uint32_t)((ty / 2) * groups.groups_x + tx / 2);
                const int bit = (ty % 2) * 2 + tx % 2;
                const auto rg = range(lg, g);
                for (auto it = rg.first; it != rg.second; ++it)
                    if ((it->second >> (dd3g::kGroupMaskShift + bit)) & 1u)
                        got.push_back(it->second & dd3g::kGroupIdxMask);
                if (got != want) {
                    snprintf(msg, msg_len, "camera %d tile (%d, %d): %zu Gaussians from the group list, %zu per tile",
                             cam, tx, ty, got.size(), want.size());
                    return false;
                }
                *checked += !want.empty();
            }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: emit_twin SEED CASES\n");
        return 2;
    }
    std::mt19937_64 rng(strtoull(argv[1], nullptr, 10));
    const int cases = atoi(argv[2]);
    const int configs[][2] = {{dd3g::kEmitThreads, dd3g::kEmitChunk}, {32, 32}, {64, 96}, {256, 2048}, {128, 64}};
    long long entries = 0, clamped = 0, filled = 0, rounds = 0, multi = 0, range_tiles = 0;
    long long recorded = 0, full_records = 0, computed = 0, key16_cases = 0, filtered_tiles = 0;
    int range_steps = 0;
    char msg[256];
    for (int ci = 0; ci < cases; ++ci) {
        const std::mt19937_64 start = rng;  // both walks from the same draws: the same Gaussians, depth order
        Case both[2];
        for (int gs = 0; gs < 2; ++gs) {
            std::mt19937_64 r = start;
            both[gs] = make_case(r, ci, gs);
            if (gs == 1) rng = r;
        }
        for (const Case& c : both) {
        const long long M = c.ends.empty() ? 0 : c.ends.back();
        const size_t size = (size_t)c.capacity + 2 * kGuard;
        std::vector<uint32_t> k_old(size, kPoison), v_old(size, kPoison);
        run_serial(c, k_old, v_old);
        const uint32_t sentinel = sentinel_of(c);
        // the old writer's list: [0, min(M, capacity)) written, nothing else (the pad kernel does the rest)
        for (size_t i = 0; i < size; ++i) {
            const long long pos = (long long)i - kGuard;
            const bool inside = pos >= 0 && pos < std::min(M, c.capacity);
            if (inside != (k_old[i] != kPoison) || inside != (v_old[i] != kPoison)) {
                fprintf(stderr, "case %d: serial writer: position %lld written=%d, expected %d\n", ci, pos,
                        (int)(k_old[i] != kPoison), (int)inside);
                return 1;
            }
            if (inside && c.gs == 0 && k_old[i] == sentinel) ++filled;  // with groups a real key
        }
        // another list (keys, values) against the per-thread writer's, position by position
        auto differs = [&](const std::vector<uint32_t>& k, const std::vector<uint32_t>& v, const char* who) {
            for (size_t i = 0; i < size; ++i)
                if (k[i] != k_old[i] || v[i] != v_old[i]) {
                    fprintf(stderr, "case %d: %s: position %lld: (%u, %u), per-thread writer (%u, %u)\n", ci, who,
                            (long long)i - kGuard, k[i], v[i], k_old[i], v_old[i]);
                    return true;
                }
            return false;
        };
        {  // the list by definition (walking the Projected): the per-thread writer walks the records
            std::vector<uint32_t> k_ref(size, kPoison), v_ref(size, kPoison);
            run_reference(c, k_ref, v_ref);
            if (differs(k_ref, v_ref, "reference")) return 1;
        }
        for (int i = 0; i < c.C * c.N; ++i)
            if (c.proj[i].visible) {
                const dd3g::RowSource src = source(c, (uint32_t)i);
                recorded += src.kind == dd3g::kRowsRecorded;
                full_records += src.kind == dd3g::kRowsRecorded && src.p.ty1 - src.p.ty0 == dd3g::kRecordRows;
                computed += src.kind == dd3g::kRowsComputed;
            }
        {  // the flat writer: the same list, position by position, and nothing else
            std::vector<uint32_t> k_flat(size, kPoison), v_flat(size, kPoison);
            run_flat(c, k_flat, v_flat);
            if (differs(k_flat, v_flat, "flat writer")) return 1;
        }
        {  // the tile sort (stable, by key) of the list padded with the sentinel, then every tile's range
            std::vector<uint32_t> sorted(k_old.begin() + kGuard, k_old.begin() + kGuard + c.capacity);
            for (long long i = std::min(M, c.capacity); i < c.capacity; ++i) sorted[(size_t)i] = sentinel;
            std::stable_sort(sorted.begin(), sorted.end());
            if (!check_ranges(sorted, c.capacity, std::min(M, c.capacity), sentinel + (uint32_t)c.gs, &range_tiles,
                              &range_steps, msg, sizeof(msg))) {
                fprintf(stderr, "case %d: ranges: %s\n", ci, msg);
                return 1;
            }
        }
        entries += std::min(M, c.capacity);
        clamped += M > c.capacity;
        for (const auto& cfg : configs) {
            std::vector<uint32_t> k_new(size, kPoison), v_new(size, kPoison);
            const long long before = rounds;
            if (!run_staged(c, cfg[0], cfg[1], k_new, v_new, &rounds, msg, sizeof(msg))) {
                fprintf(stderr, "case %d, %d threads / %d chunk: %s\n", ci, cfg[0], cfg[1], msg);
                return 1;
            }
            multi += rounds - before > (long long)((c.C * c.N + cfg[0] - 1) / cfg[0]);
            for (size_t i = 0; i < size; ++i)
                if (k_new[i] != k_old[i] || v_new[i] != v_old[i]) {
                    fprintf(stderr,
                            "case %d, %d threads / %d chunk: position %lld: staged (%u, %u), serial (%u, %u); "
                            "C=%d N=%d tiles %dx%d tight=%d capacity=%lld M=%lld\n",
                            ci, cfg[0], cfg[1], (long long)i - kGuard, k_new[i], v_new[i], k_old[i], v_old[i], c.C,
                            c.N, c.tiles_x, c.tiles_y, (int)c.tight, c.capacity, M);
                    return 1;
                }
        }
        {  // the three writers with 16-bit keys (what the kernels use when C * tiles < 65536): the same list
            if (sentinel > 0xFFFDu) {
                fprintf(stderr, "case %d: %u tiles do not fit the 16-bit check\n", ci, sentinel);
                return 1;
            }
            auto same = [&](const std::vector<uint16_t>& k16, const std::vector<uint32_t>& v16, const char* who) {
                for (size_t i = 0; i < size; ++i) {
                    const uint32_t want = k_old[i] == kPoison ? 0xFFFFu : k_old[i];
                    if (k16[i] != want || v16[i] != v_old[i]) {
                        fprintf(stderr, "case %d: %s, 16-bit keys: position %lld: (%u, %u), 32-bit (%u, %u)\n", ci,
                                who, (long long)i - kGuard, (unsigned)k16[i], v16[i], k_old[i], v_old[i]);
                        return false;
                    }
                }
                return true;
            };
            std::vector<uint16_t> k16(size, poison_of<uint16_t>());
            std::vector<uint32_t> v16(size, kPoison);
            run_serial(c, k16, v16);
            if (!same(k16, v16, "per-thread writer")) return 1;
            std::fill(k16.begin(), k16.end(), poison_of<uint16_t>());
            std::fill(v16.begin(), v16.end(), kPoison);
            run_flat(c, k16, v16);
            if (!same(k16, v16, "flat writer")) return 1;
            for (const auto& cfg : {configs[0], configs[1]}) {
                std::fill(k16.begin(), k16.end(), poison_of<uint16_t>());
                std::fill(v16.begin(), v16.end(), kPoison);
                long long r16 = 0;
                if (!run_staged(c, cfg[0], cfg[1], k16, v16, &r16, msg, sizeof(msg))) {
                    fprintf(stderr, "case %d, 16-bit keys, %d threads / %d chunk: %s\n", ci, cfg[0], cfg[1], msg);
                    return 1;
                }
                if (!same(k16, v16, "staged writer")) return 1;
            }
            ++key16_cases;
        }
        }  // gs
        if (ci % 5 != 1 && !check_group_filter(both[0], both[1], &filtered_tiles, msg, sizeof(msg))) {
            fprintf(stderr, "case %d: group lists: %s\n", ci, msg);
            return 1;
        }
    }
    // large sorted lists as the tile sort leaves them: runs of random lengths (many tiles empty, a few huge), then
    // the sentinel tail of the unused capacity
    for (int li = 0; li < 6; ++li) {
        const uint32_t sentinel = li == 0 ? 1u : (uint32_t)std::uniform_int_distribution<int>(2, 70000)(rng);
        const long long target = li < 2 ? li : std::uniform_int_distribution<long long>(100000, 3000000)(rng);
        std::vector<uint32_t> keys;
        std::exponential_distribution<double> len(1.0 / std::max(1.0, (double)target / sentinel));
        for (uint32_t t = 0; t < sentinel && (long long)keys.size() < target; ++t) {
            const long long n = li % 2 ? (long long)len(rng) : (long long)(len(rng) * len(rng));
            keys.insert(keys.end(), (size_t)std::min<long long>(n, target - (long long)keys.size()), t);
        }
        const long long real = (long long)keys.size();  // the list's entries; then the unused tail
        keys.insert(keys.end(), keys.size() / 4 + (size_t)(li == 0), sentinel);
        const long long n = (long long)keys.size();
        if (!check_ranges(keys, n, real, sentinel, &range_tiles, &range_steps, msg, sizeof(msg))) {
            fprintf(stderr, "large list %d: ranges: %s\n", li, msg);
            return 1;
        }
    }
    printf("ok cases=%d entries=%lld clamped_cases=%lld sentinel_entries=%lld rounds=%lld multi_round_cases=%lld "
           "range_tiles=%lld range_max_steps=%d recorded_pairs=%lld full_records=%lld computed_pairs=%lld "
           "key16_cases=%lld group_filtered_tiles=%lld\n",
           cases, entries, clamped, filled, rounds, multi, range_tiles, range_steps, recorded, full_records, computed,
           key16_cases, filtered_tiles);
    return 0;
}
