"""dd3g_sdk.preprocess: crop/centre/resize/composite against a numpy reference, modes, and bad input."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from dd3g_sdk.errors import InputError
from dd3g_sdk.preprocess import ALPHA_THRESHOLD, PreprocessConfig, load_image, load_image_rgba

CFG = PreprocessConfig(size=64, border_ratio=0.15)


def rgba_image(w=120, h=90, box=(20, 60, 30, 90), color=(255, 0, 0)) -> Image.Image:
    """An opaque rectangle (rows box[0]:box[1], cols box[2]:box[3]; 5x5 corners cut) on transparent green."""
    a = np.zeros((h, w, 4), np.uint8)
    a[..., 1] = 255  # hidden colour under alpha 0: must not bleed into the result
    y0, y1, x0, x1 = box
    a[y0:y1, x0:x1, :3] = color
    a[y0:y1, x0:x1, 3] = 255
    for ys in (slice(y0, y0 + 5), slice(y1 - 5, y1)):  # transparent notches in the corners: the crop holds
        for xs in (slice(x0, x0 + 5), slice(x1 - 5, x1)):  # hidden green that must not bleed
            a[ys, xs] = [0, 255, 0, 0]
    return Image.fromarray(a, "RGBA")


def mask_box(alpha: np.ndarray, thr: float = 0.5) -> tuple[float, float, int, int]:
    """(centre row, centre col, height, width) of the alpha > thr region, centre in pixel-centre coordinates."""
    ys, xs = np.nonzero(alpha > thr)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    return (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2, h, w


# ---- geometry and compositing ---------------------------------------------------------------------------
@pytest.mark.parametrize("box", [(20, 60, 30, 90), (0, 40, 0, 60), (50, 90, 60, 120), (10, 80, 50, 70)])
def test_object_is_recentred_and_sized(tmp_path, box):
    p = tmp_path / "obj.png"
    rgba_image(box=box).save(p)
    rgb, alpha = load_image_rgba(p, CFG)
    assert rgb.shape == (64, 64, 3) and alpha.shape == (64, 64)
    assert rgb.dtype == np.float32 and alpha.dtype == np.float32
    assert rgb.min() >= 0 and rgb.max() <= 1 and alpha.min() >= 0 and alpha.max() <= 1
    cy, cx, h, w = mask_box(alpha)
    assert abs(cy - 32) <= 0.5 and abs(cx - 32) <= 0.5  # centred to within half a pixel
    bh, bw = box[1] - box[0], box[3] - box[2]
    longer = round((1 - 2 * CFG.border_ratio) * 64)  # 45 px
    assert max(h, w) == longer
    assert abs(min(h, w) - min(bh, bw) * longer / max(bh, bw)) <= 1  # aspect kept
    # inside: red; outside: the white background; no green anywhere (premultiplied resampling)
    np.testing.assert_allclose(rgb[int(cy), int(cx)], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(rgb[alpha == 0], 1.0)
    assert ((alpha > 0.05) & (alpha < 0.95)).any()  # partly covered pixels exist (the check below bites)
    np.testing.assert_allclose(rgb[..., 1], rgb[..., 2], atol=1e-5)


def _area_reference(x: np.ndarray, n: int) -> np.ndarray:
    """Area downscale of [m, m, C] to [n, n, C] by supersampling: repeat every pixel n times, average m-blocks."""
    m = x.shape[0]
    for axis in (0, 1):
        x = np.repeat(x, n, axis=axis)
        x = np.moveaxis(np.moveaxis(x, axis, 0).reshape(n, m, *np.moveaxis(x, axis, 0).shape[1:]).mean(1), 0, axis)
    return x


@pytest.mark.parametrize("border,side", [(0.25, 32), (0.15, 45)])  # 64 -> 32 (factor 1/2), 64 -> 45
def test_reference_twin_area_downscale(tmp_path, border, side):
    """The whole pipeline against a supersampling reference (premultiplied area mean, "over"), atol 1e-5."""
    rng = np.random.default_rng(0)
    W, H, (y0, x0) = 100, 90, (13, 21)
    a = np.zeros((H, W, 4), np.uint8)
    a[..., :3] = rng.integers(0, 256, (H, W, 3))  # random colour also under alpha 0
    obj = rng.integers(0, 256, (64, 64, 4)).astype(np.uint8)
    obj[0, 0, 3] = obj[-1, -1, 3] = 255  # the alpha bounding box is exactly this 64 x 64 block
    a[y0:y0 + 64, x0:x0 + 64] = obj
    cfg = PreprocessConfig(size=64, border_ratio=border, background=(0.2, 0.4, 0.6))
    assert round((1 - 2 * border) * 64) == side
    p = tmp_path / "twin.png"
    Image.fromarray(a, "RGBA").save(p)
    rgb, alpha = load_image_rgba(p, cfg)

    f = obj.astype(np.float64) / 255
    small = _area_reference(np.concatenate([f[..., :3] * f[..., 3:], f[..., 3:]], -1), side)
    t = (64 - side) // 2
    ref_a = np.zeros((64, 64))
    ref_rgb = np.empty((64, 64, 3))
    ref_rgb[:] = cfg.background
    ref_a[t:t + side, t:t + side] = small[..., 3]
    ref_rgb[t:t + side, t:t + side] = small[..., :3] + (1 - small[..., 3:]) * np.array(cfg.background)
    np.testing.assert_allclose(alpha, ref_a, atol=1e-5)
    np.testing.assert_allclose(rgb, ref_rgb, atol=1e-5)


def test_upscaling_small_object_and_semi_transparency():
    a = np.zeros((10, 10, 4), np.uint8)
    a[3:7, 3:7] = [0, 0, 255, 128]  # half-transparent blue
    rgb, alpha = load_image_rgba(a, PreprocessConfig(size=32, border_ratio=0.0, background=(1, 1, 1)))
    assert mask_box(alpha, 0.25)[2:] == (32, 32)  # the 4x4 object fills the whole output
    np.testing.assert_allclose(alpha[8:24, 8:24], 128 / 255, atol=1e-3)
    np.testing.assert_allclose(rgb[16, 16], [1 - 128 / 255, 1 - 128 / 255, 1], atol=1e-3)


def test_alpha_threshold_includes_faint_pixels():
    a = np.zeros((40, 40, 4), np.uint8)
    a[10:30, 10:30, 3] = 255
    a[0, 0, 3] = 1  # 1/255 > ALPHA_THRESHOLD: part of the crop
    assert 1 / 255 > ALPHA_THRESHOLD > 0
    _, alpha = load_image_rgba(a, PreprocessConfig(size=40, border_ratio=0.0))
    # the crop is now rows/cols 0..29: the opaque block ends at the bottom-right, not centred
    cy, cx, h, w = mask_box(alpha)
    assert (h, w) == (27, 27) and cy > 20 and cx > 20


def test_rgb_without_alpha_is_used_whole_and_warns(tmp_path):
    p = tmp_path / "wide.png"
    Image.new("RGB", (40, 20), (0, 0, 255)).save(p)
    with pytest.warns(UserWarning, match="no alpha channel") as rec:
        rgb, alpha = load_image_rgba(p, PreprocessConfig(size=64, border_ratio=0.3))  # border unused for RGB
    assert str(p) in str(rec[0].message) and rec[0].filename == __file__  # points at the caller
    np.testing.assert_allclose(rgb[16:48], np.broadcast_to([0, 0, 1], (32, 64, 3)), atol=1e-6)
    np.testing.assert_allclose(rgb[:16], 1.0)
    np.testing.assert_allclose(rgb[48:], 1.0)
    np.testing.assert_array_equal(alpha[16:48], 1.0)
    np.testing.assert_array_equal(alpha[:16], 0.0)
    with pytest.warns(UserWarning):
        assert load_image(p, CFG).shape == (64, 64, 3)


def test_background_colour():
    rgb = load_image(np.asarray(rgba_image()), PreprocessConfig(size=32, background=(0.0, 0.0, 0.0)))
    assert np.allclose(rgb[0, 0], 0) and np.allclose(rgb[16, 16], [1, 0, 0])


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40, 4), np.uint8)
    a[5:15, 5:35] = 255  # a wide opaque bar
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "rot.png"
    Image.fromarray(a, "RGBA").save(p, exif=exif)
    _, alpha = load_image_rgba(p, PreprocessConfig(size=40, border_ratio=0.0))
    _, _, h, w = mask_box(alpha)
    assert h == 40 and w < 20  # shown upright: the bar is tall


# ---- modes -----------------------------------------------------------------------------------------
def _save(img: Image.Image, tmp_path, name: str) -> str:
    p = tmp_path / name
    img.save(p)
    return p


def test_greyscale_l_and_la(tmp_path):
    with pytest.warns(UserWarning, match="no alpha"):
        rgb = load_image(_save(Image.new("L", (8, 8), 128), tmp_path, "l.png"), PreprocessConfig(size=8))
    np.testing.assert_allclose(rgb, 128 / 255, atol=1e-6)
    la = np.zeros((16, 16, 2), np.uint8)
    la[4:12, 4:12] = [200, 255]
    p = _save(Image.fromarray(la, "LA"), tmp_path, "la.png")
    rgb, alpha = load_image_rgba(p, PreprocessConfig(size=16, border_ratio=0))
    np.testing.assert_allclose(rgb[8, 8], 200 / 255, atol=1e-6)
    assert mask_box(alpha)[2:] == (16, 16)


def test_palette_with_and_without_transparency(tmp_path):
    idx = np.zeros((16, 16), np.uint8)
    idx[4:12, 6:10] = 1
    pal = Image.fromarray(idx, "P")
    pal.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    with pytest.warns(UserWarning, match="no alpha"):
        rgb = load_image(_save(pal, tmp_path, "p.png"), PreprocessConfig(size=16))
    np.testing.assert_allclose(rgb[0, 0], [0, 1, 0])  # no transparency: green stays
    pal.info["transparency"] = 0
    p = tmp_path / "pt.png"
    pal.save(p, transparency=0)
    with Image.open(p) as im:
        assert im.mode == "P"
    rgb, alpha = load_image_rgba(p, PreprocessConfig(size=16, border_ratio=0))
    cy, cx, h, w = mask_box(alpha)
    assert (h, w) == (16, 8) and abs(cx - 8) <= 0.5
    np.testing.assert_allclose(rgb[8, 8], [1, 0, 0])
    np.testing.assert_allclose(rgb[8, 0], [1, 1, 1])  # transparent index -> background


def test_sixteen_bit_greyscale(tmp_path):
    g = np.full((8, 8), 32768, np.uint16)
    g[0, 0] = 65535
    im = Image.fromarray(g)
    assert im.mode == "I;16"
    p = _save(im, tmp_path, "g16.png")
    for src in (im, p):
        with pytest.warns(UserWarning, match="no alpha"):
            rgb = load_image(src, PreprocessConfig(size=8))
        np.testing.assert_allclose(rgb[4, 4], 32768 / 65535, atol=1e-6)
        np.testing.assert_allclose(rgb[0, 0], 1.0, atol=1e-6)
    with pytest.warns(UserWarning):
        np.testing.assert_allclose(load_image(g, PreprocessConfig(size=8))[4, 4], 32768 / 65535, atol=1e-6)


def test_cmyk_and_one_bit(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red
    with pytest.warns(UserWarning):
        np.testing.assert_allclose(load_image(_save(cmyk, tmp_path, "c.tiff"), PreprocessConfig(size=8))[4, 4],
                                   [1, 0, 0], atol=1e-6)
    bw = Image.new("1", (8, 8), 1)
    with pytest.warns(UserWarning):
        np.testing.assert_allclose(load_image(_save(bw, tmp_path, "b.png"), PreprocessConfig(size=8)), 1.0)


@pytest.mark.parametrize("mode", ["La", "RGBa", "PA", "I;16B", "YCbCr", "HSV", "LAB", "RGBX", "F"])
def test_other_pillow_modes_are_converted(mode):
    im = Image.new(mode, (6, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the RGB-like ones have no alpha
        if mode in ("La", "RGBa", "PA"):  # all-zero alpha
            with pytest.raises(InputError, match="fully transparent"):
                load_image(im, PreprocessConfig(size=4))
            return
        rgb = load_image(im, PreprocessConfig(size=4))
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.float32 and np.isfinite(rgb).all()


def test_numpy_and_pil_inputs():
    im = rgba_image()
    ref = load_image(im, CFG)
    np.testing.assert_allclose(load_image(np.asarray(im), CFG), ref, atol=1e-6)
    np.testing.assert_allclose(load_image(np.asarray(im).astype(np.float32) / 255, CFG), ref, atol=1e-6)
    np.testing.assert_allclose(load_image(np.asarray(im).astype(np.uint16) * 257, CFG), ref, atol=1e-6)
    with pytest.raises(InputError, match="finite values in 0..1"):
        load_image(np.full((8, 8, 3), 2.0, np.float32))
    with pytest.raises(InputError, match=r"\[H, W\] or \[H, W, C\]"):
        load_image(np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(InputError, match="dtype int64"):
        load_image(np.zeros((8, 8, 3), np.int64))
    with pytest.raises(TypeError):
        load_image(42)  # type: ignore[arg-type]


def test_config_validation():
    for bad in (dict(size=0), dict(border_ratio=0.5), dict(border_ratio=-0.1), dict(background=(1, 1)),
                dict(background=(2, 0, 0)), dict(max_pixels=0)):
        with pytest.raises(ValueError):
            PreprocessConfig(**bad)


# ---- bad input ------------------------------------------------------------------------------------------
def _png_bytes(w=64, h=64, seed=0) -> bytes:
    b = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA").save(b, "PNG")
    return b.getvalue()


@pytest.mark.parametrize("name,content,problem", [
    ("empty.png", b"", "empty file (0 bytes)"),
    ("text.png", b"hello, I am not an image\n" * 4, "not an image"),
    ("truncated.png", _png_bytes()[: len(_png_bytes()) // 2], "truncated or corrupt"),
    ("header_only.png", _png_bytes()[:40], "not an image"),
])
def test_bad_files(tmp_path, name, content, problem):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(InputError) as e:
        load_image(p, CFG)
    msg = str(e.value)
    assert msg.startswith(str(p) + ": ") and problem in msg and "\n" not in msg, msg


def test_lazy_pil_image_of_a_truncated_file(tmp_path):
    p = tmp_path / "t.png"
    p.write_bytes(_png_bytes()[:600])
    with Image.open(p) as im:  # opens (header only); decoding happens in load_image
        with pytest.raises(InputError, match="truncated or corrupt") as e:
            load_image(im, CFG)
    assert str(p) in str(e.value)


def test_formats_outside_the_allowed_list_are_refused(tmp_path):
    p = tmp_path / "old.pcx"
    Image.new("RGB", (8, 8)).save(p, "PCX")  # Pillow reads PCX, but it is not in IMAGE_FORMATS
    with pytest.raises(InputError, match="not one of the formats PNG, JPEG"):
        load_image(p, CFG)
    q = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(q, "JPEG", quality=95)
    with pytest.warns(UserWarning):
        np.testing.assert_allclose(load_image(q, PreprocessConfig(size=8))[4, 4], np.float32([10, 200, 30]) / 255,
                                   atol=4 / 255)


def test_missing_and_folder(tmp_path):
    with pytest.raises(InputError, match="image file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="is a folder"):
        load_image(tmp_path)


def test_fully_transparent_is_refused(tmp_path):
    p = tmp_path / "clear.png"
    Image.new("RGBA", (16, 16), (255, 0, 0, 0)).save(p)
    with pytest.raises(InputError, match="fully transparent") as e:
        load_image(p, CFG)
    assert str(p) in str(e.value)


def test_too_many_pixels_refused_before_decoding(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    p.write_bytes(_png_bytes(40, 30))

    def no_decoding(self, *a, **k):
        raise AssertionError("decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(InputError, match=r"40 x 30 = 1200 pixels, more than max_pixels=1000; refused before decoding"):
        load_image(p, PreprocessConfig(max_pixels=1000))


@pytest.mark.parametrize("pillow_limit,kind", [(1000, "warning"), (500, "error")])
def test_pillows_own_decompression_bomb_check_is_an_input_error(tmp_path, monkeypatch, pillow_limit, kind):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_bytes(40, 30))  # 1200 pixels: > limit (warning), > 2 x limit (error)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    with pytest.raises(InputError, match="decompression bomb") as e:
        load_image(p, PreprocessConfig(max_pixels=10 ** 9))
    assert str(p) in str(e.value)
