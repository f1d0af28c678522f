// emit_walk.h: the index arithmetic of the intersection-list writer (step 4 of dd3g_raster.cu), of the row records
// the projection leaves for it (step 1) and of the tile-range search (step 7), compiled for the GPU (dd3g_raster.cu)
// and for the CPU (cuda/tests/emit_twin.cpp, tests/cuda/test_emit_twin.py), so that a CPU test checks the very code
// that the kernels run.
//
// The list: the depth-sorted (camera, Gaussian) number k owns the run of positions
//     [ends[k - 1], ends[k])                    (ends = inclusive prefix sum of the tile counts in depth order;
//                                                ends[-1] = 0)
// clamped to [0, capacity). Entry e of the run is the e-th tile of the Gaussian's row-major tile walk
// (rows ty0 .. ty1-1; in each row the columns [c0, c1) of tight_row, or the whole rect row without tight
// binning; the writers take them from the pair's row record, see RowSource): key = camera * tiles_per_cam +
// ty * tiles_x + tx, value = the Gaussian's (camera, index) number.
// With tile groups (gs = 1, run 14) the walk goes over groups of 2 x 2 tiles instead: walk row gy covers tile rows
// 2 gy and 2 gy + 1, its entries are the group columns [c0, c1) that cover the union of those rows' column spans
// (walk_row), key = camera * groups_per_cam + gy * groups_x + gx, and the value carries which of the group's four
// tiles the Gaussian touches: (camera, Gaussian) number | mask << kGroupMaskShift, bit (ty % 2) * 2 + tx % 2 for
// tile (tx, ty) (walk_value). With gs = 0 a walk row is a tile row, a group a tile, and the value the bare number:
// the list of runs 1-13, entry for entry.
// Positions of the run past the end of that walk (a count larger than the walk, which the kernels' shared
// arithmetic should never produce) get the sentinel key and value 0. Positions >= capacity are never written.
//
// Three writers produce this same list:
//   emit_run_serial   one thread writes its whole run (the original k_emit, DD3G_RASTER_EMIT=0). A warp's store
//                     touches 32 unrelated places (each lane its own run): uncoalesced.
//   EmitWalk + emit_copy_out   the staged writer (k_emit_staged; the default's choice above FLAT_MAX pairs
//                     unless the runs are long, see DD3G_RASTER_STAGED_MAX_RUN):
//                     a block of kEmitThreads consecutive depth-sorted Gaussians owns one contiguous segment of
//                     the list (the union of its threads' runs). It is produced in rounds of kEmitChunk
//                     positions: every thread resumes its walk and writes the entries that fall in the round's
//                     window into shared memory, then the block copies the window to global memory with
//                     consecutive threads at consecutive positions.
//   emit_owner + emit_entry_at   the flat writer (k_emit_flat; the default's choice up to DD3G_RASTER_FLAT_MAX pairs,
//                     always with DD3G_RASTER_EMIT=3; H200 run 4: 4 % faster than per thread at 16k, 4 % slower at
//                     65k): one thread per list position finds the run that holds it (a binary
//                     search over ends) and computes that entry of the walk directly. Stores are coalesced and
//                     the work is spread over every position, not over one thread per Gaussian: meant for small
//                     scenes, where a few thousand threads each writing a long run leave most of the GPU idle.
#pragma once

#include "raster_math.h"

namespace dd3g {

constexpr int kEmitThreads = 128;  // depth-sorted Gaussians (one per thread) per block of the staged writer
constexpr int kEmitChunk = 1024;   // list positions staged per round: 2 x 4 KB of shared memory per block
constexpr int kEmitAlign = 32;     // windows start at multiples of 32 positions: 128-byte lines of keys / values
static_assert(kEmitChunk % kEmitAlign == 0, "windows stay aligned");

// Row records (run 13). The projection (k_project) stores for every (camera, Gaussian) pair a record of 8 words, one
// 32-byte memory sector, with what the writers need to walk its tiles:
//     w[0] = tx0 | ty0 << 16,  w[1] = tx1 | ty1 << 16     the tile rect [tx0, tx1) x [ty0, ty1)
//     w[2 .. 7]                                            (tight binning) the column span [c0, c1) of each row
//                                                          r = ty - ty0 < kRecordRows: bits 16 (r % 2) of w[2 + r / 2]
//                                                          hold c0 - tx0 | (c1 - tx0) << 8
// The spans are the ones the projection counted (tight_row_span on the same floats), so a writer reads one sector
// per Gaussian and does no arithmetic, where it read the rect, centre and conic (three sectors) and recomputed
// every row (a logarithm, square roots and divisions): on the 8-camera frames of 1M Gaussians the tight writer took
// 2.5x the time of the rect one (H200 profile, run 13). A rect taller than kRecordRows rows or wider than
// kRecordCols columns does not fit: its rows are computed from the centre and conic as before (kRowsComputed).
constexpr int kRecordWords = 8;
constexpr int kRecordRows = 12;
constexpr int kRecordCols = 255;
enum RowKind : int { kRowsRect = 0, kRowsRecorded = 1, kRowsComputed = 2 };

// Tile groups (run 14): a group list's value is the (camera, Gaussian) number in its low kGroupMaskShift bits and the
// group's tile mask above them, so group lists need C * N <= kGroupIdxMask + 1 (Plan chooses gs = 0 otherwise).
constexpr int kGroupMaskShift = 28;
constexpr uint32_t kGroupIdxMask = (1u << kGroupMaskShift) - 1u;

// How a pair's rows are walked: the whole rect rows without tight binning, else recorded spans where they fit.
DD3G_HD int row_kind(bool tight, int tx0, int ty0, int tx1, int ty1) {
    if (!tight) return kRowsRect;
    return ty1 - ty0 <= kRecordRows && tx1 - tx0 <= kRecordCols ? kRowsRecorded : kRowsComputed;
}

// The rules of a walk with group shift gs, shared by the projection's count (make_row_record) and the writers' walk
// (walk_row), which must agree entry for entry:
// walk rows [walk_row_first, walk_row_end) hold the tile rows [ty0, ty1) ...
DD3G_HD int walk_row_first(int ty0, int gs) { return ty0 >> gs; }
DD3G_HD int walk_row_end(int ty0, int ty1, int gs) { return ty1 > ty0 ? ((ty1 - 1) >> gs) + 1 : ty0 >> gs; }
// ... and a group row's entries are the group columns over the hull of its tile rows' non-empty column spans.
struct ColumnHull {
    int lo = 0, hi = 0;
    bool any = false;
    DD3G_HD void add(int c0, int c1) {  // a tile row's span [c0, c1); an empty one adds nothing
        if (c1 > c0) {
            lo = any && lo < c0 ? lo : c0;
            hi = any && hi > c1 ? hi : c1;
            any = true;
        }
    }
    DD3G_HD int first() const { return any ? lo >> 1 : 0; }        // [first, end): no entries without a span
    DD3G_HD int end() const { return any ? (hi + 1) >> 1 : 0; }
};

// The walk's length with gs = 1, from the tile rows' spans in row order.
struct GroupRows {
    int gy = -1;
    ColumnHull hull;
    uint32_t n = 0;
    DD3G_HD void add(int ty, int c0, int c1) {  // tile rows ty >= 0, in increasing order
        if ((ty >> 1) != gy) {
            flush();
            gy = ty >> 1;
        }
        hull.add(c0, c1);
    }
    DD3G_HD void flush() {
        n += (uint32_t)(hull.end() - hull.first());
        hull = ColumnHull{};
    }
};

// The projection's side: the record of a visible pair, and the length of its walk (what the writers will produce
// from that record: its tiles with gs = 0, its group entries with gs = 1, counted from the same spans in the same
// pass; tests/cuda/test_emit_twin.py checks both against the lists by definition).
DD3G_HD uint32_t make_row_record(const Projected& p, bool tight, int gs, uint32_t w[kRecordWords]) {
    w[0] = (uint32_t)p.tx0 | (uint32_t)p.ty0 << 16;
    w[1] = (uint32_t)p.tx1 | (uint32_t)p.ty1 << 16;
    for (int i = 2; i < kRecordWords; ++i) w[i] = 0u;
    const int kind = row_kind(tight, p.tx0, p.ty0, p.tx1, p.ty1);
    if (kind == kRowsRect) {
        if (gs == 0) return (uint32_t)((p.tx1 - p.tx0) * (p.ty1 - p.ty0));
        ColumnHull row;
        row.add(p.tx0, p.tx1);
        return (uint32_t)((row.end() - row.first()) * (walk_row_end(p.ty0, p.ty1, gs) - walk_row_first(p.ty0, gs)));
    }
    const TightSpan e = tight_span(p);
    uint32_t n = 0;
    GroupRows g;
    if (kind == kRowsRecorded) {
DD3G_UNROLL
        for (int r = 0; r < kRecordRows; ++r) {  // unrolled: w[] stays in registers
            if (p.ty0 + r >= p.ty1) break;
            int c0, c1;
            tight_row_span(p, e, p.ty0 + r, &c0, &c1);
            n += (uint32_t)(c1 - c0);
            if (gs) g.add(p.ty0 + r, c0, c1);
            w[2 + r / 2] |= ((uint32_t)(c0 - p.tx0) | (uint32_t)(c1 - p.tx0) << 8) << (16 * (r % 2));
        }
    } else {
        for (int ty = p.ty0; ty < p.ty1; ++ty) {
            int c0, c1;
            tight_row_span(p, e, ty, &c0, &c1);
            n += (uint32_t)(c1 - c0);
            if (gs) g.add(ty, c0, c1);
        }
    }
    if (gs == 0) return n;
    g.flush();
    return g.n;
}

// The writers' side: where a walk takes its rows from.
struct RowSource {
    Projected p;        // the rect; with kRowsComputed also the centre, opacity and conic
    TightSpan span;     // kRowsComputed: tight_span(p)
    uint64_t q0, q1, q2;  // kRowsRecorded: w[2 .. 7] of the record, two words each (row r at bits 16 (r % 4) of
                          // q[r / 4]; named fields, not an array, so that no dynamic index puts them in local memory)
    int kind;
    int gs;             // the walk's group shift: 0 walks tiles, 1 walks groups of 2 x 2 tiles
};

// From a record; a kRowsComputed source still needs row_source_compute (the centre, opacity and conic).
DD3G_HD RowSource row_source(const uint32_t w[kRecordWords], bool tight, int gs) {
    RowSource s{};
    s.gs = gs;
    s.p.tx0 = (int)(w[0] & 0xFFFFu);
    s.p.ty0 = (int)(w[0] >> 16);
    s.p.tx1 = (int)(w[1] & 0xFFFFu);
    s.p.ty1 = (int)(w[1] >> 16);
    s.p.visible = true;
    s.q0 = (uint64_t)w[2] | (uint64_t)w[3] << 32;
    s.q1 = (uint64_t)w[4] | (uint64_t)w[5] << 32;
    s.q2 = (uint64_t)w[6] | (uint64_t)w[7] << 32;
    s.kind = row_kind(tight, s.p.tx0, s.p.ty0, s.p.tx1, s.p.ty1);
    return s;
}
// kRowsComputed: what k_project stored in pa (x, y, opacity, depth) and pb (conic a, b, c).
DD3G_HD void row_source_compute(RowSource& s, float x, float y, float opacity, float ca, float cb, float cc) {
    s.p.x = x;
    s.p.y = y;
    s.p.opacity = opacity;
    s.p.ca = ca;
    s.p.cb = cb;
    s.p.cc = cc;
    s.span = tight_span(s.p);
}

// The column span [*c0, *c1) of tile row ty (ty0 <= ty < ty1) of the walk.
DD3G_HD void source_row(const RowSource& s, int ty, int* c0, int* c1) {
    if (s.kind == kRowsRecorded) {
        const int r = ty - s.p.ty0;
        const uint64_t q = r < 4 ? s.q0 : r < 8 ? s.q1 : s.q2;
        const uint32_t half = (uint32_t)(q >> (16 * (r % 4)));
        *c0 = s.p.tx0 + (int)(half & 0xFFu);
        *c1 = s.p.tx0 + (int)((half >> 8) & 0xFFu);
    } else if (s.kind == kRowsComputed) {
        tight_row_span(s.p, s.span, ty, c0, c1);
    } else {
        *c0 = s.p.tx0;
        *c1 = s.p.tx1;
    }
}

// A row of the walk (tile row r, or with gs = 1 group row r): its entries are the columns [c0, c1); with gs = 1,
// [a0, a1) and [b0, b1) are the tile column spans of tile rows 2 r and 2 r + 1 (empty outside the rect), whose
// union [c0, c1) covers in group columns (a group column between two disjoint spans is an entry with mask 0).
struct WalkRow {
    int c0, c1, a0, a1, b0, b1;
};
// The walk's rows [walk_rows_begin, walk_rows_end): those that hold a tile row of the rect.
DD3G_HD int walk_rows_begin(const RowSource& s) { return walk_row_first(s.p.ty0, s.gs); }
DD3G_HD int walk_rows_end(const RowSource& s) { return walk_row_end(s.p.ty0, s.p.ty1, s.gs); }
DD3G_HD void walk_row(const RowSource& s, int r, WalkRow* w) {
    if (s.gs == 0) {
        source_row(s, r, &w->c0, &w->c1);
        w->a0 = w->c0;
        w->a1 = w->c1;
        w->b0 = w->b1 = 0;
        return;
    }
    int a0 = 0, a1 = 0, b0 = 0, b1 = 0;
    const int ta = 2 * r, tb = 2 * r + 1;
    if (ta >= s.p.ty0 && ta < s.p.ty1) source_row(s, ta, &a0, &a1);
    if (tb >= s.p.ty0 && tb < s.p.ty1) source_row(s, tb, &b0, &b1);
    ColumnHull hull;
    hull.add(a0, a1);
    hull.add(b0, b1);
    w->a0 = a0;
    w->a1 = a1;
    w->b0 = b0;
    w->b1 = b1;
    w->c0 = hull.first();
    w->c1 = hull.end();
}
// The value of the row's entry at column c: the bare number with gs = 0, else with the mask of the group's tiles
// that the spans cover (bit (ty % 2) * 2 + tx % 2).
DD3G_HD uint32_t walk_value(uint32_t idx, int gs, const WalkRow& w, int c) {
    if (gs == 0) return idx;
    const int t0 = 2 * c, t1 = 2 * c + 1;
    const uint32_t m = (uint32_t)(t0 >= w.a0 && t0 < w.a1) | (uint32_t)(t1 >= w.a0 && t1 < w.a1) << 1 |
                       (uint32_t)(t0 >= w.b0 && t0 < w.b1) << 2 | (uint32_t)(t1 >= w.b0 && t1 < w.b1) << 3;
    return idx | m << kGroupMaskShift;
}
// First position of the run of depth-sorted number k: the end of the run before it.
DD3G_HD long long run_begin(const long long* ends, uint32_t k) { return k > 0 ? ends[k - 1] : 0; }

// The run of depth-sorted number k: positions [*pos, *end), empty when *pos >= *end (a culled Gaussian with
// count 0, or a run that starts at or past the capacity).
DD3G_HD void emit_run(const long long* ends, uint32_t k, long long capacity, long long* pos, long long* end) {
    const long long end_incl = ends[k];
    *pos = run_begin(ends, k);
    *end = end_incl < capacity ? end_incl : capacity;
}

// The writers store keys as Key: uint16_t where every key and the sentinel fit (C * tiles < 65536: a list entry takes
// 6 bytes instead of 8 through the writer and both tile-sort passes, run 13), else uint32_t.

// The original writer: one thread writes the run [pos, end) (non-empty) of one Gaussian, whole.
// cols: tiles_x with gs = 0, else groups_x; base: camera * (tiles or groups) a camera.
template <typename Key>
DD3G_HD void emit_run_serial(const RowSource& s, uint32_t base, uint32_t idx, int cols, long long pos,
                             long long end, uint32_t sentinel, Key* keys, uint32_t* vals) {
    const int r1 = walk_rows_end(s);
    for (int r = walk_rows_begin(s); r < r1 && pos < end; ++r) {
        WalkRow w;
        walk_row(s, r, &w);
        for (int c = w.c0; c < w.c1 && pos < end; ++c, ++pos) {
            keys[pos] = (Key)(base + (uint32_t)(r * cols + c));
            vals[pos] = walk_value(idx, s.gs, w, c);
        }
    }
    // Defensive: if this walk found fewer tiles than k_project counted (a record holds the counted spans, and a
    // computed walk runs the same code on the same stored floats, so it should not), the hole sorts to the end
    // instead of holding stale keys.
    for (; pos < end; ++pos) {
        keys[pos] = (Key)sentinel;
        vals[pos] = 0;
    }
}

// A resumable version of the same walk: the state after the entries before `pos` were produced.
struct EmitWalk {
    RowSource src;       // the rows
    long long pos, end;  // next position to produce; end of the clamped run (pos >= end: nothing left)
    uint32_t base, idx;  // camera * (tiles or groups) a camera; the (camera, Gaussian) number
    int cols;            // tiles_x or groups_x
    int ty, tx, r1;      // current walk row, its next column; end of the walk's rows
    WalkRow row;         // the current row (row.c1: its end column)
};

DD3G_HD void emit_walk_begin(EmitWalk& w, const RowSource& src, uint32_t base, uint32_t idx, int cols, long long pos,
                             long long end) {
    w.src = src;
    w.pos = pos;
    w.end = end;
    w.base = base;
    w.idx = idx;
    w.cols = cols;
    w.ty = walk_rows_begin(src) - 1;  // "before the first row": the first entry asked for loads the first row
    w.r1 = walk_rows_end(src);
    w.tx = 0;
    w.row = WalkRow{0, 0, 0, 0, 0, 0};
}

// Produce the walk's entries at positions [w.pos, min(w.end, stop)) into keys/vals[position - offset], in
// order, and advance. Each pass of the loop moves to the next row if the current one is done, then writes the
// current row's entries that fall before the limit in one stretch, so it ends (every pass consumes a row or reaches
// the limit). The sequence of (position, key, value) over all calls equals emit_run_serial's: the same rows in the
// same order, source_row with the same source, the same truncation at `end` and the same sentinel fill after the
// last row. A row per pass (not an entry per pass, as before run 12) keeps a warp's lanes together: each pass
// computes at most one row in every lane at once, where stepping an entry at a time had some lane start a row at
// almost every step, and the warp paid every lane's row arithmetic in turn.
template <typename Key>
DD3G_HD void emit_walk_fill(EmitWalk& w, long long stop, uint32_t sentinel, Key* keys, uint32_t* vals,
                            long long offset) {
    const long long lim = w.end < stop ? w.end : stop;
    while (w.pos < lim) {
        if (w.tx >= w.row.c1) {  // this row is done (or none has started): the next one
            if (w.ty + 1 < w.r1) {
                ++w.ty;
                walk_row(w.src, w.ty, &w.row);
                w.tx = w.row.c0;
            } else {  // past the last row: defensive sentinel fill, as in emit_run_serial
                for (; w.pos < lim; ++w.pos) {
                    keys[w.pos - offset] = (Key)sentinel;
                    vals[w.pos - offset] = 0;
                }
                return;
            }
        }
        const long long left = lim - w.pos, in_row = (long long)(w.row.c1 - w.tx);
        const int take = (int)(left < in_row ? left : in_row);  // 0 for an empty row
        const uint32_t row = w.base + (uint32_t)(w.ty * w.cols);
        for (int e = 0; e < take; ++e) {
            keys[w.pos - offset + e] = (Key)(row + (uint32_t)(w.tx + e));
            vals[w.pos - offset + e] = walk_value(w.idx, w.src.gs, w.row, w.tx + e);
        }
        w.tx += take;
        w.pos += take;
    }
}

// The list segment of the block whose first depth-sorted number is k0: the union [*lo, *hi) of the runs of
// k0 .. min(k0 + nthreads, CN) - 1 (consecutive runs touch), clamped to the capacity. Empty when *lo >= *hi.
DD3G_HD void emit_block_segment(uint32_t k0, int nthreads, uint32_t CN, const long long* ends, long long capacity,
                                long long* lo, long long* hi) {
    const uint64_t last = (uint64_t)k0 + (uint64_t)nthreads < (uint64_t)CN ? (uint64_t)k0 + nthreads - 1 : CN - 1;
    *lo = run_begin(ends, k0);
    *hi = ends[last] < capacity ? ends[last] : capacity;
}

// First window of a segment that starts at `lo`: aligned down to kEmitAlign positions.
DD3G_HD long long emit_first_window(long long lo) { return lo & ~(long long)(kEmitAlign - 1); }

// Thread `tid` of `nthreads` copies the staged window [win, win + chunk) intersected with [lo, hi) from s_keys/s_vals
// (index = position - win) to keys/vals (index = position); consecutive threads take consecutive positions.
template <typename Key>
DD3G_HD void emit_copy_out(int tid, int nthreads, long long win, int chunk, long long lo, long long hi,
                           const Key* s_keys, const uint32_t* s_vals, Key* keys, uint32_t* vals) {
    const int j0 = (int)((lo > win ? lo : win) - win);
    const int j1 = (int)((hi < win + chunk ? hi : win + chunk) - win);
    for (int j = tid; j < j1; j += nthreads) {
        if (j < j0) continue;
        keys[win + j] = s_keys[j];
        vals[win + j] = s_vals[j];
    }
}

// The depth-sorted number whose run holds list position j: the first k with ends[k] > j. Needs
// 0 <= j < ends[CN - 1] (ends is non-decreasing); runs of count 0 (ends[k] == ends[k - 1]) are never chosen.
DD3G_HD uint32_t emit_owner(long long j, uint32_t CN, const long long* ends) {
    uint32_t lo = 0, hi = CN - 1;  // the answer lies in [lo, hi]
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (ends[mid] > j) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

// Entry r (0-based) of the walk of emit_run_serial: the same rows in the same order, source_row called with the
// same arguments, and the sentinel (value 0) when r lies past the walk's last tile (the defensive fill).
DD3G_HD void emit_entry_at(const RowSource& s, uint32_t base, uint32_t idx, int cols, long long r,
                           uint32_t sentinel, uint32_t* key, uint32_t* val) {
    const int r1 = walk_rows_end(s);
    for (int ty = walk_rows_begin(s); ty < r1; ++ty) {
        WalkRow row;
        walk_row(s, ty, &row);
        const int w = row.c1 > row.c0 ? row.c1 - row.c0 : 0;
        if (r < w) {
            *key = base + (uint32_t)(ty * cols + row.c0 + (int)r);
            *val = walk_value(idx, s.gs, row, row.c0 + (int)r);
            return;
        }
        r -= w;
    }
    *key = sentinel;
    *val = 0;
}

// Tile ranges of the tile-sorted list (step 7 of dd3g_raster.cu): tile t owns [lower_bound(t), lower_bound(t + 1))
// of the sorted keys, the unused tail's sentinel keys included (t < sentinel). k_ranges finds each bound with a
// kRangeProbes-ary search by a half warp: the lanes test kRangeProbes positions spread over the interval [lo, hi]
// that holds the answer, and the number c of probes whose key is below the target (a prefix: the keys are sorted)
// narrows the interval to the gap after the c-th probe. About log17(n) steps of one parallel load each (7 for 2^28
// entries), against the whole list read by the per-entry scan that this replaced (run 13).
constexpr int kRangeProbes = 16;
// Probe j (0 <= j < kRangeProbes) of [lo, hi], lo < hi: non-decreasing in j, and lo <= probe < hi, so it is a valid
// index of keys[0, n) whenever hi <= n.
DD3G_HD long long range_probe(long long lo, long long hi, int j) {
    return lo + (hi - lo) * (long long)(j + 1) / (kRangeProbes + 1);
}
// A range end found by the search, clamped to lim = min(list size, positions sorted): with gs = 1 the unused tail has
// the last group's key and follows its entries, so the last group's search runs into the tail; no other end moves
// (every other key's entries precede the tail).
DD3G_HD long long range_clamp(long long x, long long lim) { return x < lim ? x : lim; }
// One step: c of the kRangeProbes probes of [*lo, *hi] have a key below the target. The answer (the first index whose
// key is not below it) stays inside, and the interval shrinks by at least one position; the search ends at lo == hi.
DD3G_HD void range_narrow(long long* lo, long long* hi, int c) {
    const long long l = *lo, h = *hi;
    if (c > 0) *lo = range_probe(l, h, c - 1) + 1;
    if (c < kRangeProbes) *hi = range_probe(l, h, c);
}

}  // namespace dd3g
