"""MVUNet (hand-written torch) against its reference twin, diffusers' UNet2DConditionModel built from
MVUNetConfig.to_diffusers_kwargs(): same parameter names/shapes (strict load) and same outputs within 1e-5."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from dd3g_sdk.model.layers import multihead_attention_reference, multihead_sdpa, timestep_embedding
from dd3g_sdk.model.pepd import PEPDConfig
import numpy as np

from dd3g_sdk.cameras import ViewSetConfig, orbit_camera, stack_viewmats
from dd3g_sdk.model.unet import (ImageTokenizer, MVUNet, MVUNetConfig, camera_input, camera_ray_dirs,
                                 condition_sample, load_matching, pixel_rays, ray_map, repeat_tokens)

diffusers = pytest.importorskip("diffusers")
from diffusers.models.attention_processor import AttnProcessor2_0  # noqa: E402

TOL = 1e-5  # float32, same ops in the same order; observed differences ~1e-6


# The default config has 4 levels; these tests use 3 (the historical small teacher's layout).
THREE_TYPES = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))


def three_level(num_views: int) -> MVUNetConfig:
    """3 levels, 2 layers per block (exercises skip bookkeeping and shortcut convs), tiny widths."""
    return MVUNetConfig(sample_size=8, block_out_channels=(8, 16, 24), layers_per_block=2, **THREE_TYPES,
                        attention_head_dim=4, cross_attention_dim=12, norm_num_groups=4,
                        num_views=num_views, image_patch_size=4)


CONFIGS = {"tiny-preset": lambda nv: replace(PEPDConfig.preset("tiny").unet, num_views=nv, sample_size=16),
           "three-level": three_level,
           # 12 input channels (noise, image, Plücker rays): only conv_in changes
           "tiny-rays": lambda nv: replace(PEPDConfig.preset("tiny").unet, num_views=nv, sample_size=16,
                                           camera_rays=True, in_channels=12)}


class MultiViewProcessor:
    """The test's own multi-view self-attention processor: [B*V, L, C] -> [B, V*L, C], default attention."""

    def __init__(self, num_views: int):
        self.num_views = num_views
        self.inner = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        bv, length, c = hidden_states.shape
        x = hidden_states.reshape(bv // self.num_views, self.num_views * length, c)
        out = self.inner(attn, x, encoder_hidden_states, attention_mask, temb)
        return out.reshape(bv, length, c)


def build_pair(cfg: MVUNetConfig, seed: int = 0):
    torch.manual_seed(seed)
    ref = diffusers.UNet2DConditionModel(**cfg.to_diffusers_kwargs()).eval()
    with torch.no_grad():  # perturb everything (norm affines, zero-init biases) so every tensor matters
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    if cfg.num_views > 1:
        ref.set_attn_processor({name: MultiViewProcessor(cfg.num_views) if name.endswith("attn1.processor")
                                else AttnProcessor2_0() for name in ref.attn_processors})
    else:
        ref.set_attn_processor(AttnProcessor2_0())
    ours = MVUNet(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def inputs(cfg: MVUNetConfig, objects: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    n, h = objects * cfg.num_views, cfg.sample_size
    sample = torch.randn(n, cfg.in_channels, h, h, generator=g)
    t = torch.randint(0, cfg.num_train_timesteps, (n,), generator=g)
    ctx = torch.randn(n, 5, cfg.cross_attention_dim, generator=g)
    cam = torch.randn(n, cfg.camera_dim, generator=g)
    return sample, t, ctx, cam


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_names_and_shapes_identical(name):
    cfg = CONFIGS[name](1)
    ref = diffusers.UNet2DConditionModel(**cfg.to_diffusers_kwargs())
    a = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in MVUNet(cfg).state_dict().items()}
    assert a == b
    # diffusers' "attention_head_dim" is a head count: check ours (channels per head) converts to it
    for name_, mod in ref.named_modules():
        if name_.endswith("attn1"):
            assert mod.heads * cfg.attention_head_dim == mod.to_q.out_features


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("num_views", [1, 4])
def test_outputs_equal_diffusers(name, num_views):
    cfg = CONFIGS[name](num_views)
    ref, ours = build_pair(cfg)
    sample, t, ctx, cam = inputs(cfg)
    with torch.no_grad():
        expect = ref(sample, t, ctx, class_labels=cam).sample
        eps, feats = ours(sample, t, ctx, cam, return_features=True)
    assert eps.shape == expect.shape == (sample.shape[0], 3, cfg.sample_size, cfg.sample_size)
    assert feats.shape == (sample.shape[0], cfg.block_out_channels[0], cfg.sample_size, cfg.sample_size)
    assert (eps - expect).abs().max().item() < TOL
    assert expect.abs().mean().item() > 1e-2  # not a trivially zero comparison


def test_multi_view_attention_mixes_views():
    """With V=4, changing one view's input changes the other views' outputs; with V=1 it does not."""
    for nv, should_mix in ((4, True), (1, False)):
        cfg = three_level(nv)
        _, ours = build_pair(cfg)
        sample, t, ctx, cam = inputs(cfg, objects=1) if nv == 4 else inputs(cfg, objects=4)
        s2 = sample.clone()
        s2[0] += 1.0
        with torch.no_grad():
            d = (ours(sample, t, ctx, cam) - ours(s2, t, ctx, cam))[1:].abs().max().item()
        assert (d > 1e-4) == should_mix


def test_scalar_and_tensor_timesteps_agree():
    cfg = three_level(4)
    _, ours = build_pair(cfg)
    sample, _, ctx, cam = inputs(cfg)
    with torch.no_grad():
        a = ours(sample, 999, ctx, cam)
        b = ours(sample, torch.tensor(999), ctx, cam)
        c = ours(sample, torch.full((sample.shape[0],), 999), ctx, cam)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_timestep_embedding_matches_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    for dim in (8, 15, 64):
        ref = get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        assert (timestep_embedding(t, dim) - ref).abs().max().item() < 1e-6


def test_sdpa_matches_plain_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 7, 12, generator=g), torch.randn(2, 5, 12, generator=g), torch.randn(2, 5, 12, generator=g)
    assert (multihead_sdpa(q, k, v, 3) - multihead_attention_reference(q, k, v, 3)).abs().max().item() < 1e-5


def test_load_matching_between_sizes():
    small, big = three_level(4), MVUNetConfig(sample_size=8, block_out_channels=(8, 16, 32), layers_per_block=2, **THREE_TYPES,
                                              attention_head_dim=4, cross_attention_dim=12, norm_num_groups=4,
                                              image_patch_size=4)
    src, dst = MVUNet(small), MVUNet(big)
    sd = src.state_dict()
    loaded, skipped = load_matching(dst, sd)
    assert loaded and skipped and sorted(loaded + skipped) == sorted(sd)
    assert "conv_in.weight" in loaded and "mid_block.resnets.0.conv1.weight" in skipped
    own = dst.state_dict()
    assert all(torch.equal(own[k], sd[k]) for k in loaded)
    # a prefix is stripped before matching
    loaded2, _ = load_matching(dst, {"unet." + k: v for k, v in sd.items()}, prefix="unet.")
    assert sorted(loaded2) == sorted("unet." + k for k in loaded)


def test_input_helpers():
    b, v, h = 2, 4, 8
    x_t = torch.randn(b, v, 3, h, h)
    image = torch.rand(b, 3, 16, 16)
    s = condition_sample(x_t, image)
    assert s.shape == (b * v, 6, h, h)
    assert torch.equal(s[5, :3], x_t[1, 1])  # object-major order: index = b * V + v
    expect = torch.nn.functional.avg_pool2d(image, 2) * 2 - 1
    assert torch.allclose(s[5, 3:], expect[1], atol=1e-6) and torch.allclose(s[4, 3:], s[7, 3:])
    vm = torch.randn(b, v, 4, 4)
    assert torch.equal(camera_input(vm)[6], vm[1, 2].reshape(16))
    tok = torch.randn(b, 3, 5)
    assert torch.equal(repeat_tokens(tok, v)[5], tok[1])


def test_ray_map_matches_the_cameras_rays():
    """Reference twin: `Camera.rays()` (numpy, float64) and np.cross. Tolerance 1e-5 (float32 rays)."""
    size, fov = 6, 40.0
    cams = [orbit_camera(az, el, 2.0, fov, size, size) for az, el in ((0, 20), (90, 20), (200, -35), (17, 80))]
    vm = torch.from_numpy(stack_viewmats(cams)).reshape(2, 2, 4, 4)
    origins, dirs = pixel_rays(vm, camera_ray_dirs(fov, size))
    rays = ray_map(origins, dirs, size)  # [4, 6, size, size]
    assert rays.shape == (4, 6, size, size)
    for k, cam in enumerate(cams):
        o, d = cam.rays()  # [H, W, 3] each
        m = np.cross(o, d)
        got = rays[k].permute(1, 2, 0).double().numpy()
        np.testing.assert_allclose(got[..., :3], d, atol=1e-5)
        np.testing.assert_allclose(got[..., 3:], m, atol=1e-5)
        np.testing.assert_allclose(origins.reshape(4, 3)[k].double().numpy(), cam.position, atol=1e-5)
    # the moment is the same for every point on a ray: o + s d gives o x d too
    o2 = origins + 0.7 * dirs[..., :1, :]
    assert torch.allclose(ray_map(o2, dirs[..., :1, :].expand_as(dirs), size)[:, 3:],
                          ray_map(origins, dirs[..., :1, :].expand_as(dirs), size)[:, 3:], atol=1e-5)


def test_condition_sample_appends_rays():
    x_t, image = torch.randn(1, 4, 3, 8, 8), torch.rand(1, 3, 8, 8)
    vm = torch.from_numpy(stack_viewmats(ViewSetConfig().cameras(8, 8))).unsqueeze(0)
    rays = ray_map(*pixel_rays(vm, camera_ray_dirs(40.0, 8)), 8)
    s = condition_sample(x_t, image, rays)
    assert s.shape == (4, 12, 8, 8)
    assert torch.equal(s[:, :6], condition_sample(x_t, image)) and torch.equal(s[:, 6:], rays)
    assert MVUNetConfig(camera_rays=True, in_channels=12).ray_channels == 6 and MVUNetConfig().ray_channels == 0


def test_image_tokenizer():
    cfg = three_level(4)
    enc = ImageTokenizer.for_unet(cfg)
    img = torch.rand(2, 3, 16, 16)
    out = enc(img)
    assert out.shape == (2, cfg.num_image_tokens, cfg.cross_attention_dim)
    # resizing happens inside: an image already at the tokenizer's size gives the box-filtered result
    assert torch.allclose(out, enc(torch.nn.functional.avg_pool2d(img, 2)), atol=1e-6)


@pytest.mark.parametrize("bad", [dict(norm_num_groups=5), dict(attention_head_dim=7), dict(sample_size=6),
                                 dict(down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D")),
                                 dict(block_out_channels=(8, 16))])
def test_config_validation(bad):
    base = dict(sample_size=8, block_out_channels=(8, 16, 24), attention_head_dim=4, cross_attention_dim=12,
                norm_num_groups=4, image_patch_size=4, **THREE_TYPES)
    MVUNetConfig(**base)  # the base itself is valid, so each failure below is the bad field's
    with pytest.raises(ValueError):
        MVUNetConfig(**{**base, **bad})
