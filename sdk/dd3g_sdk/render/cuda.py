"""ctypes binding of the dd3g CUDA rasteriser (`libdd3g_raster`, built from cuda/ by the top-level CMakeLists.txt).

Importing this module needs neither torch nor a GPU: the library is loaded on first use. Where it is found, in
this order:
  1. the path in the environment variable DD3G_RASTER_LIB (a file; an error if it does not exist),
  2. next to this file: sdk/dd3g_sdk/render/libdd3g_raster.so (`cmake --install build` copies it there),
  3. the repository's build folder: build/libdd3g_raster.so.

Two levels of API:
- `RasterLibrary`: the C API one to one. Every array is a raw device pointer (an int), a torch tensor, or any
  object with `__cuda_array_interface__` (CuPy, Numba, cuda-python buffers); you bring the workspace and the
  stream. Nothing is allocated and nothing synchronises (unless `exact_count`).
- `CudaRasterizer` / `rasterize`: torch CUDA tensors in, torch tensors out, with the same signature and output
  shapes as `dd3g_sdk.render.reference.rasterize`. It keeps a workspace between calls and grows the
  intersection capacity when a frame needs more (that check reads two counters back: one stream sync per call).

Semantics are gsplat 1.5.3's classic forward (see cuda/include/dd3g_raster.h); images are float32 in 0..1
(plus background), [C, H, W, 3]; alpha and expected depth [C, H, W, 1].
"""
from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

LIB_ENV = "DD3G_RASTER_LIB"
_LIB_NAMES = ("libdd3g_raster.so", "dd3g_raster.dll", "libdd3g_raster.dylib")
API_VERSION_MAJOR = 1

FLAG_TIGHT_TILES = 1
FLAG_EXACT_COUNT = 2
FLAG_COUNT_EVALS = 4

DTYPE_FLOAT32 = 0
DTYPE_FLOAT16 = 1
_DTYPES = {"float32": DTYPE_FLOAT32, "float16": DTYPE_FLOAT16}

SUCCESS = 0
ERROR_WORKSPACE_TOO_SMALL = 2
TILE_SIZE = 16


class RasterError(RuntimeError):
    """A dd3g_raster C call failed. `status` is the dd3g_status code."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


class _Config(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("dtype", ctypes.c_int32),
        ("num_gaussians", ctypes.c_int64),
        ("num_cameras", ctypes.c_int32),
        ("width", ctypes.c_int32),
        ("height", ctypes.c_int32),
        ("sh_coeffs", ctypes.c_int32),
        ("max_intersections", ctypes.c_int64),
        ("near_plane", ctypes.c_float),
        ("far_plane", ctypes.c_float),
        ("eps2d", ctypes.c_float),
        ("flags", ctypes.c_uint32),
    ]


class _Buffers(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("means", ctypes.c_void_p),
        ("quats", ctypes.c_void_p),
        ("scales", ctypes.c_void_p),
        ("opacities", ctypes.c_void_p),
        ("sh", ctypes.c_void_p),
        ("viewmats", ctypes.c_void_p),
        ("Ks", ctypes.c_void_p),
        ("background", ctypes.c_void_p),
        ("rgb", ctypes.c_void_p),
        ("alpha", ctypes.c_void_p),
        ("depth", ctypes.c_void_p),
    ]


class _Stats(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("intersections", ctypes.c_int64),
        ("capacity", ctypes.c_int64),
        ("evaluations", ctypes.c_int64),
    ]


@dataclass(frozen=True)
class RasterOptions:
    """Options of the CUDA rasteriser. Defaults are gsplat's (`near_plane`, `far_plane`, `eps2d`)."""
    near_plane: float = 0.01       # camera-z range kept, world units
    far_plane: float = 1e10
    eps2d: float = 0.3             # low-pass added to the 2D covariance, px^2
    tight_tiles: bool = True       # bin only into tiles the alpha >= 1/255 ellipse touches (same image)
    exact_count: bool = False      # sync once per frame and sort exactly the needed intersections
    count_evaluations: bool = False  # count per-pixel Gaussian evaluations (benchmarks)

    @property
    def flags(self) -> int:
        return ((FLAG_TIGHT_TILES if self.tight_tiles else 0) | (FLAG_EXACT_COUNT if self.exact_count else 0)
                | (FLAG_COUNT_EVALS if self.count_evaluations else 0))


@dataclass(frozen=True)
class RasterStats:
    intersections: int  # intersection-list entries the last frame needed (per 2x2 tile group, or per tile)
    capacity: int       # what the workspace holds
    evaluations: int    # per-pixel evaluations (0 unless count_evaluations)


def _package_dir() -> Path:
    return Path(__file__).resolve().parent


def library_candidates() -> list[Path]:
    """Where `find_library` looks, in order (the env variable is handled separately)."""
    here = _package_dir()
    repo_build = here.parents[2] / "build"
    return [d / n for d in (here, repo_build) for n in _LIB_NAMES]


def find_library() -> Path:
    """The path of libdd3g_raster (see the module docstring for the search order)."""
    env = os.environ.get(LIB_ENV)
    if env:
        p = Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"{LIB_ENV}={env}: no such file")
        return p
    for p in library_candidates():
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"libdd3g_raster not found: set {LIB_ENV} or build it (cmake -S . -B build && cmake --build build && "
        f"cmake --install build --prefix build/install); looked in {', '.join(str(p.parent) for p in library_candidates()[::len(_LIB_NAMES)])}")


def device_pointer(obj: Any) -> int:
    """A device address from an int, None (0), a torch tensor or a `__cuda_array_interface__` object."""
    if obj is None:
        return 0
    if isinstance(obj, int):
        return obj
    if hasattr(obj, "data_ptr") and callable(obj.data_ptr):
        return int(obj.data_ptr())
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        return int(cai["data"][0])
    raise TypeError(f"cannot take a device pointer of {type(obj).__name__}")


class RasterLibrary:
    """The C API of libdd3g_raster, one to one (see cuda/include/dd3g_raster.h)."""

    def __init__(self, path: Optional[str | os.PathLike] = None):
        self.path = Path(path) if path is not None else find_library()
        lib = ctypes.CDLL(str(self.path))
        lib.dd3g_raster_version.restype = ctypes.c_int
        lib.dd3g_raster_version.argtypes = []
        lib.dd3g_raster_status_string.restype = ctypes.c_char_p
        lib.dd3g_raster_status_string.argtypes = [ctypes.c_int]
        lib.dd3g_raster_last_error.restype = ctypes.c_char_p
        lib.dd3g_raster_last_error.argtypes = []
        lib.dd3g_raster_workspace_size.restype = ctypes.c_int
        lib.dd3g_raster_workspace_size.argtypes = [ctypes.POINTER(_Config), ctypes.POINTER(ctypes.c_size_t)]
        lib.dd3g_raster_forward.restype = ctypes.c_int
        lib.dd3g_raster_forward.argtypes = [ctypes.POINTER(_Config), ctypes.POINTER(_Buffers), ctypes.c_void_p,
                                            ctypes.c_size_t, ctypes.c_void_p]
        lib.dd3g_raster_read_stats.restype = ctypes.c_int
        lib.dd3g_raster_read_stats.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(_Stats)]
        self._lib = lib
        v = self.version_int
        if v // 10000 != API_VERSION_MAJOR:
            raise RasterError(-1, f"{self.path}: API version {v} is not {API_VERSION_MAJOR}.x")

    @property
    def version_int(self) -> int:
        return int(self._lib.dd3g_raster_version())

    @property
    def version(self) -> str:
        v = self.version_int
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}"

    def status_string(self, status: int) -> str:
        return self._lib.dd3g_raster_status_string(int(status)).decode()

    def _check(self, status: int, what: str) -> None:
        if status != SUCCESS:
            detail = self._lib.dd3g_raster_last_error().decode()
            raise RasterError(status, f"{what}: {self.status_string(status)}" + (f" ({detail})" if detail else ""))

    @staticmethod
    def make_config(num_gaussians: int, num_cameras: int, width: int, height: int, sh_coeffs: int,
                    dtype: str = "float32", max_intersections: int = 0,
                    options: RasterOptions = RasterOptions()) -> _Config:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
        return _Config(ctypes.sizeof(_Config), _DTYPES[dtype], int(num_gaussians), int(num_cameras), int(width),
                       int(height), int(sh_coeffs), int(max_intersections), float(options.near_plane),
                       min(float(options.far_plane), 3.0e38), float(options.eps2d), options.flags)

    def workspace_size(self, config: _Config) -> int:
        n = ctypes.c_size_t(0)
        self._check(self._lib.dd3g_raster_workspace_size(ctypes.byref(config), ctypes.byref(n)),
                    "dd3g_raster_workspace_size")
        return int(n.value)

    def forward(self, config: _Config, *, means: Any, quats: Any, scales: Any, opacities: Any, sh: Any,
                viewmats: Any, Ks: Any, rgb: Any, workspace: Any, workspace_bytes: int, background: Any = None,
                alpha: Any = None, depth: Any = None, stream: Any = 0) -> int:
        """Enqueue one forward call. Returns the status (0, or 2 when an exact-count frame overflowed)."""
        b = _Buffers(ctypes.sizeof(_Buffers), 0, *(device_pointer(x) for x in (
            means, quats, scales, opacities, sh, viewmats, Ks, background, rgb, alpha, depth)))
        st = self._lib.dd3g_raster_forward(ctypes.byref(config), ctypes.byref(b), device_pointer(workspace),
                                           int(workspace_bytes), _stream_handle(stream))
        if st == ERROR_WORKSPACE_TOO_SMALL and config.flags & FLAG_EXACT_COUNT:
            return st
        self._check(st, "dd3g_raster_forward")
        return st

    def read_stats(self, workspace: Any, stream: Any = 0) -> RasterStats:
        s = _Stats(ctypes.sizeof(_Stats), 0, 0, 0, 0)
        self._check(self._lib.dd3g_raster_read_stats(device_pointer(workspace), _stream_handle(stream),
                                                     ctypes.byref(s)), "dd3g_raster_read_stats")
        return RasterStats(int(s.intersections), int(s.capacity), int(s.evaluations))


def _stream_handle(stream: Any) -> int:
    if stream is None:
        return 0
    if isinstance(stream, int):
        return stream
    for attr in ("cuda_stream", "handle", "ptr"):  # torch.cuda.Stream, cuda.core Stream, CuPy Stream
        v = getattr(stream, attr, None)
        if v is not None:
            return int(v)
    return int(stream)


_default_library: Optional[RasterLibrary] = None


def load_library() -> RasterLibrary:
    """The process-wide RasterLibrary (loaded on first call)."""
    global _default_library
    if _default_library is None:
        _default_library = RasterLibrary()
    return _default_library


def is_available() -> bool:
    """True if the library can be found and loaded (does not need torch or a GPU)."""
    try:
        load_library()
        return True
    except (OSError, RasterError):
        return False


class CudaRasterizer:
    """torch front end: keeps a workspace between calls and grows its intersection capacity on demand."""

    def __init__(self, options: RasterOptions = RasterOptions(), library: Optional[RasterLibrary] = None,
                 headroom: float = 1.25):
        self.options = options
        self.library = library or load_library()
        self.headroom = float(headroom)
        self._capacity = 0
        self._workspace = None
        self._workspace_key: tuple = ()
        self.last_stats: Optional[RasterStats] = None

    def _ensure_workspace(self, torch, device, key: tuple, config: _Config) -> None:
        if self._workspace is not None and self._workspace_key == key:
            return
        nbytes = self.library.workspace_size(config)
        self._workspace = torch.empty(nbytes, dtype=torch.uint8, device=device)
        self._workspace_key = key

    def __call__(self, means, quats, scales, opacities, sh, viewmats, Ks, width: int, height: int,
                 background=None):
        """means [N,3], quats [N,4] wxyz, scales [N,3], opacities [N], sh [N,K,3] (all float32 or all float16),
        viewmats [C,4,4], Ks [C,3,3], background None / [3] / [C,3] -> (rgb [C,H,W,3], alpha [C,H,W,1],
        depth [C,H,W,1]) float32 torch tensors on the inputs' device."""
        import torch

        means, quats, scales, opacities, sh, viewmats, Ks, bg, dtype = _prepare(
            torch, means, quats, scales, opacities, sh, viewmats, Ks, background)
        N, C, K = means.shape[0], viewmats.shape[0], sh.shape[1]
        dev = means.device
        rgb = torch.empty((C, height, width, 3), dtype=torch.float32, device=dev)
        alpha = torch.empty((C, height, width, 1), dtype=torch.float32, device=dev)
        depth = torch.empty((C, height, width, 1), dtype=torch.float32, device=dev)
        stream = torch.cuda.current_stream(dev)
        if self._capacity == 0:
            self._capacity = max(65536, 4 * N * C)
        for _ in range(3):
            cfg = self.library.make_config(N, C, width, height, K, dtype, self._capacity, self.options)
            self._ensure_workspace(torch, dev, (N, C, width, height, K, dtype, self._capacity, self.options), cfg)
            st = self.library.forward(cfg, means=means, quats=quats, scales=scales, opacities=opacities, sh=sh,
                                      viewmats=viewmats, Ks=Ks, background=bg, rgb=rgb, alpha=alpha, depth=depth,
                                      workspace=self._workspace, workspace_bytes=self._workspace.numel(),
                                      stream=stream)
            stats = self.library.read_stats(self._workspace, stream)
            self.last_stats = stats
            if st == SUCCESS and stats.intersections <= self._capacity:
                return rgb, alpha, depth
            self._capacity = min(int(math.ceil(stats.intersections * self.headroom)) + 4096, 2**31 - 1)
        raise RasterError(ERROR_WORKSPACE_TOO_SMALL, f"intersection capacity still too small after growing to "
                                                     f"{self._capacity}")


def _prepare(torch, means, quats, scales, opacities, sh, viewmats, Ks, background):
    g = {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "sh": sh}
    for name, t in {**g, "viewmats": viewmats, "Ks": Ks}.items():
        if not isinstance(t, torch.Tensor) or not t.is_cuda:
            raise ValueError(f"{name} must be a CUDA torch tensor")
    dt = means.dtype
    if dt not in (torch.float32, torch.float16):
        raise ValueError(f"means must be float32 or float16, got {dt}")
    for name, t in g.items():
        if t.dtype != dt:
            raise ValueError(f"{name} must have the dtype of means ({dt}), got {t.dtype}")
    N = means.shape[0]
    shapes = {"means": (N, 3), "quats": (N, 4), "scales": (N, 3), "opacities": (N,)}
    for name, shp in shapes.items():
        if tuple(g[name].shape) != shp:
            raise ValueError(f"{name} must have shape {list(shp)}, got {list(g[name].shape)}")
    if sh.dim() != 3 or sh.shape[0] != N or sh.shape[2] != 3 or sh.shape[1] not in (1, 4, 9, 16):
        raise ValueError(f"sh must have shape [N, K, 3] with K in 1, 4, 9, 16, got {list(sh.shape)}")
    C = viewmats.shape[0] if viewmats.dim() == 3 else -1
    if viewmats.dim() != 3 or tuple(viewmats.shape[1:]) != (4, 4) or tuple(Ks.shape) != (C, 3, 3):
        raise ValueError(f"viewmats must be [C, 4, 4] and Ks [C, 3, 3], got {list(viewmats.shape)}, {list(Ks.shape)}")
    bg = None
    if background is not None:
        bg = torch.as_tensor(background, dtype=torch.float32, device=means.device)
        bg = bg.expand(C, 3) if bg.dim() == 1 else bg
        if tuple(bg.shape) != (C, 3):
            raise ValueError(f"background must be [3] or [C, 3], got {list(bg.shape)}")
        bg = bg.contiguous()
    c = lambda t: t.contiguous()  # noqa: E731
    return (c(means), c(quats), c(scales), c(opacities), c(sh), c(viewmats.float()), c(Ks.float()), bg,
            "float16" if dt == torch.float16 else "float32")


_default_rasterizer: Optional[CudaRasterizer] = None


def rasterize(means, quats, scales, opacities, sh, viewmats, Ks, width: int, height: int, background=None,
              near: float = 0.01, far: float = 1e10, tile_size: int = 16):
    """Same signature and outputs as `dd3g_sdk.render.reference.rasterize`, on CUDA torch tensors."""
    global _default_rasterizer
    if tile_size != TILE_SIZE:
        raise ValueError(f"the CUDA rasteriser uses {TILE_SIZE}x{TILE_SIZE} tiles, got tile_size={tile_size}")
    opts = RasterOptions(near_plane=near, far_plane=far)
    if _default_rasterizer is None or _default_rasterizer.options != opts:
        _default_rasterizer = CudaRasterizer(opts)
    return _default_rasterizer(means, quats, scales, opacities, sh, viewmats, Ks, width, height, background)
