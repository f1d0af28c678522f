"""dd3g_sdk.io.ply (INRIA 3DGS PLY) and the dd3g_sdk.io front door (read/write_gaussians, describe)."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

from dd3g_sdk.errors import InputError
from dd3g_sdk.gaussians import Gaussians, normalize_quats
from dd3g_sdk.io import describe, read_gaussians, write_gaussians
from dd3g_sdk.io import ply as ply_mod
from dd3g_sdk.io.ply import MAX_HEADER_BYTES, ply_property_names, read_ply, write_ply

plyfile = pytest.importorskip("plyfile")


def make(n: int = 7, degree: int = 1, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    return Gaussians(rng.uniform(-0.5, 0.5, (n, 3)).astype(np.float32),
                     rng.uniform(0.001, 0.2, (n, 3)).astype(np.float32),
                     normalize_quats(rng.normal(size=(n, 4))),
                     rng.uniform(0.01, 0.99, n).astype(np.float32),
                     rng.normal(size=(n, (degree + 1) ** 2, 3)).astype(np.float32))


def assert_same(a: Gaussians, b: Gaussians) -> None:
    """Equal to float32 precision (opacity/scale go through logit/log and back)."""
    assert len(a) == len(b) and a.sh.shape == b.sh.shape
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_array_equal(a.sh, b.sh)
    np.testing.assert_allclose(a.scales, b.scales, rtol=2e-6)
    np.testing.assert_allclose(a.opacities, b.opacities, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.quats, b.quats, rtol=0, atol=2e-7)


def inria_row_dtype(names, t="f4"):
    return np.dtype([(nm, t) for nm in names])


# ---- writing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_ours_and_plyfile(tmp_path, degree):
    g = make(degree=degree, seed=degree)
    path = write_ply(g, tmp_path / "g.ply")
    assert_same(read_ply(path), g)

    pd = plyfile.PlyData.read(str(path))
    assert not pd.text and pd.byte_order == "<"
    assert [e.name for e in pd.elements] == ["vertex"]
    v = pd["vertex"]
    names = [p.name for p in v.properties]
    k = (degree + 1) ** 2
    assert names == (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                     + [f"f_rest_{i}" for i in range(3 * (k - 1))]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert names == ply_property_names(degree)
    assert all(v.data.dtype[nm] == np.dtype("<f4") for nm in names)
    col = lambda *ns: np.stack([v[nm] for nm in ns], 1)  # noqa: E731
    np.testing.assert_array_equal(col("x", "y", "z"), g.means)
    np.testing.assert_array_equal(col("nx", "ny", "nz"), 0)
    np.testing.assert_array_equal(col("f_dc_0", "f_dc_1", "f_dc_2"), g.sh[:, 0])
    for c in range(3):  # channel-major f_rest
        for j in range(1, k):
            np.testing.assert_array_equal(v[f"f_rest_{c * (k - 1) + j - 1}"], g.sh[:, j, c])
    p64 = g.opacities.astype(np.float64)
    np.testing.assert_allclose(v["opacity"], np.log(p64 / (1 - p64)), rtol=1e-6)
    np.testing.assert_allclose(col("scale_0", "scale_1", "scale_2"), np.log(g.scales.astype(np.float64)), rtol=1e-6)
    np.testing.assert_array_equal(col("rot_0", "rot_1", "rot_2", "rot_3"), g.quats)


def test_pad_sh_degree(tmp_path):
    g = make(degree=1)
    p = write_ply(g, tmp_path / "g.ply", pad_sh_degree=3)
    back = read_ply(p)
    assert back.sh_degree == 3
    np.testing.assert_array_equal(back.sh[:, :4], g.sh)
    assert np.all(back.sh[:, 4:] == 0)
    assert len(plyfile.PlyData.read(str(p))["vertex"].properties) == 62  # 17 + 45 f_rest
    write_ply(g, tmp_path / "same.ply", pad_sh_degree=1)
    assert read_ply(tmp_path / "same.ply").sh_degree == 1
    with pytest.raises(ValueError, match="below"):
        write_ply(g, tmp_path / "x.ply", pad_sh_degree=0)
    with pytest.raises(ValueError, match="0, 1, 2 or 3"):
        write_ply(g, tmp_path / "x.ply", pad_sh_degree=4)
    assert not (tmp_path / "x.ply").exists()


def test_extreme_opacity_and_zero_scale_stay_finite(tmp_path):
    g = make(4)
    g.opacities[:] = [0.0, 1.0, 0.5, 1e-9]
    g.scales[0] = [0.0, 1e-30, 5.0]
    p = write_ply(g, tmp_path / "g.ply")
    v = plyfile.PlyData.read(str(p))["vertex"]
    for nm in ("opacity", "scale_0", "scale_1", "scale_2"):
        assert np.isfinite(v[nm]).all(), nm
    back = read_ply(p)
    np.testing.assert_allclose(back.opacities, [0.0, 1.0, 0.5, 0.0], atol=2e-7)
    np.testing.assert_allclose(back.scales[0], [0.0, 0.0, 5.0], atol=1e-9, rtol=1e-6)


def test_empty_gaussians_round_trip(tmp_path):
    p = write_ply(Gaussians.empty(2), tmp_path / "e.ply")
    back = read_ply(p)
    assert len(back) == 0 and back.sh_degree == 2


# ---- reading files made by others --------------------------------------------------------------
def _inria_degree1(n: int = 2) -> np.ndarray:
    """A degree-1 INRIA vertex table with distinct, recognisable numbers."""
    a = np.zeros(n, inria_row_dtype(ply_property_names(1)))
    a["x"], a["y"], a["z"] = [1, 2], [3, 4], [5, 6]
    a["f_dc_0"], a["f_dc_1"], a["f_dc_2"] = [0.1, 0.2], [0.3, 0.4], [0.5, 0.6]
    for i in range(9):
        a[f"f_rest_{i}"] = [10 + i, 20 + i]
    a["opacity"] = [0.0, 2.0]
    a["scale_0"], a["scale_1"], a["scale_2"] = [0.0, -1.0], [np.log(0.5), -2.0], [-3.0, 1.0]
    a["rot_0"], a["rot_1"], a["rot_2"], a["rot_3"] = [2, 0], [0, 3], [0, 0], [0, 4]  # not normalised
    return a


def _check_degree1(g: Gaussians) -> None:
    assert len(g) == 2 and g.sh_degree == 1
    np.testing.assert_array_equal(g.means, [[1, 3, 5], [2, 4, 6]])
    np.testing.assert_allclose(g.sh[:, 0], [[0.1, 0.3, 0.5], [0.2, 0.4, 0.6]], rtol=1e-6)
    # f_rest channel-major: R gets f_rest_0..2, G f_rest_3..5, B f_rest_6..8, band-1 coefficient j = 1..3
    np.testing.assert_array_equal(g.sh[0, 1:, 0], [10, 11, 12])
    np.testing.assert_array_equal(g.sh[0, 1:, 1], [13, 14, 15])
    np.testing.assert_array_equal(g.sh[0, 1:, 2], [16, 17, 18])
    np.testing.assert_array_equal(g.sh[1, 1:, 2], [26, 27, 28])
    np.testing.assert_allclose(g.opacities, [0.5, 1 / (1 + np.exp(-2.0))], rtol=1e-6)
    np.testing.assert_allclose(g.scales, np.exp([[0.0, np.log(0.5), -3.0], [-1.0, -2.0, 1.0]]), rtol=1e-6)
    np.testing.assert_allclose(g.quats, [[1, 0, 0, 0], [0, 0.6, 0, 0.8]], atol=1e-7)


@pytest.mark.parametrize("text,byte_order", [(False, "<"), (False, ">"), (True, "=")])
def test_hand_built_inria_ply(tmp_path, text, byte_order):
    el = plyfile.PlyElement.describe(_inria_degree1(), "vertex")
    p = tmp_path / "inria.ply"
    plyfile.PlyData([el], text=text, byte_order=byte_order).write(str(p))
    _check_degree1(read_ply(p))


def test_shuffled_order_extra_properties_doubles_and_other_elements(tmp_path):
    src = _inria_degree1()
    names = [nm for nm in src.dtype.names if nm not in ("nx", "ny", "nz")][::-1]  # no normals, reversed
    dt = [(nm, "f8") for nm in names] + [("red", "u1"), ("extra", "i2")]
    a = np.zeros(2, dt)
    for nm in names:
        a[nm] = src[nm]
    a["red"], a["extra"] = [255, 7], [-1, 2]
    cams = np.zeros(3, [("fx", "f4"), ("id", "i4")])  # an element before the vertices
    cams["fx"] = [1, 2, 3]
    faces = np.empty(1, [("vertex_indices", "i4", (3,))])  # a list element after them
    faces["vertex_indices"] = [[0, 1, 0]]
    for text in (False, True):
        p = tmp_path / f"odd_{text}.ply"
        plyfile.PlyData([plyfile.PlyElement.describe(cams, "camera"), plyfile.PlyElement.describe(a, "vertex"),
                         plyfile.PlyElement.describe(faces, "face")], text=text).write(str(p))
        _check_degree1(read_ply(p))


def test_ascii_list_element_before_vertices(tmp_path):
    a = _inria_degree1()
    faces = np.empty(2, [("idx", "O")])
    faces["idx"] = [np.array([0, 1, 2], np.int32), np.array([1], np.int32)]
    p = tmp_path / "a.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(faces, "face", val_types={"idx": "i4"}),
                     plyfile.PlyElement.describe(a, "vertex")], text=True).write(str(p))
    _check_degree1(read_ply(p))
    # in binary the size of a list element is unknown without parsing it: refused, clearly
    plyfile.PlyData([plyfile.PlyElement.describe(faces, "face", val_types={"idx": "i4"}),
                     plyfile.PlyElement.describe(a, "vertex")], text=False).write(str(p))
    with pytest.raises(InputError, match="list property comes before 'vertex'"):
        read_ply(p)


def test_crlf_header(tmp_path):
    a = _inria_degree1()
    header = ("ply\r\nformat binary_little_endian 1.0\r\ncomment hi\r\nelement vertex 2\r\n"
              + "".join(f"property float {nm}\r\n" for nm in a.dtype.names) + "end_header\r\n")
    p = tmp_path / "crlf.ply"
    p.write_bytes(header.encode() + a.astype(inria_row_dtype(a.dtype.names, "<f4")).tobytes())
    _check_degree1(read_ply(p))


# ---- malformed files ----------------------------------------------------------------------------
def _header(names=None, count=2, fmt="binary_little_endian", types=None, extra="") -> bytes:
    names = names if names is not None else ply_property_names(0)
    types = types or {}
    return ("ply\n" f"format {fmt} 1.0\n" f"element vertex {count}\n"
            + "".join(f"property {types.get(nm, 'float')} {nm}\n" for nm in names) + extra
            + "end_header\n").encode()


def _body(count=2, names=None) -> bytes:
    names = names if names is not None else ply_property_names(0)
    rows = np.zeros((count, len(names)), "<f4")
    rows[:, names.index("rot_0")] = 1.0
    return rows.tobytes()


def test_the_helpers_make_a_valid_file(tmp_path):
    p = tmp_path / "ok.ply"
    p.write_bytes(_header() + _body())
    g = read_ply(p)
    assert len(g) == 2 and np.all(g.opacities == 0.5)


@pytest.mark.parametrize("content,problem", [
    (b"", "not a PLY file"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "not a PLY file"),
    (b"plyx\nformat ascii 1.0\nend_header\n", "first line is not 'ply'"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\n", "no 'end_header'"),
    (b"ply\n" + b"comment " + b"x" * MAX_HEADER_BYTES + b"\nend_header\n", f"first {MAX_HEADER_BYTES} bytes"),
    (b"ply\nelement vertex 0\nend_header\n", "no 'format' line"),
    (b"ply\nformat binary_middle_endian 1.0\nend_header\n", "unknown format"),
    (b"ply\nformat ascii 2.0\nend_header\n", "unsupported PLY version"),
    (b"ply\nformat ascii 1.0\nelement vertex -3\nend_header\n", "expected 'element <name> <count>'"),
    (b"ply\nformat ascii 1.0\nelement vertex many\nend_header\n", "expected 'element <name> <count>'"),
    (b"ply\nformat ascii 1.0\nproperty float x\nend_header\n", "property before any element"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float\nend_header\n", "expected 'property <type> <name>'"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float x\nend_header\n", "duplicate"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nvertices 2\nend_header\n", "unknown keyword"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty list uchar int\nend_header\n", "property list"),
    (b"ply\nformat ascii 1.0\ncomment \xff\xfe\nend_header\n", "not ASCII"),
    (b"ply\nformat binary_little_endian 1.0\nelement face 1\nproperty float a\nend_header\n" + b"\0" * 4,
     "no 'vertex' element"),
    (_header(types={"x": "float16"}), "unsupported property type 'float16'"),
    (_header(types={"opacity": "uchar"}) + b"\0" * 200, "property opacity must be float or double"),
    (_header(types={"f_rest_0": "int"}, names=ply_property_names(1)) + b"\0" * 600, "f_rest_0 must be float"),
    (_header(extra="property list uchar int idx\n"), "vertex element has a list property"),
    (_header(names=[n for n in ply_property_names(0) if n not in ("scale_1", "rot_3")]),
     "missing vertex properties scale_1, rot_3"),
    (_header(names=ply_property_names(0) + ["f_rest_0", "f_rest_1"]), "2 f_rest_* properties"),
    (_header(names=ply_property_names(0) + [f"f_rest_{i}" for i in range(1, 10)]), "without gaps"),
    (_header(count=10 ** 20), "absurd vertex count"),
    (_header(count=10 ** 9) + _body(), "truncated PLY: the header promises 1000000000 vertices"),
    (_header() + _body()[:-1], "truncated PLY"),
    (_header(fmt="ascii", count=3) + b"0 " * 17 + b"\n", "truncated PLY"),
])
def test_malformed_files_are_refused_with_the_file_named(tmp_path, content, problem):
    p = tmp_path / "bad.ply"
    p.write_bytes(content)
    with pytest.raises(InputError) as e:
        read_ply(p)
    msg = str(e.value)
    assert msg.startswith(str(p) + ": ") and problem in msg, msg
    assert "\n" not in msg


def test_ascii_body_errors(tmp_path):
    names = ply_property_names(0)
    ok_row = " ".join("1" if n == "rot_0" else "0" for n in names)
    cases = {
        "short.ply": (2, ok_row + "\n" + " ".join(["0.000"] * (len(names) - 1)) + "\n",
                      "bad ascii PLY body: vertex 1 has 16 values, expected 17"),
        "word.ply": (1, ok_row.replace("0", "zero", 1) + "\n" + "0 " * 40, "not a number: 'zero'"),
        "blank.ply": (2, ok_row + "\n" + "\n" * 40, "header promises 2 vertices, the file has 1"),
        "nan.ply": (1, ok_row.replace("0", "nan", 1) + "\n", "has NaN or Inf"),
    }
    for fname, (count, body, problem) in cases.items():
        p = tmp_path / fname
        p.write_bytes(_header(fmt="ascii", count=count) + body.encode())
        with pytest.raises(InputError, match=problem):
            read_ply(p)
    p = tmp_path / "good.ply"
    p.write_bytes(_header(fmt="ascii", count=2) + f"{ok_row}\n{ok_row}\n".encode())
    assert len(read_ply(p)) == 2


def test_bad_values_in_a_binary_file(tmp_path):
    names = ply_property_names(0)
    for name, value, problem in [("x", np.nan, "means has NaN or Inf"), ("rot_2", np.inf, r"rot_\* has NaN or Inf"),
                                 ("scale_0", 1000.0, "scales has NaN or Inf"),
                                 ("opacity", np.nan, "opacities has NaN or Inf")]:
        rows = np.frombuffer(_body(), "<f4").reshape(2, -1).copy()
        rows[1, names.index(name)] = value
        p = tmp_path / f"{name}.ply"
        p.write_bytes(_header() + rows.tobytes())
        with pytest.raises(InputError, match=problem):
            read_ply(p)
    # all-zero quaternions are taken as the identity rather than refused
    rows = np.zeros((2, len(names)), "<f4")
    p = tmp_path / "zq.ply"
    p.write_bytes(_header() + rows.tobytes())
    np.testing.assert_array_equal(read_ply(p).quats, [[1, 0, 0, 0]] * 2)


def test_non_canonical_f_rest_names_are_unknown_properties(tmp_path):
    names = ply_property_names(0) + [f"f_rest_0{i}" for i in range(9)]  # "f_rest_00".. is not 3DGS spelling
    p = tmp_path / "odd.ply"
    p.write_bytes(_header(names=names) + _body(names=names))
    g = read_ply(p)
    assert len(g) == 2 and g.sh_degree == 0


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_ply(tmp_path / "nope.ply")
    with pytest.raises(InputError, match="not a file"):
        read_ply(tmp_path)


def test_huge_count_does_not_allocate(tmp_path, monkeypatch):
    """The count is checked against the file size before any read or allocation of that size."""
    calls = []
    monkeypatch.setattr(ply_mod.np, "frombuffer", lambda *a, **k: calls.append(a) or pytest.fail("read"))
    p = tmp_path / "big.ply"
    p.write_bytes(_header(count=2 ** 31) + _body())
    with pytest.raises(InputError, match="truncated"):
        read_ply(p)
    assert calls == []


# ---- atomic writes ------------------------------------------------------------------------------
class _FailOnSecondWrite:
    def __init__(self, f):
        self.f, self.n = f, 0

    def write(self, data):
        self.n += 1
        if self.n == 2:
            self.f.write(data[: len(data) // 2])
            raise OSError("No space left on device")
        return self.f.write(data)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    p = write_ply(make(3), tmp_path / "g.ply")
    before = p.read_bytes()
    real = ply_mod.atomic_write

    @contextlib.contextmanager
    def flaky(path, mode="wb"):
        with real(path, mode) as f:
            yield _FailOnSecondWrite(f)

    monkeypatch.setattr(ply_mod, "atomic_write", flaky)
    with pytest.raises(OSError, match="No space"):
        write_ply(make(50, degree=3), p)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["g.ply"]


def test_write_to_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_ply(make(2), tmp_path / "no" / "g.ply")


# ---- dd3g_sdk.io front door ----------------------------------------------------------------------
def test_read_write_gaussians_dispatch(tmp_path):
    g = make(5, degree=2)
    p = write_gaussians(g, tmp_path / "a.PLY")
    assert p.read_bytes().startswith(b"ply\n")
    assert_same(read_gaussians(p), g)
    s = write_gaussians(g, tmp_path / "a.splat")
    assert s.stat().st_size == 5 * 32 and read_gaussians(s).sh_degree == 0
    forced = write_gaussians(g, tmp_path / "noext", format="ply", pad_sh_degree=3)
    assert read_ply(forced).sh_degree == 3
    with pytest.raises(ValueError, match="PLY files only"):
        write_gaussians(g, tmp_path / "b.splat", pad_sh_degree=3)
    with pytest.raises(InputError, match="unknown file type '.txt'"):
        write_gaussians(g, tmp_path / "b.txt")
    with pytest.raises(InputError, match="unknown format 'obj'"):
        write_gaussians(g, tmp_path / "b.ply", format="obj")
    (tmp_path / "c.obj").write_text("v 0 0 0\n")
    with pytest.raises(InputError, match="unknown Gaussians file type '.obj'"):
        read_gaussians(tmp_path / "c.obj")
    with pytest.raises(InputError, match="file not found"):
        read_gaussians(tmp_path / "missing.ply")
    (tmp_path / "dir.ply").mkdir()
    with pytest.raises(InputError, match="not a file"):
        read_gaussians(tmp_path / "dir.ply")


def test_describe():
    g = make(4)
    g.means[:] = [[0, 0, 0], [1, -1, 0.5], [-2, 3, 0], [0, 0, -1]]
    g.opacities[:] = [0.1, 0.2, 0.3, 0.8]
    g.scales[:] = 0.25
    g.scales[0, 0] = 0.05
    d = describe(g)
    assert d["count"] == 4 and d["sh_degree"] == 1
    assert d["bounds"] == {"min": [-2.0, -1.0, -1.0], "max": [1.0, 3.0, 0.5]}
    assert d["opacity"]["min"] == pytest.approx(0.1) and d["opacity"]["max"] == pytest.approx(0.8)
    assert d["opacity"]["mean"] == pytest.approx(0.35) and d["opacity"]["median"] == pytest.approx(0.25)
    assert d["scale"]["min"] == pytest.approx(0.05) and d["scale"]["median"] == pytest.approx(0.25)
    import json
    json.dumps(d)  # JSON-ready
    e = describe(Gaussians.empty())
    assert e == {"count": 0, "sh_degree": 0, "bounds": None, "opacity": None, "scale": None}
