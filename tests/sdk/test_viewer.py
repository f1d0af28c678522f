"""Tests of `dd3g view` (dd3g_sdk.viewer).

    OMP_NUM_THREADS=1 python -m pytest tests/sdk/test_viewer.py -q

The unit tests need no browser. `test_browser_*` drives Debian's headless Chromium through selenium and its
chromedriver (apt-get install -y chromium chromium-driver; pip install selenium); it skips, saying why, only when
one of those is missing. WebGL runs on SwiftShader (software), so no GPU is needed.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("viser", reason="viser not installed (pip install 'dd3g-sdk[view]')")

from dd3g_sdk.cameras import Camera  # noqa: E402
from dd3g_sdk.errors import InputError  # noqa: E402
from dd3g_sdk.gaussians import Gaussians, quat_to_rotmat  # noqa: E402
from dd3g_sdk.io import write_gaussians  # noqa: E402
from dd3g_sdk.viewer import (  # noqa: E402
    ViewerHandle, add_view_arguments, find_free_port, load_objects, run_view, serve, splat_covariances)


# ---- fixtures -------------------------------------------------------------------------------------------

PALETTE = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.9],
                    [0.9, 0.8, 0.1], [0.8, 0.1, 0.8], [0.1, 0.8, 0.8]], np.float32)


def cube_gaussians(k: int = 8, half: float = 0.4, centre=(0.0, 0.0, 0.0)) -> Gaussians:
    """6 k^2 round Gaussians on a k x k grid on each face of a cube, one strong colour per face (so that turning
    it changes the picture). Few, evenly spread splats: SwiftShader (software WebGL) pays for every covered pixel."""
    t = (np.arange(k) + 0.5) / k * 2 * half - half
    u, v = (a.ravel() for a in np.meshgrid(t, t))
    means, colours = [], []
    for face in range(6):
        axis, sign = face // 2, (1.0 if face % 2 else -1.0)
        m = np.zeros((k * k, 3))
        m[:, axis] = half * sign
        m[:, [a for a in range(3) if a != axis]] = np.stack([u, v], 1)
        means.append(m)
        colours.append(np.repeat(PALETTE[face][None], k * k, 0))
    n = 6 * k * k
    sigma = 0.45 * 2 * half / k  # neighbours overlap: a closed surface
    return Gaussians.from_colors(np.concatenate(means) + np.asarray(centre), np.full((n, 3), sigma),
                                 np.tile([1.0, 0, 0, 0], (n, 1)), np.full(n, 0.95), np.concatenate(colours))


@pytest.fixture
def ply(tmp_path: Path) -> Path:
    p = tmp_path / "cube.ply"
    write_gaussians(cube_gaussians(), p)
    return p


def _listening(host: str = "127.0.0.1") -> tuple[socket.socket, int]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(1)
    return s, s.getsockname()[1]


# ---- numeric kernel: covariances vs a reference twin ----------------------------------------------------------

def _rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Reference: rotate v by unit quaternion q = (w, x, y, z) with the Hamilton product q v q*."""
    w, u = q[0], q[1:]
    return v + 2 * w * np.cross(u, v) + 2 * np.cross(u, np.cross(u, v))


def test_splat_covariances_match_reference():
    rng = np.random.default_rng(1)
    n = 64
    q = rng.normal(size=(n, 4))
    g = Gaussians.from_colors(rng.normal(size=(n, 3)), rng.uniform(0.001, 0.2, (n, 3)), q, rng.uniform(0, 1, n),
                              rng.uniform(0, 1, (n, 3)))
    got = splat_covariances(g)
    ref = np.zeros((n, 3, 3))
    for i in range(n):
        qi = g.quats[i].astype(np.float64)
        # Columns of M are the Gaussian's local axes scaled by its std-devs: Sigma = M M^T.
        M = np.stack([_rotate(qi, e) * s for e, s in zip(np.eye(3), g.scales[i].astype(np.float64))], axis=1)
        ref[i] = M @ M.T
    assert got.shape == (n, 3, 3) and got.dtype == np.float32
    # float32 output of float64 maths: relative 1e-5 of the largest variance of each Gaussian.
    tol = 1e-5 * np.abs(ref).reshape(n, -1).max(1)[:, None, None]
    assert (np.abs(got - ref) <= tol).all()
    assert np.allclose(got, np.transpose(got, (0, 2, 1)))  # symmetric
    assert (np.linalg.eigvalsh(got.astype(np.float64)) > 0).all()  # positive definite


# ---- loading, sidecars and layout --------------------------------------------------------------------------

def _png(path: Path, h: int = 40, w: int = 30, top=(255, 0, 0), bottom=(0, 0, 255)) -> Path:
    from PIL import Image

    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2], a[h // 2:] = top, bottom
    Image.fromarray(a).save(path)
    return path


def test_sidecar_input_image_and_seed(tmp_path: Path, capsys):
    p = tmp_path / "robot_s3.ply"
    write_gaussians(cube_gaussians(7), p)
    _png(tmp_path / "robot_input.png")
    (tmp_path / "robot_s3.json").write_text(json.dumps({"input_image": "robot_input.png", "seed": 3}))
    (obj,), (g,) = load_objects([p])
    assert obj.seed == 3 and obj.num_gaussians == 6 * 49 == len(g)
    assert obj.input_image.shape == (40, 30, 3) and obj.input_image.dtype == np.uint8
    assert (obj.input_image[0, 0] == (255, 0, 0)).all() and (obj.input_image[-1, -1] == (0, 0, 255)).all()

    # An explicit image replaces the sidecar's; RGBA is composited on white.
    rgba = np.zeros((8, 8, 4), np.uint8)
    (obj,), _ = load_objects([p], input_images={str(p): rgba})
    assert (obj.input_image == 255).all()
    with pytest.raises(InputError, match="not among the files"):
        load_objects([p], input_images={tmp_path / "other.ply": rgba})

    # A sidecar whose image is gone, or a broken sidecar, is a warning: the Gaussians are still shown.
    (tmp_path / "robot_input.png").unlink()
    (obj,), _ = load_objects([p])
    assert obj.input_image is None and "not found" in capsys.readouterr().out
    (tmp_path / "robot_s3.json").write_text("{not json")
    (obj,), _ = load_objects([p])
    assert obj.input_image is None and obj.seed is None and "not a readable JSON sidecar" in capsys.readouterr().out


def test_side_by_side_layout_does_not_overlap(tmp_path: Path):
    # Different sizes and centres; the first has an input image (drawn left of it).
    specs = [(0.4, (0.3, 0.2, -0.1)), (0.2, (-2.0, 0.0, 0.0)), (0.5, (0.0, 1.0, 1.0))]
    paths = []
    for i, (half, centre) in enumerate(specs):
        suffix = ".splat" if i == 1 else ".ply"  # both formats the viewer reads
        paths.append(write_gaussians(cube_gaussians(6 + i, half=half, centre=centre), tmp_path / f"o{i}{suffix}"))
    objs, gs = load_objects(paths, input_images={paths[0]: np.zeros((64, 32, 3), np.uint8)})
    unit = max(o.size for o in objs)
    assert unit == pytest.approx(1.0, rel=0.05)  # the biggest cube has edge 2*0.5 (robust bounds, minus 2 %)
    boxes = []
    for o, g in zip(objs, gs):
        m = g.means + o.offset
        lo, hi = np.quantile(m, 0.01, axis=0), np.quantile(m, 0.99, axis=0)
        assert np.allclose((lo + hi) / 2, o.centre, atol=1e-6)  # centred in its slot
        assert o.centre[1] == 0 and o.centre[2] == 0
        boxes.append((lo[0], hi[0]))
    image_w = unit * 32 / 64
    boxes.append((objs[0].centre[0] - unit / 2 - 0.25 * unit - image_w, objs[0].centre[0] - unit / 2 - 0.25 * unit))
    boxes.sort()
    assert all(a[1] < b[0] for a, b in zip(boxes, boxes[1:])), boxes  # no two things overlap along x
    xs = [o.centre[0] for o in objs]
    assert xs == sorted(xs)  # left to right in the order given


# ---- bad input and ports (no browser) ----------------------------------------------------------------------

def _view_args(files, port=0, host="127.0.0.1"):
    parser = argparse.ArgumentParser()
    add_view_arguments(parser)
    return parser.parse_args([*map(str, files), "--port", str(port), "--host", host, "--no-browser"])


@pytest.mark.parametrize("content, problem", [
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nend_header\n", "missing vertex"),
    (b"hello world, I am not a PLY", "not a PLY"),
])
def test_malformed_file_is_one_line_exit_2(tmp_path: Path, ply: Path, capsys, content, problem):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(content)
    free, port = _listening()
    free.close()  # a port nobody uses: nothing may start listening on it
    assert run_view(_view_args([ply, bad], port=port)) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith(f"dd3g: error: {bad}: ") and problem in err, err
    assert "viewing" not in out  # no server was started...
    assert find_free_port("127.0.0.1", port, tries=1) == port  # ...and the port is still free


def test_missing_file_and_bad_port(tmp_path: Path, capsys):
    assert run_view(_view_args([tmp_path / "nope.ply"])) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "nope.ply") in err
    with pytest.raises(InputError, match="port must be in 0..65535"):
        find_free_port("127.0.0.1", 70000)
    with pytest.raises(InputError, match="cannot listen on 192.0.2.1"):  # TEST-NET address: not this machine's
        find_free_port("192.0.2.1", 8080)


def test_cli_defaults_bind_loopback():
    parser = argparse.ArgumentParser()
    add_view_arguments(parser)
    a = parser.parse_args(["x.ply"])
    assert (a.host, a.port, a.no_browser, a.files) == ("127.0.0.1", 8080, False, [Path("x.ply")])


def _listen_addresses(port: int) -> list[str]:
    """Local addresses of the sockets listening on `port`, from /proc/net/tcp (Linux)."""
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _, state = line.split()[1:4]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":  # 0A = LISTEN
            out.append(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return out


def test_port_in_use_moves_to_next_free_port_and_serves_client(ply: Path, capsys):
    busy, port = _listening()
    try:
        h = serve([ply], port=port, block=False)
        try:
            assert isinstance(h, ViewerHandle) and h.port > port and h.url == f"http://127.0.0.1:{h.port}"
            out = capsys.readouterr().out
            assert f"port {port} is in use; serving on port {h.port} instead" in out
            assert h.url in out
            # Bound to loopback only.
            if Path("/proc/net/tcp").exists():
                assert _listen_addresses(h.port) == ["127.0.0.1"]
            # The viser client comes from the wheel (no network needed).
            with urllib.request.urlopen(h.url, timeout=10) as r:
                page = r.read()
            assert r.status == 200 and b"<html" in page[:200].lower() and len(page) > 100_000
        finally:
            h.stop()
        h.stop()  # idempotent
    finally:
        busy.close()


def test_side_by_side_scene_with_input_image(tmp_path: Path):
    """Several files and a sidecar image: every object, its label and the image plane are in the scene, and the
    starting view takes in the whole row."""
    paths = [write_gaussians(cube_gaussians(5), tmp_path / f"robot_s{i}.ply") for i in range(3)]
    _png(tmp_path / "robot_input.png", 60, 60)
    (tmp_path / "robot_s0.json").write_text(json.dumps({"input_image": "robot_input.png", "seed": 0}))
    h = serve(paths, port=0, block=False)
    try:
        scene = h.server.scene
        for i in range(3):
            assert scene.get_handle_by_name(f"/objects/{i}/splats") is not None
            assert scene.get_handle_by_name(f"/objects/{i}/label") is not None
        plane = scene.get_handle_by_name("/objects/0/input_image")
        assert plane is not None and scene.get_handle_by_name("/objects/1/input_image") is None
        assert plane.position[0] + plane.render_width / 2 < h.objects[0].centre[0] - h.objects[0].size / 2
        sv = h.start_view
        assert sv.look_at[0] - sv.half_width <= plane.position[0] - plane.render_width / 2 + 1e-6
        assert sv.look_at[0] + sv.half_width >= h.objects[2].centre[0] + sv.unit / 2 - 1e-6
        # From the start view of a 4:3 canvas, every object's box projects inside the canvas.
        cam_d = sv.camera(4 / 3)
        from dd3g_sdk.cameras import look_at as _look_at

        cam = Camera(_look_at(cam_d["position"], cam_d["look_at"]), 300.0 / np.tan(np.radians(20)),
                     300.0 / np.tan(np.radians(20)), 400.0, 300.0, 800, 600)
        for o in h.objects:
            corners = o.centre + sv.unit / 2 * np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
            uv, _ = cam.project(corners)
            assert (uv >= 0).all() and (uv[:, 0] <= 800).all() and (uv[:, 1] <= 600).all(), (o.path.name, uv)
        h.set_background((0, 0, 0))  # no page open: just updates the control
        assert h._controls["background"].value == (0, 0, 0)
    finally:
        h.stop()


# ---- the real browser -------------------------------------------------------------------------------------

CHROMIUM = os.environ.get("DD3G_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DD3G_CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")
CHROME_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # WebGL without a GPU: SwiftShader through ANGLE (the automatic fallback is deprecated in Chromium).
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    # Prove that the page needs no network: every host name but the loopback fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--window-size=960,640", "--force-device-scale-factor=1",
]


def _browser_or_skip(user_dir: str):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("browser test needs selenium (pip install selenium)")
    if not (os.access(CHROMIUM, os.X_OK) and CHROMEDRIVER and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"browser test needs Chromium and its driver at {CHROMIUM} and {CHROMEDRIVER} "
                    "(apt-get install -y chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in CHROME_FLAGS + [f"--user-data-dir={user_dir}"]:
        opts.add_argument(f)
    # An explicit driver path: selenium must not try to download one.
    return webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))


def _shot(driver) -> np.ndarray:  # [H, W, 3] uint8 of the page
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))


def _changed(a: np.ndarray, b: np.ndarray, thresh: int = 40) -> np.ndarray:  # [H, W] bool
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) > thresh


def _erode(mask: np.ndarray, r: int) -> np.ndarray:  # [H, W] bool: True where the (2r+1)^2 square is all True
    padded = np.pad(mask, r, constant_values=False)
    return np.lib.stride_tricks.sliding_window_view(padded, (2 * r + 1, 2 * r + 1)).all(axis=(-2, -1))


def _settled(driver, timeout: float = 20.0, min_wait: float = 0.5) -> np.ndarray:
    """Screenshot once the picture has stopped changing (the splat sort runs in a web worker)."""
    time.sleep(min_wait)
    prev, t0 = _shot(driver), time.time()
    while time.time() - t0 < timeout:
        time.sleep(0.5)
        cur = _shot(driver)
        if _changed(prev, cur, 8).mean() < 1e-4:
            return cur
        prev = cur
    raise AssertionError(f"the page did not settle within {timeout} s")


def _page_camera(camera, scale: float) -> Camera:
    """The page's camera in dd3g conventions, at screenshot resolution.

    viser reports R_world_cam (wxyz) and the position, with OpenCV axes (x right, y down, z forward), a vertical
    fov and the canvas size in CSS pixels; `scale` converts CSS pixels to screenshot pixels.
    """
    R = quat_to_rotmat(np.asarray(camera.wxyz, np.float64))
    w2c = np.eye(4)
    w2c[:3, :3] = R.T
    w2c[:3, 3] = -R.T @ np.asarray(camera.position, np.float64)
    W, H = round(camera.image_width * scale), round(camera.image_height * scale)
    f = 0.5 * H / np.tan(camera.fov / 2)
    return Camera(w2c, f, f, W / 2, H / 2, W, H)


def _projected_box(cam: Camera, g: Gaussians, offset: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel bounds (x0, y0, x1, y1) of the object's 3-sigma box seen by `cam`."""
    pad = 3 * float(g.scales.max())
    lo, hi = g.means.min(0) + offset - pad, g.means.max(0) + offset + pad
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    uv, depth = cam.project(corners)
    assert (depth > 0).all()
    (x0, y0), (x1, y1) = np.floor(uv.min(0)).astype(int), np.ceil(uv.max(0)).astype(int)
    return x0, y0, x1, y1


def _click(driver, css: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, css).click()


@pytest.mark.slow
def test_browser_draws_object_orbits_resets_and_recolours(tmp_path: Path):
    """One page session (Chromium start-up dominates): draw, compare, orbit, reset, recolour."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from dd3g_sdk.render import render

    g = cube_gaussians()
    p = write_gaussians(g, tmp_path / "cube.ply")
    with tempfile.TemporaryDirectory() as user_dir:
        driver = _browser_or_skip(user_dir)
        h = serve([p], port=0, block=False)
        try:
            driver.set_page_load_timeout(30)
            driver.get(h.url)
            t0 = time.time()
            while not h.server.get_clients():  # the page connected and sent its camera
                assert time.time() - t0 < 30, "the page never connected to the viewer"
                time.sleep(0.2)
            (client,) = h.server.get_clients().values()
            assert driver.execute_script(
                "return !!document.createElement('canvas').getContext('webgl2');"), "no WebGL2 in this Chromium"
            # What a user would do first: dismiss viser's "software WebGL" note, which floats over the canvas.
            _click(driver, "button.mantine-Notification-closeButton")
            # The 3D canvas (the control panel is docked beside it); pictures below are cropped to it.
            canvas = max(driver.find_elements(By.TAG_NAME, "canvas"), key=lambda c: c.size["width"] * c.size["height"])
            scale = driver.execute_script("return window.devicePixelRatio;")
            rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); "
                                         "return [r.left, r.top, r.width, r.height];", canvas)
            cx0, cy0 = round(rect[0] * scale), round(rect[1] * scale)
            cw, ch = round(rect[2] * scale), round(rect[3] * scale)
            shot = lambda: _settled(driver)[cy0:cy0 + ch, cx0:cx0 + cw]  # noqa: E731
            with_obj = shot()
            H, W = with_obj.shape[:2]
            cam = _page_camera(client.camera, scale)
            assert (cam.width, cam.height) == (W, H) == (cw, ch), ((cam.width, cam.height), (W, H), (cw, ch))
            # On connecting, the page was framed for its canvas: the whole object's box is in view.
            start = h.start_view.camera(client.camera.aspect)
            assert np.allclose(client.camera.position, start["position"], atol=1e-3)
            x0, y0, x1, y1 = _projected_box(cam, g, h.objects[0].offset)
            assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H, ((x0, y0, x1, y1), (W, H))

            # The object is drawn: hide it, and the pixels that change lie inside its projected bounds.
            splats = h.server.scene.get_handle_by_name("/objects/0/splats")
            splats.visible = False
            without = shot()
            splats.visible = True
            diff = _changed(with_obj, without)
            inside = np.zeros_like(diff)
            inside[y0:y1, x0:x1] = True
            margin = np.zeros_like(diff)  # the box plus 3 px, for anti-aliased edges
            margin[max(y0 - 3, 0):y1 + 3, max(x0 - 3, 0):x1 + 3] = True
            # The cube's silhouette fills ~60 % of its 3-sigma box from this view (measured 0.61).
            assert diff[inside].mean() > 0.45, diff[inside].mean()
            assert diff[~margin].sum() == 0, int(diff[~margin].sum())
            assert (without[inside].min(-1) >= 250).all()  # white background behind it...
            assert (with_obj[diff].astype(int).min(-1) < 200).mean() > 0.95  # ...became the faces' colours

            # And it is drawn as the project's reference rasteriser draws it from the same camera (viser's
            # WebGL splats vs render/reference.py; measured: silhouette IoU 0.99, mean |RGB| difference 0.8/255).
            ref = render(Gaussians(g.means + h.objects[0].offset.astype(np.float32), g.scales, g.quats, g.opacities,
                                   g.sh), [cam])
            ref_mask = ref.alpha[0] > 0.2  # where a face colour differs from white by > 40/255
            iou = (ref_mask & diff).sum() / (ref_mask | diff).sum()
            assert iou > 0.9, iou
            ref_rgb = (ref.rgb[0] * 255 + 0.5).astype(int)
            colour_err = np.abs(with_obj[ref_mask | diff].astype(int) - ref_rgb[ref_mask | diff]).mean()
            assert colour_err < 6, colour_err

            # Orbit: a left drag on the canvas turns the camera around the object and changes the picture.
            pos0, look0 = np.array(client.camera.position), np.array(client.camera.look_at)
            chain = ActionChains(driver, duration=50).move_to_element_with_offset(canvas, -150, 100).click_and_hold()
            for _ in range(10):
                chain = chain.move_by_offset(20, 0)
            chain.release().perform()
            orbited = shot()
            pos1, look1 = np.array(client.camera.position), np.array(client.camera.look_at)
            d0, d1 = pos0 - look0, pos1 - look1
            turn = np.degrees(np.arccos(np.clip(d0 @ d1 / np.linalg.norm(d0) / np.linalg.norm(d1), -1, 1)))
            assert turn > 10, f"the camera turned only {turn:.1f} deg"
            assert np.linalg.norm(d1) == pytest.approx(np.linalg.norm(d0), rel=0.02)  # an orbit: same distance...
            assert np.allclose(look1, look0, atol=1e-6)  # ...around the same point
            assert _changed(orbited, with_obj)[margin].mean() > 0.1

            # "Reset view" in the panel brings back the starting picture.
            driver.find_element(By.XPATH, "//button[normalize-space()='Reset view']").click()
            reset = shot()
            assert np.allclose(client.camera.position, start["position"], atol=1e-3)
            assert _changed(reset, with_obj).mean() < 1e-3

            # Background colour, as picked in the panel.
            h.set_background((20, 40, 200))
            recoloured = shot()
            # The canvas's background, away from the object: what changed there (the axes gizmo stays), less 6 px
            # around whatever did not change and a 12 px border (soft shadows of the page's overlays and panel).
            background = _erode(_changed(recoloured, without, 8) & ~margin, 6)
            background[:12], background[-12:], background[:, :12], background[:, -12:] = False, False, False, False
            assert background.mean() > 0.15  # enough of it to judge (measured 0.24)
            off = np.abs(recoloured[background].astype(int) - [20, 40, 200]).max(-1)
            assert (off <= 3).mean() > 0.99, (off <= 3).mean()
        finally:
            h.stop()
            driver.quit()
