"""INRIA 3D Gaussian Splatting PLY files (the layout of the original 3DGS code and most viewers).

One `vertex` element, one row per Gaussian, every property a 32-bit float, in this order:

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{3*(K-1)-1} opacity scale_0 scale_1 scale_2
    rot_0 rot_1 rot_2 rot_3

- f_dc_c = sh[:, 0, c] (colour = 0.5 + C0 * f_dc).
- f_rest is channel-major: all K-1 coefficients of bands >= 1 for R, then all for G, then all for B, i.e.
  f_rest_{c*(K-1) + k-1} = sh[:, k, c].
- opacity is stored as a logit, scale_i as log(linear std-dev), rot_0..3 = (w, x, y, z) (not necessarily
  normalised), nx ny nz are zero.

`write_ply` writes binary little-endian. `read_ply` reads binary little/big-endian and ascii, finds
properties by name (any order; unknown ones are ignored), and activates: sigmoid(opacity), exp(scale),
normalised quaternions. It never trusts the header: the header size is capped and the vertex count is
checked against the file size before anything is allocated.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np

from .._fileio import atomic_write, existing_file
from ..errors import InputError
from ..gaussians import SH_COEFFS, Gaussians

# Clamp before logit/log so that opacity 0 or 1 and scale 0 are stored as finite numbers.
OPACITY_EPS = 1e-7  # opacity is clamped to [OPACITY_EPS, 1 - OPACITY_EPS]: logits within about +-16.1
SCALE_MIN = 1e-10  # linear scales are clamped to >= SCALE_MIN: log-scales >= about -23

MAX_HEADER_BYTES = 1 << 16  # a 3DGS header is ~1.5 KB; more than this is not a file we want to parse
MAX_VERTICES = 1 << 31  # far beyond any real scene, and keeps count * row size well inside int64

# PLY scalar type names (both spellings) -> numpy type code.
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": "ascii"}
_REQUIRED = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]
_END_HEADER = re.compile(rb"(?:^|\n)end_header[ \t]*\r?\n")
_REST = re.compile(r"f_rest_(0|[1-9][0-9]{0,5})")  # canonical spelling only; "f_rest_01" is an unknown property


def ply_property_names(sh_degree: int) -> list[str]:
    """The property names, in file order, of a 3DGS PLY with SH degree `sh_degree`."""
    k = (sh_degree + 1) ** 2
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * (k - 1))]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def ply_rows(g: Gaussians) -> np.ndarray:
    """The [N, P] float32 table that `write_ply` stores (columns as `ply_property_names(g.sh_degree)`)."""
    n, k = len(g), g.sh.shape[1]
    p = np.clip(g.opacities.astype(np.float64), OPACITY_EPS, 1.0 - OPACITY_EPS)
    cols = [
        g.means,
        np.zeros((n, 3), np.float32),  # normals: unused by 3DGS, kept for the layout
        g.sh[:, 0, :],
        g.sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1)),  # channel-major
        (np.log(p) - np.log1p(-p))[:, None],  # logit
        np.log(np.maximum(g.scales.astype(np.float64), SCALE_MIN)),
        g.quats,
    ]
    return np.concatenate([np.asarray(c, np.float32) for c in cols], axis=1)


def write_ply(g: Gaussians, path: str | os.PathLike, pad_sh_degree: int | None = None) -> Path:
    """Write `g` as a binary little-endian 3DGS PLY, atomically.

    pad_sh_degree: if given (0..3), zero-pad the SH coefficients up to this degree (some viewers only accept
    degree 3 files). It never truncates: a value below `g.sh_degree` is a ValueError.
    """
    g.validate()
    if pad_sh_degree is not None:
        if pad_sh_degree not in SH_COEFFS.values():
            raise ValueError(f"pad_sh_degree must be 0, 1, 2 or 3, got {pad_sh_degree}")
        if pad_sh_degree < g.sh_degree:
            raise ValueError(f"pad_sh_degree={pad_sh_degree} is below the Gaussians' SH degree {g.sh_degree}; "
                             "use Gaussians.with_sh_degree() to truncate")
        g = g.with_sh_degree(pad_sh_degree)
    names = ply_property_names(g.sh_degree)
    header = "".join(["ply\n", "format binary_little_endian 1.0\n", "comment dd3g-sdk 3D Gaussians\n",
                      f"element vertex {len(g)}\n", *(f"property float {nm}\n" for nm in names), "end_header\n"])
    rows = ply_rows(g)
    with atomic_write(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rows.astype("<f4", copy=False).tobytes())
    return Path(path)


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
class _Element:
    def __init__(self, name: str, count: int):
        self.name, self.count = name, count
        self.props: list[tuple[str, str]] = []  # (name, numpy type code)
        self.has_list = False

    def row_size(self) -> int:
        return sum(int(t[1]) for _, t in self.props)


def _parse_header(path: Path, head: bytes) -> tuple[str, list[_Element], int]:
    """-> (format: '<', '>' or 'ascii', elements, byte offset of the body)."""
    if not head.startswith(b"ply"):
        raise InputError(path, "not a PLY file (it does not start with 'ply')")
    m = _END_HEADER.search(head)
    if m is None:
        if len(head) >= MAX_HEADER_BYTES:
            raise InputError(path, f"bad PLY header: no 'end_header' in the first {MAX_HEADER_BYTES} bytes")
        raise InputError(path, "bad PLY header: no 'end_header' line (truncated file?)")
    try:
        text = head[:m.start()].decode("ascii")
    except UnicodeDecodeError:
        raise InputError(path, "bad PLY header: it is not ASCII text") from None
    lines = text.replace("\r", "").split("\n")
    if lines[0].strip() != "ply":
        raise InputError(path, "not a PLY file (first line is not 'ply')")
    fmt = None
    elements: list[_Element] = []
    for no, line in enumerate(lines[1:], start=2):
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        where = f"bad PLY header line {no} {line.strip()!r}"
        if tok[0] == "format":
            if len(tok) != 3 or tok[1] not in _FORMATS:
                raise InputError(path, f"{where}: unknown format (expected ascii, binary_little_endian "
                                       "or binary_big_endian)")
            if tok[2] != "1.0":
                raise InputError(path, f"{where}: unsupported PLY version {tok[2]}")
            fmt = _FORMATS[tok[1]]
        elif tok[0] == "element":
            if len(tok) != 3 or not re.fullmatch(r"\d{1,30}", tok[2]):
                raise InputError(path, f"{where}: expected 'element <name> <count>'")
            elements.append(_Element(tok[1], int(tok[2])))
        elif tok[0] == "property":
            if not elements:
                raise InputError(path, f"{where}: property before any element")
            el = elements[-1]
            if len(tok) >= 2 and tok[1] == "list":
                if len(tok) != 5 or tok[2] not in _PLY_TYPES or tok[3] not in _PLY_TYPES:
                    raise InputError(path, f"{where}: expected 'property list <type> <type> <name>'")
                el.has_list = True
                el.props.append((tok[4], "list"))
                continue
            if len(tok) != 3:
                raise InputError(path, f"{where}: expected 'property <type> <name>'")
            if tok[1] not in _PLY_TYPES:
                raise InputError(path, f"{where}: unsupported property type {tok[1]!r}")
            if any(nm == tok[2] for nm, _ in el.props):
                raise InputError(path, f"{where}: duplicate property {tok[2]!r}")
            el.props.append((tok[2], _PLY_TYPES[tok[1]]))
        else:
            raise InputError(path, f"{where}: unknown keyword {tok[0]!r}")
    if fmt is None:
        raise InputError(path, "bad PLY header: no 'format' line")
    return fmt, elements, m.end()


def _vertex_element(path: Path, elements: list[_Element]) -> tuple[int, _Element]:
    idx = [i for i, e in enumerate(elements) if e.name == "vertex"]
    if not idx:
        raise InputError(path, "PLY file has no 'vertex' element")
    v = elements[idx[0]]
    if v.has_list:
        raise InputError(path, "unsupported PLY: the vertex element has a list property")
    if v.count > MAX_VERTICES:
        raise InputError(path, f"absurd vertex count {v.count} (more than {MAX_VERTICES})")
    names = {nm for nm, _ in v.props}
    missing = [nm for nm in _REQUIRED if nm not in names]
    if missing:
        raise InputError(path, f"not a 3D Gaussian PLY: missing vertex properties {', '.join(missing)}")
    for nm, t in v.props:
        if (nm in _REQUIRED or _REST.fullmatch(nm)) and t not in ("f4", "f8"):
            raise InputError(path, f"unsupported PLY: property {nm} must be float or double")
    return idx[0], v


def _sh_rest_count(path: Path, names: set[str]) -> int:
    rest = sorted(int(m.group(1)) for m in map(_REST.fullmatch, names) if m)
    if rest != list(range(len(rest))):
        raise InputError(path, "bad f_rest_* properties: they must be numbered 0, 1, 2, ... without gaps")
    if len(rest) not in (0, 9, 24, 45):
        raise InputError(path, f"bad SH: {len(rest)} f_rest_* properties (expected 0, 9, 24 or 45 for degree 0-3)")
    return len(rest)


def read_ply(path: str | os.PathLike) -> Gaussians:
    """Read a 3DGS PLY (binary little/big-endian or ascii, SH degree 0-3) into activated `Gaussians`."""
    p = existing_file(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        fmt, elements, body_at = _parse_header(p, f.read(MAX_HEADER_BYTES))
        vi, v = _vertex_element(p, elements)
        names = [nm for nm, _ in v.props]
        n_rest = _sh_rest_count(p, set(names))
        if fmt == "ascii":
            table = _read_ascii_body(p, f, body_at, size, elements, vi)
        else:
            table = _read_binary_body(p, f, fmt, body_at, size, elements, vi)
    return _to_gaussians(p, table, n_rest)


def _read_binary_body(path: Path, f, endian: str, body_at: int, size: int, elements: list[_Element],
                      vi: int) -> dict[str, np.ndarray]:
    offset = body_at
    for e in elements[:vi]:  # skip the elements stored before the vertices
        if e.has_list:
            raise InputError(path, f"unsupported PLY: element {e.name!r} with a list property comes before 'vertex'")
        offset += e.count * e.row_size()
    v = elements[vi]
    need = v.count * v.row_size()
    if offset + need > size:  # checked before reading or allocating anything of the claimed size
        raise InputError(path, f"truncated PLY: the header promises {v.count} vertices ({offset + need} bytes "
                               f"in all) but the file has {size} bytes")
    dtype = np.dtype([(nm, endian + t) for nm, t in v.props])
    f.seek(offset)
    data = np.frombuffer(f.read(need), dtype=dtype, count=v.count)
    return {nm: data[nm] for nm in dtype.names}


def _read_ascii_body(path: Path, f, body_at: int, size: int, elements: list[_Element],
                     vi: int) -> dict[str, np.ndarray]:
    v = elements[vi]
    # Every value takes at least one character and one separator.
    if 2 * v.count * len(v.props) - 1 > size - body_at:
        raise InputError(path, f"truncated PLY: the header promises {v.count} vertices but the file is too small")
    f.seek(body_at)
    try:
        text = f.read().decode("ascii")
    except UnicodeDecodeError:
        raise InputError(path, "bad ascii PLY body: not ASCII text") from None
    # One item per line (list elements included), so elements before the vertices are skipped by lines.
    lines = (tok for tok in (ln.split() for ln in io.StringIO(text)) if tok)  # blank lines ignored
    for _ in range(sum(e.count for e in elements[:vi])):
        if next(lines, None) is None:
            raise InputError(path, "truncated PLY: the file ends before the vertex element")
    width = len(v.props)
    table = np.empty((v.count, width), np.float64)  # at most ~4x the file size (checked above)
    for r in range(v.count):
        tok = next(lines, None)
        if tok is None:
            raise InputError(path, f"truncated PLY: the header promises {v.count} vertices, the file has {r}")
        if len(tok) != width:
            raise InputError(path, f"bad ascii PLY body: vertex {r} has {len(tok)} values, expected {width}")
        try:
            table[r] = [float(x) for x in tok]
        except ValueError:
            bad = next(x for x in tok if not _is_float(x))
            raise InputError(path, f"bad ascii PLY body: vertex {r} has a value that is not a number: "
                                   f"{bad[:20]!r}") from None
    return {nm: table[:, i] for i, (nm, _) in enumerate(v.props)}


def _is_float(x: str) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def _to_gaussians(path: Path, t: dict[str, np.ndarray], n_rest: int) -> Gaussians:
    def col(*names: str) -> np.ndarray:
        return np.stack([np.asarray(t[nm], np.float64) for nm in names], axis=1)

    n = len(t["x"])
    k = 1 + n_rest // 3
    sh = np.empty((n, k, 3), np.float64)
    sh[:, 0] = col("f_dc_0", "f_dc_1", "f_dc_2")
    if n_rest:
        rest = col(*(f"f_rest_{i}" for i in range(n_rest)))  # [N, 3*(K-1)], channel-major
        sh[:, 1:] = rest.reshape(n, 3, k - 1).transpose(0, 2, 1)
    quats = col("rot_0", "rot_1", "rot_2", "rot_3")
    if not np.isfinite(quats).all():
        raise InputError(path, "bad Gaussians: rot_* has NaN or Inf values")
    norm = np.linalg.norm(quats, axis=1, keepdims=True)  # in float64: no overflow for huge stored values
    quats = np.where(norm > 0, quats / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    # Overflow (exp of a huge log-scale, float64 -> float32 casts) becomes Inf, which validation refuses.
    with np.errstate(over="ignore", invalid="ignore"):
        opacities = 1.0 / (1.0 + np.exp(-np.clip(col("opacity")[:, 0], -100.0, 100.0)))  # NaN stays NaN
        scales = np.exp(col("scale_0", "scale_1", "scale_2"))
        arrays = [a.astype(np.float32) for a in (col("x", "y", "z"), scales, quats, opacities, sh)]
    try:
        return Gaussians(*arrays)
    except ValueError as e:  # NaN/Inf or out-of-range values stored in the file
        raise InputError(path, f"bad Gaussians: {e}") from None
