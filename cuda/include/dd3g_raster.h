/* dd3g_raster.h: C API of the dd3g CUDA Gaussian rasteriser (forward only, inference).
 *
 * Semantics follow gsplat 1.5.3 `rasterization(..., rasterize_mode="classic", render_mode="RGB+ED")`:
 * EWA projection with a +eps2d (0.3 px^2) low-pass, opacity-aware 3-sigma-ish extent
 * (min(3.33, sqrt(2 ln(255 o))) standard deviations per axis), per-camera depth sort, 16x16 tiles,
 * alpha = min(0.999, o * exp(-0.5 maha)), Gaussians with alpha < 1/255 skipped, a pixel stops before
 * its transmittance would fall to <= 1e-4, colour = max(0, 0.5 + SH(dir) . sh), expected depth
 * sum(w z) / max(alpha, 1e-10).
 *
 * Conventions (docs/DESIGN.md): OpenCV camera frame (x right, y down, z forward); viewmats are row-major
 * world-to-camera 4x4; Ks row-major 3x3 pinhole intrinsics in pixels; the centre of pixel (row i, col j)
 * is (j + 0.5, i + 0.5); quaternions (w, x, y, z) (normalised here); scales are linear standard deviations;
 * SH in the 3DGS basis, K = (degree + 1)^2 coefficients per colour channel, laid out [N, K, 3].
 *
 * Memory: every pointer is a CUDA device pointer. The forward call allocates nothing: all scratch memory is
 * the caller's `workspace` (256-byte aligned), whose size dd3g_raster_workspace_size returns. The call only
 * enqueues work on `stream` (no host synchronisation) unless DD3G_RASTER_EXACT_COUNT is set, so it can be
 * captured into a CUDA graph or run inside a TensorRT plugin.
 *
 * Intersections: the intersection list has a fixed capacity `max_intersections` (entries: one per Gaussian and
 * group of 2 x 2 tiles it touches on the default path, one per Gaussian and tile on the small-scene path; the
 * library picks the path, the caller only sizes the list). The number a frame needed is written into the
 * workspace; read it with dd3g_raster_read_stats. A frame that needed more than
 * the capacity is rendered without the excess (wrong image): check the stats, or use EXACT_COUNT.
 *
 * Errors: every function returns a dd3g_status; nothing throws across this API.
 */
#ifndef DD3G_RASTER_H
#define DD3G_RASTER_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define DD3G_RASTER_EXPORT __declspec(dllexport)
#else
#define DD3G_RASTER_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this API: major * 10000 + minor * 100 + patch. Major changes break the ABI. */
#define DD3G_RASTER_VERSION 10000

typedef enum dd3g_status {
    DD3G_SUCCESS = 0,
    DD3G_ERROR_INVALID_VALUE = 1,        /* a null pointer, a bad size, an unsupported option */
    DD3G_ERROR_WORKSPACE_TOO_SMALL = 2,  /* workspace smaller than needed, or (EXACT_COUNT) capacity exceeded */
    DD3G_ERROR_MISALIGNED = 3,           /* workspace not 256-byte aligned, or an input not aligned to its type */
    DD3G_ERROR_CUDA = 4,                 /* a CUDA call or kernel launch failed */
    DD3G_ERROR_STRUCT_SIZE = 5           /* struct_size does not match this library's structs */
} dd3g_status;

typedef enum dd3g_dtype {
    DD3G_FLOAT32 = 0,
    DD3G_FLOAT16 = 1
} dd3g_dtype;

/* flags */
#define DD3G_RASTER_TIGHT_TILES 1u  /* bin a Gaussian only into tiles its alpha >= 1/255 region touches
                                       (same image, fewer intersections); on by default in the Python binding */
#define DD3G_RASTER_EXACT_COUNT 2u  /* read the intersection count back to the host (one stream sync) and sort
                                       exactly that many; returns WORKSPACE_TOO_SMALL if it exceeds capacity.
                                       Not usable inside CUDA graph capture. */
#define DD3G_RASTER_COUNT_EVALS 4u  /* count per-pixel Gaussian evaluations into the stats (benchmarks) */

/* Sizes and options of one forward call. 56 bytes, no padding. */
typedef struct dd3g_raster_config {
    uint32_t struct_size;        /* sizeof(dd3g_raster_config) */
    int32_t dtype;               /* dd3g_dtype of means, quats, scales, opacities, sh */
    int64_t num_gaussians;       /* N >= 0 */
    int32_t num_cameras;         /* C >= 1 */
    int32_t width;               /* pixels, >= 1 */
    int32_t height;              /* pixels, >= 1 */
    int32_t sh_coeffs;           /* K: 1, 4, 9 or 16 */
    int64_t max_intersections;   /* capacity of the intersection list (entries); 0 = 8 * C * N + 65536 */
    float near_plane;            /* Gaussians with camera z outside [near, far] are culled (gsplat: 0.01) */
    float far_plane;             /* (gsplat: 1e10) */
    float eps2d;                 /* low-pass added to the 2D covariance diagonal, px^2 (gsplat: 0.3) */
    uint32_t flags;              /* DD3G_RASTER_* */
} dd3g_raster_config;

/* Device pointers of one forward call. */
typedef struct dd3g_raster_buffers {
    uint32_t struct_size;        /* sizeof(dd3g_raster_buffers) */
    uint32_t reserved;           /* 0 */
    const void* means;           /* [N, 3] dtype, world units */
    const void* quats;           /* [N, 4] dtype, (w, x, y, z) */
    const void* scales;          /* [N, 3] dtype, linear standard deviations */
    const void* opacities;       /* [N] dtype, 0..1 */
    const void* sh;              /* [N, K, 3] dtype */
    const float* viewmats;       /* [C, 4, 4] world-to-camera, row-major */
    const float* Ks;             /* [C, 3, 3] */
    const float* background;     /* [C, 3] colour behind the Gaussians, or NULL for black */
    float* rgb;                  /* [C, H, W, 3] out */
    float* alpha;                /* [C, H, W] out, or NULL */
    float* depth;                /* [C, H, W] out (expected z-depth, 0 where alpha = 0), or NULL */
} dd3g_raster_buffers;

/* What the last forward call into a workspace counted (read back with dd3g_raster_read_stats). */
typedef struct dd3g_raster_stats {
    uint32_t struct_size;        /* sizeof(dd3g_raster_stats) */
    uint32_t reserved;
    int64_t intersections;       /* list entries the frame needed (see "Intersections" above) */
    int64_t capacity;            /* max_intersections the workspace was laid out for */
    int64_t evaluations;         /* per-pixel Gaussian evaluations (only with DD3G_RASTER_COUNT_EVALS) */
} dd3g_raster_stats;

DD3G_RASTER_EXPORT int dd3g_raster_version(void);

/* A static, human-readable name of a dd3g_status ("DD3G_SUCCESS", ...). */
DD3G_RASTER_EXPORT const char* dd3g_raster_status_string(int status);

/* The message of the last CUDA error this thread saw inside the library ("" if none). */
DD3G_RASTER_EXPORT const char* dd3g_raster_last_error(void);

/* Bytes of workspace that dd3g_raster_forward needs for `config` (a multiple of 256). Needs a CUDA device
 * (CUB sizes its sort buffers for the current device). */
DD3G_RASTER_EXPORT int dd3g_raster_workspace_size(const dd3g_raster_config* config, size_t* bytes);

/* Render C images of N Gaussians. `stream` is a cudaStream_t (NULL = legacy default stream). */
DD3G_RASTER_EXPORT int dd3g_raster_forward(const dd3g_raster_config* config, const dd3g_raster_buffers* buffers,
                                           void* workspace, size_t workspace_bytes, void* stream);

/* Copy the counters of the last forward call in `workspace` to the host; synchronises `stream`. */
DD3G_RASTER_EXPORT int dd3g_raster_read_stats(const void* workspace, void* stream, dd3g_raster_stats* stats);

#ifdef __cplusplus
}
#endif

#endif /* DD3G_RASTER_H */
