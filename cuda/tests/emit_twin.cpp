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
    bool tight = true;
    long long capacity = 0;
    std::vector<uint32_t> sorted_idx;        // depth order -> (camera, Gaussian) number
    std::vector<dd3g::Projected> proj;       // by (camera, Gaussian) number, what k_project stored
    std::vector<std::array<uint32_t, dd3g::kRecordWords>> recs;  // its row records (garbage where culled)
    std::vector<long long> counts, ends;     // by depth-sorted number
};

// What load_source gives a writer: the record, and for kRowsComputed the stored centre, opacity and conic.
dd3g::RowSource source(const Case& c, uint32_t idx) {
    dd3g::RowSource s = dd3g::row_source(c.recs[idx].data(), c.tight);
    if (s.kind == dd3g::kRowsComputed) {
        const dd3g::Projected& q = c.proj[idx];
        dd3g::row_source_compute(s, q.x, q.y, q.opacity, q.ca, q.cb, q.cc);
    }
    return s;
}

int walk_count(const dd3g::Projected& p, bool tight) {
    int n = 0;
    for (int ty = p.ty0; ty < p.ty1; ++ty) {
        int c0 = p.tx0, c1 = p.tx1;
        if (tight) dd3g::tight_row(p, ty, &c0, &c1);
        n += c1 - c0;
    }
    return n;
}

Case make_case(std::mt19937_64& rng, int which) {
    auto U = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
    auto I = [&](int a, int b) { return std::uniform_int_distribution<int>(a, b)(rng); };  // [a, b]
    Case c;
    c.C = I(1, 3);
    c.N = which % 7 == 0 ? I(1, 40) : I(50, 900);
    c.tiles_x = which % 13 == 4 ? I(250, 300) : I(1, 70);  // wide grids: rects over kRecordCols columns
    c.tiles_y = I(1, 70);
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
        walk[i] = walk_count(p, c.tight);
    }
    // the records k_project stores: their counts are the walks'; culled pairs get none (garbage here)
    c.recs.resize(CN);
    for (int i = 0; i < CN; ++i) {
        auto& w = c.recs[i];
        if (!c.proj[i].visible) {
            w.fill(kPoison);
            continue;
        }
        const uint32_t n = dd3g::make_row_record(c.proj[i], c.tight, w.data());
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
void run_reference(const Case& c, std::vector<uint32_t>& keys, std::vector<uint32_t>& vals) {
    const uint32_t CN = (uint32_t)(c.C * c.N);
    const uint32_t sentinel = (uint32_t)(c.C * c.tiles_x * c.tiles_y), tpc = (uint32_t)(c.tiles_x * c.tiles_y);
    for (uint32_t k = 0; k < CN; ++k) {
        long long pos = k > 0 ? c.ends[k - 1] : 0;
        const long long end = std::min(c.ends[k], c.capacity);
        if (pos >= end) continue;
        const uint32_t idx = c.sorted_idx[k];
        const dd3g::Projected& p = c.proj[idx];
        for (int ty = p.ty0; ty < p.ty1; ++ty) {
            int c0 = p.tx0, c1 = p.tx1;
            if (c.tight) dd3g::tight_row(p, ty, &c0, &c1);
            for (int tx = c0; tx < c1 && pos < end; ++tx, ++pos) {
                keys[kGuard + pos] = (idx / (uint32_t)c.N) * tpc + (uint32_t)(ty * c.tiles_x + tx);
                vals[kGuard + pos] = idx;
            }
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
    const uint32_t sentinel = (uint32_t)(c.C * c.tiles_x * c.tiles_y), tpc = (uint32_t)(c.tiles_x * c.tiles_y);
    for (uint32_t k = 0; k < CN; ++k) {
        long long pos, end;
        dd3g::emit_run(c.ends.data(), k, c.capacity, &pos, &end);
        if (pos >= end) continue;
        const uint32_t idx = c.sorted_idx[k];
        dd3g::emit_run_serial(source(c, idx), (idx / (uint32_t)c.N) * tpc, idx, c.tiles_x, pos, end, sentinel,
                              keys.data() + kGuard, vals.data() + kGuard);
    }
}

// flat writer: one "thread" per list position j < min(M, capacity), as k_emit_flat's grid-stride loop
template <typename Key>
void run_flat(const Case& c, std::vector<Key>& keys, std::vector<uint32_t>& vals) {
    const uint32_t CN = (uint32_t)(c.C * c.N);
    const uint32_t sentinel = (uint32_t)(c.C * c.tiles_x * c.tiles_y), tpc = (uint32_t)(c.tiles_x * c.tiles_y);
    if (CN == 0) return;
    const long long M = c.ends[CN - 1], lim = std::min(M, c.capacity);
    for (long long j = 0; j < lim; ++j) {
        const uint32_t k = dd3g::emit_owner(j, CN, c.ends.data());
        const uint32_t idx = c.sorted_idx[k];
        uint32_t key;  // as k_emit_flat: the entry's key, stored as Key
        dd3g::emit_entry_at(source(c, idx), (idx / (uint32_t)c.N) * tpc, idx, c.tiles_x,
                            j - dd3g::run_begin(c.ends.data(), k), sentinel, &key, vals.data() + kGuard + j);
        keys[kGuard + j] = (Key)key;
    }
}

// new writer, phase by phase; returns false (with a message) on a violated invariant
template <typename Key>
bool run_staged(const Case& c, int nthreads, int chunk, std::vector<Key>& keys, std::vector<uint32_t>& vals,
                long long* rounds, char* msg, size_t msg_len) {
    const uint32_t CN = (uint32_t)(c.C * c.N);
    const uint32_t sentinel = (uint32_t)(c.C * c.tiles_x * c.tiles_y), tpc = (uint32_t)(c.tiles_x * c.tiles_y);
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
                dd3g::emit_walk_begin(w[t], source(c, idx), (idx / (uint32_t)c.N) * tpc, idx, c.tiles_x, pos, end);
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

// Every tile's range of a sorted list keys[0, n) (sentinel keys last) against std::lower_bound and a linear scan of
// the runs; false (with a message) on a difference.
bool check_ranges(const std::vector<uint32_t>& keys, long long n, uint32_t sentinel, long long* tiles, int* max_steps,
                  char* msg, size_t msg_len) {
    std::vector<long long> first(sentinel, -1), last(sentinel, -1);
    for (long long i = 0; i < n; ++i)
        if (keys[i] < sentinel) {
            if (first[keys[i]] < 0) first[keys[i]] = i;
            last[keys[i]] = i + 1;
        }
    for (uint32_t t = 0; t < sentinel; ++t) {
        int steps0 = 0, steps1 = 0;
        const long long s0 = range_search(keys, n, t, &steps0), s1 = range_search(keys, n, t + 1, &steps1);
        *max_steps = std::max(*max_steps, std::max(steps0, steps1));
        const long long l0 = std::lower_bound(keys.begin(), keys.begin() + n, t) - keys.begin();
        const long long l1 = std::lower_bound(keys.begin(), keys.begin() + n, t + 1) - keys.begin();
        const bool ok = s0 == l0 && s1 == l1 && (first[t] < 0 ? s0 == s1 : s0 == first[t] && s1 == last[t]);
        if (!ok) {
            snprintf(msg, msg_len, "tile %u of %u (n=%lld): search [%lld, %lld), lower_bound [%lld, %lld), run [%lld, %lld)",
                     t, sentinel, n, s0, s1, l0, l1, first[t], last[t]);
            return false;
        }
        ++*tiles;
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
    long long recorded = 0, full_records = 0, computed = 0, key16_cases = 0;
    int range_steps = 0;
    char msg[256];
    for (int ci = 0; ci < cases; ++ci) {
        const Case c = make_case(rng, ci);
        const long long M = c.ends.empty() ? 0 : c.ends.back();
        const size_t size = (size_t)c.capacity + 2 * kGuard;
        std::vector<uint32_t> k_old(size, kPoison), v_old(size, kPoison);
        run_serial(c, k_old, v_old);
        const uint32_t sentinel = (uint32_t)(c.C * c.tiles_x * c.tiles_y);
        // the old writer's list: [0, min(M, capacity)) written, nothing else (the pad kernel does the rest)
        for (size_t i = 0; i < size; ++i) {
            const long long pos = (long long)i - kGuard;
            const bool inside = pos >= 0 && pos < std::min(M, c.capacity);
            if (inside != (k_old[i] != kPoison) || inside != (v_old[i] != kPoison)) {
                fprintf(stderr, "case %d: serial writer: position %lld written=%d, expected %d\n", ci, pos,
                        (int)(k_old[i] != kPoison), (int)inside);
                return 1;
            }
            if (inside && k_old[i] == sentinel) ++filled;
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
            if (!check_ranges(sorted, c.capacity, sentinel, &range_tiles, &range_steps, msg, sizeof(msg))) {
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
        keys.insert(keys.end(), keys.size() / 4 + (size_t)(li == 0), sentinel);
        if (!check_ranges(keys, (long long)keys.size(), sentinel, &range_tiles, &range_steps, msg, sizeof(msg))) {
            fprintf(stderr, "large list %d: ranges: %s\n", li, msg);
            return 1;
        }
    }
    printf("ok cases=%d entries=%lld clamped_cases=%lld sentinel_entries=%lld rounds=%lld multi_round_cases=%lld "
           "range_tiles=%lld range_max_steps=%d recorded_pairs=%lld full_records=%lld computed_pairs=%lld "
           "key16_cases=%lld\n",
           cases, entries, clamped, filled, rounds, multi, range_tiles, range_steps, recorded, full_records, computed,
           key16_cases);
    return 0;
}
