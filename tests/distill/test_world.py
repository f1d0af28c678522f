"""The procedural world: determinism, split separation, geometry against analytic answers, the CLI."""

import numpy as np
import pytest
import torch

from dd3g_sdk.cameras import ViewSetConfig, orbit_camera, stack_intrinsics, stack_viewmats
from dd3g_distill.data import world
from dd3g_distill.data.world import (KINDS, ObjectSpec, Primitive, RenderConfig, composite_white, object_spec,
                                     primitive_sdf, render, render_views)

I3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _sphere(r=0.4, center=(0.0, 0.0, 0.0)):
    return ObjectSpec("test", 0, (Primitive("sphere", center, I3, (r, 0, 0, 0), (0.8, 0.3, 0.2), (0.2, 0.3, 0.8),
                                            "solid", 4.0, 0),))


def test_object_spec_is_a_pure_function_and_splits_differ():
    assert object_spec("train", 5) == object_spec("train", 5)
    a = [object_spec("train", k) for k in range(20)]
    b = [object_spec("test", k) for k in range(20)]
    c = [object_spec("val", k) for k in range(20)]
    assert len(set(a)) == 20
    assert not set(a) & set(b) and not set(a) & set(c) and not set(b) & set(c)
    seeds = {world.object_seed(s, k) for s in world.SPLITS for k in range(200)}
    assert len(seeds) == 600
    with pytest.raises(ValueError):
        object_spec("training", 0)


def test_objects_are_normalised_and_varied():
    kinds, textures = set(), set()
    for k in range(40):
        s = object_spec("train", k)
        assert 2 <= len(s.primitives) <= 6
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        for p in s.primitives:
            kinds.add(p.kind)
            textures.add(p.texture)
            rot = np.array(p.rotation).reshape(3, 3)
            np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
            half = np.abs(rot.T) @ world._local_half_extent(p.kind, np.array(p.params))
            lo, hi = np.minimum(lo, np.array(p.center) - half), np.maximum(hi, np.array(p.center) + half)
        # bounding box of the union: inside [-0.5, 0.5]^3, longest side exactly 1, centred
        assert (lo >= -0.5 - 1e-9).all() and (hi <= 0.5 + 1e-9).all()
        assert abs((hi - lo).max() - 1.0) < 1e-9
        np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-9)
    assert kinds == set(KINDS) and textures == set(world.TEXTURES)


def _inside_reference(kind, q, p):
    """Analytic inside test per primitive (the SDF's sign must agree)."""
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    rxz = np.sqrt(x * x + z * z)
    if kind == "sphere":
        return np.linalg.norm(q, axis=1) < p[0]
    if kind == "box":
        return (np.abs(q) < p[:3]).all(1)
    if kind == "cylinder":
        return (rxz < p[0]) & (np.abs(y) < p[1])
    if kind == "cone":
        r_at_y = p[0] + (p[2] - p[0]) * (y + p[1]) / (2 * p[1])
        return (np.abs(y) < p[1]) & (rxz < r_at_y)
    if kind == "torus":
        return np.sqrt((rxz - p[0]) ** 2 + y * y) < p[1]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_primitive_sdf_sign_and_eikonal(kind):
    params = {"sphere": (0.3, 0, 0, 0), "box": (0.3, 0.2, 0.25, 0), "cylinder": (0.2, 0.3, 0, 0),
              "cone": (0.3, 0.25, 0.05, 0), "torus": (0.25, 0.08, 0, 0)}[kind]
    rng = np.random.default_rng(0)
    q = rng.uniform(-0.45, 0.45, (4000, 3))
    p = np.array(params, np.float64)
    d = primitive_sdf(torch.tensor(KINDS.index(kind)), torch.from_numpy(q), torch.from_numpy(p)).numpy()
    inside = _inside_reference(kind, q, p)
    far = np.abs(d) > 1e-6
    assert (np.sign(d[far]) == np.where(inside[far], -1, 1)).all()
    # an exact SDF has unit gradient almost everywhere (finite differences, away from the medial set)
    h = 1e-5
    qt = torch.from_numpy(q)
    grads = [(primitive_sdf(torch.tensor(KINDS.index(kind)), qt + h * e, torch.from_numpy(p))
              - primitive_sdf(torch.tensor(KINDS.index(kind)), qt - h * e, torch.from_numpy(p))).numpy() / (2 * h)
             for e in torch.eye(3, dtype=torch.float64)]
    gnorm = np.linalg.norm(np.stack(grads, 1), axis=1)
    assert np.median(np.abs(gnorm - 1)) < 1e-3
    assert np.mean(np.abs(gnorm - 1) < 1e-2) > 0.9
    # padding never hits
    dpad = primitive_sdf(torch.tensor(-1), qt, torch.from_numpy(p))
    assert (dpad == 1e3).all()


def test_sphere_depth_matches_the_analytic_ray_intersection():
    r, c = 0.4, np.array([0.05, -0.03, 0.02])
    cam = orbit_camera(30.0, 20.0, 2.0, 40.0, 32, 32)
    res = render([_sphere(r, tuple(c))], stack_viewmats([cam]), stack_intrinsics([cam]), 32, 32)
    o, d = cam.rays()  # [H, W, 3] (numpy, float64)
    oc = o - c
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - r * r)
    hit = disc > 0
    t = -b - np.sqrt(np.maximum(disc, 0))
    z_dir = (d @ cam.world_to_cam[:3, :3].T)[..., 2]
    depth_ref = np.where(hit, t * z_dir, 0.0)
    mask = res.mask[0, 0].numpy()
    depth = res.depth[0, 0].numpy()
    # the mask is the analytic silhouette except maybe at grazing pixels
    assert (mask != hit).sum() <= 2
    both = mask & hit
    assert both.sum() > 200
    # cosine of the incidence angle: depth at grazing incidence is ill-conditioned (a sliver of the surface
    # spans a long stretch of the ray), so the tight bound holds where the ray meets the surface at > ~15 deg
    normal = (o + d * t[..., None] - c) / r
    cos_inc = np.abs((normal * d).sum(-1))
    err = np.abs(depth - depth_ref)
    assert err[both & (cos_inc > 0.25)].max() < 1e-4  # world units
    assert err[both].max() < 1e-2
    # the mask agrees with the depth map and the alpha channel
    assert ((depth > 0) == mask).all()
    assert ((res.rgba[0, 0, 3].numpy() >= 0.5) == mask).all()
    # background is white and the shading of a lit sphere varies
    img = composite_white(res.rgba)[0, 0].numpy()
    assert (img[:, ~mask] == 1).all()
    assert img[:, mask].std() > 0.02


def test_render_is_deterministic_batched_and_mask_consistent():
    specs = [object_spec("train", k) for k in range(3)]
    cfg = RenderConfig(supersample=2, steps=64)
    a = render_views(specs, 16, ViewSetConfig(), cfg)
    b = render_views(specs, 16, ViewSetConfig(), cfg)
    for x, y in ((a.rgba, b.rgba), (a.depth, b.depth), (a.mask, b.mask)):
        assert torch.equal(x, y)
    one = render_views(specs[1:2], 16, ViewSetConfig(), cfg)  # batching does not change an object's image
    assert torch.equal(one.rgba[0], a.rgba[1]) and torch.equal(one.depth[0], a.depth[1])
    assert a.rgba.shape == (3, 4, 4, 16, 16) and a.depth.shape == a.mask.shape == (3, 4, 16, 16)
    assert ((a.depth > 0) == a.mask).all() and ((a.rgba[:, :, 3] >= 0.5) == a.mask).all()
    assert (a.rgba >= 0).all() and (a.rgba <= 1).all()
    d = a.depth[a.mask]
    # every surface lies in the object's bounding sphere: depth within radius -+ sqrt(3)/2
    assert d.min() > 2.0 - 0.867 and d.max() < 2.0 + 0.867
    assert a.mask.float().mean() > 0.05  # objects are visible in every view
    assert a.mask.flatten(2).any(-1).all()


def test_cli_writes_an_rgba_folder(tmp_path):
    from PIL import Image

    from dd3g_sdk.preprocess import PreprocessConfig, load_image

    from dd3g_distill.data import ImageFolder

    out = tmp_path / "imgs"
    assert world.main(["--split", "val", "--count", "2", "--out", str(out), "--size", "24", "--supersample", "1"]) == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["val_000000.png", "val_000001.png"]
    im = Image.open(files[0])
    assert im.mode == "RGBA" and im.size == (24, 24)
    alpha = np.asarray(im)[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255
    folder = ImageFolder(out, PreprocessConfig(size=16))
    assert len(folder) == 2 and folder.paths == files
    x = folder[0]
    assert x.shape == (16, 16, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x, load_image(files[0], PreprocessConfig(size=16)))


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert world.main(["--count", "1", "--out", str(f), "--size", "16"]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert world.main(["--count", "0", "--out", str(tmp_path / "o")]) == 2
