// dd3g_raster.cu: tile-based forward Gaussian rasteriser behind the C API of dd3g_raster.h.
//
// Pipeline (all on `stream`, no allocation, no host sync unless DD3G_RASTER_EXACT_COUNT):
//   1. project      one thread per (camera, Gaussian) (SH rows staged in shared memory; from 2^17 Gaussians one
//                   block projects into every camera): EWA projection, SH colour, tile count, row record (tile
//                   rect and the tight column span of each row, emit_walk.h), depth key (float bits of camera z;
//                   culled = 0xFFFFFFFF)
//   2. depth sort   CUB radix sort of C*N (depth key, index) pairs, 32 bits
//   3. scan         tile counts in depth order (gathered by the scan's input iterator) -> inclusive prefix sum
//                   (int64) = end offset of each Gaussian's run
//   4. emit         each Gaussian writes (camera*groups + group, index | tile mask) for the groups of 2x2 tiles that
//                   its row record touches (DD3G_RASTER_TILE_GROUPS; per tile, index alone, with it off) at its
//                   offsets; because Gaussians are visited in depth order, the list is depth-ordered within every
//                   group. Three writers of the same list (emit_walk.h): per thread (one thread writes its run,
//                   uncoalesced), staged (a block of 128 depth-sorted Gaussians stages its contiguous segment
//                   in shared memory and writes it coalesced) and flat (one thread per list position). Default
//                   (DD3G_RASTER_EMIT=2) by (camera, Gaussian) pairs: flat up to DD3G_RASTER_FLAT_MAX, above
//                   that staged, or per thread where the runs are long (capacity over
//                   DD3G_RASTER_STAGED_MAX_RUN positions a pair; benchmarks/rasterizer_notes.md, runs 3, 4 and
//                   13); 0 / 1 / 3 force one writer.
//   5. pad          unused capacity gets a sentinel key (the last group's, Plan::sentinel) that sorts after the
//                   list; the ranges and the evaluation counter are cleared here (DD3G_RASTER_FOLD_MEMSETS)
//   6. tile sort    stable CUB radix sort by group key over the sentinel's bits (one pass for one camera at 512^2:
//                   256 groups; keys 16-bit up to 65536 groups: DD3G_RASTER_KEY16): depth order inside a group
//                   survives because the sort is stable
//   7. ranges       [start, end) of every group in the sorted list (a 16-ary search per bound, clamped to the list)
//   8. raster       one 16x16 block per (tile, camera): walks its group's range and stages (in batches of 256
//                   entries, in shared memory) the Gaussians with its tile's mask bit, which are, in order, those of
//                   a per-tile list; front-to-back blending two Gaussians a step; each warp (8x4 pixels) blends only
//                   the staged Gaussians that can reach one of its pixels (warp culling, DD3G_RASTER_WARP_CULL)
// Sorting depth once per Gaussian and then only the few tile bits per intersection moves far fewer bytes than
// gsplat's single 64-bit (camera | tile | depth) sort of all intersections.
//
// Small frames (up to DD3G_RASTER_BINNED_MAX (camera, Gaussian) pairs) take the binned path instead (bin_sort.h):
// a memset and four kernels instead of ~14 nodes, because there the frame is a chain of latencies, not work:
//   1. k_bin_count    as step 1 (no depth keys); a block of 128 Gaussians of one camera (4 or 2 threads each, by
//                     size: bin_split_for) counts its walks in a shared histogram and adds it to the tile counters,
//                     one atomic per touched tile, whose return value is the block's offset inside the tile
//   2. k_bin_scan     one block: tile counts -> tile ranges (clamped to the capacity) and the header
//   3. k_bin_scatter  the walk again; entry -> tile start + block offset + shared rank: (depth bits, index)
//   4. k_raster_binned each tile block sorts its entries by (depth bits, index) in shared memory (bitonic;
//                     tiles over kTileSortMax entries in rounds of radix selection) and blends as step 8.
// The key order is exactly the default path's (a stable depth sort of the indices), so the images are identical.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <thrust/iterator/transform_iterator.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <type_traits>

#include "dd3g_raster.h"
#include "bin_sort.h"
#include "emit_walk.h"
#include "raster_math.h"

// Which intersection-list writer: 0 = the per-thread writer, 1 = staged in shared memory with coalesced stores,
// 2 = by size (default): flat when C*N <= DD3G_RASTER_FLAT_MAX, else staged when the capacity is at most
// DD3G_RASTER_STAGED_MAX_RUN list positions per pair, else per thread; 3 = flat: one thread per list position.
// All write the same list (tests/cuda/test_emit_twin.py, and bit-identical images on the GPU); 0, 1 and 3 exist
// to time and test each.
#ifndef DD3G_RASTER_EMIT
#define DD3G_RASTER_EMIT 2
#endif
#if DD3G_RASTER_EMIT < 0 || DD3G_RASTER_EMIT > 3
#error "DD3G_RASTER_EMIT must be 0 (per-thread writer), 1 (staged), 2 (by size) or 3 (flat)"
#endif
// The staged writer serialises a block over its segment's windows, so it loses where a Gaussian's run is long (a few
// Gaussians fill a window while the block's other threads wait). The capacity is the host's measure of run length
// (the SDK sizes it 1.25 x the last frame's list). H200, run 13, against the per-thread writer: staged 2-27 % faster
// from 65k pairs up at 4 to 66 intersections a pair (65k x 8 cameras at 1024^2: 1.86 -> 1.36 ms), equal at 16k x 4
// cameras, 15 % slower at 99 a pair (65k/2048/1) and 2.2x slower at 229 (16k/2048/1); 96 positions a pair (77 per
// pair at the SDK's headroom) sits between 66 and 99. (Run 3 had staged slower below 1M pairs: the row-per-pass
// walk of run 12 changed that.)
#ifndef DD3G_RASTER_STAGED_MAX_RUN
#define DD3G_RASTER_STAGED_MAX_RUN 96
#endif
// H200, run 4: flat was 4 % faster than per thread at 16k pairs (graph 0.194 vs 0.202 ms) and 4 % slower at 65k
// (0.232 vs 0.224 ms); the switch sits at the geometric middle, which was not measured itself. The default
// model's pruned objects (~6k Gaussians) and its full 16,384 both fall on the flat side.
#ifndef DD3G_RASTER_FLAT_MAX
#define DD3G_RASTER_FLAT_MAX (1u << 15)
#endif
// 1: k_pad clears the tile ranges and the evaluation counter, which two cudaMemsetAsync calls at the start of the
// frame did (0): two graph nodes fewer on the critical path of a small frame (run 5: -1 to -2 us at 16k, not the
// 13 us that run 2's profile gave the memsets). k_pad runs in every frame (the empty one too), after nothing that
// reads either and before k_ranges and k_raster, which write them.
#ifndef DD3G_RASTER_FOLD_MEMSETS
#define DD3G_RASTER_FOLD_MEMSETS 1
#endif
// Frames with at most this many (camera, Gaussian) pairs (and at most kBinTilesMax tiles a camera) take the binned
// path (bin_sort.h): count, scan, scatter, then a shared-memory sort per tile, instead of the depth sort, scan,
// writer, pad, tile sort and ranges. 0: never. H200, run 6 (graph): 16k/512/1 0.192 -> 0.127 ms, 65k/512/1
// 0.220 -> 0.177, 16k/1024/1 0.324 -> 0.305, but 65k/1024/1 0.377 -> 0.389 and 16k x 8 cameras 0.558 -> 0.599;
// 2^16 keeps the one-camera frames up to 65k.
#ifndef DD3G_RASTER_BINNED_MAX
#define DD3G_RASTER_BINNED_MAX (1u << 16)
#endif
// The blend loop works in log2 units (1) or as written in raster_math's reference form (0). With 1, staging turns
// each Gaussian's conic into p = -sigma log2(e) coefficients and adds a per-Gaussian rejection threshold, so that a
// pair whose alpha would fall below kAlphaThreshold is dropped after ~7 instructions, before the exponential; the
// exact alpha test then still decides every pair the pre-test lets through (same cutoffs, see stage_gaussian).
#ifndef DD3G_RASTER_LOG2_BLEND
#define DD3G_RASTER_LOG2_BLEND 1
#endif
// Warp culling in the sorted path's raster kernel (k_raster): staging computes, per Gaussian of the batch, which of
// the tile's 8 warps it can reach with alpha >= 1/255 (raster_math.h warp_mask: the pre-test's region plus the tight
// binning margin); each warp then blends only the Gaussians whose bit it has, in order (a compacted index list per
// warp), so the skipped pairs are ones that the blend loop would have rejected at every pixel of the warp: images
// unchanged, fewer pairs evaluated (1M/512/1: 42 -> 20 M). H200, run 12: -3 to -8 % at 200k-1M Gaussians, +1.5 % at
// 65k x 8 cameras at 1024^2; the binned kernel does not cull (its tiles hold ~100 entries, and there the masks and
// lists cost more than the skipped pairs save: +2 to +10 %). DD3G_RASTER_WARP_W is a warp's width in pixels in both
// raster kernels: 8 (8 x 4 pixels, default: compact warps are culled more often and finish together, -1 to -2 % even
// without culling) or 16 (16 x 2: two rows, the layout of runs 1-11). DD3G_RASTER_WARP_CULL=0 with WARP_W=16 gives
// run 11's raster kernels.
#ifndef DD3G_RASTER_WARP_CULL
#define DD3G_RASTER_WARP_CULL 1
#endif
#ifndef DD3G_RASTER_WARP_W
#define DD3G_RASTER_WARP_W 8
#endif
#if DD3G_RASTER_WARP_W != 8 && DD3G_RASTER_WARP_W != 16
#error "DD3G_RASTER_WARP_W must be 8 (8 x 4 pixel warps) or 16 (16 x 2)"
#endif
// 1: the sorted path's list names groups of 2 x 2 tiles (emit_walk.h, run 14): each entry's value carries which of
// the group's four tiles the Gaussian touches, and a raster block walks its group's list and stages only the entries
// with its own tile's bit (warp culling then skips the others), so its Gaussians, their order and the images are
// those of a per-tile list, while the writer, the pad and the tile sort move ~0.57x the entries (1M/512/1) and a
// frame of up to 256 groups a camera at one camera (512^2) sorts its keys in one radix pass instead of two. 0: a list
// per tile (runs 1-13). Needs DD3G_RASTER_WARP_CULL and C * N <= 2^28 (else per tile).
#ifndef DD3G_RASTER_TILE_GROUPS
#define DD3G_RASTER_TILE_GROUPS 1
#endif
// 1: the intersection list's keys are 16-bit where every key and the sentinel fit (C * tiles < 65536, e.g. 8 cameras
// at 1024^2), 6 bytes an entry instead of 8 through the writer, the pad and both tile-sort passes; 0: always 32-bit
// (timing and test builds: the same list, the same images).
#ifndef DD3G_RASTER_KEY16
#define DD3G_RASTER_KEY16 1
#endif
// Timing diagnostics, never in a shipped build. 1 and 2 render wrong images: 1 skips the binned path's per-tile sort
// (tiles blend in scatter order), 2 skips the blending (staging still runs; every pixel gets the background); they
// split the binned raster kernel's time into sort and blend (benchmarks/rasterizer_notes.md run 7). 3 renders
// correct images and records, per raster block, its start and end (globaltimer), cycles, SM, list length, rounds
// (batches in k_raster) and the largest evaluation count of its pixels (with COUNT_EVALS), read back with
// dd3g_raster_diag_read (exported by DIAG=3 builds only; benchmarks/raster_block_timing.py, run 10). 4 renders wrong
// images: every k_raster block stops after DD3G_RASTER_DIAG_BATCHES batches, which times the sorted raster kernel
// without the long walks of the tiles that never saturate (run 15: what splitting those walks could gain at most).
#ifndef DD3G_RASTER_DIAG
#define DD3G_RASTER_DIAG 0
#endif
#ifndef DD3G_RASTER_DIAG_BATCHES
#define DD3G_RASTER_DIAG_BATCHES 4
#endif

namespace {

using dd3g::kTile;
constexpr int kBlock = kTile * kTile;  // threads per raster block
constexpr uint32_t kDepthCulled = 0xFFFFFFFFu;
constexpr size_t kAlign = 256;

thread_local char g_last_error[256] = "";

void set_error(const char* what, cudaError_t e) {
    snprintf(g_last_error, sizeof(g_last_error), "%s: %s (%d)", what, cudaGetErrorString(e), (int)e);
}

#define DD3G_CUDA(call)                      \
    do {                                     \
        cudaError_t e_ = (call);             \
        if (e_ != cudaSuccess) {             \
            set_error(#call, e_);            \
            return DD3G_ERROR_CUDA;          \
        }                                    \
    } while (0)

#define DD3G_LAUNCHED(name)                        \
    do {                                           \
        cudaError_t e_ = cudaGetLastError();       \
        if (e_ != cudaSuccess) {                   \
            set_error("launch " name, e_);         \
            return DD3G_ERROR_CUDA;                \
        }                                          \
    } while (0)

size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// Step 3's input: the tile count of depth-sorted number k, read through sorted_idx by the scan itself (a transform
// iterator), so that no kernel writes the gathered counts for the scan to read back (run 13).
struct CountOf {
    const uint32_t* counts;
    __host__ __device__ long long operator()(uint32_t idx) const { return (long long)counts[idx]; }
};
using CountIter = thrust::transform_iterator<CountOf, const uint32_t*, long long>;

// Counters at the start of the workspace (one 256-byte slot).
struct Header {
    unsigned long long intersections;  // needed by the last frame
    unsigned long long capacity;
    unsigned long long evaluations;
    unsigned long long pad[29];
};
static_assert(sizeof(Header) == 256, "header is one aligned slot");

int bits_for(uint64_t v) {  // bits needed to represent v
    int b = 0;
    while (b < 64 && (v >> b) != 0) ++b;
    return std::max(b, 1);
}

// Derived sizes of one call, and where each buffer lives in the workspace.
struct Plan {
    int64_t N = 0, CN = 0, capacity = 0;
    int C = 0, W = 0, H = 0, K = 0, tiles_x = 0, tiles_y = 0;
    int64_t tiles = 0;  // C * tiles_x * tiles_y
    int gs = 0;                        // the sorted path's list: 0 per tile, 1 per group of 2 x 2 tiles
    int groups_x = 0, groups_y = 0;    // (tiles_x, tiles_y) >> gs, rounded up
    int64_t groups = 0;                // C * groups_x * groups_y: the list's keys are < groups
    uint32_t sentinel = 0;             // the key of unused list positions: groups (gs = 0) or groups - 1 (gs = 1)
    int tile_bits = 1;                 // bits of a list key (the sentinel included)
    bool key16 = false;  // the list's keys are uint16_t (DD3G_RASTER_KEY16 and tile_bits <= 16)
    size_t cub_bytes = 0;
    // offsets into the workspace
    size_t o_header = 0, o_pa = 0, o_pb = 0, o_pc = 0, o_rect = 0, o_count = 0, o_dkey0 = 0, o_dkey1 = 0,
           o_dval0 = 0, o_dval1 = 0, o_scan_out = 0, o_rec = 0, o_ikey0 = 0, o_ikey1 = 0, o_ival0 = 0,
           o_ival1 = 0, o_ranges = 0, o_tcount = 0, o_boff = 0, o_cub = 0, total = 0;
};

// Whether a frame takes the binned small-scene path (bin_sort.h).
bool binned(const Plan& p) {
    return DD3G_RASTER_BINNED_MAX > 0 && p.CN > 0 && p.CN <= (int64_t)DD3G_RASTER_BINNED_MAX &&
           (int64_t)p.tiles_x * p.tiles_y <= dd3g::kBinTilesMax;
}

int validate(const dd3g_raster_config* cfg) {
    if (!cfg) return DD3G_ERROR_INVALID_VALUE;
    if (cfg->struct_size != sizeof(dd3g_raster_config)) return DD3G_ERROR_STRUCT_SIZE;
    if (cfg->dtype != DD3G_FLOAT32 && cfg->dtype != DD3G_FLOAT16) return DD3G_ERROR_INVALID_VALUE;
    if (cfg->num_gaussians < 0 || cfg->num_cameras < 1 || cfg->width < 1 || cfg->height < 1)
        return DD3G_ERROR_INVALID_VALUE;
    if (cfg->width > 65535 * kTile || cfg->height > 65535 * kTile) return DD3G_ERROR_INVALID_VALUE;
    int K = cfg->sh_coeffs;
    if (K != 1 && K != 4 && K != 9 && K != 16) return DD3G_ERROR_INVALID_VALUE;
    if ((uint64_t)cfg->num_gaussians * (uint64_t)cfg->num_cameras >= 0xFFFFFFFFull) return DD3G_ERROR_INVALID_VALUE;
    if (cfg->max_intersections < 0 || cfg->max_intersections > 0x7FFFFFFFll) return DD3G_ERROR_INVALID_VALUE;
    if (!(cfg->near_plane >= 0.f) || !(cfg->far_plane > cfg->near_plane) || !(cfg->eps2d >= 0.f))
        return DD3G_ERROR_INVALID_VALUE;
    if (cfg->flags & ~(DD3G_RASTER_TIGHT_TILES | DD3G_RASTER_EXACT_COUNT | DD3G_RASTER_COUNT_EVALS))
        return DD3G_ERROR_INVALID_VALUE;
    return DD3G_SUCCESS;
}

// A device-independent upper bound of cub_temp_bytes for `n` items (the larger of CN and capacity), used only
// where no CUDA device answers CUB's query: TensorRT builds engines ahead of time on hosts without a GPU (verified
// with TensorRT-RTX 1.7.1 on a CPU-only machine, 2026-11-27), and a workspace of 0 there would give an engine that
// fails at run time. From CCCL's allocation_sizes (CUDA 13.0, dispatch_radix_sort.cuh, dispatch_scan.cuh), with the
// caller's DoubleBuffers (no extra key/value buffers): onesweep lookback = blocks x 256 digits x 4 B with tiles of
// >= 256 items (<= 4 B an item), bins and counters < 64 KiB; the upsweep/downsweep spine = (grid x digits + tile) x
// 4 B with grid <= tiles + 1 (<= 4 B an item + a tile); the scan's tile status <= 16 B per tile of >= 128 items;
// 256-byte alignment of each piece. 8 B an item + 1 MiB covers their maximum with room to spare.
// GPU check: tests/cuda/test_raster_gpu.py::test_workspace_bound_covers_cub (written, not yet run on a GPU).
size_t cub_temp_bound(int64_t n) { return (size_t)(8 * std::max<int64_t>(n, 0)) + ((size_t)1 << 20); }

// CUB temp bytes of the three device-wide operations, at their largest sizes. DD3G_RASTER_WORKSPACE_BOUND=1 (or no
// CUDA device) answers with cub_temp_bound instead.
int cub_temp_bytes(const Plan& p, size_t* out) {
    int devices = 0;
    const char* force = std::getenv("DD3G_RASTER_WORKSPACE_BOUND");
    if ((force && force[0] == '1') || cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        cudaGetLastError();  // clear the sticky "no device" error of the count query
        *out = cub_temp_bound(std::max<int64_t>(p.CN, p.capacity));
        return DD3G_SUCCESS;
    }
    size_t a = 0, b = 0, c = 0;
    if (p.CN > 0) {
        cub::DoubleBuffer<uint32_t> k(nullptr, nullptr), v(nullptr, nullptr);
        DD3G_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, a, k, v, (int)p.CN, 0, 32));
        DD3G_CUDA(cub::DeviceScan::InclusiveSum(nullptr, b, CountIter(nullptr, CountOf{nullptr}), (long long*)nullptr,
                                                (int)p.CN));
    }
    if (p.capacity > 0 && p.key16) {
        cub::DoubleBuffer<uint16_t> k(nullptr, nullptr);
        cub::DoubleBuffer<uint32_t> v(nullptr, nullptr);
        DD3G_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, c, k, v, (int)p.capacity, 0, p.tile_bits));
    } else if (p.capacity > 0) {
        cub::DoubleBuffer<uint32_t> k(nullptr, nullptr), v(nullptr, nullptr);
        DD3G_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, c, k, v, (int)p.capacity, 0, p.tile_bits));
    }
    *out = std::max(a, std::max(b, c));
    return DD3G_SUCCESS;
}

int make_plan(const dd3g_raster_config* cfg, Plan* p) {
    int st = validate(cfg);
    if (st != DD3G_SUCCESS) return st;
    p->N = cfg->num_gaussians;
    p->C = cfg->num_cameras;
    p->CN = p->N * p->C;
    p->W = cfg->width;
    p->H = cfg->height;
    p->K = cfg->sh_coeffs;
    p->tiles_x = (p->W + kTile - 1) / kTile;
    p->tiles_y = (p->H + kTile - 1) / kTile;
    p->tiles = (int64_t)p->C * p->tiles_x * p->tiles_y;
    if (p->tiles >= 0x7FFFFFFFll) return DD3G_ERROR_INVALID_VALUE;
    p->gs = DD3G_RASTER_TILE_GROUPS && DD3G_RASTER_WARP_CULL && p->CN <= (int64_t)dd3g::kGroupIdxMask + 1 ? 1 : 0;
    p->groups_x = ((p->tiles_x - 1) >> p->gs) + 1;
    p->groups_y = ((p->tiles_y - 1) >> p->gs) + 1;
    p->groups = (int64_t)p->C * p->groups_x * p->groups_y;
    // The unused tail must sort after every entry. With gs = 0 its key is one past the last tile's. With gs = 1 it is
    // the last group's own key, which saves a radix pass where the group count is a power of two (one camera at
    // 512^2: 256 groups, 8 bits, one pass): the stable sort leaves the tail after the last group's entries (it comes
    // after them in the unsorted list) and k_ranges ends every range at the list size, so no range holds it. (The
    // writers' defensive fill, inside the list, writes value 0: an empty tile mask, staged by no tile.)
    p->sentinel = (uint32_t)(p->gs ? p->groups - 1 : p->groups);
    p->tile_bits = bits_for((uint64_t)p->sentinel);
    p->key16 = DD3G_RASTER_KEY16 && p->tile_bits <= 16;
    p->capacity = cfg->max_intersections > 0 ? cfg->max_intersections
                                             : std::min<int64_t>(8 * p->CN + 65536, 0x7FFFFFFFll);
    st = cub_temp_bytes(*p, &p->cub_bytes);
    if (st != DD3G_SUCCESS) return st;
    size_t off = 0;
    auto take = [&](size_t bytes) {
        size_t o = off;
        off += align_up(bytes);
        return o;
    };
    const size_t CN = (size_t)p->CN, cap = (size_t)p->capacity;
    p->o_header = take(sizeof(Header));
    p->o_pa = take(CN * sizeof(float4));      // x, y, opacity, depth
    p->o_pb = take(CN * sizeof(float4));      // conic a, b, c, -
    p->o_pc = take(CN * sizeof(float4));      // r, g, b, -
    p->o_rect = take(binned(*p) ? CN * sizeof(ushort4) : 0);  // binned path: tile rect
    p->o_rec = take(binned(*p) ? 0 : CN * dd3g::kRecordWords * sizeof(uint32_t));  // default path: row records
    p->o_count = take(CN * sizeof(uint32_t)); // tiles touched
    p->o_dkey0 = take(CN * sizeof(uint32_t));
    p->o_dkey1 = take(CN * sizeof(uint32_t));
    p->o_dval0 = take(CN * sizeof(uint32_t));
    p->o_dval1 = take(CN * sizeof(uint32_t));
    p->o_scan_out = take(CN * sizeof(long long));
    const size_t key_bytes = p->key16 && !binned(*p) ? sizeof(uint16_t) : sizeof(uint32_t);  // binned: depth bits
    p->o_ikey0 = take(cap * key_bytes);
    p->o_ikey1 = take(cap * key_bytes);
    p->o_ival0 = take(cap * sizeof(uint32_t));
    p->o_ival1 = take(cap * sizeof(uint32_t));
    p->o_ranges = take((size_t)p->tiles * sizeof(int2));
    p->o_tcount = take(binned(*p) ? (size_t)p->tiles * sizeof(uint32_t) : 0);  // binned path: per-tile counts
    // binned path: each count block's offset inside every tile it touched (blocks per camera x C x tiles per camera)
    p->o_boff = take(binned(*p) ? (size_t)((p->N + dd3g::kBinThreads - 1) / dd3g::kBinThreads) * p->tiles *
                                      sizeof(uint32_t)
                                : 0);
    p->o_cub = take(p->cub_bytes);
    p->total = off;
    return DD3G_SUCCESS;
}

// ---------------------------------------------------------------------------------------------------------
// kernels

template <typename T>
__device__ __forceinline__ float ld(const T* p, size_t i);
template <>
__device__ __forceinline__ float ld<float>(const float* p, size_t i) { return __ldg(p + i); }
template <>
__device__ __forceinline__ float ld<__half>(const __half* p, size_t i) { return __half2float(p[i]); }

// Step 1 for one (camera, Gaussian) number idx < N * C: stores its projection and returns its tile count (0: culled),
// also written to counts, and its row record (emit_walk.h: rect and tight row spans, two uint4 per pair) to recs.
// kRowCount = false (the binned path, whose caller walks the tiles anyway and counts them there): no row walk here,
// the rect goes to rects instead of a record, counts is left to the caller, and the return value is 1 for a visible
// Gaussian.
// sh_at(i) returns SH element i (coefficient-major, i < 3 K) of the pair's Gaussian as float.
template <typename T, bool kRowCount = true, typename ShAt>
__device__ __forceinline__ uint32_t project_one(
    uint32_t idx, uint32_t N, const T* __restrict__ means, const T* __restrict__ quats, const T* __restrict__ scales,
    const T* __restrict__ opacities, const ShAt& sh_at, int K, const float* __restrict__ viewmats,
    const float* __restrict__ Ks, int W, int H, int tiles_x, int tiles_y, float near_plane, float far_plane,
    float eps2d, bool tight, int gs, float4* __restrict__ pa, float4* __restrict__ pb, float4* __restrict__ pc,
    ushort4* __restrict__ rects, uint4* __restrict__ recs, uint32_t* __restrict__ counts,
    uint32_t* __restrict__ dkeys, uint32_t* __restrict__ dvals, dd3g::Projected& p) {
    uint32_t cam = idx / N, g = idx - cam * N;
    const float* V = viewmats + 16 * cam;
    const float* Kc = Ks + 9 * cam;
    float m[3] = {ld(means, 3 * (size_t)g), ld(means, 3 * (size_t)g + 1), ld(means, 3 * (size_t)g + 2)};
    float q[4] = {ld(quats, 4 * (size_t)g), ld(quats, 4 * (size_t)g + 1), ld(quats, 4 * (size_t)g + 2),
                  ld(quats, 4 * (size_t)g + 3)};
    float s[3] = {ld(scales, 3 * (size_t)g), ld(scales, 3 * (size_t)g + 1), ld(scales, 3 * (size_t)g + 2)};
    float o = ld(opacities, g);
    dd3g::project_gaussian(m, q, s, o, V, Kc, W, H, near_plane, far_plane, eps2d, tiles_x, tiles_y, p);
    if (dvals) dvals[idx] = idx;
    uint32_t n = 0;
    uint32_t rec[dd3g::kRecordWords];
    if (!kRowCount) n = p.visible ? 1u : 0u;
    else if (p.visible) n = dd3g::make_row_record(p, tight, gs, rec);
    if (kRowCount) counts[idx] = n;
    if (n == 0) {
        if (dkeys) dkeys[idx] = kDepthCulled;
        return 0;
    }
    if (dkeys) dkeys[idx] = __float_as_uint(p.depth);  // positive floats sort like their bit patterns
    float cc[3];
    dd3g::camera_centre(V, cc);
    float rgb[3];
    dd3g::eval_sh(K, m[0] - cc[0], m[1] - cc[1], m[2] - cc[2], sh_at, rgb);
    pa[idx] = make_float4(p.x, p.y, p.opacity, p.depth);
    pb[idx] = make_float4(p.ca, p.cb, p.cc, dd3g::reject_log2(p.opacity));
    pc[idx] = make_float4(fmaxf(rgb[0] + 0.5f, 0.f), fmaxf(rgb[1] + 0.5f, 0.f), fmaxf(rgb[2] + 0.5f, 0.f), 0.f);
    if (kRowCount) {
        recs[2 * (size_t)idx] = make_uint4(rec[0], rec[1], rec[2], rec[3]);
        recs[2 * (size_t)idx + 1] = make_uint4(rec[4], rec[5], rec[6], rec[7]);
    } else {
        rects[idx] = make_ushort4((unsigned short)p.tx0, (unsigned short)p.ty0, (unsigned short)p.tx1,
                                  (unsigned short)p.ty1);
    }
    return n;
}

// Step 1 of the default path: the projection (depth keys, row counts). A block takes kProjThreads consecutive
// Gaussians and the cameras [blockIdx.y * cams, ...) of them (cams: project_cams). It first copies its Gaussians' SH
// rows (3 K floats each: 3/4 of the input bytes at degree 3) into shared memory with consecutive threads on
// consecutive floats, then projects: a thread reading its own 192-byte row from global memory touches a separate
// sector per lane and load (benchmarks/rasterizer_notes.md run 11). The values and the arithmetic are those of the
// per-thread reads, so the colours are bit-identical. Rows are padded to an odd number of floats, so that 32 lanes
// reading their own rows hit 32 different banks.
constexpr int kProjThreads = 128;
// Projection blocks an SM (registers capped at 64 for 8: 36 bytes of spill stores; half the threads an SM instead
// of 37 %).
// H200, run 13, with the row records (80 registers, 6 blocks): 1M/512/1 -2.4 %, 1M/1024/1 -2 %, 1M x 8 cameras -1 %,
// 16k-200k within +-0.5 %.
#ifndef DD3G_RASTER_PROJ_MIN_BLOCKS
#define DD3G_RASTER_PROJ_MIN_BLOCKS 8
#endif
constexpr int kProjShStride = 16 * 3 + 1;  // floats a staged row takes at most (K = 16)

// Copies a block's SH rows (`total` floats, `row` a Gaussian, consecutive in global memory) into shared memory,
// rows `stride` floats apart: float e goes to (e / row) * stride + e % row. With DD3G_RASTER_PROJ_VEC (fp32 rows at a
// 16-byte address) a thread loads four consecutive floats at a time, a quarter of the load instructions, and steps
// its row and column by constants instead of dividing by the runtime row length for every float (run 15: k_project
// 118.6 -> 115.4 us at 1M/512/1 on an H200); 0: one float a load (runs 11-14). The same floats land in the same
// places either way.
#ifndef DD3G_RASTER_PROJ_VEC
#define DD3G_RASTER_PROJ_VEC 1
#endif
template <typename T>
__device__ __forceinline__ void stage_sh_rows(const T* __restrict__ src, uint32_t total, uint32_t row,
                                              uint32_t stride, float* __restrict__ dst) {
    uint32_t done = 0;  // floats copied by the four-float loop: [0, done)
#if DD3G_RASTER_PROJ_VEC
    if constexpr (std::is_same<T, float>::value) {
        if (((uintptr_t)src & 15u) == 0) {
            constexpr uint32_t kStep = 4 * kProjThreads;  // floats between a thread's consecutive loads
            const uint32_t step_r = kStep / row, step_i = kStep - step_r * row;
            uint32_t e = 4 * threadIdx.x;
            uint32_t r = e / row, i = e - r * row;  // float e's row and column, carried from load to load
            for (; e + 3 < total; e += kStep) {
                const float4 v = __ldg(reinterpret_cast<const float4*>(src + e));
                const float f[4] = {v.x, v.y, v.z, v.w};
                uint32_t rr = r, ii = i;
#pragma unroll
                for (int j = 0; j < 4; ++j) {  // four floats cross at most one row end (row >= 3)
                    if (ii == row) {
                        ii = 0;
                        ++rr;
                    }
                    dst[rr * stride + ii] = f[j];
                    ++ii;
                }
                r += step_r;
                i += step_i;
                if (i >= row) {
                    i -= row;
                    ++r;
                }
            }
            done = total & ~3u;
        }
    }
#endif
    for (uint32_t e = done + threadIdx.x; e < total; e += kProjThreads) {
        const uint32_t r = e / row, i = e - r * row;
        dst[r * stride + i] = ld(src, e);
    }
}
// GS: the list's group shift (Plan::gs), a template argument so that each walk's arithmetic is compiled for it.
template <typename T, int GS>
__global__ void __launch_bounds__(kProjThreads, DD3G_RASTER_PROJ_MIN_BLOCKS)
k_project(uint32_t N, uint32_t C, uint32_t cams, const T* __restrict__ means, const T* __restrict__ quats,
          const T* __restrict__ scales, const T* __restrict__ opacities, const T* __restrict__ sh, int K,
          const float* __restrict__ viewmats, const float* __restrict__ Ks, int W, int H, int tiles_x,
          int tiles_y, float near_plane, float far_plane, float eps2d, bool tight, float4* __restrict__ pa,
          float4* __restrict__ pb, float4* __restrict__ pc, uint4* __restrict__ recs,
          uint32_t* __restrict__ counts, uint32_t* __restrict__ dkeys, uint32_t* __restrict__ dvals) {
    __shared__ float s_sh[kProjThreads * kProjShStride];
    const int row = 3 * K, stride = row | 1;
    const uint32_t g0 = blockIdx.x * kProjThreads;
    const uint32_t rows = min((uint32_t)kProjThreads, N - g0);
    stage_sh_rows(sh + (size_t)g0 * row, rows * (uint32_t)row, (uint32_t)row, (uint32_t)stride, s_sh);
    __syncthreads();
    const uint32_t g = g0 + threadIdx.x;
    if (g >= N) return;
    const float* mine = s_sh + threadIdx.x * stride;
    const auto sh_at = [&](int i) { return mine[i]; };
    const uint32_t c0 = blockIdx.y * cams, c1 = min(C, c0 + cams);
    for (uint32_t cam = c0; cam < c1; ++cam) {
        dd3g::Projected p;
        project_one<T>(cam * N + g, N, means, quats, scales, opacities, sh_at, K, viewmats, Ks, W, H, tiles_x,
                       tiles_y, near_plane, far_plane, eps2d, tight, GS, pa, pb, pc, nullptr, recs, counts, dkeys,
                       dvals, p);
    }
}

// Cameras a k_project block loops over: all of them once a scene has enough Gaussians to fill the GPU with one
// thread each (each input then read once for all cameras), else one (a block per camera and block of Gaussians).
#ifndef DD3G_RASTER_PROJECT_ALL_CAMS_MIN
#define DD3G_RASTER_PROJECT_ALL_CAMS_MIN (1 << 17)
#endif
// (More than 65,535 cameras share blocks too: the grid's y dimension stops there.)
uint32_t project_cams(int64_t N, int C) {
    if (N >= DD3G_RASTER_PROJECT_ALL_CAMS_MIN) return (uint32_t)C;
    return (uint32_t)std::max(1, (C + 65534) / 65535);
}


// The row source of a writer's walk (emit_walk.h): the pair's record, and for a kRowsComputed record (too many rows
// or columns) the centre, opacity and conic that k_project stored.
__device__ __forceinline__ dd3g::RowSource load_source(const uint4* recs, const float4* pa, const float4* pb,
                                                       uint32_t idx, bool tight, int gs) {
    const uint4 a = recs[2 * (size_t)idx], b = recs[2 * (size_t)idx + 1];
    const uint32_t w[dd3g::kRecordWords] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    dd3g::RowSource s = dd3g::row_source(w, tight, gs);
    if (s.kind == dd3g::kRowsComputed) {
        const float4 c = pa[idx], d = pb[idx];
        dd3g::row_source_compute(s, c.x, c.y, c.z, d.x, d.y, d.z);
    }
    return s;
}

#if DD3G_RASTER_BINNED_MAX > 0  // the binned path's count and scatter
// Rebuild the Projected fields that tight_row reads from what the binned count kernel stored.
__device__ __forceinline__ dd3g::Projected load_projected(const float4* pa, const float4* pb, const ushort4* rects,
                                                          uint32_t i) {
    dd3g::Projected p;
    float4 a = pa[i], b = pb[i];
    ushort4 r = rects[i];
    p.x = a.x; p.y = a.y; p.opacity = a.z; p.depth = a.w;
    p.ca = b.x; p.cb = b.y; p.cc = b.z;
    p.tx0 = r.x; p.ty0 = r.y; p.tx1 = r.z; p.ty1 = r.w;
    p.visible = true;
    return p;
}
#endif
#if DD3G_RASTER_EMIT == 0 || DD3G_RASTER_EMIT == 2
// The original writer: one thread per depth-sorted Gaussian writes its whole run (uncoalesced stores).
template <typename Key, int GS>
__global__ void __launch_bounds__(256)
k_emit(uint32_t CN, uint32_t N, int cols, int per_cam, bool tight, int64_t capacity,
       const uint32_t* __restrict__ sorted_idx, const long long* __restrict__ ends, const float4* __restrict__ pa,
       const float4* __restrict__ pb, const uint4* __restrict__ recs, uint32_t sentinel,
       Key* __restrict__ ikeys, uint32_t* __restrict__ ivals) {
    uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= CN) return;
    long long pos, end;
    dd3g::emit_run(ends, k, capacity, &pos, &end);
    if (pos >= end) return;  // count 0, or the run starts at or past the capacity
    uint32_t idx = sorted_idx[k];
    uint32_t base = (idx / N) * (uint32_t)per_cam;
    dd3g::emit_run_serial(load_source(recs, pa, pb, idx, tight, GS), base, idx, cols, pos, end, sentinel, ikeys,
                          ivals);
}
#endif
#if DD3G_RASTER_EMIT == 1 || DD3G_RASTER_EMIT == 2
// The staged writer: block b owns depth-sorted numbers [128 b, 128 b + 128), whose runs form one contiguous
// segment [lo, hi) of the list (clamped to the capacity). The segment is produced in windows of kEmitChunk
// positions starting at lo rounded down to 32: in each round every thread resumes its own row-major tile walk
// and writes the entries that fall in the window into shared memory (index = position - window), then the block
// copies the window's part of [lo, hi) out with consecutive threads at consecutive positions (aligned 128-byte
// lines, except at the segment's two ends). Every position of [lo, hi) lies in exactly one thread's run, and each
// round a thread writes all of its positions inside the window, so every slot that is copied out was written in
// that round. Control flow around the barriers is block-uniform: lo and hi are the same for all threads, and
// threads without a Gaussian (k >= CN, count 0, past the capacity) stay in the loop with an empty walk.
template <typename Key, int GS>
__global__ void __launch_bounds__(dd3g::kEmitThreads)
k_emit_staged(uint32_t CN, uint32_t N, int cols, int per_cam, bool tight, int64_t capacity,
              const uint32_t* __restrict__ sorted_idx, const long long* __restrict__ ends,
              const float4* __restrict__ pa, const float4* __restrict__ pb,
              const uint4* __restrict__ recs, uint32_t sentinel, Key* __restrict__ ikeys,
              uint32_t* __restrict__ ivals) {
    __shared__ Key s_keys[dd3g::kEmitChunk];
    __shared__ uint32_t s_vals[dd3g::kEmitChunk];
    const uint32_t k0 = blockIdx.x * (uint32_t)dd3g::kEmitThreads;  // < CN: the grid covers CN exactly
    long long lo, hi;
    dd3g::emit_block_segment(k0, dd3g::kEmitThreads, CN, ends, capacity, &lo, &hi);
    if (lo >= hi) return;  // the whole block: nothing to write (block-uniform, before any barrier)

    dd3g::EmitWalk w{};  // pos = end = 0: an empty walk
    const uint32_t k = k0 + threadIdx.x;
    if (k < CN) {
        long long pos, end;
        dd3g::emit_run(ends, k, capacity, &pos, &end);
        if (pos < end) {
            const uint32_t idx = sorted_idx[k];
            dd3g::emit_walk_begin(w, load_source(recs, pa, pb, idx, tight, GS), (idx / N) * (uint32_t)per_cam, idx,
                                  cols, pos, end);
        }
    }
    for (long long win = dd3g::emit_first_window(lo); win < hi; win += dd3g::kEmitChunk) {
        dd3g::emit_walk_fill(w, win + dd3g::kEmitChunk, sentinel, s_keys, s_vals, win);
        __syncthreads();  // the window is complete
        dd3g::emit_copy_out(threadIdx.x, dd3g::kEmitThreads, win, dd3g::kEmitChunk, lo, hi, s_keys, s_vals, ikeys,
                            ivals);
        __syncthreads();  // read before the next round overwrites it
    }
}
#endif

#if DD3G_RASTER_EMIT == 2 || DD3G_RASTER_EMIT == 3
// The flat writer: thread j writes list position j (grid-stride loop over [0, min(M, capacity))), so stores are
// coalesced and every position is a thread of its own. Its owner is found by a binary search over ends (the runs
// tile [0, M) in depth order); the entry is computed from the owner's walk directly.
template <typename Key, int GS>
__global__ void __launch_bounds__(256)
k_emit_flat(uint32_t CN, uint32_t N, int cols, int per_cam, bool tight, int64_t capacity,
            const uint32_t* __restrict__ sorted_idx, const long long* __restrict__ ends,
            const float4* __restrict__ pa, const float4* __restrict__ pb,
            const uint4* __restrict__ recs, uint32_t sentinel, Key* __restrict__ ikeys,
            uint32_t* __restrict__ ivals) {
    const long long M = ends[CN - 1];  // CN > 0 here
    const long long lim = M < capacity ? M : capacity;
    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < lim;
         j += (long long)gridDim.x * blockDim.x) {
        const uint32_t k = dd3g::emit_owner(j, CN, ends);
        const uint32_t idx = sorted_idx[k];
        uint32_t key, val;
        dd3g::emit_entry_at(load_source(recs, pa, pb, idx, tight, GS), (idx / N) * (uint32_t)per_cam, idx, cols,
                            j - dd3g::run_begin(ends, k), sentinel, &key, &val);
        ikeys[j] = (Key)key;
        ivals[j] = val;
    }
}
#endif

// Write the frame's intersection count into the header and pad [count, pad_end) with the sentinel key, so
// that the fixed-size tile sort puts the unused tail last. With `ranges` (DD3G_RASTER_FOLD_MEMSETS) also clear
// the `num_tiles` tile ranges and the evaluation counter.
template <typename Key>
__global__ void k_pad(uint32_t CN, const long long* __restrict__ ends, int64_t capacity, int64_t pad_end,
                      uint32_t sentinel, Key* __restrict__ ikeys, Header* __restrict__ hdr,
                      int2* __restrict__ ranges, int64_t num_tiles) {
    long long M = CN > 0 ? ends[CN - 1] : 0;
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        hdr->intersections = (unsigned long long)M;
        hdr->capacity = (unsigned long long)capacity;
        if (ranges) hdr->evaluations = 0;
    }
    if (ranges)
        for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < num_tiles;
             t += (int64_t)gridDim.x * blockDim.x)
            ranges[t] = make_int2(0, 0);
    for (long long i = (M < pad_end ? M : pad_end) + blockIdx.x * (long long)blockDim.x + threadIdx.x; i < pad_end;
         i += (long long)gridDim.x * blockDim.x)
        ikeys[i] = (Key)sentinel;
}

// Step 7: every tile's (or group's) range [lower_bound(t), lower_bound(t + 1)) of the sorted keys[0, num) (emit_walk.h
// range_probe / range_narrow), both ends clamped to the list size (range_clamp: with gs = 1 the unused tail has the
// last group's key). A warp per tile: lanes 0-15 search t, lanes 16-31 t + 1, both at once. An empty tile
// gets an empty range at the place it would have, so every tile is written, whether or not k_pad cleared it.
constexpr int kRangeThreads = 256;
template <typename Key>
__global__ void __launch_bounds__(kRangeThreads)
k_ranges(int64_t num_tiles, int64_t num, const Key* __restrict__ keys, const long long* __restrict__ ends,
         uint32_t CN, int2* __restrict__ ranges) {
    const int64_t t = (blockIdx.x * (int64_t)kRangeThreads + threadIdx.x) / 32;
    if (t >= num_tiles) return;  // the whole warp
    const int lane = threadIdx.x & 31, half = lane >> 4;
    const uint32_t target = (uint32_t)t + (uint32_t)half;
    long long lo = 0, hi = num;
    while (__any_sync(0xFFFFFFFFu, lo < hi)) {
        const bool below = lo < hi && (uint32_t)keys[dd3g::range_probe(lo, hi, lane & 15)] < target;
        const uint32_t mine = (__ballot_sync(0xFFFFFFFFu, below) >> (16 * half)) & 0xFFFFu;
        if (lo < hi) dd3g::range_narrow(&lo, &hi, __popc(mine));
    }
    const long long end = __shfl_sync(0xFFFFFFFFu, lo, 16);
    if (lane == 0) {
        const long long M = ends[CN - 1], lim = M < num ? M : num;  // the list's entries: [0, lim) once sorted
        ranges[t] = make_int2((int)dd3g::range_clamp(lo, lim), (int)dd3g::range_clamp(end, lim));
    }
}

// The thread's pixel in a 16x16 raster block (blockIdx: tile x, tile y, camera) and the block's range: its tile's
// (gs = 0, cols = tiles_x, per_cam = tiles a camera) or its group's (gs = 1, groups_x, groups a camera), and with
// gs = 1 which bit of an entry's group mask is this tile's (sub).
struct TilePixel {
    int cam, tid, px, py;
    bool inside;
    int2 range;
    int sub;       // gs = 1: bit (ty % 2) * 2 + tx % 2 of an entry's group mask
    float fx, fy;  // pixel centre
};
__device__ __forceinline__ TilePixel tile_pixel(int W, int H, int gs, int cols, int per_cam,
                                                const int2* __restrict__ ranges) {
    TilePixel t;
    t.cam = blockIdx.z;
    t.tid = threadIdx.y * kTile + threadIdx.x;
    // warp w of 32 threads: a kW x (32 / kW) pixel block (raster_math.h warp_mask); kW = 16 is threadIdx's own layout
    constexpr int kW = DD3G_RASTER_WARP_W, kCols = kTile / kW, kRows = 32 / kW;
    const int w = t.tid >> 5, lane = t.tid & 31;
    t.px = blockIdx.x * kTile + (w % kCols) * kW + lane % kW;
    t.py = blockIdx.y * kTile + (w / kCols) * kRows + lane / kW;
    t.inside = t.px < W && t.py < H;
    t.range = ranges[(size_t)t.cam * per_cam + (blockIdx.y >> gs) * cols + (blockIdx.x >> gs)];
    t.sub = (int)(((blockIdx.y & 1u) << 1) | (blockIdx.x & 1u));
    t.fx = (float)t.px + 0.5f;
    t.fy = (float)t.py + 0.5f;
    return t;
}

// Shared bytes of the warp culling's masks (one per staged Gaussian) and per-warp index lists (one row of kBlock per
// warp); one byte each when culling is off (unused).
constexpr int kMaskBytes = DD3G_RASTER_WARP_CULL ? kBlock : 1;
constexpr int kListWords = kBlock / 4 + 1;  // a warp's list: kBlock byte indices, and the word read ahead past them
constexpr int kListWordsAll = DD3G_RASTER_WARP_CULL ? kBlock / 32 * kListWords : 1;
static_assert(kBlock <= 256, "staged indices fit a byte");

// One pixel's front-to-back blending state (steps 8 of both paths).
struct PixelAcc {
    float T = 1.f, r = 0.f, g = 0.f, b = 0.f, d = 0.f;
    uint32_t n_eval = 0;
    bool done;
};

#if DD3G_RASTER_LOG2_BLEND
__device__ __forceinline__ float ex2_approx(float x) {  // 2^x, the MUFU instruction behind __expf
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
#endif

// Copy Gaussian `id` of the projected arrays into shared slot `slot` for blending. With DD3G_RASTER_LOG2_BLEND the
// conic (ca, cb, cc) becomes the coefficients of p = -sigma log2(e) = qa dx^2 + qb dx dy + qc dy^2, and .w holds
// the projection's reject_log2(opacity) = log2(kAlphaThreshold / opacity) less a margin: opacity 2^p <
// kAlphaThreshold exactly when p < log2(thr / op), so p < .w only rejects pairs whose alpha is below the threshold by
// more than ~0.07 % (the margin, 1e-3 in log2 units, is 1,000 times the approximations' error), and the exact alpha
// test decides the rest, as before. With kCull, s_mask[slot] gets the Gaussian's warp mask (raster_math.h
// warp_mask) in the tile whose top-left pixel corner is (x0, y0).
template <bool kCull>
__device__ __forceinline__ void stage_gaussian(int slot, uint32_t id, const float4* __restrict__ pa,
                                               const float4* __restrict__ pb, const float4* __restrict__ pc,
                                               float4* s_a, float4* s_b, float4* s_c, uint8_t* s_mask, float x0,
                                               float y0) {
    const float4 a = pa[id];
    const float4 b = pb[id];
    s_a[slot] = a;
#if DD3G_RASTER_LOG2_BLEND
    constexpr float kLog2e = 1.4426950408889634f;
    s_b[slot] = make_float4(-0.5f * kLog2e * b.x, -kLog2e * b.y, -0.5f * kLog2e * b.z, b.w);
#else
    s_b[slot] = b;
#endif
    if constexpr (kCull) s_mask[slot] = (uint8_t)dd3g::warp_mask<DD3G_RASTER_WARP_W>(a.x, a.y, b.x, b.y, b.z, b.w, x0, y0);
    s_c[slot] = pc[id];
}

// Composite a Gaussian of opacity alpha (>= the threshold), colour *c and depth front to back. Returns true (and
// leaves the sums) when the pixel stops: the transmittance would fall to kTransmittanceMin or below.
__device__ __forceinline__ bool composite(float alpha, const float4* c, float depth, PixelAcc& acc) {
    const float next_T = acc.T * (1.f - alpha);
    if (next_T <= dd3g::kTransmittanceMin) {
        acc.done = true;
        return true;
    }
    const float w = alpha * acc.T;
    const float4 col = *c;
    acc.r += col.x * w;
    acc.g += col.y * w;
    acc.b += col.z * w;
    acc.d += depth * w;
    acc.T = next_T;
    return false;
}

#if DD3G_RASTER_LOG2_BLEND
// -sigma log2(e) of staged Gaussian (a, cb) at pixel centre (fx, fy): one expression, used by both loops below, so
// that the compiler contracts it the same way in each.
__device__ __forceinline__ float log2_power(const float4& a, const float4& cb, float fx, float fy) {
    const float dx = a.x - fx, dy = a.y - fy;
    return (cb.x * dx + cb.y * dy) * dx + cb.z * (dy * dy);
}

// One staged Gaussian j with its power p: the pre-test, the exact alpha test and the blend. Returns true when the
// pixel has stopped (transmittance would fall to kTransmittanceMin or below).
template <bool kCount>
__device__ __forceinline__ bool blend_one(const float4& a, const float4& cb, float p, const float4* s_c, int j,
                                          PixelAcc& acc) {
    if (kCount) ++acc.n_eval;
    if (p > 0.f || p < cb.w) return false;  // sigma < 0, or alpha clearly below the threshold
    const float alpha = fminf(dd3g::kAlphaMax, a.z * ex2_approx(p));
    if (alpha < dd3g::kAlphaThreshold) return false;
    return composite(alpha, s_c + j, a.w, acc);
}
#endif

// Blend the n Gaussians staged in s_a/s_b/s_c (in order, by stage_gaussian) into the pixel at (fx, fy).
// Two Gaussians a step: both loaded and their powers computed before the first is blended, so a warp whose pixels
// go through the whole list (a silhouette tile never saturates) has two independent chains of shared loads and
// multiply-adds in flight instead of one; they are blended strictly in order, with the same arithmetic, so images and
// evaluation counts are those of the one-at-a-time loop (benchmarks/rasterizer_notes.md run 10: -1.5 to -8 %; four
// a step was slower on most frames).
// With kCull (k_raster, DD3G_RASTER_WARP_CULL) the warp first lists, in order, the staged Gaussians whose s_mask bit it
// has (its s_list row, kBlock bytes) and goes through those only; a skipped Gaussian has alpha < 1/255 at each of its pixels,
// which the loop would have skipped anyway, so the pixels are the same and only the evaluation count drops.
template <bool kCount, bool kCull>
__device__ __forceinline__ void blend_staged(int n, const float4* s_a, const float4* s_b, const float4* s_c,
                                             const uint8_t* s_mask, uint32_t* s_list, int tid, float fx, float fy,
                                             PixelAcc& acc) {
#if DD3G_RASTER_DIAG == 2
    return;
#endif
    uint32_t* words = kCull ? s_list + (tid >> 5) * kListWords : nullptr;  // this warp's list, 4 indices a word
    const uint8_t* list = reinterpret_cast<const uint8_t*>(words);
    if constexpr (kCull) {
        if (__all_sync(0xffffffffu, acc.done)) return;
        const int warp = tid >> 5, lane = tid & 31;
        uint8_t* out = reinterpret_cast<uint8_t*>(words);
        int m = 0;
        for (int base = 0; base < n; base += 32) {
            const int j = base + lane;
            const bool hit = j < n && ((s_mask[j] >> warp) & 1u);
            const unsigned ballot = __ballot_sync(0xffffffffu, hit);
            if (hit) out[m + __popc(ballot & ((1u << lane) - 1u))] = (uint8_t)j;
            m += __popc(ballot);
        }
        __syncwarp();
        n = m;
    }
#if DD3G_RASTER_LOG2_BLEND
    if (acc.done) return;
    int k = 0;
    if constexpr (kCull) {
        // Four listed indices per shared load (one word), the next word loaded while this one's four are blended:
        // the index loads stay off the chain of dependent loads that bounds the loop.
        uint32_t next = words[0];
        for (; k + 3 < n; k += 4) {
            const uint32_t w = next;
            next = words[(k >> 2) + 1];
            const int j0 = w & 255u, j1 = (w >> 8) & 255u, j2 = (w >> 16) & 255u, j3 = w >> 24;
            const float4 a0 = s_a[j0], b0 = s_b[j0], a1 = s_a[j1], b1 = s_b[j1];
            const float p0 = log2_power(a0, b0, fx, fy), p1 = log2_power(a1, b1, fx, fy);
            if (blend_one<kCount>(a0, b0, p0, s_c, j0, acc)) return;
            if (blend_one<kCount>(a1, b1, p1, s_c, j1, acc)) return;
            const float4 a2 = s_a[j2], b2 = s_b[j2], a3 = s_a[j3], b3 = s_b[j3];
            const float p2 = log2_power(a2, b2, fx, fy), p3 = log2_power(a3, b3, fx, fy);
            if (blend_one<kCount>(a2, b2, p2, s_c, j2, acc)) return;
            if (blend_one<kCount>(a3, b3, p3, s_c, j3, acc)) return;
        }
        for (; k < n; ++k) {
            const int j = list[k];
            const float4 a = s_a[j], cb = s_b[j];
            if (blend_one<kCount>(a, cb, log2_power(a, cb, fx, fy), s_c, j, acc)) return;
        }
    } else {
        for (; k + 1 < n; k += 2) {
            const float4 a0 = s_a[k], b0 = s_b[k], a1 = s_a[k + 1], b1 = s_b[k + 1];
            const float p0 = log2_power(a0, b0, fx, fy), p1 = log2_power(a1, b1, fx, fy);
            if (blend_one<kCount>(a0, b0, p0, s_c, k, acc)) return;
            if (blend_one<kCount>(a1, b1, p1, s_c, k + 1, acc)) return;
        }
        for (; k < n; ++k) {
            const float4 a = s_a[k], cb = s_b[k];
            if (blend_one<kCount>(a, cb, log2_power(a, cb, fx, fy), s_c, k, acc)) return;
        }
    }
#else
    for (int k = 0; k < n && !acc.done; ++k) {
        const int j = kCull ? list[k] : k;
        const float4 a = s_a[j];
        const float4 cb = s_b[j];
        const float dx = a.x - fx, dy = a.y - fy;
        const float sigma = 0.5f * (cb.x * dx * dx + cb.z * dy * dy) + cb.y * dx * dy;
        const float alpha = fminf(dd3g::kAlphaMax, a.z * __expf(-sigma));
        if (kCount) ++acc.n_eval;
        if (sigma < 0.f || alpha < dd3g::kAlphaThreshold) continue;
        if (composite(alpha, s_c + j, a.w, acc)) break;
    }
#endif
}

// The evaluation count (one atomic per warp) and the pixel's outputs.
template <bool kCount>
__device__ __forceinline__ void finish_pixel(const PixelAcc& acc, const TilePixel& tp, int W, int H,
                                             const float* __restrict__ background,
                                             float* __restrict__ out_rgb, float* __restrict__ out_alpha,
                                             float* __restrict__ out_depth, unsigned long long* __restrict__ evals) {
    if (kCount) {
        unsigned long long v = acc.n_eval;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if ((tp.tid & 31) == 0) atomicAdd(evals, v);
    }
    if (!tp.inside) return;
    const int cam = tp.cam;
    const size_t pix = ((size_t)cam * H + tp.py) * W + tp.px;
    float br = 0.f, bg = 0.f, bb = 0.f;
    if (background) {
        br = background[3 * cam];
        bg = background[3 * cam + 1];
        bb = background[3 * cam + 2];
    }
    out_rgb[3 * pix + 0] = acc.r + acc.T * br;
    out_rgb[3 * pix + 1] = acc.g + acc.T * bg;
    out_rgb[3 * pix + 2] = acc.b + acc.T * bb;
    const float alpha = 1.f - acc.T;
    if (out_alpha) out_alpha[pix] = alpha;
    if (out_depth) out_depth[pix] = acc.d / fmaxf(alpha, 1e-10f);
}

#if DD3G_RASTER_DIAG == 3
struct DiagRecord {  // one per raster block; field order as benchmarks/raster_block_timing.py reads it
    unsigned long long t0, t1, cycles;
    unsigned smid, n, rounds, max_eval;
};
constexpr int kDiagMax = 1 << 16;
__device__ DiagRecord g_diag[kDiagMax];
__device__ __forceinline__ unsigned long long diag_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
struct DiagBlock {
    unsigned long long t0 = 0, c0 = 0;
    unsigned rounds = 0;
    __device__ void begin(unsigned* s_max) {
        if (threadIdx.x == 0 && threadIdx.y == 0) {
            *s_max = 0;
            t0 = diag_ns();
            c0 = clock64();
        }
        __syncthreads();
    }
    __device__ void end(unsigned* s_max, int n, const PixelAcc& acc) {
        atomicMax(s_max, acc.n_eval);
        __syncthreads();
        if (threadIdx.x != 0 || threadIdx.y != 0) return;
        const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
        if (b >= (unsigned)kDiagMax) return;
        unsigned sm;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
        g_diag[b] = DiagRecord{t0, diag_ns(), (unsigned long long)(clock64() - c0), sm, (unsigned)n, rounds, *s_max};
    }
};
#define DD3G_DIAG_BEGIN            \
    __shared__ unsigned s_diag_max; \
    DiagBlock diag;                \
    diag.begin(&s_diag_max)
#define DD3G_DIAG_ROUND() ++diag.rounds
#define DD3G_DIAG_END(n, acc) diag.end(&s_diag_max, (n), (acc))
#else
#define DD3G_DIAG_BEGIN (void)0
#define DD3G_DIAG_ROUND() (void)0
#define DD3G_DIAG_END(n, acc) (void)0
#endif

template <bool kCount, int GS>
__global__ void __launch_bounds__(kBlock, 1)  // ", 1" changes nvcc's code: kept as measured (notes run 10)
k_raster(int W, int H, int cols, int per_cam, const int2* __restrict__ ranges,
         const uint32_t* __restrict__ ivals, const float4* __restrict__ pa, const float4* __restrict__ pb,
         const float4* __restrict__ pc, const float* __restrict__ background, float* __restrict__ out_rgb,
         float* __restrict__ out_alpha, float* __restrict__ out_depth, unsigned long long* __restrict__ evals) {
    __shared__ float4 s_a[kBlock];
    __shared__ float4 s_b[kBlock];
    __shared__ float4 s_c[kBlock];
    __shared__ uint8_t s_mask[kMaskBytes];
    __shared__ uint32_t s_list[kListWordsAll];
    const TilePixel tp = tile_pixel(W, H, GS, cols, per_cam, ranges);
    const float x0 = (float)(blockIdx.x * kTile), y0 = (float)(blockIdx.y * kTile);
    const int tid = tp.tid;
    const int2 range = tp.range;
    constexpr bool kCull = DD3G_RASTER_WARP_CULL;
    PixelAcc acc;
    acc.done = !tp.inside;
    DD3G_DIAG_BEGIN;
    for (int start = range.x; start < range.y; start += kBlock) {
        if (__syncthreads_count(acc.done) == kBlock) break;  // also protects the shared batch being overwritten
#if DD3G_RASTER_DIAG == 4
        if (start - range.x >= DD3G_RASTER_DIAG_BATCHES * kBlock) break;
#endif
        DD3G_DIAG_ROUND();
        int i = start + tid;
        if (i < range.y) {
            const uint32_t v = ivals[i];
            // a group list's entry for another tile of the group: staged with no warp bit, so that no warp lists it
            // (gs = 1 needs kCull: make_plan)
            if constexpr (GS == 0) {
                stage_gaussian<kCull>(tid, v, pa, pb, pc, s_a, s_b, s_c, s_mask, x0, y0);
            } else {
                static_assert(GS == 0 || kCull, "group lists need warp culling (make_plan)");
                if ((v >> (dd3g::kGroupMaskShift + tp.sub)) & 1u)
                    stage_gaussian<kCull>(tid, v & dd3g::kGroupIdxMask, pa, pb, pc, s_a, s_b, s_c, s_mask, x0, y0);
                else
                    s_mask[tid] = 0;
            }
        }
        __syncthreads();
        blend_staged<kCount, kCull>(min(kBlock, range.y - start), s_a, s_b, s_c, s_mask, s_list, tid, tp.fx, tp.fy,
                                    acc);
    }
    DD3G_DIAG_END(range.y - range.x, acc);
    finish_pixel<kCount>(acc, tp, W, H, background, out_rgb, out_alpha, out_depth, evals);
}

#if DD3G_RASTER_BINNED_MAX > 0
// ---- the binned path (bin_sort.h): count (in k_project), scan, scatter, sort per tile and blend

constexpr int kScanThreads = 1024, kScanItems = 4;

// One block: tile_counts -> ranges [start, end), both clamped to the capacity; the
// header gets the list size (which may exceed the capacity: the frame then drops entries), the capacity and a
// cleared evaluation counter.
__global__ void __launch_bounds__(kScanThreads)
k_bin_scan(int64_t num_tiles, int64_t capacity, const uint32_t* __restrict__ tile_counts, int2* __restrict__ ranges,
           Header* __restrict__ hdr) {
    using Scan = cub::BlockScan<unsigned long long, kScanThreads>;
    __shared__ typename Scan::TempStorage tmp;
    const unsigned long long cap = (unsigned long long)capacity;
    unsigned long long carry = 0;
    for (int64_t base = 0; base < num_tiles; base += (int64_t)kScanThreads * kScanItems) {
        unsigned long long v[kScanItems], start[kScanItems], total;
        for (int i = 0; i < kScanItems; ++i) {
            const int64_t t = base + (int64_t)threadIdx.x * kScanItems + i;
            v[i] = t < num_tiles ? tile_counts[t] : 0ull;
        }
        Scan(tmp).ExclusiveSum(v, start, total);
        for (int i = 0; i < kScanItems; ++i) {
            const int64_t t = base + (int64_t)threadIdx.x * kScanItems + i;
            if (t >= num_tiles) continue;
            uint64_t s0, s1;
            dd3g::bin_range(carry + start[i], v[i], cap, &s0, &s1);
            ranges[t] = make_int2((int)s0, (int)s1);
        }
        carry += total;
        __syncthreads();  // tmp is reused
    }
    if (threadIdx.x == 0) {
        hdr->intersections = carry;
        hdr->capacity = cap;
        hdr->evaluations = 0;
    }
}

// Step 1 of the binned path: a block of kBinThreads Gaussians of one camera (blockIdx.y) projects them as k_project
// does (no depth keys), counts their walks in a shared histogram of the camera's tiles and adds it to tile_counts
// (zeroed before): one global atomic per tile the block touched, instead of one per entry on a few hot counters.
// What that atomic returns is the block's offset inside the tile, kept in block_offsets for the scatter.
// kSplit threads per Gaussian (dd3g::bin_split_for): the first projects it, then each walks every kSplit-th tile
// row (bin_walk_rows), reading the projection back from pa / pb / rects (the floats that the scatter's walk reads).
template <typename T, int kSplit>
__global__ void __launch_bounds__(dd3g::kBinThreads * kSplit)
k_bin_count(uint32_t N, const T* __restrict__ means, const T* __restrict__ quats, const T* __restrict__ scales,
            const T* __restrict__ opacities, const T* __restrict__ sh, int K, const float* __restrict__ viewmats,
            const float* __restrict__ Ks, int W, int H, int tiles_x, int tiles_y, float near_plane,
            float far_plane, float eps2d, bool tight, float4* __restrict__ pa, float4* __restrict__ pb,
            float4* __restrict__ pc, ushort4* __restrict__ rects, uint32_t* __restrict__ counts,
            uint32_t* __restrict__ tile_counts, uint32_t* __restrict__ block_offsets) {
    __shared__ uint32_t s_cnt[dd3g::kBinTilesMax];
    __shared__ uint32_t s_n[dd3g::kBinThreads];  // tiles of each Gaussian's walk; kNotVisible: culled
    constexpr uint32_t kNotVisible = ~0u;
    const int tpc = tiles_x * tiles_y;
    for (int t = threadIdx.x; t < tpc; t += blockDim.x) s_cnt[t] = 0;
    const int lg = threadIdx.x % dd3g::kBinThreads, sub = threadIdx.x / dd3g::kBinThreads;
    const uint32_t g = blockIdx.x * dd3g::kBinThreads + lg, cam = blockIdx.y;
    if (sub == 0) {
        dd3g::Projected p;
        const T* shg = sh + (size_t)g * K * 3;
        const auto sh_at = [&](int i) { return ld(shg, (size_t)i); };
        s_n[lg] = g < N && project_one<T, false>(cam * N + g, N, means, quats, scales, opacities, sh_at, K, viewmats,
                                                 Ks, W, H, tiles_x, tiles_y, near_plane, far_plane, eps2d, tight, 0,
                                                 pa, pb, pc, rects, nullptr, counts, nullptr, nullptr, p) > 0
                      ? 0u
                      : kNotVisible;
    }
    __syncthreads();  // also makes the projection in pa / pb / rects visible to the block
    if (s_n[lg] != kNotVisible) {
        const dd3g::Projected p = load_projected(pa, pb, rects, cam * N + g);
        uint32_t n = 0;  // tiles of this thread's rows
        dd3g::bin_walk_rows(p, tight, tiles_x, sub, kSplit, [&](uint32_t t) {
            atomicAdd(&s_cnt[t], 1u);
            ++n;
        });
        atomicAdd(&s_n[lg], n);
    }
    __syncthreads();
    if (sub == 0 && g < N) counts[cam * N + g] = s_n[lg] == kNotVisible ? 0u : s_n[lg];
    uint32_t* mine = tile_counts + (size_t)cam * tpc;
    uint32_t* offs = block_offsets + ((size_t)cam * gridDim.x + blockIdx.x) * tpc;
    for (int t = threadIdx.x; t < tpc; t += blockDim.x)
        if (s_cnt[t]) offs[t] = atomicAdd(mine + t, s_cnt[t]);
}

// Step 3 of the binned path, per block of kBinThreads Gaussians of one camera (the blocks of k_bin_count, with the
// same kSplit threads per Gaussian and rows per thread): the walk again; each entry goes to slot = tile start +
// the block's offset in the tile (k_bin_count) + a rank inside the block (shared atomic), and stores (depth bits,
// number) there. A slot at or past the tile's end (the capacity cut the range short) is dropped.
template <int kSplit>
__global__ void __launch_bounds__(dd3g::kBinThreads * kSplit)
k_bin_scatter(uint32_t N, int tiles_x, int tiles_per_cam, bool tight, const uint32_t* __restrict__ counts,
              const float4* __restrict__ pa, const float4* __restrict__ pb, const ushort4* __restrict__ rects,
              const int2* __restrict__ ranges, const uint32_t* __restrict__ block_offsets,
              uint32_t* __restrict__ dbits, uint32_t* __restrict__ ivals) {
    __shared__ uint32_t s_rank[dd3g::kBinTilesMax];
    const int tpc = tiles_per_cam;
    for (int t = threadIdx.x; t < tpc; t += blockDim.x) s_rank[t] = 0;
    __syncthreads();
    const int lg = threadIdx.x % dd3g::kBinThreads, sub = threadIdx.x / dd3g::kBinThreads;
    const uint32_t g = blockIdx.x * dd3g::kBinThreads + lg, cam = blockIdx.y, idx = cam * N + g;
    if (g >= N || counts[idx] == 0) return;
    const dd3g::Projected p = load_projected(pa, pb, rects, idx);
    const int2* cam_ranges = ranges + (size_t)cam * tpc;
    const uint32_t* offs = block_offsets + ((size_t)cam * gridDim.x + blockIdx.x) * tpc;
    const uint32_t depth_bits = __float_as_uint(p.depth);
    dd3g::bin_walk_rows(p, tight, tiles_x, sub, kSplit, [&](uint32_t t) {
        const int2 r = cam_ranges[t];
        const uint32_t slot = (uint32_t)r.x + offs[t] + atomicAdd(&s_rank[t], 1u);
        if (slot < (uint32_t)r.y) {
            dbits[slot] = depth_bits;
            ivals[slot] = idx;
        }
    });
}

// Sort s_key[0, n) ascending (bitonic over the next power of two, padded with kKeyNone). Block-wide.
__device__ __forceinline__ void block_sort_keys(uint64_t* s_key, int n, int tid) {
#if DD3G_RASTER_DIAG == 1
    return;
#endif
    const int P = dd3g::next_pow2(n);
    for (int i = n + tid; i < P; i += kBlock) s_key[i] = dd3g::kKeyNone;
    __syncthreads();
    for (int k = 2; k <= P; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int q = tid; q < (P >> 1); q += kBlock) dd3g::bitonic_step(s_key, q, k, j);
            __syncthreads();
        }
}

// Step 8 of the binned path: one 16x16 block per (tile, camera). The tile's entries are sorted by (depth bits,
// number) in shared memory, in one piece up to kRoundFirst keys, else in progressive rounds of the smallest keys not
// yet blended (256, 512, ... at a time, bin_sort.h) until every pixel has stopped, and blended front to back as
// k_raster does.
template <bool kCount>
__global__ void __launch_bounds__(kBlock, 1)  // ", 1" changes nvcc's code: kept as measured (notes run 10)
k_raster_binned(int W, int H, int tiles_x, int tiles_per_cam, const int2* __restrict__ ranges,
                const uint32_t* __restrict__ dbits, const uint32_t* __restrict__ ivals, const float4* __restrict__ pa,
                const float4* __restrict__ pb, const float4* __restrict__ pc, const float* __restrict__ background,
                float* __restrict__ out_rgb, float* __restrict__ out_alpha, float* __restrict__ out_depth,
                unsigned long long* __restrict__ evals) {
    __shared__ uint64_t s_key[dd3g::kTileSortMax];
    __shared__ float4 s_a[kBlock];
    __shared__ float4 s_b[kBlock];
    __shared__ float4 s_c[kBlock];
    __shared__ uint32_t s_hist[256];
    __shared__ uint32_t s_left, s_taken, s_rank, s_pick_count;
    __shared__ int s_pick;
    __shared__ uint64_t s_prefix;
    __shared__ unsigned long long s_kmin, s_kmax;  // the atomics' type (uint64_t is unsigned long here)
    using HistScan = cub::BlockScan<uint32_t, kTile, cub::BLOCK_SCAN_WARP_SCANS, kTile>;  // linear id = tid
    __shared__ typename HistScan::TempStorage s_scan;
    static_assert(kBlock == 256, "one histogram bin per thread");
    const TilePixel tp = tile_pixel(W, H, 0, tiles_x, tiles_per_cam, ranges);
    const int tid = tp.tid;
    const int2 range = tp.range;
    PixelAcc acc;
    acc.done = !tp.inside;
    const int n = range.y - range.x;
    auto key_at = [&](int j) { return dd3g::bin_key(dbits[range.x + j], ivals[range.x + j]); };

    uint64_t lo = 0;  // the keys below lo are blended
    bool all_done = false;
    DD3G_DIAG_BEGIN;
    for (int round = 0; n > 0 && !all_done; ++round) {
        DD3G_DIAG_ROUND();
        int m;                          // keys in this round
        uint64_t thr = dd3g::kKeyNone;  // the round's largest key (kKeyNone: the last round)
        if (lo == 0 && n <= dd3g::kRoundFirst) {  // a light tile: in one piece
            for (int j = tid; j < n; j += kBlock) s_key[j] = key_at(j);
            m = n;
        } else {  // progressive rounds (bin_sort.h)
            if (tid == 0) {  // the previous round's last reads of these came before its last barrier
                s_left = s_taken = 0;
                s_prefix = 0;
                s_rank = dd3g::kTileSortMax;
                s_kmin = dd3g::kKeyNone;
                s_kmax = 0;
            }
            __syncthreads();
            uint32_t mine = 0;
            uint64_t kmin = dd3g::kKeyNone, kmax = 0;
            for (int j = tid; j < n; j += kBlock) {
                const uint64_t key = key_at(j);
                if (key >= lo) {
                    ++mine;
                    kmin = min(kmin, key);
                    kmax = max(kmax, key);
                }
            }
            for (int o = 16; o > 0; o >>= 1) {
                mine += __shfl_down_sync(0xffffffffu, mine, o);
                kmin = min(kmin, __shfl_down_sync(0xffffffffu, kmin, o));
                kmax = max(kmax, __shfl_down_sync(0xffffffffu, kmax, o));
            }
            if ((tid & 31) == 0) {
                atomicAdd(&s_left, mine);
                atomicMin(&s_kmin, (unsigned long long)kmin);
                atomicMax(&s_kmax, (unsigned long long)kmax);
            }
            __syncthreads();
            const uint32_t left = s_left;
            if (left == 0) break;
            const uint32_t target = dd3g::bin_round_target(round, dd3g::kRoundFirst, dd3g::kTileSortMax);
            if (left > target) {  // split by one histogram of the 8 bits below the keys' highest differing bit
                const uint64_t k0 = s_kmin;
                const int shift = dd3g::bin_split_shift(k0, s_kmax);
                s_hist[tid] = 0;
                __syncthreads();
                for (int j = tid; j < n; j += kBlock) {
                    const uint64_t key = key_at(j);
                    if (key >= lo) atomicAdd(&s_hist[dd3g::bin_select_digit(key, shift)], 1u);
                }
                __syncthreads();
                const uint32_t h = s_hist[tid];
                uint32_t below;
                HistScan(s_scan).ExclusiveSum(h, below);
                if (dd3g::bin_split_is_pick(below, h, target)) {
                    s_pick = tid;
                    s_pick_count = below + h;
                }
                __syncthreads();
                if (s_pick_count <= (uint32_t)dd3g::kTileSortMax) {
                    thr = dd3g::bin_split_thr(k0, shift, s_pick);
                } else {  // a lumpy histogram: select the kTileSortMax-th smallest key >= lo exactly
                    for (int shift8 = 56; shift8 >= 0; shift8 -= 8) {
                        s_hist[tid] = 0;
                        __syncthreads();
                        const uint64_t prefix = s_prefix;
                        for (int j = tid; j < n; j += kBlock) {
                            const uint64_t key = key_at(j);
                            if (dd3g::bin_select_match(key, lo, prefix, shift8))
                                atomicAdd(&s_hist[dd3g::bin_select_digit(key, shift8)], 1u);
                        }
                        __syncthreads();
                        if (tid == 0) {
                            uint64_t pre = s_prefix;
                            uint32_t r = s_rank;
                            dd3g::bin_select_pick(s_hist, shift8, &pre, &r);
                            s_prefix = pre;
                            s_rank = r;
                        }
                        __syncthreads();
                    }
                    thr = s_prefix;
                }
            }
            for (int j = tid; j < n; j += kBlock) {
                const uint64_t key = key_at(j);
                if (key >= lo && key <= thr) {
                    const uint32_t slot = atomicAdd(&s_taken, 1u);
                    if (slot < (uint32_t)dd3g::kTileSortMax) s_key[slot] = key;
                }
            }
            __syncthreads();
            m = (int)min(s_taken, (uint32_t)dd3g::kTileSortMax);
        }
        block_sort_keys(s_key, m, tid);
        for (int start = 0; start < m; start += kBlock) {
            if (__syncthreads_count(acc.done) == kBlock) {  // also protects the shared batch being overwritten
                all_done = true;
                break;
            }
            const int i = start + tid;
            if (i < m)
                stage_gaussian<false>(tid, dd3g::bin_key_index(s_key[i]), pa, pb, pc, s_a, s_b, s_c, nullptr, 0.f,
                                      0.f);
            __syncthreads();
            blend_staged<kCount, false>(min(kBlock, m - start), s_a, s_b, s_c, nullptr, nullptr, tid, tp.fx, tp.fy,
                                        acc);
        }
        if (thr == dd3g::kKeyNone) break;
        lo = thr + 1;
        __syncthreads();  // s_key is refilled by the next round
    }
    DD3G_DIAG_END(n, acc);
    finish_pixel<kCount>(acc, tp, W, H, background, out_rgb, out_alpha, out_depth, evals);
}
#endif

unsigned blocks_for(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

template <typename T>
int forward_impl(const dd3g_raster_config* cfg, const Plan& P, const dd3g_raster_buffers* buf, char* ws,
                 cudaStream_t stream) {
    Header* hdr = (Header*)(ws + P.o_header);
    float4* pa = (float4*)(ws + P.o_pa);
    float4* pb = (float4*)(ws + P.o_pb);
    float4* pc = (float4*)(ws + P.o_pc);
    uint4* recs = (uint4*)(ws + P.o_rec);
    uint32_t* counts = (uint32_t*)(ws + P.o_count);
    long long* scan_out = (long long*)(ws + P.o_scan_out);
    int2* ranges = (int2*)(ws + P.o_ranges);
    void* cub_tmp = ws + P.o_cub;
    const bool tight = (cfg->flags & DD3G_RASTER_TIGHT_TILES) != 0;
    const bool exact = (cfg->flags & DD3G_RASTER_EXACT_COUNT) != 0;
    const bool count = (cfg->flags & DD3G_RASTER_COUNT_EVALS) != 0;
    const uint32_t sentinel = P.sentinel;  // the sorted path's; the binned path has no sentinel key
    const int groups_per_cam = P.groups_x * P.groups_y;
    const uint32_t CN = (uint32_t)P.CN;

#if DD3G_RASTER_FOLD_MEMSETS
    int2* const clear_ranges = ranges;  // k_pad clears them
    const unsigned clear_grid = blocks_for(P.tiles, 256);
#else
    int2* const clear_ranges = nullptr;
    const unsigned clear_grid = 1;
    DD3G_CUDA(cudaMemsetAsync(hdr, 0, sizeof(Header), stream));
    DD3G_CUDA(cudaMemsetAsync(ranges, 0, (size_t)P.tiles * sizeof(int2), stream));
#endif

    const uint32_t* ivals_sorted = nullptr;
#if DD3G_RASTER_BINNED_MAX > 0
    if (binned(P)) {
        const int tiles_per_cam = P.tiles_x * P.tiles_y;
        ushort4* rects = (ushort4*)(ws + P.o_rect);
        uint32_t* boff = (uint32_t*)(ws + P.o_boff);
        uint32_t* tcount = (uint32_t*)(ws + P.o_tcount);
        uint32_t* dbits = (uint32_t*)(ws + P.o_ikey0);
        uint32_t* ivals = (uint32_t*)(ws + P.o_ival0);
        DD3G_CUDA(cudaMemsetAsync(tcount, 0, (size_t)P.tiles * sizeof(uint32_t), stream));
        const dim3 bin_grid(blocks_for(P.N, dd3g::kBinThreads), P.C);
        const int split = dd3g::bin_split_for(P.CN);
        auto count_kernel = split == 4 ? k_bin_count<T, 4> : split == 2 ? k_bin_count<T, 2> : k_bin_count<T, 1>;
        count_kernel<<<bin_grid, dd3g::kBinThreads * split, 0, stream>>>(
            (uint32_t)P.N, (const T*)buf->means, (const T*)buf->quats, (const T*)buf->scales,
            (const T*)buf->opacities, (const T*)buf->sh, P.K, buf->viewmats, buf->Ks, P.W, P.H, P.tiles_x,
            P.tiles_y, cfg->near_plane, cfg->far_plane, cfg->eps2d, tight, pa, pb, pc, rects, counts, tcount, boff);
        DD3G_LAUNCHED("k_bin_count");
        k_bin_scan<<<1, kScanThreads, 0, stream>>>(P.tiles, P.capacity, tcount, ranges, hdr);
        DD3G_LAUNCHED("k_bin_scan");
        if (exact) {  // the list size is in the header; refuse a frame that does not fit, as the default path does
            unsigned long long M = 0;
            DD3G_CUDA(cudaMemcpyAsync(&M, &hdr->intersections, sizeof(M), cudaMemcpyDeviceToHost, stream));
            DD3G_CUDA(cudaStreamSynchronize(stream));
            if (M > (unsigned long long)P.capacity) return DD3G_ERROR_WORKSPACE_TOO_SMALL;
        }
        auto scatter_kernel = split == 4 ? k_bin_scatter<4> : split == 2 ? k_bin_scatter<2> : k_bin_scatter<1>;
        scatter_kernel<<<bin_grid, dd3g::kBinThreads * split, 0, stream>>>(
            (uint32_t)P.N, P.tiles_x, tiles_per_cam, tight, counts, pa, pb, rects, ranges, boff, dbits, ivals);
        DD3G_LAUNCHED("k_bin_scatter");
        dim3 grid(P.tiles_x, P.tiles_y, P.C), block(kTile, kTile);
        if (count)
            k_raster_binned<true><<<grid, block, 0, stream>>>(P.W, P.H, P.tiles_x, tiles_per_cam, ranges, dbits, ivals,
                                                              pa, pb, pc, buf->background, buf->rgb, buf->alpha,
                                                              buf->depth, &hdr->evaluations);
        else
            k_raster_binned<false><<<grid, block, 0, stream>>>(P.W, P.H, P.tiles_x, tiles_per_cam, ranges, dbits,
                                                               ivals, pa, pb, pc, buf->background, buf->rgb,
                                                               buf->alpha, buf->depth, &hdr->evaluations);
        DD3G_LAUNCHED("k_raster_binned");
        return DD3G_SUCCESS;
    }
#endif
    if (CN > 0) {
        const uint32_t cams = project_cams(P.N, P.C);
        const dim3 proj_grid(blocks_for(P.N, kProjThreads), (P.C + cams - 1) / cams);
        auto project = P.gs ? k_project<T, 1> : k_project<T, 0>;
        project<<<proj_grid, kProjThreads, 0, stream>>>(
            (uint32_t)P.N, (uint32_t)P.C, cams, (const T*)buf->means, (const T*)buf->quats, (const T*)buf->scales,
            (const T*)buf->opacities, (const T*)buf->sh, P.K, buf->viewmats, buf->Ks, P.W, P.H, P.tiles_x,
            P.tiles_y, cfg->near_plane, cfg->far_plane, cfg->eps2d, tight, pa, pb, pc, recs, counts,
            (uint32_t*)(ws + P.o_dkey0), (uint32_t*)(ws + P.o_dval0));
        DD3G_LAUNCHED("k_project");

        cub::DoubleBuffer<uint32_t> dk((uint32_t*)(ws + P.o_dkey0), (uint32_t*)(ws + P.o_dkey1));
        cub::DoubleBuffer<uint32_t> dv((uint32_t*)(ws + P.o_dval0), (uint32_t*)(ws + P.o_dval1));
        size_t tmp = P.cub_bytes;
        DD3G_CUDA(cub::DeviceRadixSort::SortPairs(cub_tmp, tmp, dk, dv, (int)CN, 0, 32, stream));
        const uint32_t* sorted_idx = dv.Current();

        tmp = P.cub_bytes;
        DD3G_CUDA(cub::DeviceScan::InclusiveSum(cub_tmp, tmp, CountIter(sorted_idx, CountOf{counts}), scan_out,
                                                (int)CN, stream));

        // where the emitted list goes: the buffers that the tile sort starts from
        uint32_t* iv0 = (uint32_t*)(ws + P.o_ival0);
        [[maybe_unused]] const bool flat =
            DD3G_RASTER_EMIT == 3 || (DD3G_RASTER_EMIT == 2 && CN <= DD3G_RASTER_FLAT_MAX);
        [[maybe_unused]] const bool staged =
            DD3G_RASTER_EMIT == 1 ||
            (DD3G_RASTER_EMIT == 2 && !flat && P.capacity <= (int64_t)DD3G_RASTER_STAGED_MAX_RUN * CN);
        // steps 4-7 with the list's keys as Key (Plan::key16)
        auto list_steps = [&](auto key_type) -> int {
            using Key = decltype(key_type);
            Key* ik0 = (Key*)(ws + P.o_ikey0);
#if DD3G_RASTER_EMIT == 2 || DD3G_RASTER_EMIT == 3
            if (flat) {
                const unsigned flat_grid = std::max(1u, std::min(blocks_for(P.capacity, 256), 8192u));
                auto flat_kernel = P.gs ? k_emit_flat<Key, 1> : k_emit_flat<Key, 0>;
                flat_kernel<<<flat_grid, 256, 0, stream>>>(CN, (uint32_t)P.N, P.groups_x, groups_per_cam, tight,
                                                               P.capacity, sorted_idx, scan_out, pa, pb, recs,
                                                               sentinel, ik0, iv0);
                DD3G_LAUNCHED("k_emit_flat");
            }
#endif
#if DD3G_RASTER_EMIT == 0 || DD3G_RASTER_EMIT == 2
            if (!flat && !staged) {
                auto emit_kernel = P.gs ? k_emit<Key, 1> : k_emit<Key, 0>;
                emit_kernel<<<blocks_for(CN, 256), 256, 0, stream>>>(CN, (uint32_t)P.N, P.groups_x, groups_per_cam,
                                                                     tight, P.capacity, sorted_idx, scan_out, pa, pb,
                                                                     recs, sentinel, ik0, iv0);
                DD3G_LAUNCHED("k_emit");
            }
#endif
#if DD3G_RASTER_EMIT == 1 || DD3G_RASTER_EMIT == 2
            if (staged) {
                auto staged_kernel = P.gs ? k_emit_staged<Key, 1> : k_emit_staged<Key, 0>;
                staged_kernel<<<blocks_for(CN, dd3g::kEmitThreads), dd3g::kEmitThreads, 0, stream>>>(
                    CN, (uint32_t)P.N, P.groups_x, groups_per_cam, tight, P.capacity, sorted_idx, scan_out, pa,
                    pb, recs, sentinel, ik0, iv0);
                DD3G_LAUNCHED("k_emit_staged");
            }
#endif

            // capacity mode sorts the whole fixed-size list (graph-capturable); exact mode reads the count back
            const int64_t pad_end = exact ? 0 : P.capacity;
            unsigned pad_grid = std::max(clear_grid, std::min(blocks_for(pad_end, 256), 4096u));
            k_pad<Key><<<pad_grid, 256, 0, stream>>>(CN, scan_out, P.capacity, pad_end, sentinel, ik0, hdr,
                                                     clear_ranges, P.tiles);
            DD3G_LAUNCHED("k_pad");
            int64_t num_sort = P.capacity;
            if (exact) {
                long long M = 0;
                DD3G_CUDA(cudaMemcpyAsync(&M, scan_out + (CN - 1), sizeof(M), cudaMemcpyDeviceToHost, stream));
                DD3G_CUDA(cudaStreamSynchronize(stream));
                if (M > P.capacity) return DD3G_ERROR_WORKSPACE_TOO_SMALL;  // the header holds the needed count
                num_sort = M;
            }

            if (num_sort > 0) {
                cub::DoubleBuffer<Key> ik(ik0, (Key*)(ws + P.o_ikey1));
                cub::DoubleBuffer<uint32_t> iv(iv0, (uint32_t*)(ws + P.o_ival1));
                tmp = P.cub_bytes;
                DD3G_CUDA(cub::DeviceRadixSort::SortPairs(cub_tmp, tmp, ik, iv, (int)num_sort, 0, P.tile_bits,
                                                          stream));
                k_ranges<Key><<<blocks_for(P.groups * 32, kRangeThreads), kRangeThreads, 0, stream>>>(
                    P.groups, num_sort, ik.Current(), scan_out, CN, ranges);
                DD3G_LAUNCHED("k_ranges");
                ivals_sorted = iv.Current();
            }
            return DD3G_SUCCESS;
        };
        const int st = P.key16 ? list_steps(uint16_t{}) : list_steps(uint32_t{});
        if (st != DD3G_SUCCESS) return st;
    } else {
        k_pad<uint32_t><<<clear_grid, 256, 0, stream>>>(0, nullptr, P.capacity, 0, sentinel, nullptr, hdr,
                                                        clear_ranges, P.tiles);  // header of an empty frame
        DD3G_LAUNCHED("k_pad");
    }

    dim3 grid(P.tiles_x, P.tiles_y, P.C), block(kTile, kTile);
    constexpr int kGroups = DD3G_RASTER_WARP_CULL ? 1 : 0;  // make_plan gives gs = 1 only with warp culling
    auto raster = count ? (P.gs ? k_raster<true, kGroups> : k_raster<true, 0>)
                        : (P.gs ? k_raster<false, kGroups> : k_raster<false, 0>);
    raster<<<grid, block, 0, stream>>>(P.W, P.H, P.groups_x, groups_per_cam, ranges, ivals_sorted, pa, pb, pc,
                                       buf->background, buf->rgb, buf->alpha, buf->depth, &hdr->evaluations);
    DD3G_LAUNCHED("k_raster");
    return DD3G_SUCCESS;
}

bool aligned(const void* p, size_t a) { return ((uintptr_t)p % a) == 0; }

}  // namespace

extern "C" {

int dd3g_raster_version(void) { return DD3G_RASTER_VERSION; }

#if DD3G_RASTER_DIAG == 3
// Timing diagnostics (DIAG=3 builds only): copy the per-block records of the last raster kernel to the host
// (clear = 1 zeroes them instead). Returns the record size in bytes, or -1 on a CUDA error.
DD3G_RASTER_EXPORT int dd3g_raster_diag_read(void* host, size_t bytes, int clear) {
    const size_t n = bytes < sizeof(g_diag) ? bytes : sizeof(g_diag);
    void* dev = nullptr;
    if (cudaGetSymbolAddress(&dev, g_diag) != cudaSuccess) return -1;
    if (clear) return cudaMemset(dev, 0, sizeof(g_diag)) == cudaSuccess ? (int)sizeof(DiagRecord) : -1;
    return cudaMemcpy(host, dev, n, cudaMemcpyDeviceToHost) == cudaSuccess ? (int)sizeof(DiagRecord) : -1;
}
#endif

const char* dd3g_raster_status_string(int status) {
    switch (status) {
        case DD3G_SUCCESS: return "DD3G_SUCCESS";
        case DD3G_ERROR_INVALID_VALUE: return "DD3G_ERROR_INVALID_VALUE";
        case DD3G_ERROR_WORKSPACE_TOO_SMALL: return "DD3G_ERROR_WORKSPACE_TOO_SMALL";
        case DD3G_ERROR_MISALIGNED: return "DD3G_ERROR_MISALIGNED";
        case DD3G_ERROR_CUDA: return "DD3G_ERROR_CUDA";
        case DD3G_ERROR_STRUCT_SIZE: return "DD3G_ERROR_STRUCT_SIZE";
        default: return "DD3G_ERROR_UNKNOWN";
    }
}

const char* dd3g_raster_last_error(void) { return g_last_error; }

int dd3g_raster_workspace_size(const dd3g_raster_config* config, size_t* bytes) {
    g_last_error[0] = '\0';
    if (!bytes) return DD3G_ERROR_INVALID_VALUE;
    Plan p;
    int st = make_plan(config, &p);
    if (st != DD3G_SUCCESS) return st;
    *bytes = p.total;
    return DD3G_SUCCESS;
}

int dd3g_raster_forward(const dd3g_raster_config* config, const dd3g_raster_buffers* buffers, void* workspace,
                        size_t workspace_bytes, void* stream) {
    g_last_error[0] = '\0';
    int st = validate(config);
    if (st != DD3G_SUCCESS) return st;
    if (!buffers) return DD3G_ERROR_INVALID_VALUE;
    if (buffers->struct_size != sizeof(dd3g_raster_buffers)) return DD3G_ERROR_STRUCT_SIZE;
    if (!workspace || !buffers->rgb || !buffers->viewmats || !buffers->Ks) return DD3G_ERROR_INVALID_VALUE;
    if (config->num_gaussians > 0 &&
        (!buffers->means || !buffers->quats || !buffers->scales || !buffers->opacities || !buffers->sh))
        return DD3G_ERROR_INVALID_VALUE;
    if (!aligned(workspace, kAlign)) return DD3G_ERROR_MISALIGNED;
    const size_t el = config->dtype == DD3G_FLOAT16 ? 2 : 4;
    const void* ins[] = {buffers->means, buffers->quats, buffers->scales, buffers->opacities, buffers->sh};
    for (const void* p : ins)
        if (!aligned(p, el)) return DD3G_ERROR_MISALIGNED;
    const void* fl[] = {buffers->viewmats, buffers->Ks, buffers->background, buffers->rgb, buffers->alpha,
                        buffers->depth};
    for (const void* p : fl)
        if (!aligned(p, 4)) return DD3G_ERROR_MISALIGNED;
    Plan p;
    st = make_plan(config, &p);
    if (st != DD3G_SUCCESS) return st;
    if (workspace_bytes < p.total) return DD3G_ERROR_WORKSPACE_TOO_SMALL;
    cudaStream_t s = (cudaStream_t)stream;
    if (config->dtype == DD3G_FLOAT16) return forward_impl<__half>(config, p, buffers, (char*)workspace, s);
    return forward_impl<float>(config, p, buffers, (char*)workspace, s);
}

int dd3g_raster_read_stats(const void* workspace, void* stream, dd3g_raster_stats* stats) {
    g_last_error[0] = '\0';
    if (!workspace || !stats) return DD3G_ERROR_INVALID_VALUE;
    if (stats->struct_size != sizeof(dd3g_raster_stats)) return DD3G_ERROR_STRUCT_SIZE;
    Header h;
    cudaStream_t s = (cudaStream_t)stream;
    DD3G_CUDA(cudaMemcpyAsync(&h, workspace, sizeof(h), cudaMemcpyDeviceToHost, s));
    DD3G_CUDA(cudaStreamSynchronize(s));
    stats->intersections = (int64_t)h.intersections;
    stats->capacity = (int64_t)h.capacity;
    stats->evaluations = (int64_t)h.evaluations;
    return DD3G_SUCCESS;
}

}  // extern "C"
