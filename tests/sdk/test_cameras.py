"""dd3g_sdk.cameras: OpenCV axes, look_at, projection, rays through pixel centres, view sets."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dd3g_sdk.cameras import (Camera, ViewSetConfig, intrinsics_from_fov, look_at, orbit_camera, stack_intrinsics,
                              stack_viewmats, turntable)


@pytest.mark.parametrize("eye,up", [((0, 0, 2), (0, 1, 0)), ((1.3, 0.7, -0.4), (0, 1, 0)),
                                    ((0, 3, 0), (0, 1, 0)), ((0.2, -1, 0.5), (0, 0, 1))])
def test_look_at_is_rigid_and_looks_at_the_target(eye, up):
    target = np.array([0.1, -0.2, 0.3])
    m = look_at(eye, target, up)
    R, t = m[:3, :3], m[:3, 3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)  # right-handed
    np.testing.assert_allclose(m[3], [0, 0, 0, 1])
    np.testing.assert_allclose(R @ np.asarray(eye) + t, 0, atol=1e-12)  # the eye is the camera origin
    tc = R @ target + t
    np.testing.assert_allclose(tc[:2], 0, atol=1e-12)  # the target is on the optical axis ...
    assert tc[2] > 0  # ... in front (OpenCV: +z forward)


def test_look_at_same_point_is_an_error():
    with pytest.raises(ValueError, match="same point"):
        look_at((1, 2, 3), (1, 2, 3))


def test_look_at_up_is_minus_y_in_camera():
    m = look_at((1.0, 0.5, 2.0))
    up_cam = m[:3, :3] @ np.array([0, 1, 0])
    assert up_cam[1] < 0  # world up points towards smaller image y
    assert abs(up_cam[0]) < 1e-12  # and has no sideways component (no roll)


def test_azimuth_0_camera_opencv_axes():
    cam = orbit_camera(0, 0, radius=2.0, fov_deg=40, width=64, height=64)
    np.testing.assert_allclose(cam.position, [0, 0, 2], atol=1e-12)
    R = cam.world_to_cam[:3, :3]
    np.testing.assert_allclose(R, np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    uv, z = cam.project(np.array([[0, 0, 0], [0.2, 0, 0], [0, 0.2, 0]], np.float64))
    assert uv[1, 0] > uv[0, 0] and uv[1, 1] == pytest.approx(uv[0, 1])  # world +x -> to the right
    assert uv[2, 1] < uv[0, 1] and uv[2, 0] == pytest.approx(uv[0, 0])  # world +y -> up (smaller pixel y)
    np.testing.assert_allclose(z, 2.0)


def test_orbit_positions_follow_the_documented_formula():
    for az, el in [(90, 0), (180, 0), (270, 30), (45, -20)]:
        cam = orbit_camera(az, el, radius=1.5)
        a, e = math.radians(az), math.radians(el)
        expect = 1.5 * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
        np.testing.assert_allclose(cam.position, expect, atol=1e-12)
    # azimuth 90 sits on +x; positive elevation looks down on the object
    assert orbit_camera(90, 0).position[0] == pytest.approx(2.0)
    assert orbit_camera(0, 20).world_to_cam[2, :3] @ [0, -1, 0] > 0


def test_project_origin_lands_on_principal_point():
    cam = orbit_camera(37, 20, width=96, height=64)
    uv, z = cam.project(np.zeros((1, 3)))
    np.testing.assert_allclose(uv[0], [cam.cx, cam.cy], atol=1e-9)
    assert (cam.cx, cam.cy) == (48.0, 32.0)
    assert z[0] == pytest.approx(2.0)


def test_project_matches_K_times_camera_point():
    cam = orbit_camera(120, 10, width=80, height=60)
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (10, 3))
    uv, z = cam.project(pts)
    pc = pts @ cam.world_to_cam[:3, :3].T + cam.world_to_cam[:3, 3]
    h = pc @ cam.K.T
    np.testing.assert_allclose(uv, h[:, :2] / h[:, 2:], rtol=1e-12)
    np.testing.assert_allclose(z, pc[:, 2])


def test_intrinsics_from_fov():
    fx, fy, cx, cy = intrinsics_from_fov(90.0, 100, 50)
    assert fy == pytest.approx(25.0) and fx == fy and (cx, cy) == (50.0, 25.0)


def test_rays_pass_through_pixel_centres():
    cam = orbit_camera(30, 20, width=8, height=6)
    o, d = cam.rays()
    assert o.shape == (6, 8, 3) and d.shape == (6, 8, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(o, np.broadcast_to(cam.position, o.shape))
    # A point along the ray of (row i, col j) projects to the pixel centre (j + 0.5, i + 0.5).
    i, j = np.mgrid[0:6, 0:8]
    pts = (o + 1.7 * d).reshape(-1, 3)
    uv, z = cam.project(pts)
    np.testing.assert_allclose(uv[:, 0], j.ravel() + 0.5, atol=1e-9)
    np.testing.assert_allclose(uv[:, 1], i.ravel() + 0.5, atol=1e-9)
    assert (z > 0).all()


def test_central_ray_of_even_image_passes_near_the_origin():
    cam = orbit_camera(0, 0, width=2, height=2)  # principal point at the shared corner of 4 pixels
    o, d = cam.rays()
    mean_dir = d.reshape(-1, 3).mean(0)
    mean_dir /= np.linalg.norm(mean_dir)
    np.testing.assert_allclose(mean_dir, -cam.position / np.linalg.norm(cam.position), atol=1e-12)


def test_resized_scales_intrinsics_and_keeps_pixel_geometry():
    cam = orbit_camera(10, 20, width=64, height=48)
    big = cam.resized(128, 96)
    assert (big.width, big.height) == (128, 96)
    assert big.fx == 2 * cam.fx and big.cx == 2 * cam.cx and big.cy == 2 * cam.cy
    np.testing.assert_array_equal(big.world_to_cam, cam.world_to_cam)
    pts = np.random.default_rng(1).uniform(-0.5, 0.5, (5, 3))
    np.testing.assert_allclose(big.project(pts)[0], 2 * cam.project(pts)[0], rtol=1e-12)
    # the same ray: pixel (0, 0) of the small image covers pixels (0..1, 0..1) of the big one
    d_small = cam.rays()[1][0, 0]
    d_big = big.rays()[1][:2, :2].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(d_big / np.linalg.norm(d_big), d_small, atol=1e-4)


def test_cam_to_world_inverts_world_to_cam():
    cam = orbit_camera(200, -15)
    np.testing.assert_allclose(cam.cam_to_world @ cam.world_to_cam, np.eye(4), atol=1e-12)


def test_view_set_defaults_and_cameras():
    vs = ViewSetConfig()
    assert (vs.num_views, vs.elevation_deg, vs.radius, vs.fov_deg) == (4, 20.0, 2.0, 40.0)
    assert vs.azimuths() == [0.0, 90.0, 180.0, 270.0]
    assert ViewSetConfig(num_views=6).azimuths() == pytest.approx([0, 60, 120, 180, 240, 300])
    cams = vs.cameras(32, 32)
    assert len(cams) == 4
    for cam, az in zip(cams, vs.azimuths()):
        ref = orbit_camera(az, 20.0, 2.0, 40.0, 32, 32)
        np.testing.assert_allclose(cam.world_to_cam, ref.world_to_cam)
        assert np.linalg.norm(cam.position) == pytest.approx(2.0)
    # view 0 is the input view: in front (+z), above
    assert cams[0].position[2] > 0 and cams[0].position[1] > 0
    vm, Ks = stack_viewmats(cams), stack_intrinsics(cams)
    assert vm.shape == (4, 4, 4) and vm.dtype == np.float32
    assert Ks.shape == (4, 3, 3) and Ks.dtype == np.float32
    np.testing.assert_allclose(Ks[0], cams[0].K)


def test_turntable():
    cams = turntable(8, width=16, height=16, start_deg=45)
    assert len(cams) == 8
    for k, c in enumerate(cams):
        a = math.radians(45 + 45 * k)
        horiz = c.position[[0, 2]] / np.linalg.norm(c.position[[0, 2]])  # (sin az, cos az)
        np.testing.assert_allclose(horiz, [math.sin(a), math.cos(a)], atol=1e-12)


def test_camera_is_frozen():
    cam = orbit_camera(0, 0)
    with pytest.raises(Exception):
        cam.fx = 1.0  # type: ignore[misc]
    assert isinstance(cam, Camera)
