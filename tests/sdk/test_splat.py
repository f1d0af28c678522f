"""dd3g_sdk.io.splat: antimatter15 .splat layout, quantisation, sort order, malformed files, atomic writes."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from dd3g_sdk.errors import InputError
from dd3g_sdk.gaussians import C0, Gaussians, normalize_quats
from dd3g_sdk.io import splat as splat_mod
from dd3g_sdk.io.splat import SPLAT_DTYPE, read_splat, splat_order, write_splat


def make(n: int = 50, degree: int = 0, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    return Gaussians.from_colors(rng.uniform(-0.5, 0.5, (n, 3)), rng.uniform(0.001, 0.2, (n, 3)),
                                 rng.normal(size=(n, 4)), rng.uniform(0, 1, n), rng.uniform(0, 1, (n, 3)),
                                 sh_degree=degree)


def reference_order(g: Gaussians) -> np.ndarray:
    """The original converter's key, -exp(sum of log scales) * sigmoid(opacity logit), sorted ascending."""
    logit = np.log(g.opacities.astype(np.float64)) - np.log1p(-g.opacities.astype(np.float64))
    key = -np.exp(np.log(g.scales.astype(np.float64)).sum(1)) / (1 + np.exp(-logit))
    return np.argsort(key, kind="stable")


def test_layout_is_32_bytes_little_endian():
    assert SPLAT_DTYPE.itemsize == 32
    assert [SPLAT_DTYPE.fields[k][1] for k in ("position", "scale", "rgba", "rot")] == [0, 12, 24, 28]


def test_round_trip_within_quantisation_and_sorted(tmp_path):
    g = make(degree=2)
    g.sh[:, 1:] = 1.0  # higher bands are dropped by the format
    p = write_splat(g, tmp_path / "g.splat")
    assert p.stat().st_size == 32 * len(g)
    back = read_splat(p)
    assert len(back) == len(g) and back.sh_degree == 0
    order = splat_order(g)
    src = g[order]
    np.testing.assert_array_equal(back.means, src.means)  # exact
    np.testing.assert_array_equal(back.scales, src.scales)  # exact (linear float32)
    assert np.abs(back.colors - src.colors).max() <= 1 / 255 + 1e-6
    assert np.abs(back.opacities - src.opacities).max() <= 1 / 255 + 1e-6
    assert np.abs(back.quats - src.quats).max() < 1e-2  # quantisation keeps the sign: no q / -q ambiguity
    np.testing.assert_allclose(np.linalg.norm(back.quats, axis=1), 1, atol=1e-6)


def test_sort_order_matches_the_original_converter(tmp_path):
    g = make(200, seed=3)
    g.opacities[:] = np.clip(g.opacities, 0.01, 0.99)  # the reference goes through a logit
    np.testing.assert_array_equal(splat_order(g), reference_order(g))
    back = read_splat(write_splat(g, tmp_path / "s.splat"))
    src = g[splat_order(g)]
    np.testing.assert_array_equal(back.means, src.means)  # the file holds them in that order
    assert np.all(np.diff(np.prod(src.scales.astype(np.float64), 1) * src.opacities) <= 0)  # descending


def test_byte_encoding_of_one_splat(tmp_path):
    g = Gaussians(np.float32([[1.5, -2.0, 0.25]]), np.float32([[0.1, 0.2, 0.3]]),
                  normalize_quats(np.float32([[0.5, -0.5, 0.5, -0.5]])), np.float32([0.6]),
                  np.float32([[[(1.0 - 0.5) / C0, (0.0 - 0.5) / C0, (0.2 - 0.5) / C0]]]))
    raw = write_splat(g, tmp_path / "one.splat").read_bytes()
    assert len(raw) == 32
    np.testing.assert_array_equal(np.frombuffer(raw[:12], "<f4"), [1.5, -2.0, 0.25])
    np.testing.assert_array_equal(np.frombuffer(raw[12:24], "<f4"), np.float32([0.1, 0.2, 0.3]))
    assert list(raw[24:28]) == [255, 0, round(0.2 * 255), round(0.6 * 255)]
    assert list(raw[28:32]) == [192, 64, 192, 64]  # round(q * 128 + 128), w x y z


def test_quaternion_clipping_at_plus_one(tmp_path):
    g = make(1)
    g.quats[:] = [1, 0, 0, 0]  # 1 * 128 + 128 = 256 -> clipped to 255
    raw = write_splat(g, tmp_path / "q.splat").read_bytes()
    assert list(raw[28:32]) == [255, 128, 128, 128]
    np.testing.assert_allclose(read_splat(tmp_path / "q.splat").quats, [[1, 0, 0, 0]], atol=1e-6)


def test_empty_round_trip(tmp_path):
    p = write_splat(Gaussians.empty(), tmp_path / "e.splat")
    assert p.stat().st_size == 0 and len(read_splat(p)) == 0


@pytest.mark.parametrize("size", [1, 31, 33, 100])
def test_size_not_a_multiple_of_32(tmp_path, size):
    p = tmp_path / "bad.splat"
    p.write_bytes(b"\0" * size)
    with pytest.raises(InputError) as e:
        read_splat(p)
    assert str(e.value).startswith(str(p)) and f"({size} bytes) is not a multiple of 32" in str(e.value)


def test_bad_values_and_missing(tmp_path):
    rec = np.zeros(2, SPLAT_DTYPE)
    rec["rot"] = [128, 128, 128, 128]  # zero quaternion: taken as identity
    rec["position"][1, 0] = np.nan
    p = tmp_path / "nan.splat"
    p.write_bytes(rec.tobytes())
    with pytest.raises(InputError, match="means has NaN or Inf"):
        read_splat(p)
    rec["position"][1, 0] = 0
    rec["scale"][0, 2] = -1
    p.write_bytes(rec.tobytes())
    with pytest.raises(InputError, match="scales must be >= 0"):
        read_splat(p)
    rec["scale"][0, 2] = 1
    p.write_bytes(rec.tobytes())
    np.testing.assert_array_equal(read_splat(p).quats, [[1, 0, 0, 0]] * 2)
    with pytest.raises(InputError, match="file not found"):
        read_splat(tmp_path / "nope.splat")
    with pytest.raises(InputError, match="not a file"):
        read_splat(tmp_path)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    p = write_splat(make(3), tmp_path / "g.splat")
    before = p.read_bytes()
    real = splat_mod.atomic_write

    class Half:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError("No space left on device")

    @contextlib.contextmanager
    def flaky(path, mode="wb"):
        with real(path, mode) as f:
            yield Half(f)

    monkeypatch.setattr(splat_mod, "atomic_write", flaky)
    with pytest.raises(OSError, match="No space"):
        write_splat(make(40), p)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["g.splat"]
