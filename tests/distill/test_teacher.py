"""The teacher interface, multi-view attention, DDIM determinism, training steps, checkpoints, save/load."""
import json
import math
from dataclasses import replace

import pytest
import torch

from dd3g_sdk.errors import InputError
from dd3g_sdk.model.pepd import PEPDConfig
from dd3g_distill.teacher import DiffusersMVTeacher, MultiViewAttnProcessor, MultiViewTeacher
from dd3g_distill.train_teacher import EventWriter, TeacherTrainer, TrainConfig, crc32c, train
from distill_helpers import loss_before_after, ode_inputs

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_teacher():
    return DiffusersMVTeacher.from_unet_config(PEPDConfig.preset("tiny").unet, seed=0).eval()


def _tiny_train_config(**kw) -> TrainConfig:
    base = dict(unet_preset="tiny", num_objects=3, num_val_objects=2, render_supersample=1, batch_size=2,
                max_steps=8, warmup_steps=2, log_every=1, val_every=2, ckpt_every=2, lr=1e-3, ema_decay=0.9)
    base.update(kw)
    return TrainConfig(**base)


def test_interface_shapes(tiny_teacher):
    t = tiny_teacher
    assert isinstance(t, MultiViewTeacher)
    assert t.sample_shape == (4, 3, 32, 32) and t.prediction_type == "epsilon" and t.sample_space == "pixels"
    assert len(t.views) == 4 and t.views[0].width == 32
    assert t.viewmats.shape == (4, 4, 4)
    image = torch.rand(2, 3, 48, 48)  # any input size: resized inside
    cond = t.condition(image)
    assert cond["tokens"].shape == (2, 16, 32)
    x = torch.randn(2, *t.sample_shape)
    with torch.no_grad():
        eps = t.denoise(x, 500, cond)
        eps_b = t.denoise(x, torch.tensor([500, 500]), cond, t.viewmats)
    assert eps.shape == x.shape and eps.dtype == torch.float32
    torch.testing.assert_close(eps, eps_b)
    with pytest.raises(ValueError):
        t.denoise(torch.randn(2, 3, 3, 32, 32), 10, cond)


def test_multiview_attention_spans_views(tiny_teacher):
    """Changing one view changes the denoised output of the other views (self-attention over all views);
    with views processed as independent images (diffusers' default processor) it would not."""
    t = tiny_teacher
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, *t.sample_shape, generator=g)
    cond = t.condition(torch.rand(1, 3, 32, 32, generator=g))
    x2 = x.clone()
    x2[:, 3] = torch.randn(x2[:, 3].shape, generator=g)
    with torch.no_grad():
        a, b = t.denoise(x, 300, cond), t.denoise(x2, 300, cond)
    assert (a[:, :3] - b[:, :3]).abs().max() > 1e-4


def test_multiview_processor_matches_explicit_attention():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8, bias=False, out_bias=True).eval()
    v, b, length = 3, 2, 5
    x = torch.randn(b * v, length, 16)
    out = MultiViewAttnProcessor(v)(attn, x)
    # reference: concatenate the views' tokens and do plain softmax attention in float64
    xx = x.double().reshape(b, v * length, 16)
    wq, wk, wv = (m.weight.double() for m in (attn.to_q, attn.to_k, attn.to_v))
    q, k, val = (xx @ w.T for w in (wq, wk, wv))
    heads = []
    for h in range(2):
        sl = slice(8 * h, 8 * h + 8)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(8), -1)
        heads.append(w @ val[..., sl])
    ref = torch.cat(heads, -1) @ attn.to_out[0].weight.double().T + attn.to_out[0].bias.double()
    torch.testing.assert_close(out.double(), ref.reshape(b * v, length, 16), atol=1e-5, rtol=1e-5)
    # one view: exactly diffusers' own processor
    torch.testing.assert_close(MultiViewAttnProcessor(1)(attn, x), AttnProcessor2_0()(attn, x), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError):
        MultiViewAttnProcessor(4)(attn, x)  # 6 is not a multiple of 4


def test_set_multiview_attention_only_touches_attn1(tiny_teacher):
    procs = tiny_teacher.unet.attn_processors
    mv = [n for n, p in procs.items() if isinstance(p, MultiViewAttnProcessor)]
    assert mv and all(n.endswith("attn1.processor") for n in mv)
    assert all(p.num_views == 4 for n, p in procs.items() if n in mv)
    assert not any(isinstance(p, MultiViewAttnProcessor) for n, p in procs.items() if "attn2" in n)


def test_ode_is_deterministic_and_depends_on_the_noise(tiny_teacher):
    t = tiny_teacher
    cond, n1, n2 = ode_inputs(t)
    a = t.ode(n1, cond, steps=3)
    b = t.ode(n1.clone(), cond, steps=3)
    c = t.ode(n2, cond, steps=3)
    assert a.shape == (1, 4, 3, 32, 32) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3
    views, traj = t.ode(n1, cond, steps=3, return_trajectory=True)
    assert torch.equal(views, a)
    assert traj["timesteps"].tolist() == [666, 333, 0]  # "leading" spacing of 1000 train steps
    assert traj["states"].shape == (4, 1, 4, 3, 32, 32) and traj["pred_x0"].shape == (3, 1, 4, 3, 32, 32)
    torch.testing.assert_close(views, ((traj["states"][-1] + 1) / 2).clamp(0, 1))
    # the starting state: white prior under zero-mean noise, weighted by the first timestep's alpha_bar
    ab = float(t.scheduler.alphas_cumprod[666])
    n0 = n1 - n1.mean((-2, -1), keepdim=True)
    torch.testing.assert_close(traj["states"][0], math.sqrt(ab) + math.sqrt(1 - ab) * n0)
    # guidance: one more UNet pass per step, a different (still deterministic) result
    g2 = t.ode(n1, cond, steps=3, guidance_scale=3.0)
    assert torch.equal(g2, t.ode(n1, cond, steps=3, guidance_scale=3.0)) and not torch.equal(g2, a)


def test_ode_step_is_the_ddim_update(tiny_teacher):
    """One DDIM step by hand (eta 0, clipped x0) equals the scheduler's step inside ode()."""
    t = tiny_teacher
    g = torch.Generator().manual_seed(2)
    cond = t.condition(torch.rand(1, 3, 32, 32, generator=g))
    noise = torch.randn(1, *t.sample_shape, generator=g)
    _, traj = t.ode(noise, cond, steps=2, return_trajectory=True)
    x, ts = traj["states"][0], int(traj["timesteps"][0])
    with torch.no_grad():
        eps = t.denoise(x, ts, cond)
    ac = t.scheduler.alphas_cumprod.double()
    a, a_prev = ac[ts], ac[ts - 500]
    x0 = ((x.double() - (1 - a).sqrt() * eps.double()) / a.sqrt()).clamp(-1, 1)
    x_prev = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps.double()
    torch.testing.assert_close(traj["states"][1].double(), x_prev, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(tiny_teacher, tmp_path):
    t = tiny_teacher
    t.save_pretrained(tmp_path / "t32", dtype=None)
    for sub in ("unet", "scheduler", "image_encoder"):
        assert (tmp_path / "t32" / sub).is_dir()
    assert not list((tmp_path / "t32").rglob("*.bin"))  # safetensors only
    back = DiffusersMVTeacher.from_pretrained(tmp_path / "t32")
    assert back.config == t.config
    g = torch.Generator().manual_seed(3)
    img, noise = torch.rand(1, 3, 32, 32, generator=g), torch.randn(1, *t.sample_shape, generator=g)
    torch.testing.assert_close(back.ode(noise, back.condition(img), steps=2), t.ode(noise, t.condition(img), steps=2),
                               atol=0, rtol=0)
    # fp16 folder: weights are the fp16-rounded ones
    t.save_pretrained(tmp_path / "t16")
    half = DiffusersMVTeacher.from_pretrained(tmp_path / "t16")
    w, w16 = t.unet.conv_in.weight, half.unet.conv_in.weight
    torch.testing.assert_close(w16, w.half().float(), atol=0, rtol=0)
    cfg = json.loads((tmp_path / "t16" / "teacher.json").read_text())
    assert cfg["kind"] == "dd3g-mv-teacher" and cfg["resolution"] == 32


def test_from_pretrained_bad_folders(tmp_path, tiny_teacher):
    with pytest.raises(InputError, match="not found"):
        DiffusersMVTeacher.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="missing"):
        DiffusersMVTeacher.from_pretrained(tmp_path / "empty")
    tiny_teacher.save_pretrained(tmp_path / "bad", dtype=None)
    (tmp_path / "bad" / "teacher.json").write_text('{"kind": "dd3g-mv-teacher", "colour": 1}')
    with pytest.raises(InputError, match="unknown key"):
        DiffusersMVTeacher.from_pretrained(tmp_path / "bad")


def _assert_steps_lower_the_loss(tr: TeacherTrainer, steps: int = 6) -> None:
    """`steps` training steps on the batch of step 0 lower its loss by more than 10 %."""
    before, after = loss_before_after(tr, steps)
    assert after < 0.9 * before, (before, after)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_training_steps_lower_the_loss_on_a_fixed_batch(prediction_type):
    tr = TeacherTrainer(_tiny_train_config(cond_drop_prob=0.0, warmup_steps=1, lr=2e-3,
                                           prediction_type=prediction_type), "cpu")
    assert tr.teacher.prediction_type == prediction_type
    assert tr.teacher.scheduler.config.prediction_type == prediction_type
    _assert_steps_lower_the_loss(tr)
    assert tr.step == 6
    # the EMA moved towards the weights but is not equal to them
    diffs = [float((e - p.detach()).abs().max()) for e, p in zip(tr.ema, tr.params)]
    assert max(diffs) > 0


def test_unet_width_scales_the_teacher(tmp_path):
    """unet_width widens the teacher's UNet (channels and image-token width, rounded to multiples of lcm(norm groups,
    head width) so that group norm and attention heads still divide them); a wide teacher trains and exports."""
    assert _tiny_train_config().unet_config().block_out_channels == (16, 32)  # the tiny preset, q = lcm(8, 8)
    wide_cfg = _tiny_train_config(unet_width=2.0, cond_drop_prob=0.0, warmup_steps=1, lr=2e-3)
    wide = wide_cfg.unet_config()
    assert wide.block_out_channels == (32, 64) and wide.cross_attention_dim == 64
    assert _tiny_train_config(unet_width=1.3).unet_config().block_out_channels == (24, 40)  # 20.8 -> 24, 41.6 -> 40
    # the small teacher at width 2: 64/96/128/192 (q = lcm(16, 32) = 32; 48 x 2 = 96)
    assert TrainConfig(unet_width=2.0).unet_config().block_out_channels == (64, 96, 128, 192)
    with pytest.raises(ValueError, match="unet_width"):
        TrainConfig(unet_width=0.0)
    tr = TeacherTrainer(wide_cfg, "cpu")
    narrow = TeacherTrainer(_tiny_train_config(), "cpu")
    assert sum(p.numel() for p in tr.params) > 3 * sum(p.numel() for p in narrow.params)
    _assert_steps_lower_the_loss(tr)
    t = DiffusersMVTeacher.from_pretrained(tr.export(tmp_path / "wide"))
    assert t.unet.conv_in.out_channels == 32


def test_prediction_conversions(tiny_teacher):
    """to_epsilon / to_x0 invert the forward process for both prediction types."""
    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(2, 4, 3, 32, 32, generator=g) * 2 - 1
    eps = torch.randn(2, 4, 3, 32, 32, generator=g)
    t = torch.tensor([100, 900])
    a = tiny_teacher.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    torch.testing.assert_close(tiny_teacher.to_x0(eps, x_t, t), x0, atol=1e-4, rtol=1e-4)
    assert tiny_teacher.to_epsilon(eps, x_t, t) is eps
    from diffusers import DDIMScheduler

    v_sched = DDIMScheduler.from_config(tiny_teacher.scheduler.config, prediction_type="v_prediction")
    v_teacher = DiffusersMVTeacher(tiny_teacher.unet, v_sched, tiny_teacher.image_encoder,
                                   replace(tiny_teacher.config, prediction_type="v_prediction"))
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    torch.testing.assert_close(v_teacher.to_epsilon(v, x_t, t), eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v_teacher.to_x0(v, x_t, t), x0, atol=1e-5, rtol=1e-5)


def test_batches_are_a_function_of_the_step():
    tr = TeacherTrainer(_tiny_train_config(), "cpu")
    a, b, c = tr.batch_for_step(3), tr.batch_for_step(3), tr.batch_for_step(4)
    for k in a:
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["noise"], c["noise"])
    assert a["x0"].shape == (2, 4, 3, 32, 32) and a["x0"].min() >= -1 and a["x0"].max() <= 1
    # the condition is view 0 of the same object (white background), unless dropped to the grey null image
    cond01 = (a["x0"][:, 0] + 1) / 2
    for i in range(2):
        assert torch.allclose(a["cond_image"][i], cond01[i], atol=1e-6) or bool((a["cond_image"][i] == 0.5).all())


def test_resume_is_exact(tmp_path):
    cfg = _tiny_train_config(max_steps=4, ckpt_every=2)
    straight = train(cfg, tmp_path / "a", progress=False)
    first = train(cfg, tmp_path / "b", max_steps=2, progress=False)
    assert first.step == 2 and (tmp_path / "b" / "latest.json").is_file()
    resumed = train(cfg, tmp_path / "b", progress=False)
    assert resumed.step == 4
    for p, q in zip(straight.params, resumed.params):
        assert torch.equal(p, q)
    for p, q in zip(straight.ema, resumed.ema):
        assert torch.equal(p, q)
    # a run folder of another config is refused
    with pytest.raises(InputError, match="another config"):
        train(replace(cfg, lr=5e-4), tmp_path / "b", progress=False)
    # export: the EMA weights in fp16, loadable as a teacher
    out = resumed.export(tmp_path / "teacher")
    t = DiffusersMVTeacher.from_pretrained(out)
    names = [n for n, p in resumed.teacher.named_parameters()]
    ema = dict(zip(names, resumed.ema))
    torch.testing.assert_close(t.unet.conv_in.weight, ema["unet.conv_in.weight"].half().float(), atol=0, rtol=0)
    assert json.loads((out / "training.json").read_text())["steps"] == 4
    # a fresh run can start from the exported weights (the committed teacher keeps no training checkpoint)
    cont = train(cfg, tmp_path / "c", max_steps=0, progress=False, init_from=out)
    assert cont.step == 0 and cont.initialised_from == str(out)
    for n, p in cont.teacher.named_parameters():
        if n == "unet.conv_in.weight":
            torch.testing.assert_close(p, ema[n].half().float(), atol=0, rtol=0)
    with pytest.raises(InputError, match="another shape|missing"):
        TeacherTrainer(_tiny_train_config(unet_preset="small"), "cpu").init_from(out)


def test_event_writer_is_readable_by_tensorboard(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    w = EventWriter(tmp_path)
    for s, v in [(1, 0.5), (2, 0.25), (5, 0.125)]:
        w.scalar("train/loss", v, s)
    w.close()
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    ea = ea_mod.EventAccumulator(str(w.path))
    ea.Reload()
    got = [(e.step, e.value) for e in ea.Scalars("train/loss")]
    assert got == [(1, 0.5), (2, 0.25), (5, 0.125)]


def test_committed_teacher_loads_and_denoises():
    """The committed procworld-mv64 teacher: loads offline, matches PEPD small's UNet, and its one-step x0
    estimate at t = 300 recovers held-out test objects (measured on CPU: 33.0 dB input view, 28.1 dB novel
    views over 8 objects; the bounds leave ~4 dB for other objects/noise draws; a random UNet scores 13.6 dB:
    the v-target keeps its x0 estimate near sqrt(a) x_t)."""
    import math
    from pathlib import Path

    from dd3g_distill.data.world import RenderConfig, composite_white, object_spec, render_views

    root = Path(__file__).resolve().parents[2] / "distill" / "dd3g_distill" / "teachers" / "procworld-mv64"
    if not (root / "teacher.json").is_file():
        pytest.skip("no committed teacher")
    t = DiffusersMVTeacher.from_pretrained(root)
    assert t.sample_shape == (4, 3, 64, 64) and t.prediction_type == "v_prediction"
    unet_cfg = PEPDConfig.preset("small").unet
    assert list(t.unet.config.block_out_channels) == list(unet_cfg.block_out_channels)
    specs = [object_spec("test", k) for k in range(4)]
    gt = composite_white(render_views(specs, 64, t.config.views, RenderConfig(supersample=2), "cpu").rgba)
    x0 = (torch.round(gt.clamp(0, 1) * 255) / 255) * 2 - 1
    g = torch.Generator().manual_seed(3)
    ts = 300
    a = t.scheduler.alphas_cumprod[ts]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        est = t.to_x0(t.denoise(x_t, ts, t.condition((x0[:, 0] + 1) / 2)), x_t, ts).clamp(-1, 1)
    mse = ((est - x0) / 2) ** 2
    psnr_input = -10 * math.log10(mse[:, 0].mean().item())
    psnr_novel = -10 * math.log10(mse[:, 1:].mean().item())
    assert psnr_input > 29.0 and psnr_novel > 24.0, (psnr_input, psnr_novel)

def _rays_teacher(seed: int = 0) -> DiffusersMVTeacher:
    u = replace(PEPDConfig.preset("tiny").unet, camera_rays=True, in_channels=12)
    return DiffusersMVTeacher.from_unet_config(u, seed=seed).eval()


def test_camera_rays_reach_the_unet(tmp_path):
    """With camera_rays the UNet reads per-pixel rays: with the camera's class embedding silenced, other cameras
    still change the prediction (without rays they could not). teacher.json keeps the flag through save/load."""
    t = _rays_teacher()
    assert t.config.camera_rays and t.unet.config.in_channels == 12
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, *t.sample_shape, generator=g)
    cond = t.condition(torch.rand(1, 3, 32, 32, generator=g))
    other = t.viewmats[[1, 2, 3, 0]]  # the same cameras, given to other views
    with torch.no_grad():
        for p in t.unet.class_embedding.parameters():
            p.zero_()
        a, b = t.denoise(x, 400, cond), t.denoise(x, 400, cond, other)
    assert (a - b).abs().max() > 1e-4
    t.save_pretrained(tmp_path / "rays", dtype=None)
    assert json.loads((tmp_path / "rays" / "teacher.json").read_text())["camera_rays"] is True
    back = DiffusersMVTeacher.from_pretrained(tmp_path / "rays")
    assert back.config == t.config
    with torch.no_grad():
        torch.testing.assert_close(back.denoise(x, 400, cond), a, atol=0, rtol=0)
    # a UNet whose input width disagrees with teacher.json is refused
    bad = json.loads((tmp_path / "rays" / "teacher.json").read_text())
    (tmp_path / "rays" / "teacher.json").write_text(json.dumps({**bad, "camera_rays": False}))
    with pytest.raises(ValueError, match="12"):
        DiffusersMVTeacher.from_pretrained(tmp_path / "rays")


def test_pepd_phase1_with_rays_is_the_teachers_first_step():
    """Representation alignment with a rays teacher: every tensor loads, and PEPD's Phase-1 UNet output at
    t = T-1 equals the teacher's `denoise` of the same noise and image (same input helpers; tolerance 1e-4)."""
    from dd3g_sdk.model.pepd import PEPD
    from dd3g_distill.train import teacher_unet_state

    t = _rays_teacher(seed=1)
    cfg = replace(PEPDConfig.preset("tiny"), unet=replace(PEPDConfig.preset("tiny").unet, camera_rays=True,
                                                          in_channels=12))
    model = PEPD(cfg).eval()
    unet_sd, enc_sd = teacher_unet_state(t)
    loaded, skipped = model.init_from_teacher(unet_sd, enc_sd)
    assert not skipped and len(loaded) == len(unet_sd) + len(enc_sd)
    captured = {}
    model.unet.register_forward_hook(lambda m, i, o: captured.update(eps=o[0]))  # returns None: output kept
    g = torch.Generator().manual_seed(2)
    image, noise = torch.rand(2, 3, 32, 32, generator=g), torch.randn(2, *t.sample_shape, generator=g)
    with torch.no_grad():
        model(image, noise)
        want = t.denoise(noise, t.num_train_timesteps - 1, t.condition(image))
    torch.testing.assert_close(captured["eps"].reshape(want.shape), want, atol=1e-4, rtol=0)


def test_train_config_camera_rays():
    u = _tiny_train_config(camera_rays=True).unet_config()
    assert u.camera_rays and u.in_channels == 12
    tr = TeacherTrainer(_tiny_train_config(camera_rays=True, cond_drop_prob=0.0, warmup_steps=1, lr=2e-3), "cpu")
    assert tr.teacher.config.camera_rays
    _assert_steps_lower_the_loss(tr)
