"""Input images for the model: load, crop to the object, centre, pad to a square, resize, composite.

    from dd3g_sdk.preprocess import PreprocessConfig, load_image
    rgb = load_image("chair.png", PreprocessConfig(size=64))   # [64, 64, 3] float32 in 0..1, white background
    cfg = PreprocessConfig.for_model(generator.info)             # the framing a model was trained with

RGBA images (the usual output of a background remover): the alpha channel is the object mask. The image is
cropped to the bounding box of the pixels with alpha > ALPHA_THRESHOLD (0.5/255: every pixel that is not
fully transparent in 8 bits, so the crop never cuts anything that would show), scaled so that the longer
side of that box spans (1 - 2 * border_ratio) of the output side, centred, and composited over
`background`. Colour is resampled premultiplied by alpha, so the colour hidden under transparent pixels
does not bleed into the edges.

RGB images without alpha are used whole: centred, padded to a square with `background`, resized. There is
no mask to crop with, so this warns.

Resampling: exact area averaging when shrinking, Lanczos when enlarging (clipped to 0..1).
Pixel geometry: the object's box is centred to within half an output pixel; its longer side gets
round((1 - 2 * border_ratio) * size) pixels, the shorter one keeps the aspect ratio to within a pixel.

Modes converted (not refused): 16-bit greyscale (I;16*, I) divided by 65535, float (F) clipped to 0..1,
palette (P/PA; with transparency it becomes RGBA), greyscale L/LA, 1-bit, CMYK/YCbCr (Pillow's conversion,
ICC profiles are not applied). EXIF orientation is applied.

Untrusted files: only the decoders of IMAGE_FORMATS are tried; the pixel count is read from the header and
refused above `max_pixels` before anything is decoded; Pillow's own decompression-bomb warning/error, a truncated or corrupt file, an empty file, a folder
or a missing file raise `InputError` naming the file. Pillow only, no torch.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from .errors import InputError

ALPHA_THRESHOLD = 0.5 / 255.0  # alpha above this is part of the object's bounding box

# The only decoders tried on files. Pillow knows many more formats, some with little-used decoders, and EPS
# runs Ghostscript; photos and cut-outs come in these. (JPEG also opens the MPO variant cameras write.)
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "AVIF", "BMP", "TIFF", "GIF", "PPM")


def _open_formats() -> list[str]:
    Image.init()
    return [f for f in IMAGE_FORMATS if f in Image.OPEN]  # Image.open fails on a name it has no decoder for


ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]


# Fill assumed for model configs saved before PEPDConfig.input_fill existed (they were fed border_ratio 0.15).
LEGACY_INPUT_FILL = 0.7


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 64  # output side in pixels (the model's input resolution)
    border_ratio: float = 0.15  # empty margin on each side, as a fraction of the side (RGBA inputs)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB in 0..1 (the teacher's white)
    max_pixels: int = 64_000_000  # refuse larger images before decoding them (decompression bombs)

    def __post_init__(self) -> None:
        if not (isinstance(self.size, (int, np.integer)) and not isinstance(self.size, bool) and self.size >= 1):
            raise ValueError(f"PreprocessConfig.size must be a positive int, got {self.size!r}")
        if not 0.0 <= self.border_ratio < 0.5:
            raise ValueError(f"PreprocessConfig.border_ratio must be in [0, 0.5), got {self.border_ratio}")
        if len(self.background) != 3 or not all(0.0 <= float(c) <= 1.0 for c in self.background):
            raise ValueError(f"PreprocessConfig.background must be 3 values in 0..1, got {self.background!r}")
        if not self.max_pixels >= 1:
            raise ValueError(f"PreprocessConfig.max_pixels must be >= 1, got {self.max_pixels}")

    @classmethod
    def for_model(cls, info) -> "PreprocessConfig":
        """The framing a model expects, from its `ModelInfo` (`Generator.info`): side `info.image_size`, the
        object's longer side spanning `input_fill` of it (the fill of the renders it was trained on; from
        `info.config`), i.e. border_ratio = (1 - input_fill) / 2."""
        return cls.framing(int(info.image_size), float(info.config.get("input_fill", LEGACY_INPUT_FILL)))

    @classmethod
    def framing(cls, size: int, fill: float) -> "PreprocessConfig":
        """Side `size`, the object's longer side spanning `fill` (0..1] of it."""
        return cls(size=size, border_ratio=(1.0 - fill) / 2.0)


def load_image(src: ImageSource, cfg: PreprocessConfig = PreprocessConfig()) -> np.ndarray:  # [S, S, 3]
    """Load and preprocess an image: float32 RGB in 0..1, [size, size, 3], composited over the background."""
    return _load(src, cfg)[0]


def load_image_rgba(src: ImageSource,
                    cfg: PreprocessConfig = PreprocessConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Like `load_image`, also returning the resampled mask: (rgb [S, S, 3], alpha [S, S]), float32 0..1.

    For RGB inputs (no alpha) the mask is 1 over the image and 0 over the square padding.
    """
    return _load(src, cfg)


def _load(src: ImageSource, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    name, rgb, alpha = _read(src, cfg)
    if alpha is None:
        warnings.warn(f"{name + ': i' if name else 'I'}mage has no alpha channel, so no object mask: using the "
                      "whole image (no crop), padded to a square with the background colour", UserWarning,
                      stacklevel=3)  # the caller of load_image / load_image_rgba
        h, w = rgb.shape[:2]
        return _frame(rgb, np.ones((h, w), np.float32), (0, h, 0, w), 0.0, cfg)
    ys, xs = np.nonzero(alpha > ALPHA_THRESHOLD)
    if ys.size == 0:
        raise InputError(name, "image is fully transparent (alpha is 0 everywhere): no object to crop")
    box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
    return _frame(rgb, alpha, box, cfg.border_ratio, cfg)


# ------------------------------------------------------------------------------------------------
# geometry: crop, scale, centre, composite
# ------------------------------------------------------------------------------------------------
def _frame(rgb: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int], border: float,
           cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Crop `box` (y0, y1, x0, x1; end exclusive), scale its longer side to (1 - 2*border)*S, centre it."""
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    S = cfg.size
    scale = (1.0 - 2.0 * border) * S / max(h, w)
    # Integer output size of the crop; the longer side gets exactly round((1 - 2b) S) pixels.
    oh, ow = max(1, min(S, round(h * scale))), max(1, min(S, round(w * scale)))
    a = alpha[y0:y1, x0:x1]
    premul = rgb[y0:y1, x0:x1] * a[..., None]
    a_r = np.clip(_resize(a, ow, oh), 0.0, 1.0)
    p_r = np.clip(np.stack([_resize(premul[..., c], ow, oh) for c in range(3)], -1), 0.0, a_r[..., None])
    out_a = np.zeros((S, S), np.float32)
    out_p = np.zeros((S, S, 3), np.float32)
    ty, tx = (S - oh) // 2, (S - ow) // 2
    out_a[ty:ty + oh, tx:tx + ow] = a_r
    out_p[ty:ty + oh, tx:tx + ow] = p_r
    bg = np.asarray(cfg.background, np.float32)
    out = out_p + (1.0 - out_a[..., None]) * bg  # "over" with premultiplied colour
    return np.clip(out, 0.0, 1.0).astype(np.float32), out_a


def _resize(x: np.ndarray, w: int, h: int) -> np.ndarray:  # [H0, W0] float32 -> [h, w]
    """Exact area averaging when shrinking (no ringing), Pillow's Lanczos (float, mode "F") otherwise."""
    if x.shape == (h, w):
        return x.astype(np.float32, copy=False)
    if h <= x.shape[0] and w <= x.shape[1]:
        # Separable: every output pixel is the overlap-weighted mean of the input pixels it covers. (Pillow's
        # BOX filter weighs input pixels by whether their centre falls in the box, not by overlap.)
        return (area_weights(x.shape[0], h) @ x.astype(np.float32) @ area_weights(x.shape[1], w).T).astype(
            np.float32)
    im = Image.fromarray(np.ascontiguousarray(x, np.float32))  # mode "F": no 8-bit rounding
    return np.asarray(im.resize((w, h), Image.Resampling.LANCZOS), np.float32)


def area_weights(n_in: int, n_out: int) -> np.ndarray:  # [n_out, n_in] float32, rows sum to 1
    """Weights of 1-D area resampling: output pixel k covers [k, k+1) * n_in / n_out of the input axis."""
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    i = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(edges[1:, None], i + 1) - np.maximum(edges[:-1, None], i), 0.0, None)
    return (overlap / overlap.sum(1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# decoding
# ------------------------------------------------------------------------------------------------
def _read(src: ImageSource, cfg: PreprocessConfig) -> tuple[str | None, np.ndarray, np.ndarray | None]:
    """-> (name for messages, rgb [H, W, 3] float32 0..1, alpha [H, W] float32 0..1 or None)."""
    if isinstance(src, np.ndarray):
        return None, *_from_array(src, cfg)
    if isinstance(src, Image.Image):
        name = getattr(src, "filename", None) or None
        _check_pixels(name, src.size, cfg)
        try:  # an image from Image.open() decodes lazily, here
            return name, *_from_pil(name, src)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - as for files below
            raise InputError(name, f"cannot decode image (truncated or corrupt?): {type(e).__name__}: {e}") from None
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"image source must be a path, a PIL image or a numpy array, not {type(src).__name__}")
    p = Path(src)
    if not p.exists():
        raise InputError(p, "image file not found")
    if p.is_dir():
        raise InputError(p, "is a folder, not an image file")
    if p.stat().st_size == 0:
        raise InputError(p, "empty file (0 bytes), not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p, formats=_open_formats()) as im:  # reads the header only
                _check_pixels(p, im.size, cfg)
                im.load()  # decodes now, inside the error handling
                im = ImageOps.exif_transpose(im)
                rgb, alpha = _from_pil(p, im)
    except InputError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise InputError(p, f"image refused as a possible decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        raise InputError(p, f"not an image, or not one of the formats {', '.join(IMAGE_FORMATS)}") from None
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many types (OSError, SyntaxError, ...)
        raise InputError(p, f"cannot decode image (truncated or corrupt?): {type(e).__name__}: {e}") from None
    return str(p), rgb, alpha


def _check_pixels(name, size: tuple[int, int], cfg: PreprocessConfig) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise InputError(name, f"image has no pixels ({w} x {h})")
    if w * h > cfg.max_pixels:
        raise InputError(name, f"image is {w} x {h} = {w * h} pixels, more than max_pixels={cfg.max_pixels}; "
                               "refused before decoding (possible decompression bomb)")


def _from_pil(name, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    im.load()  # decode errors surface here, not as a failed conversion
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":  # 16-bit greyscale (mode "I" holds 16-bit PNGs in some Pillows)
        g = np.clip(np.asarray(im).astype(np.float32) / 65535.0, 0.0, 1.0)
        return np.repeat(g[..., None], 3, -1), None
    if mode == "F":
        g = np.asarray(im, np.float32)
        if not np.isfinite(g).all():
            raise InputError(name, "float image has NaN or Inf pixels")
        g = np.clip(g, 0.0, 1.0)
        return np.repeat(g[..., None], 3, -1), None
    # Palette/L/RGB images can carry transparency in a tRNS chunk or an RGBA palette instead of a band.
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and (
        "transparency" in im.info or (mode == "P" and im.palette is not None and im.palette.mode == "RGBA")))
    try:
        if mode == "La":  # premultiplied LA: Pillow converts it to LA only
            im = im.convert("LA")
        im = im.convert("RGBA" if has_alpha else "RGB")
    except ValueError as e:  # e.g. "conversion from LAB to RGB not supported"
        raise InputError(name, f"unsupported image mode {mode!r}: {e}") from None
    a = np.asarray(im, np.float32) / 255.0
    return (a[..., :3].copy(), a[..., 3].copy()) if has_alpha else (a, None)


def _from_array(x: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """HWC or HW numpy image: uint8 (/255), uint16 (/65535), bool, or float in 0..1; C in 1..4."""
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4):
        raise InputError(None, f"image array must be [H, W] or [H, W, C] with C in 1..4, got {list(x.shape)}")
    _check_pixels(None, (x.shape[1], x.shape[0]), cfg)
    if x.dtype == np.uint8:
        f = x.astype(np.float32) / 255.0
    elif x.dtype == np.uint16:
        f = x.astype(np.float32) / 65535.0
    elif x.dtype == np.bool_:
        f = x.astype(np.float32)
    elif np.issubdtype(x.dtype, np.floating):
        f = x.astype(np.float32)
        if not np.isfinite(f).all() or f.min() < 0.0 or f.max() > 1.0:
            raise InputError(None, "float image array must hold finite values in 0..1")
    else:
        raise InputError(None, f"image array dtype {x.dtype} not supported (uint8, uint16, bool or float)")
    c = f.shape[2]
    rgb = np.repeat(f[..., :1], 3, -1) if c <= 2 else f[..., :3]
    alpha = f[..., -1] if c in (2, 4) else None
    return np.ascontiguousarray(rgb), None if alpha is None else np.ascontiguousarray(alpha)
