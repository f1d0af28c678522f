"""`Gaussians`: a set of 3D Gaussians as numpy arrays, in activated (linear) units.

Conventions
- means     [N, 3] float32, world units (the object is normalised to fit the cube [-0.5, 0.5]^3)
- scales    [N, 3] float32, linear standard deviations along the Gaussian's local axes (> 0)
- quats     [N, 4] float32, rotation as (w, x, y, z), unit norm
- opacities [N]    float32, 0..1
- sh        [N, K, 3] float32, spherical-harmonic coefficients, K = (degree + 1)^2 in {1, 4, 9, 16};
            colour = clamp(0.5 + SH(dir) . sh, 0) with the 3DGS real SH basis (sh[:, 0] * C0 is the DC term)
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np

C0 = 0.28209479177387814  # Y_0^0 of the real SH basis
SH_COEFFS = {1: 0, 4: 1, 9: 2, 16: 3}  # K -> degree
# A Gaussian below this opacity never reaches the renderers' alpha cut-off (alpha = opacity * exp(-sigma) < 1/255
# is skipped by the reference rasteriser, gsplat and cuda/): dropping it leaves every pixel as it was.
INVISIBLE_OPACITY = 1.0 / 255.0


def rgb_to_sh0(rgb: np.ndarray) -> np.ndarray:
    return (np.asarray(rgb, np.float32) - 0.5) / C0


def sh0_to_rgb(sh0: np.ndarray) -> np.ndarray:
    return 0.5 + C0 * np.asarray(sh0, np.float32)


@dataclass(eq=False)  # `==` on arrays is ambiguous: compare with allclose(); `==` is identity
class Gaussians:
    means: np.ndarray  # [N, 3]
    scales: np.ndarray  # [N, 3] linear
    quats: np.ndarray  # [N, 4] wxyz, normalised
    opacities: np.ndarray  # [N] in 0..1
    sh: np.ndarray  # [N, K, 3]

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if _is_torch(v):
                v = v.detach().float().cpu().numpy()
            if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating):
                v = np.ascontiguousarray(v, dtype=np.float32)
            setattr(self, f.name, v)
        self.validate()

    # ---- validation -------------------------------------------------------------------------
    def validate(self) -> "Gaussians":
        """Raise ValueError naming the first problem: type, dtype, shape, NaN/Inf, range."""
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, np.ndarray):
                raise ValueError(f"Gaussians.{f.name} must be a numpy array, got {type(v).__name__}")
            if v.dtype != np.float32:
                raise ValueError(f"Gaussians.{f.name} must be floating point, got dtype {v.dtype}")
        n = self.means.shape[0] if self.means.ndim == 2 else -1
        expect = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,)}
        if self.means.ndim != 2 or self.means.shape[1] != 3:
            raise ValueError(f"Gaussians.means must have shape [N, 3], got {list(self.means.shape)}")
        for name, shape in expect.items():
            v = getattr(self, name)
            if v.shape != shape:
                raise ValueError(f"Gaussians.{name} must have shape {list(shape)}, got {list(v.shape)}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3 or self.sh.shape[1] not in SH_COEFFS:
            raise ValueError(f"Gaussians.sh must have shape [N, K, 3] with N={n} and K in (1, 4, 9, 16), "
                             f"got {list(self.sh.shape)}")
        for f in fields(self):
            v = getattr(self, f.name)
            if not np.isfinite(v).all():
                bad = int((~np.isfinite(v)).reshape(v.shape[0], -1).any(1).sum()) if v.ndim else 1
                raise ValueError(f"Gaussians.{f.name} has NaN or Inf values ({bad} Gaussians)")
        if (self.scales < 0).any():
            raise ValueError("Gaussians.scales must be >= 0 (linear standard deviations)")
        if ((self.opacities < 0) | (self.opacities > 1)).any():
            raise ValueError("Gaussians.opacities must lie in [0, 1]")
        if n and np.abs(np.linalg.norm(self.quats, axis=1) - 1).max() > 1e-3:
            raise ValueError("Gaussians.quats must be unit quaternions (w, x, y, z); use normalize_quats()")
        return self

    # ---- properties ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return SH_COEFFS[self.sh.shape[1]]

    @property
    def colors(self) -> np.ndarray:  # [N, 3] view-independent (DC) colour, 0..1
        return np.clip(sh0_to_rgb(self.sh[:, 0]), 0.0, 1.0)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0:
            return np.zeros(3, np.float32), np.zeros(3, np.float32)
        return self.means.min(0), self.means.max(0)

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def empty(cls, sh_degree: int = 0) -> "Gaussians":
        k = (sh_degree + 1) ** 2
        z = np.zeros
        return cls(z((0, 3), np.float32), z((0, 3), np.float32), z((0, 4), np.float32), z((0,), np.float32),
                   z((0, k, 3), np.float32))

    @classmethod
    def from_colors(cls, means, scales, quats, opacities, colors, sh_degree: int = 0) -> "Gaussians":
        """Build from RGB colours in 0..1 (higher SH bands zero)."""
        colors = np.asarray(colors, np.float32)
        sh = np.zeros((colors.shape[0], (sh_degree + 1) ** 2, 3), np.float32)
        sh[:, 0] = rgb_to_sh0(colors)
        return cls(np.asarray(means, np.float32), np.asarray(scales, np.float32),
                   normalize_quats(np.asarray(quats, np.float32)), np.asarray(opacities, np.float32), sh)

    @classmethod
    def concatenate(cls, items: Sequence["Gaussians"]) -> "Gaussians":
        if not items:
            raise ValueError("Gaussians.concatenate needs at least one item")
        k = max(g.sh.shape[1] for g in items)
        return cls(*(np.concatenate([getattr(g, f.name) for g in items]) if f.name != "sh"
                     else np.concatenate([g.with_sh_degree(SH_COEFFS[k]).sh for g in items])
                     for f in fields(cls)))

    # ---- selection ---------------------------------------------------------------------------
    def __getitem__(self, idx: Any) -> "Gaussians":
        """Index with an int array, a boolean mask or a slice."""
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        return Gaussians(*(np.ascontiguousarray(getattr(self, f.name)[idx]) for f in fields(self)))

    def crop(self, lo: Sequence[float], hi: Sequence[float]) -> "Gaussians":
        """Keep the Gaussians whose centre lies in the axis-aligned box [lo, hi]."""
        lo_, hi_ = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
        return self[np.all((self.means >= lo_) & (self.means <= hi_), axis=1)]

    def prune(self, min_opacity: float = 0.005) -> "Gaussians":
        """Drop the Gaussians with opacity below `min_opacity` (`INVISIBLE_OPACITY`: only those that no renderer
        draws)."""
        return self[self.opacities >= min_opacity]

    def with_sh_degree(self, degree: int) -> "Gaussians":
        """Truncate or zero-pad the SH coefficients to `degree`."""
        k = (degree + 1) ** 2
        sh = np.zeros((len(self), k, 3), np.float32)
        m = min(k, self.sh.shape[1])
        sh[:, :m] = self.sh[:, :m]
        return Gaussians(self.means, self.scales, self.quats, self.opacities, sh)

    # ---- torch interop -------------------------------------------------------------------------
    def to_torch(self, device: Any = "cpu") -> dict:
        """A dict of float32 torch tensors with the same names and shapes."""
        import torch

        return {f.name: torch.from_numpy(np.ascontiguousarray(getattr(self, f.name))).to(device)
                for f in fields(self)}

    @classmethod
    def from_torch(cls, means, scales, quats, opacities, sh) -> "Gaussians":
        """From torch tensors (any device/dtype) of one object; detaches and copies to host."""
        return cls(*(t.detach().float().cpu().numpy() for t in (means, scales, quats, opacities, sh)))

    def allclose(self, other: "Gaussians", rtol: float = 1e-5, atol: float = 1e-6) -> bool:
        return len(self) == len(other) and all(
            np.allclose(getattr(self, f.name), getattr(other, f.name), rtol=rtol, atol=atol) for f in fields(self))


def normalize_quats(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, np.float32)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    out = np.where(n > 0, q / np.maximum(n, 1e-12), np.array([1, 0, 0, 0], np.float32))
    return out.astype(np.float32)


def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """[..., 4] (w, x, y, z) unit quaternions -> [..., 3, 3] rotation matrices."""
    w, x, y, z = np.moveaxis(np.asarray(q, np.float64), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def _is_torch(v: Any) -> bool:
    return type(v).__module__.startswith("torch") and hasattr(v, "detach")
