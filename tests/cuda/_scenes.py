"""Small random scenes shared by the CUDA rasteriser tests (numpy; no torch, no GPU)."""
from __future__ import annotations

import numpy as np

from dd3g_sdk.cameras import orbit_camera


def random_scene(n: int, sh_coeffs: int, seed: int, spread: float = 0.6, scale: tuple[float, float] = (0.01, 0.08),
                 elongated: bool = True) -> dict[str, np.ndarray]:
    """n Gaussians in a ball of radius `spread` around the origin: means, quats (unit), scales, opacities, sh."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    means = d * spread * rng.uniform(0, 1, size=(n, 1)) ** (1 / 3)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    s = np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]), size=(n, 3)))
    if elongated:  # one thin axis: flat, rotated splats exercise the off-diagonal conic terms
        s[:, 2] *= rng.uniform(0.05, 1.0, size=n)
    opac = rng.uniform(0.05, 1.0, size=n)
    sh = rng.normal(scale=0.4, size=(n, sh_coeffs, 3))
    sh[:, 0] = rng.uniform(-1.5, 1.5, size=(n, 3))
    f = np.float32
    return {"means": means.astype(f), "quats": q.astype(f), "scales": s.astype(f), "opacities": opac.astype(f),
            "sh": sh.astype(f)}


def cameras(count: int, width: int, height: int, radius: float = 2.0, fov: float = 40.0):
    """`count` orbit cameras around the origin -> (viewmats [C,4,4] float32, Ks [C,3,3] float32)."""
    cams = [orbit_camera(37.0 + 360.0 * k / count, 15.0 + 10 * k, radius, fov, width, height) for k in range(count)]
    return (np.stack([c.world_to_cam for c in cams]).astype(np.float32),
            np.stack([c.K for c in cams]).astype(np.float32))
