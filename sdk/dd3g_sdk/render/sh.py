"""Real spherical harmonics, degrees 0..3, in the 3DGS basis and sign convention.

colour = 0.5 + sum_k Y_k(dir) * sh[k]  (the caller adds the 0.5 and clamps at 0)

Coefficient order (k) and basis, for a unit direction (x, y, z):
    k=0       C0
    k=1..3    -C1 y,  C1 z,  -C1 x
    k=4..8    C2a xy,  -C2a yz,  C2b (2z^2 - x^2 - y^2),  -C2a xz,  C2c (x^2 - y^2)
    k=9..15   the 7 cubic terms below (3DGS / gsplat order and signs)
This is the orthonormal real basis (integral over the sphere of Y_i Y_j = delta_ij) with the sign pattern of
the original 3DGS code, which gsplat 1.5.3 also uses.

Works on numpy arrays and torch tensors alike (only arithmetic and indexing), so that the runtime can colour
Gaussians without torch and the rasteriser can differentiate through it.
"""
from __future__ import annotations

from typing import Any

C0 = 0.28209479177387814  # 1 / (2 sqrt(pi))
C1 = 0.4886025119029199  # sqrt(3 / (4 pi))
C2 = (1.0925484305920792, 0.31539156525252005, 0.5462742152960396)  # sqrt(15/4pi), sqrt(5/16pi), sqrt(15/16pi)
C3 = (0.5900435899266435, 2.890611442640554, 0.4570457994644658, 0.3731763325901154, 1.445305721320277)

NUM_COEFFS = {0: 1, 1: 4, 2: 9, 3: 16}


def eval_sh(degree: int, sh: Any, dirs: Any) -> Any:
    """Sum of the SH basis at `dirs` weighted by `sh`: [N, 3] (no +0.5, no clamp).

    degree: 0..3; uses the first (degree + 1)^2 coefficients of `sh`.
    sh:     [N, K, 3] coefficients, K >= (degree + 1)^2.
    dirs:   [N, 3] view directions (any length > 0; normalised here). In 3DGS/gsplat the direction is
            mean - camera centre, i.e. from the camera towards the Gaussian.
    """
    if degree not in NUM_COEFFS:
        raise ValueError(f"SH degree must be 0..3, got {degree}")
    if sh.shape[-2] < NUM_COEFFS[degree]:
        raise ValueError(f"SH degree {degree} needs {NUM_COEFFS[degree]} coefficients, sh has {sh.shape[-2]}")
    out = C0 * sh[..., 0, :]
    if degree == 0:
        return out
    # Normalise without a library call so numpy and torch share the code; the epsilon only guards a zero
    # direction (a Gaussian exactly at the camera centre), where gsplat would produce NaN.
    inv_norm = 1.0 / ((dirs[..., 0:1] ** 2 + dirs[..., 1:2] ** 2 + dirs[..., 2:3] ** 2) ** 0.5 + 1e-20)
    x, y, z = dirs[..., 0:1] * inv_norm, dirs[..., 1:2] * inv_norm, dirs[..., 2:3] * inv_norm
    out = out + C1 * (-y * sh[..., 1, :] + z * sh[..., 2, :] - x * sh[..., 3, :])
    if degree == 1:
        return out
    xx, yy, zz = x * x, y * y, z * z
    out = (out
           + C2[0] * x * y * sh[..., 4, :]
           - C2[0] * y * z * sh[..., 5, :]
           + C2[1] * (2 * zz - xx - yy) * sh[..., 6, :]
           - C2[0] * x * z * sh[..., 7, :]
           + C2[2] * (xx - yy) * sh[..., 8, :])
    if degree == 2:
        return out
    return (out
            - C3[0] * y * (3 * xx - yy) * sh[..., 9, :]
            + C3[1] * x * y * z * sh[..., 10, :]
            - C3[2] * y * (4 * zz - xx - yy) * sh[..., 11, :]
            + C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12, :]
            - C3[2] * x * (4 * zz - xx - yy) * sh[..., 13, :]
            + C3[4] * z * (xx - yy) * sh[..., 14, :]
            - C3[0] * x * (xx - 3 * yy) * sh[..., 15, :])
