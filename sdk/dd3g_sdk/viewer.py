"""`dd3g view`: look at 3D Gaussians (.ply / .splat) in the browser.

    dd3g view out/toy_robot.ply                       # opens http://127.0.0.1:8080
    dd3g view out/robot_s0.ply out/robot_s1.ply --port 8090 --no-browser   # side by side

    from dd3g_sdk.viewer import serve
    h = serve(["out/toy_robot.ply"], port=0, block=False)   # port 0: any free port
    print(h.url); ...; h.stop()

The web side is viser (`pip install 'dd3g-sdk[view]'`): its browser client ships inside the wheel, so the viewer
works offline. viser draws Gaussian splats with WebGL from (centre, covariance, RGB, opacity); it has no
spherical harmonics, so the colour shown is the view-independent DC colour (`Gaussians.colors`).

What the page offers: orbit (left drag), zoom (wheel), pan (right drag), a "Reset view" button (back to the
starting camera: from the input view's direction, azimuth 0 and elevation 20 deg with a 40 deg vertical fov like
the model's view set, but far enough to see the whole row), a background colour picker,
and, for a file written by `dd3g generate`, the preprocessed input image beside the object (read from the
`<name>.json` sidecar's "input_image", a path relative to the sidecar's folder unless absolute). Several files
are shown side by side, left to right in the order given, each moved so that its centre sits in its slot.

World frame: +y up (DESIGN.md); the initial camera looks from +z, like the input view, and each page is framed
for its own canvas when it connects. The control panel is docked to the right of the canvas.

The server binds to 127.0.0.1 unless told otherwise. If the port is taken, the next free one is used and the
console says so.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import InputError, report
from .gaussians import Gaussians, quat_to_rotmat

DEFAULT_PORT = 8080
PORT_SEARCH = 100  # how many ports after the requested one are tried before giving up
INPUT_IMAGE_MAX_SIDE = 512  # input images are downscaled to this before they are sent to the browser
GAP = 0.25  # space between neighbouring objects, in units of the largest object's size
INITIAL_ELEVATION_DEG = 20.0  # the view set's elevation: the starting view is the model's input view
INITIAL_FOV_DEG = 40.0  # the view set's vertical field of view


@dataclass(frozen=True)
class ViewedObject:
    """One file on the page."""
    path: Path
    num_gaussians: int
    offset: np.ndarray  # [3] world translation added to the file's means
    centre: np.ndarray  # [3] where the object's robust centre ends up: (slot x, 0, 0)
    size: float  # edge of the cube (world units) that holds the object's robust bounds
    input_image: np.ndarray | None  # [H, W, 3] uint8 shown beside the object, or None
    seed: int | None  # from the sidecar, when present


@dataclass(frozen=True)
class StartView:
    """Where the camera starts (and "Reset view" returns): the input view's direction (azimuth 0, elevation
    20 deg, 40 deg vertical fov, as in the model's view set), looking at the middle of the row of objects, far
    enough that every object and input image fits the canvas."""
    look_at: np.ndarray  # [3] world
    unit: float  # the largest object's size (world units)
    half_width: float  # half the row's extent along x, input images included

    def camera(self, aspect: float = 1.0) -> dict:
        """position [3], look_at [3], up [3] (world, +y), fov_deg (vertical) for a canvas of width/height `aspect`."""
        v = math.radians(INITIAL_FOV_DEG)
        h = 2 * math.atan(math.tan(v / 2) * max(float(aspect), 1e-3))  # horizontal fov
        # The sphere around an object's cube fits the narrower fov with 10 % to spare (the view set's own radius
        # 2.0 frames tightly, for 64-pixel model views), and the row fits the horizontal fov with 15 % to spare
        # (measured from the objects' front faces, half a unit nearer).
        radius = max(1.1 * (math.sqrt(3) / 2 * self.unit) / math.sin(min(v, h) / 2),
                     1.15 * self.half_width / math.tan(h / 2) + self.unit / 2)
        el = math.radians(INITIAL_ELEVATION_DEG)
        position = self.look_at + radius * np.array([0.0, math.sin(el), math.cos(el)])
        return {"position": position, "look_at": self.look_at.copy(), "up": np.array([0.0, 1.0, 0.0]),
                "fov_deg": INITIAL_FOV_DEG}


@dataclass
class ViewerHandle:
    """A running viewer. `stop()` shuts the server down (idempotent)."""
    url: str
    port: int
    host: str
    objects: list[ViewedObject]
    server: Any  # viser.ViserServer, for callers that want to add to the scene
    start_view: StartView | None = None
    _controls: dict = field(default_factory=dict, repr=False)
    _stopped: threading.Event = field(default_factory=threading.Event, repr=False)

    def set_background(self, rgb: Sequence[int]) -> None:
        """Background colour (0..255 each) for every open page, as if picked in the panel."""
        self._controls["background"].value = tuple(int(c) for c in rgb)

    def reset_view(self) -> None:
        """Move every open page's camera back to the starting view."""
        for client in self.server.get_clients().values():
            _reset_camera(client, self.start_view)

    def stop(self) -> None:
        if not self._stopped.is_set():
            self._stopped.set()
            self.server.stop()

    def wait(self) -> None:
        """Block until `stop()` is called (from another thread) or Ctrl+C."""
        while not self._stopped.wait(0.5):
            pass


# ---- loading ------------------------------------------------------------------------------------------

def splat_covariances(g: Gaussians) -> np.ndarray:  # [N, 3, 3] float32
    """World covariances R diag(scales^2) R^T (scales are linear std-devs, quats wxyz), as viser wants them."""
    R = quat_to_rotmat(g.quats)  # [N, 3, 3] float64
    s2 = np.square(g.scales.astype(np.float64))  # [N, 3]
    return np.einsum("nij,nj,nkj->nik", R, s2, R).astype(np.float32)


def robust_bounds(means: np.ndarray, q: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis (q, 1-q) quantiles of `means` [N, 3]: a few far floaters do not set the framing."""
    if len(means) == 0:
        return np.zeros(3), np.zeros(3)
    return np.quantile(means, q, axis=0), np.quantile(means, 1 - q, axis=0)


def _sidecar(path: Path) -> tuple[Path | None, int | None]:
    """(input image path, seed) from `<name>.json` beside `path`; problems are warnings, never errors."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return None, None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        _say(f"warning: {side}: not a readable JSON sidecar ({e}); showing {path.name} without its input image")
        return None, None
    if not isinstance(meta, dict):
        return None, None
    seed = meta.get("seed") if isinstance(meta.get("seed"), int) else None
    name = meta.get("input_image")
    if not isinstance(name, str) or not name:
        return None, seed
    img = Path(name)
    return (img if img.is_absolute() else side.parent / img), seed


def _load_image(image: Any, source: Any) -> np.ndarray:  # [H, W, 3] uint8
    """A path or an array (uint8, or float 0..1; RGB or RGBA composited on white) -> small uint8 RGB."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as im:
                im.load()
                pil = im.convert("RGBA")
        except (OSError, ValueError) as e:
            raise InputError(image, f"cannot read the input image ({e})") from None
        arr = np.asarray(pil, np.float32) / 255.0
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise InputError(source, f"input image must be [H, W, 3|4], got {list(arr.shape)}")
        arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if arr.shape[2] == 4:  # white background, like the model's inputs
        arr = arr[..., :3] * arr[..., 3:] + (1.0 - arr[..., 3:])
    u8 = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    h, w = u8.shape[:2]
    if max(h, w) > INPUT_IMAGE_MAX_SIDE:
        s = INPUT_IMAGE_MAX_SIDE / max(h, w)
        u8 = np.asarray(Image.fromarray(u8).resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR))
    return u8


def load_objects(paths: Sequence[str | Path], input_images: dict | None = None
                 ) -> tuple[list[ViewedObject], list[Gaussians]]:
    """Read every file (InputError on the first bad one, before any server starts) and lay them out in a row.

    `input_images` maps a path in `paths` to an image (path or [H, W, 3|4] array) that replaces the sidecar's.
    """
    from .io import read_gaussians

    if not paths:
        raise InputError(None, "no files to view")
    paths = [Path(p) for p in paths]
    overrides: dict[Path, Any] = {}
    for key, img in (input_images or {}).items():
        k = Path(key).resolve()
        if k not in {p.resolve() for p in paths}:
            raise InputError(key, "input_images names a file that is not among the files to view")
        overrides[k] = img
    gs, images, seeds = [], [], []
    for p in paths:
        gs.append(read_gaussians(p))  # the same errors as `dd3g info`
        img_path, seed = _sidecar(p)
        img = overrides.get(p.resolve())
        if img is None and img_path is not None:
            if img_path.is_file():
                img = img_path
            else:
                _say(f"warning: {img_path}: input image named by {p.with_suffix('.json').name} not found")
        try:
            images.append(None if img is None else _load_image(img, p))
        except InputError as e:  # a broken picture beside a good file is not worth refusing the file
            if p.resolve() in overrides:
                raise
            _say(f"warning: {e}")
            images.append(None)
        seeds.append(seed)
    return _layout(paths, gs, images, seeds), gs


def _layout(paths: list[Path], gs: list[Gaussians], images: list, seeds: list) -> list[ViewedObject]:
    """Slots along +x, one per file, pitch = largest object + its input image + gaps; row centred on 0."""
    bounds = [robust_bounds(g.means) for g in gs]
    # An empty file gets the size of a normalised object (the [-0.5, 0.5]^3 cube), so the framing stays sane.
    sizes = [max(float((hi - lo).max()), 1e-3) if len(g) else 1.0 for g, (lo, hi) in zip(gs, bounds)]
    unit = max(sizes)
    img_w = [0.0 if im is None else unit * im.shape[1] / im.shape[0] for im in images]
    slot = unit * (1 + GAP) + (max(img_w) + unit * GAP if any(w > 0 for w in img_w) else 0.0)
    xs = [(i - (len(gs) - 1) / 2) * slot for i in range(len(gs))]
    if any(w > 0 for w in img_w):  # the image sits left of the object: shift the pair so the slot is centred
        xs = [x + (max(img_w) + unit * GAP) / 2 for x in xs]
    out = []
    for p, g, (lo, hi), s, im, seed, x in zip(paths, gs, bounds, sizes, images, seeds, xs):
        centre = (lo + hi) / 2
        offset = np.array([x, 0.0, 0.0]) - centre
        out.append(ViewedObject(p, len(g), offset.astype(np.float64), np.array([x, 0.0, 0.0]), s, im, seed))
    return out


# ---- ports ----------------------------------------------------------------------------------------------

def find_free_port(host: str, port: int, tries: int = PORT_SEARCH) -> int:
    """The first port in [port, port + tries) that `host` can listen on (port 0: one the OS picks).

    Raises InputError when none is free or the host cannot be bound at all (e.g. not an address of this machine).
    """
    if not 0 <= int(port) <= 65535:
        raise InputError(None, f"port must be in 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise InputError(None, f"cannot resolve host {host!r} ({e})") from None
    family, *_, sockaddr = infos[0]
    last: OSError | None = None
    for cand in ([0] if port == 0 else range(port, min(port + tries, 65536))):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            # Same options as the real server (asyncio sets SO_REUSEADDR), so a port in TIME_WAIT is not "busy".
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((sockaddr[0], cand) + tuple(sockaddr[2:]))
                s.listen(1)
                return cand if cand else s.getsockname()[1]
            except OSError as e:
                last = e
                if e.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise InputError(None, f"cannot listen on {host}:{cand} ({e.strerror or e})") from None
    raise InputError(None, f"no free port in {port}..{port + tries - 1} on {host} ({last})")


# ---- the server ---------------------------------------------------------------------------------------

def serve(paths: Sequence[str | Path], port: int = DEFAULT_PORT, host: str = "127.0.0.1",
          input_images: dict | None = None, block: bool = True, open_browser: bool = False) -> ViewerHandle:
    """Serve an interactive viewer of `paths` (.ply / .splat) at http://host:port.

    Every file is read first (InputError on a bad one; nothing is started). A busy port moves to the next free
    one (said on the console). `block=True` serves until Ctrl+C and returns the stopped handle;
    `block=False` returns the running handle at once.
    """
    objects, gs = load_objects(paths, input_images)
    if host not in ("127.0.0.1", "localhost", "::1"):
        _say(f"warning: listening on {host}: anyone who can reach this machine on that address can open the viewer")
    free = find_free_port(host, port)
    viser = _import_viser()
    server = viser.ViserServer(host=host, port=free, label="dd3g view", verbose=False)
    actual = int(server.get_port())  # viser moves on by itself if someone took `free` in the meantime
    if port != 0 and actual != port:
        _say(f"port {port} is in use; serving on port {actual} instead")
    url = f"http://{'[' + host + ']' if ':' in host else host}:{actual}"
    handle = ViewerHandle(url, actual, host, objects, server)
    try:
        handle.start_view, handle._controls = _build_scene(server, objects, gs)
    except BaseException:
        handle.stop()
        raise
    names = ", ".join(o.path.name for o in objects)
    _say(f"viewing {names} at {url}  (Ctrl+C to stop)")
    if open_browser:
        import webbrowser

        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    if block:
        try:
            handle.wait()
        except KeyboardInterrupt:
            pass
        finally:
            handle.stop()
    return handle


def _build_scene(server: Any, objects: list[ViewedObject], gs: list[Gaussians]) -> tuple[StartView, dict]:
    # The control panel is docked beside the canvas (not floating over it), so it never hides an object.
    # (Sharing through viser's public relay is hidden: the viewer is meant to stay on this machine.)
    if hasattr(server.gui, "main_panel"):  # viser >= 1.1
        server.gui.configure_theme(control_width="medium", show_share_button=False, dark_mode=False)
        server.gui.main_panel.dock_right()
    else:
        server.gui.configure_theme(control_layout="collapsible", control_width="medium", show_share_button=False,
                                   dark_mode=False)
    server.scene.set_up_direction("+y")
    server.scene.world_axes.visible = False
    unit = max(o.size for o in objects)
    multi = len(objects) > 1
    planes = []
    for i, (o, g) in enumerate(zip(objects, gs)):
        base = f"/objects/{i}"
        if len(g):
            server.scene.add_gaussian_splats(
                f"{base}/splats", centers=g.means + o.offset.astype(np.float32), covariances=splat_covariances(g),
                rgbs=g.colors, opacities=g.opacities[:, None])
        centre_x = float(o.centre[0])
        if multi or len(g) == 0:
            text = o.path.name + (f" (seed {o.seed})" if o.seed is not None else "") + ("" if len(g) else " (empty)")
            server.scene.add_label(f"{base}/label", text, position=(centre_x, -0.5 * unit - 0.08 * unit, 0.0),
                                   anchor="top-center")
        if o.input_image is not None:
            h, w = o.input_image.shape[:2]
            ih, iw = unit, unit * w / h
            # viser's image plane has +x right and +y down (image rows) and faces -z: flip it about x so that
            # it reads upright when seen from +z, the input view's side.
            planes.append(server.scene.add_image(
                f"{base}/input_image", o.input_image, iw, ih, wxyz=(0.0, 1.0, 0.0, 0.0),
                position=(centre_x - unit / 2 - GAP * unit - iw / 2, 0.0, 0.0), cast_shadow=False,
                receive_shadow=False))

    # The starting camera. Pages of unknown shape start framed for a square canvas; each page is re-framed for
    # its own canvas as soon as it connects (viser reports the canvas size with the first camera message).
    row_lo = min([float(o.centre[0]) - unit / 2 for o in objects]
                 + [float(p.position[0]) - p.render_width / 2 for p in planes])
    row_hi = max(float(o.centre[0]) + unit / 2 for o in objects)
    start = StartView(np.array([(row_lo + row_hi) / 2, 0.0, 0.0]), unit, (row_hi - row_lo) / 2)
    cam = start.camera(1.0)
    server.initial_camera.position = tuple(cam["position"])
    server.initial_camera.look_at = tuple(cam["look_at"])
    server.initial_camera.up = tuple(cam["up"])
    server.initial_camera.fov = math.radians(cam["fov_deg"])
    server.initial_camera.near = 0.01 * unit
    server.initial_camera.far = 100.0 * float(np.linalg.norm(cam["position"] - cam["look_at"]))

    @server.on_client_connect
    def _(client) -> None:
        _reset_camera(client, start)

    # ---- controls
    with server.gui.add_folder("View"):
        reset = server.gui.add_button("Reset view", hint="back to the starting view (the input view)")

        @reset.on_click
        def _(event) -> None:
            if event.client is not None:
                _reset_camera(event.client, start)

        bg = server.gui.add_rgb("Background", initial_value=(255, 255, 255))

        @bg.on_update
        def _(_event) -> None:
            server.scene.set_background_image(np.full((1, 1, 3), bg.value, np.uint8), format="png")

        if planes:
            show = server.gui.add_checkbox("Input image in scene", initial_value=True)

            @show.on_update
            def _(_event) -> None:
                for p in planes:
                    p.visible = show.value

        server.gui.add_markdown("Drag: orbit · wheel: zoom · right drag: pan")
    with server.gui.add_folder("Files"):
        for o in objects:
            seed = f", seed {o.seed}" if o.seed is not None else ""
            server.gui.add_markdown(f"**{o.path.name}**: {o.num_gaussians:,} Gaussians{seed}")
            if o.input_image is not None:
                server.gui.add_image(o.input_image, label=f"input of {o.path.name}", format="png")
    return start, {"background": bg, "reset": reset}


def _reset_camera(client: Any, start: StartView) -> None:
    """Put `client`'s camera at the start view, framed for its canvas."""
    cam = client.camera
    want = start.camera(cam.aspect)
    with client.atomic():
        cam.up_direction = tuple(want["up"])
        cam.position = tuple(want["position"])  # (this also shifts look_at; it is set right after)
        cam.look_at = tuple(want["look_at"])
        cam.fov = math.radians(want["fov_deg"])


def _import_viser():
    try:
        import viser
    except ImportError as e:
        raise ImportError(f"`dd3g view` needs viser ({e}); pip install 'dd3g-sdk[view]'") from None
    return viser


def _say(msg: str) -> None:
    print(f"dd3g view: {msg}", flush=True)


# ---- command line ---------------------------------------------------------------------------------------

def add_view_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help=".ply or .splat files (several: side by side)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to serve on (default {DEFAULT_PORT}; if busy, the next free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: only this machine can connect)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")


def run_view(args: argparse.Namespace) -> int:
    """`dd3g view`: serve until Ctrl+C. Bad input prints one line and returns 2; a missing viser returns 1."""
    try:
        serve(args.files, port=args.port, host=getattr(args, "host", "127.0.0.1"), block=True,
              open_browser=not getattr(args, "no_browser", False))
    except InputError as e:
        return report(e, 2)
    except ImportError as e:
        return report(e, 1)
    return 0
