"""dd3g_sdk.gaussians: validation messages, construction, selection, SH degree, torch interop."""
from __future__ import annotations

import numpy as np
import pytest

from dd3g_sdk.gaussians import C0, Gaussians, normalize_quats, quat_to_rotmat, rgb_to_sh0, sh0_to_rgb


def make(n: int = 6, degree: int = 1, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    return Gaussians(
        means=rng.uniform(-0.5, 0.5, (n, 3)).astype(np.float32),
        scales=rng.uniform(0.01, 0.1, (n, 3)).astype(np.float32),
        quats=normalize_quats(rng.normal(size=(n, 4))),
        opacities=rng.uniform(0, 1, n).astype(np.float32),
        sh=rng.normal(size=(n, (degree + 1) ** 2, 3)).astype(np.float32),
    )


def fields(g: Gaussians) -> dict:
    return dict(means=g.means, scales=g.scales, quats=g.quats, opacities=g.opacities, sh=g.sh)


def test_valid_and_converted_to_float32_contiguous():
    g = make()
    d = {k: np.asfortranarray(v.astype(np.float64)) for k, v in fields(g).items()}
    h = Gaussians(**d)
    for k, v in fields(h).items():
        assert v.dtype == np.float32 and v.flags.c_contiguous, k
    assert len(h) == 6 and h.sh_degree == 1
    assert h.allclose(g)


@pytest.mark.parametrize("field,value,message", [
    ("means", [[0.0, 0.0, 0.0]] * 6, "Gaussians.means must be a numpy array, got list"),
    ("means", np.zeros((6, 3), np.int32), "Gaussians.means must be floating point, got dtype int32"),
    ("means", np.zeros((6, 2), np.float32), "Gaussians.means must have shape [N, 3], got [6, 2]"),
    ("scales", np.ones((5, 3), np.float32), "Gaussians.scales must have shape [6, 3], got [5, 3]"),
    ("quats", np.ones((6, 3), np.float32), "Gaussians.quats must have shape [6, 4], got [6, 3]"),
    ("opacities", np.ones((6, 1), np.float32), "Gaussians.opacities must have shape [6], got [6, 1]"),
    ("sh", np.zeros((6, 3, 3), np.float32), "Gaussians.sh must have shape [N, K, 3] with N=6 and K in (1, 4, 9, 16)"),
    ("sh", np.zeros((6, 4, 4), np.float32), "got [6, 4, 4]"),
    ("scales", -np.ones((6, 3), np.float32), "Gaussians.scales must be >= 0"),
    ("opacities", np.full(6, 1.5, np.float32), "Gaussians.opacities must lie in [0, 1]"),
    ("opacities", np.full(6, -0.1, np.float32), "Gaussians.opacities must lie in [0, 1]"),
    ("quats", np.tile(np.float32([2, 0, 0, 0]), (6, 1)), "Gaussians.quats must be unit quaternions"),
])
def test_validation_messages(field, value, message):
    d = fields(make())
    d[field] = value
    with pytest.raises(ValueError) as e:
        Gaussians(**d)
    assert message in str(e.value)


@pytest.mark.parametrize("field", ["means", "scales", "quats", "opacities", "sh"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_rejected_with_count(field, bad):
    d = fields(make())
    v = d[field].copy()
    v.reshape(6, -1)[[1, 4], 0] = bad  # two bad Gaussians
    d[field] = v
    with pytest.raises(ValueError, match=rf"Gaussians\.{field} has NaN or Inf values \(2 Gaussians\)"):
        Gaussians(**d)


def test_equality_is_identity_and_allclose_compares_values():
    a, b = make(), make()
    assert a == a and a != b  # no "truth value of an array is ambiguous"
    assert a.allclose(b) and not a.allclose(make(seed=1)) and not a.allclose(make(5))


def test_validate_catches_later_mutation():
    g = make()
    g.opacities[0] = 2.0
    with pytest.raises(ValueError, match="opacities"):
        g.validate()


def test_empty_and_from_colors():
    e = Gaussians.empty(sh_degree=2)
    assert len(e) == 0 and e.sh.shape == (0, 9, 3) and e.sh_degree == 2
    lo, hi = e.bounds()
    assert lo.shape == (3,) and hi.shape == (3,)

    colors = np.float32([[1, 0, 0], [0.25, 0.5, 0.75]])
    g = Gaussians.from_colors(np.zeros((2, 3)), np.full((2, 3), 0.1), [[2, 0, 0, 0], [0, 0, 0, 3]], [0.5, 1.0],
                              colors, sh_degree=1)
    np.testing.assert_allclose(g.colors, colors, atol=1e-6)
    np.testing.assert_allclose(g.quats, [[1, 0, 0, 0], [0, 0, 0, 1]])
    assert np.all(g.sh[:, 1:] == 0) and g.sh_degree == 1


def test_sh0_colour_conversion_matches_the_3dgs_constant():
    assert C0 == pytest.approx(0.5 / np.sqrt(np.pi))
    rgb = np.float32([[0.0, 0.5, 1.0]])
    np.testing.assert_allclose(rgb_to_sh0(rgb), [[-0.5 / C0, 0.0, 0.5 / C0]], rtol=1e-6)
    np.testing.assert_allclose(sh0_to_rgb(rgb_to_sh0(rgb)), rgb, atol=1e-6)


def test_colors_clamped():
    g = make()
    g.sh[0, 0] = [10.0, -10.0, 0.0]
    np.testing.assert_allclose(g.colors[0], [1.0, 0.0, 0.5])


def test_bounds():
    g = make()
    lo, hi = g.bounds()
    np.testing.assert_array_equal(lo, g.means.min(0))
    np.testing.assert_array_equal(hi, g.means.max(0))


def test_concatenate_pads_sh_to_the_highest_degree():
    a, b = make(3, degree=0, seed=1), make(4, degree=2, seed=2)
    c = Gaussians.concatenate([a, b])
    assert len(c) == 7 and c.sh_degree == 2
    np.testing.assert_array_equal(c.means, np.concatenate([a.means, b.means]))
    np.testing.assert_array_equal(c.sh[:3, 0], a.sh[:, 0])
    assert np.all(c.sh[:3, 1:] == 0)
    np.testing.assert_array_equal(c.sh[3:], b.sh)
    with pytest.raises(ValueError, match="at least one"):
        Gaussians.concatenate([])


def test_index_int_slice_mask_array():
    g = make()
    one = g[2]
    assert len(one) == 1 and np.array_equal(one.means[0], g.means[2])
    assert np.array_equal(g[np.int64(3)].sh[0], g.sh[3])
    assert np.array_equal(g[1:4].opacities, g.opacities[1:4])
    m = g.opacities > 0.5
    assert np.array_equal(g[m].quats, g.quats[m])
    idx = np.array([5, 0, 0])
    sel = g[idx]
    assert np.array_equal(sel.scales, g.scales[idx]) and sel.means.flags.c_contiguous
    sel.means[0] = 99  # a copy: the original is untouched
    assert g.means[5, 0] != 99


def test_crop_is_inclusive_box():
    g = make(4)
    g.means[:] = [[0, 0, 0], [0.5, 0.5, 0.5], [0.6, 0, 0], [-0.5, -0.5, -0.51]]
    kept = g.crop([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(kept.means, g.means[:2])


def test_prune_drops_below_threshold_only():
    g = make(4)
    g.opacities[:] = [0.0, 0.004, 0.005, 0.9]
    assert np.array_equal(g.prune().opacities, np.float32([0.005, 0.9]))
    assert len(g.prune(0.5)) == 1


def test_with_sh_degree_pads_and_truncates():
    g = make(3, degree=1)
    up = g.with_sh_degree(3)
    assert up.sh.shape == (3, 16, 3)
    np.testing.assert_array_equal(up.sh[:, :4], g.sh)
    assert np.all(up.sh[:, 4:] == 0)
    down = up.with_sh_degree(0)
    np.testing.assert_array_equal(down.sh, g.sh[:, :1])
    with pytest.raises(ValueError):
        g.with_sh_degree(4)  # K = 25 is not a 3DGS degree


def test_quat_to_rotmat_is_a_rotation_and_matches_a_known_case():
    q = normalize_quats(np.random.default_rng(0).normal(size=(20, 4)))
    R = quat_to_rotmat(q)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-6)
    # 90 degrees about +z: x -> y
    c = np.sqrt(0.5)
    np.testing.assert_allclose(quat_to_rotmat(np.array([c, 0, 0, c])) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_normalize_quats_zero_becomes_identity():
    q = normalize_quats(np.array([[0, 0, 0, 0], [0, 3, 0, 4]], np.float32))
    np.testing.assert_allclose(q, [[1, 0, 0, 0], [0, 0.6, 0, 0.8]], rtol=1e-6)


def test_torch_interop_both_ways():
    torch = pytest.importorskip("torch")
    g = make(5, degree=2)
    t = g.to_torch()
    assert set(t) == {"means", "scales", "quats", "opacities", "sh"}
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in t.values())
    assert t["sh"].shape == (5, 9, 3)
    back = Gaussians.from_torch(**{k: v.double().requires_grad_(True) for k, v in t.items()})
    assert back.allclose(g, rtol=0, atol=0)
    # Constructor also accepts tensors directly (detached, float32 numpy).
    direct = Gaussians(*(v.clone().requires_grad_(True) for v in t.values()))
    assert isinstance(direct.means, np.ndarray) and direct.allclose(g, rtol=0, atol=0)
    with pytest.raises(ValueError, match="opacities"):
        Gaussians.from_torch(t["means"], t["scales"], t["quats"], t["opacities"] + 2, t["sh"])
