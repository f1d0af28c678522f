"""PEPD (dd3g_sdk.model.pepd) on the tiny preset: shapes, ranges, geometry against the numpy camera rays,
determinism, batch independence, persistence, teacher init, and an ONNX export smoke test."""
from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from dd3g_sdk.cameras import orbit_camera, stack_viewmats
from dd3g_sdk.config import from_dict, to_dict
from dd3g_sdk.errors import InputError
from dd3g_sdk.gaussians import C0, Gaussians
from dd3g_sdk.model import PEPD, PEPDConfig
from dd3g_sdk.model.unet import MVUNet

KEYS = ("means", "scales", "quats", "opacities", "sh")


@pytest.fixture(scope="module")
def tiny() -> PEPD:
    torch.manual_seed(0)
    return PEPD(PEPDConfig.preset("tiny")).eval()


def make_inputs(model: PEPD, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, *model.image_shape, generator=g), torch.randn(batch, *model.noise_shape, generator=g)


def run(model, *args):
    with torch.no_grad():
        return model(*args)


def test_shapes_and_ranges(tiny):
    cfg = tiny.config
    image, noise = make_inputs(tiny)
    out = run(tiny, image, noise)
    n, k = tiny.num_gaussians, cfg.sh_coeffs
    assert n == 4 * 32 * 32
    expect = {"means": (2, n, 3), "scales": (2, n, 3), "quats": (2, n, 4), "opacities": (2, n), "sh": (2, n, k, 3)}
    assert {key: tuple(v.shape) for key, v in out.items()} == expect
    for v in out.values():
        assert v.dtype == torch.float32 and torch.isfinite(v).all()
    assert torch.allclose(out["quats"].norm(dim=-1), torch.ones(2, n), atol=1e-5)
    assert ((out["opacities"] > 0) & (out["opacities"] < 1)).all()
    assert (out["scales"] >= cfg.scale_min).all() and (out["scales"] <= cfg.scale_max).all()
    # means: within depth_half_range + offset of the sphere of radius |camera centre| around each camera
    cams = torch.from_numpy(np.stack([c.position for c in cfg.views.cameras(32, 32)])).float()  # [V, 3]
    means = out["means"].reshape(2, 4, -1, 3)
    dist = (means - cams[None, :, None]).norm(dim=-1)
    slack = cfg.depth_half_range + cfg.offset_max * 3 ** 0.5 + 1e-4
    assert ((dist - cfg.views.radius).abs() <= slack).all()
    # a valid Gaussians object per item (the SDK's own validation)
    g = Gaussians.from_torch(*(out[key][0] for key in KEYS))
    assert len(g) == n


def test_initial_output_is_a_sensible_blob(tiny):
    """At init: Gaussians around the object's depth, about half a pixel wide, mid opacity, grey-ish."""
    cfg = tiny.config
    out = run(tiny, *make_inputs(tiny))
    pixel = 2 * cfg.views.radius * np.tan(np.radians(cfg.views.fov_deg) / 2) / cfg.noise_size
    med = out["scales"].median().item()
    assert 0.3 * pixel < med < pixel
    assert 0.35 < out["opacities"].mean().item() < 0.65
    assert out["means"].abs().max().item() < 1.0  # the view frustums at the origin's depth
    assert (out["sh"][..., 0, :] * C0).abs().mean().item() < 0.1  # rgb = 0.5 + C0 * sh0 near grey


def test_rays_match_numpy_cameras(tiny):
    """Reference twin: in-graph rays (origin -R^T t, direction R^T d) vs dd3g_sdk.cameras.Camera.rays()."""
    h = tiny.config.noise_size
    cams = [orbit_camera(az, el, r, tiny.config.views.fov_deg, h, h)
            for az, el, r in ((0, 20, 2.0), (90, 20, 2.0), (33, -10, 2.5), (200, 45, 1.7))]
    vm = torch.from_numpy(stack_viewmats(cams))[None]  # [1, 4, 4, 4]
    origins, dirs = tiny.camera_rays(vm)
    for v, cam in enumerate(cams):
        o_ref, d_ref = cam.rays()
        assert np.abs(origins[0, v, 0].numpy() - o_ref[0, 0]).max() < 1e-5
        assert np.abs(dirs[0, v].numpy() - d_ref.reshape(-1, 3)).max() < 1e-5


def test_means_lie_on_pixel_rays():
    """With offset_max = 0 every mean is origin + depth * ray of its pixel, in (view, row, column) order."""
    torch.manual_seed(0)
    cfg = replace(PEPDConfig.preset("tiny"), offset_max=0.0)
    model = PEPD(cfg).eval()
    image, noise = make_inputs(model, batch=1)
    means = run(model, image, noise)["means"].reshape(cfg.num_views, -1, 3).double().numpy()
    for v, cam in enumerate(cfg.views.cameras(cfg.noise_size, cfg.noise_size)):
        o, d = cam.rays()
        rel = means[v] - o.reshape(-1, 3)
        depth = np.linalg.norm(rel, axis=-1)
        assert np.abs(rel / depth[:, None] - d.reshape(-1, 3)).max() < 1e-4
        assert (np.abs(depth - cfg.views.radius) <= cfg.depth_half_range + 1e-5).all()


@pytest.mark.parametrize("k", [1, 2])
def test_patch_layout(tiny, k):
    """Token (view, patch row a, patch column b) owns pixels (a*p + i, b*p + j): patchify then unpatchify
    gives back every pixel of every view, and unpatchify puts Gaussian (i, j, s) of a token at that pixel."""
    cfg = tiny.config
    model = tiny if k == 1 else PEPD(replace(cfg, gaussians_per_token=k * cfg.patch_size ** 2))
    V, h, p = cfg.num_views, cfg.noise_size, cfg.patch_size
    if k == 1:
        img = torch.randn(2 * V, 5, h, h)
        tokens = model._patchify(img)  # [2, V, L, p*p*5]
        assert tokens.shape == (2, V, (h // p) ** 2, p * p * 5)
        pixels = model._unpatchify(tokens.reshape(2, -1, p * p * 5), 5)  # [2, V, h*h, 1, 5]
        assert torch.equal(pixels.reshape(2, V, h, h, 5).permute(0, 1, 4, 2, 3), img.reshape(2, V, 5, h, h))
    # explicit coding: value = a*1000 + b*100 + i*10 + j (+ s/10 for the k Gaussians of a pixel)
    n = h // p
    a, b, i, j, s = torch.meshgrid(*(torch.arange(m) for m in (n, n, p, p, k)), indexing="ij")
    code = (a * 1000 + b * 100 + i * 10 + j).float() + s.float() / 10
    out = model._unpatchify(code.reshape(1, n * n, p * p * k).repeat(1, V, 1), 1).reshape(V, h, h, k)
    y, x = torch.meshgrid(torch.arange(h), torch.arange(h), indexing="ij")
    expect = ((y // p) * 1000 + (x // p) * 100 + (y % p) * 10 + x % p).float()
    for s_ in range(k):
        assert torch.allclose(out[..., s_], expect.expand(V, h, h) + s_ / 10)


def test_determinism_and_noise_dependence(tiny):
    image, noise = make_inputs(tiny)
    a, b = run(tiny, image, noise), run(tiny, image, noise)
    assert all(torch.equal(a[key], b[key]) for key in KEYS)
    c = run(tiny, image, torch.randn_like(noise))
    assert (a["means"] - c["means"]).abs().max().item() > 1e-4
    d = run(tiny, torch.rand_like(image), noise)
    assert (a["means"] - d["means"]).abs().max().item() > 1e-4


def test_batch_independence(tiny):
    image, noise = make_inputs(tiny, batch=3, seed=5)
    full = run(tiny, image, noise)
    one = run(tiny, image[1:2], noise[1:2])
    for key in KEYS:
        assert (full[key][1:2] - one[key]).abs().max().item() < 1e-5, key


def test_default_viewmats_equal_explicit(tiny):
    image, noise = make_inputs(tiny)
    vm = torch.from_numpy(stack_viewmats(tiny.config.views.cameras(32, 32))).expand(2, 4, 4, 4)
    a, b = run(tiny, image, noise), run(tiny, image, noise, vm)
    assert all(torch.equal(a[key], b[key]) for key in KEYS)


def test_wrong_input_shape_is_an_error(tiny):
    image, noise = make_inputs(tiny)
    with pytest.raises(ValueError, match="noise"):
        run(tiny, image, noise[:, :3])


def test_gradients_reach_every_parameter(tiny):
    image, noise = make_inputs(tiny, batch=1)
    model = PEPD(tiny.config)
    out = model(image, noise)
    loss = sum((v.float() ** 2).mean() for v in out.values())
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not dead


def test_parameter_counts_and_presets():
    tiny = PEPD(PEPDConfig.preset("tiny"))
    assert tiny.num_parameters() < 1_000_000
    assert sum(tiny.parameter_groups().values()) == tiny.num_parameters()
    assert "Gaussians" in tiny.summary()
    counts = {}
    for name in ("small", "base"):
        cfg = PEPDConfig.preset(name)
        with torch.device("meta"):
            counts[name] = (PEPD(cfg).num_parameters(), cfg.num_gaussians)
        assert from_dict(PEPDConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg
    assert counts["small"][0] < counts["base"][0] and counts["small"][1] < counts["base"][1]
    # small is the shipped default: a few MB in fp16 (see the preset's comment)
    assert PEPDConfig.preset("small").unet.block_out_channels == (32, 48, 64, 96)
    assert counts["small"][0] < 5_000_000
    with pytest.raises(ValueError):
        PEPDConfig.preset("huge")


@pytest.mark.parametrize("bad", [dict(kind="teacher"), dict(noise_size=16), dict(patch_size=3),
                                 dict(gaussians_per_token=8), dict(sh_degree=4), dict(decoder_depth=2),
                                 dict(scale_min=0.2)])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        replace(PEPDConfig.preset("tiny"), **bad)


def test_sh_degree_configurable():
    torch.manual_seed(0)
    cfg = replace(PEPDConfig.preset("tiny"), sh_degree=2)
    model = PEPD(cfg).eval()
    out = run(model, *make_inputs(model, batch=1))
    assert out["sh"].shape == (1, model.num_gaussians, 9, 3)
    assert out["sh"][..., 1:, :].abs().max().item() <= cfg.sh_rest_max


def test_save_from_pretrained_round_trip(tiny, tmp_path):
    d = tiny.save_pretrained(tmp_path / "ckpt")
    assert json.loads((d / "config.json").read_text())["kind"] == "pepd"
    loaded = PEPD.from_pretrained(d)
    assert loaded.config == tiny.config
    sd_a, sd_b = tiny.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    image, noise = make_inputs(tiny)
    a, b = run(tiny, image, noise), run(loaded, image, noise)
    assert all(torch.equal(a[key], b[key]) for key in KEYS)
    half = PEPD.from_pretrained(d, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    c = run(half, image, noise)  # low-precision weights, float32 Gaussians out
    assert all(c[key].dtype == torch.float32 and torch.isfinite(c[key]).all() for key in KEYS)
    assert (c["means"] - a["means"]).abs().max().item() < 0.05
    assert not list(tmp_path.glob("ckpt/*.tmp"))
    # fp16 storage (small shipped checkpoints): loads into float32, equal to the fp16-rounded weights
    d16 = tiny.save_pretrained(tmp_path / "ckpt16", dtype=torch.float16)
    assert (d16 / "model.safetensors").stat().st_size < 0.6 * (d / "model.safetensors").stat().st_size
    m16 = PEPD.from_pretrained(d16)
    assert m16.dtype == torch.float32
    assert all(torch.equal(m16.state_dict()[k], v.half().float()) for k, v in sd_a.items())


def test_from_pretrained_bad_inputs(tiny, tmp_path):
    d = tiny.save_pretrained(tmp_path / "ok")
    weights = (d / "model.safetensors").read_bytes()
    config = json.loads((d / "config.json").read_text())

    def folder(name, cfg=config, data=weights):
        p = tmp_path / name
        p.mkdir()
        (p / "config.json").write_text(json.dumps(cfg))
        if data is not None:
            (p / "model.safetensors").write_bytes(data)
        return p

    cases = {
        "unknown-key": (folder("unknown", {**config, "dropout": 0.1}), "config.json", "unknown key"),
        "nested-unknown": (folder("nested", {**config, "unet": {**config["unet"], "foo": 1}}), "config.json",
                           "unknown key"),
        "truncated": (folder("trunc", data=weights[: len(weights) // 2]), "model.safetensors", "safetensors"),
        "garbage": (folder("garbage", data=b"\x80\x04not safetensors"), "model.safetensors", "safetensors"),
        "missing-weights": (folder("noweights", data=None), "model.safetensors", "not found"),
        "other-config": (folder("mismatch", {**config, "decoder_width": 32, "decoder_heads": 2}),
                         "model.safetensors", "shape"),
        "not-a-folder": (tmp_path / "nope", "nope", "not a PEPD folder"),
    }
    for name, (path, names, problem) in cases.items():
        with pytest.raises(InputError, match=problem) as e:
            PEPD.from_pretrained(path)
        assert names in str(e.value), name

    from safetensors.torch import save
    sd = {k: v.clone() for k, v in tiny.state_dict().items()}
    sd.pop("conv_in.weight", None)
    sd.pop(next(iter(sd)))
    with pytest.raises(InputError, match="missing"):
        PEPD.from_pretrained(folder("missing-tensor", data=save(sd)))
    sd = {**tiny.state_dict(), "extra.weight": torch.zeros(2)}
    with pytest.raises(InputError, match="unexpected"):
        PEPD.from_pretrained(folder("extra-tensor", data=save(sd)))


def test_init_from_teacher_loads_all_phase1(tiny):
    torch.manual_seed(123)
    teacher = MVUNet(tiny.config.unet)
    model = PEPD(tiny.config)
    sd = teacher.state_dict()
    loaded, skipped = model.init_from_teacher(sd)
    assert sorted(loaded) == sorted(sd) and not skipped
    assert all(torch.equal(model.unet.state_dict()[k], sd[k]) for k in sd)
    enc = {("tokenizer." + k): v + 1 for k, v in model.image_encoder.state_dict().items()}
    loaded, skipped = model.init_from_teacher(sd, enc, image_encoder_prefix="tokenizer.")
    assert len(loaded) == len(sd) + len(enc) and not skipped
    assert torch.equal(model.image_encoder.pos_embed, enc["tokenizer.pos_embed"])


def test_onnx_export_matches_torch(tiny):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image, noise):
            out = self.m(image, noise)
            return tuple(out[key] for key in KEYS)

    image, noise = make_inputs(tiny, batch=1)
    buf = io.BytesIO()
    names = ["image", "noise", *KEYS]
    torch.onnx.export(Wrapped(tiny), (image, noise), buf, input_names=names[:2], output_names=names[2:],
                      opset_version=17, dynamo=False, dynamic_axes={n: {0: "batch"} for n in names})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    image2, noise2 = make_inputs(tiny, batch=2, seed=3)  # another batch size: the batch axis is dynamic
    got = sess.run(None, {"image": image2.numpy(), "noise": noise2.numpy()})
    ref = run(tiny, image2, noise2)
    for key, arr in zip(KEYS, got):
        assert arr.shape == tuple(ref[key].shape)
        assert np.abs(arr - ref[key].numpy()).max() < 1e-4, key
