"""Cameras, in one convention used everywhere in dd3g-sdk.

Camera frame: OpenCV. x right, y down, z forward (into the scene).
`world_to_cam` is a 4x4 rigid transform (x_cam = R x_world + t). Intrinsics fx, fy, cx, cy are in pixels;
pixel (row i, column j) covers [j, j+1) x [i, i+1) and its centre is at (j + 0.5, i + 0.5).

World frame: right-handed, +y up. Objects are normalised to fit the cube [-0.5, 0.5]^3, centred on the
origin. Orbit cameras look at the origin from
    position = radius * (cos(el) sin(az), sin(el), cos(el) cos(az)),
so azimuth 0 looks down -z from +z, azimuth 90 looks from +x, and positive elevation looks from above.

The input image is taken by view 0 of the model's view set (azimuth 0, the model's elevation); the other
views are at azimuths 90, 180, 270 for a 4-view set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Camera:
    world_to_cam: np.ndarray  # [4, 4] float64
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def K(self) -> np.ndarray:  # [3, 3]
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], np.float64)

    @property
    def cam_to_world(self) -> np.ndarray:  # [4, 4]
        R, t = self.world_to_cam[:3, :3], self.world_to_cam[:3, 3]
        m = np.eye(4)
        m[:3, :3] = R.T
        m[:3, 3] = -R.T @ t
        return m

    @property
    def position(self) -> np.ndarray:  # [3]
        return self.cam_to_world[:3, 3]

    def resized(self, width: int, height: int) -> "Camera":
        """The same camera at another resolution (intrinsics scaled)."""
        sx, sy = width / self.width, height / self.height
        return Camera(self.world_to_cam, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """points [N, 3] world -> (pixels [N, 2] (x, y), depth [N] along +z)."""
        p = np.asarray(points, np.float64) @ self.world_to_cam[:3, :3].T + self.world_to_cam[:3, 3]
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([self.fx * p[:, 0] / z + self.cx, self.fy * p[:, 1] / z + self.cy], -1)
        return uv, z

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel ray origins and unit directions in world space: ([H, W, 3], [H, W, 3])."""
        j, i = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        d_cam = np.stack([(j - self.cx) / self.fx, (i - self.cy) / self.fy, np.ones_like(j)], -1)
        c2w = self.cam_to_world
        d = d_cam @ c2w[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        return np.broadcast_to(c2w[:3, 3], d.shape).copy(), d


def look_at(eye: Sequence[float], target: Sequence[float] = (0, 0, 0), up: Sequence[float] = (0, 1, 0)) -> np.ndarray:
    """World-to-camera [4, 4] of an OpenCV camera at `eye` looking at `target`, with world `up` upwards."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    z = target - eye
    if np.linalg.norm(z) == 0:
        raise ValueError(f"look_at: eye and target are the same point {eye.tolist()}")
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:  # looking straight along `up`: pick any perpendicular
        x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    m = np.eye(4)
    m[:3, :3] = R
    m[:3, 3] = -R @ eye
    return m


def intrinsics_from_fov(fov_deg: float, width: int, height: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a pinhole camera with vertical field of view `fov_deg` and square pixels."""
    fy = 0.5 * height / math.tan(math.radians(fov_deg) / 2)
    return fy, fy, width / 2, height / 2


def orbit_camera(azimuth_deg: float, elevation_deg: float, radius: float = 2.0, fov_deg: float = 40.0,
                 width: int = 256, height: int = 256) -> Camera:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    eye = radius * np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    return Camera(look_at(eye), *intrinsics_from_fov(fov_deg, width, height), width, height)


@dataclass(frozen=True)
class ViewSetConfig:
    """The fixed cameras that the teacher renders and PEPD predicts for. View 0 is the input view."""
    num_views: int = 4
    elevation_deg: float = 20.0
    radius: float = 2.0
    fov_deg: float = 40.0

    def azimuths(self) -> list[float]:
        return [360.0 * v / self.num_views for v in range(self.num_views)]

    def cameras(self, width: int, height: int) -> list[Camera]:
        return [orbit_camera(a, self.elevation_deg, self.radius, self.fov_deg, width, height)
                for a in self.azimuths()]


def turntable(n: int, elevation_deg: float = 20.0, radius: float = 2.0, fov_deg: float = 40.0,
              width: int = 256, height: int = 256, start_deg: float = 0.0) -> list[Camera]:
    """`n` cameras evenly spaced in azimuth around the object."""
    return [orbit_camera(start_deg + 360.0 * k / n, elevation_deg, radius, fov_deg, width, height) for k in range(n)]


def stack_viewmats(cams: Sequence[Camera]) -> np.ndarray:  # [C, 4, 4] float32
    return np.stack([c.world_to_cam for c in cams]).astype(np.float32)


def stack_intrinsics(cams: Sequence[Camera]) -> np.ndarray:  # [C, 3, 3] float32
    return np.stack([c.K for c in cams]).astype(np.float32)
